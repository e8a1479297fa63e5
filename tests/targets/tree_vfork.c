// Exercises vfork and posix_spawn children that exec /bin/true (the vfork child sleeps first, so checkpoints land while the parent waits for it), each reaped with its status.
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int rounds = argc > 1 ? atoi(argv[1]) : 60;
    char *args[] = {"/bin/true", NULL};
    for (int i = 0; i < rounds; i++) {
        pid_t p;
        if (i % 2) {
            p = vfork();
            if (p == 0) {
                struct timespec ts = {0, 30000000};
                nanosleep(&ts, NULL);
                execv(args[0], args);
                _exit(1);
            }
        } else if (posix_spawn(&p, args[0], NULL, NULL, args, environ) != 0) {
            return 2;
        }
        int st = 0;
        pid_t got = waitpid(p, &st, 0);
        printf("round %d: %s, status %d\n", i, got == p ? "reaped" : "NOT reaped",
               WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
    return 0;
}
