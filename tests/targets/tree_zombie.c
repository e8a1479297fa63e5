// Exercises children that have ended but are not reaped yet (zombies) when a checkpoint lands: the restarted parent's wait must still find each one, with its pid and status.
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 14;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < rounds; i++) {
        pid_t c = fork();
        if (c < 0)
            return 2;
        if (c == 0) {
            if (i % 3 == 2) {
                signal(SIGTERM, SIG_DFL);
                raise(SIGTERM);
            }
            _exit(i);
        }
        /* Wait for its end without reaping it: it stays a zombie. */
        siginfo_t si;
        if (waitid(P_PID, c, &si, WEXITED | WNOWAIT) != 0)
            return 3;
        printf("round %2d: child ended, not reaped yet\n", i);
        usleep(150000);
        int st;
        pid_t r = waitpid(c, &st, 0);
        if (r < 0) {
            perror("waitpid");
            return 4;
        }
        printf("round %2d: reaped %s, %s %d\n", i, r == c ? "that child" : "another child",
               WIFEXITED(st) ? "exit code" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    }
    /* Nothing else is left to reap. */
    printf("more children: %s\n", waitpid(-1, NULL, WNOHANG) < 0 ? "none" : "yes");
    return 0;
}
