// Exercises sessions and process groups in a process tree: a child that leads its own session, one that leads its own group with a grandchild in it; the parent checks them at every step and ends them with a signal to the group.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static const char *yes(int b) { return b ? "yes" : "NO"; }

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int steps = argc > 1 ? atoi(argv[1]) : 30;
    int ready[2], report[2];
    if (pipe(ready) || pipe(report)) return 2;
    pid_t a = fork();
    if (a == 0) {
        setsid();
        write(ready[1], "a", 1);
        for (;;) sleep_ms(1000);
    }
    pid_t b = fork();
    if (b == 0) {
        setpgid(0, 0);
        pid_t c = fork();
        if (c == 0) {
            // The grandchild tells the parent its pid, then idles in b's group.
            pid_t me = getpid();
            write(report[1], &me, sizeof me);
            write(ready[1], "c", 1);
            for (;;) sleep_ms(1000);
        }
        signal(SIGTERM, SIG_IGN);
        write(ready[1], "b", 1);
        int st;
        waitpid(c, &st, 0);
        _exit(WIFSIGNALED(st) ? 100 + WTERMSIG(st) : 1);
    }
    char buf[3];
    for (int got = 0; got < 3;) {
        ssize_t r = read(ready[0], buf, sizeof buf - (size_t)got);
        if (r <= 0) return 3;
        got += (int)r;
    }
    pid_t c;
    if (read(report[0], &c, sizeof c) != sizeof c) return 4;
    pid_t me = getpid();
    for (int i = 0; i < steps; i++) {
        printf("step %d: a leads its session %s, b leads its group %s, c in b's group %s, "
               "c in b's session %s, same session as mine %s\n",
               i, yes(getsid(a) == a && getpgid(a) == a), yes(getpgid(b) == b),
               yes(getpgid(c) == b), yes(getsid(c) == getsid(b)), yes(getsid(b) == getsid(me)));
        sleep_ms(50);
    }
    kill(a, SIGTERM);
    kill(-b, SIGTERM);
    int sa = 0, sb = 0;
    pid_t wa = waitpid(a, &sa, 0), wb = waitpid(b, &sb, 0);
    printf("a: %s, killed by %d\n", yes(wa == a), WIFSIGNALED(sa) ? WTERMSIG(sa) : -1);
    printf("b: %s, exited %d\n", yes(wb == b), WIFEXITED(sb) ? WEXITSTATUS(sb) : -1);
    return 0;
}
