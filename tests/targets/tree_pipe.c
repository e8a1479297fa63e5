// Exercises a process tree: a parent and a forked child in lockstep over pipes (one always holding an unread message), both printing; the parent waits for the child and prints its status.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STEPS 40

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static void read_all(int fd, void *buf, size_t n) {
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            printf("read failed: %s\n", r == 0 ? "end of file" : strerror(errno));
            exit(3);
        }
        p += r;
        n -= (size_t)r;
    }
}

static void write_all(int fd, const void *buf, size_t n) {
    if (write(fd, buf, n) != (ssize_t)n) {
        printf("write failed: %s\n", strerror(errno));
        exit(4);
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int steps = argc > 1 ? atoi(argv[1]) : STEPS;
    int go[2], back[2], data[2];
    if (pipe(go) || pipe(back) || pipe(data)) return 2;
    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0) return 2;
    if (child == 0) {
        close(go[1]);
        close(back[0]);
        close(data[0]);
        long sum = 0;
        for (int i = 0;; i++) {
            int token;
            read_all(go[0], &token, sizeof token);
            if (token < 0) break;
            sum += token;
            printf("child %d: token %d, sum %ld, parent is %s\n", i, token, sum,
                   getppid() == parent ? "mine" : "another");
            char msg[64];
            memset(msg, 0, sizeof msg);
            snprintf(msg, sizeof msg, "message %d from the child", i);
            write_all(data[1], msg, sizeof msg);
            write_all(back[1], &i, sizeof i);
        }
        printf("child done, sum %ld\n", sum);
        _exit(7);
    }
    close(go[0]);
    close(back[1]);
    close(data[1]);
    char msg[64];
    for (int i = 0; i < steps; i++) {
        int token = i * 3 + 1, ack;
        printf("parent %d: sends %d\n", i, token);
        write_all(go[1], &token, sizeof token);
        read_all(back[0], &ack, sizeof ack);
        // The child's message of this step stays in the pipe until the next.
        if (i > 0) {
            read_all(data[0], msg, sizeof msg);
            printf("parent %d: got \"%s\"\n", i, msg);
        }
        sleep_ms(50);
    }
    read_all(data[0], msg, sizeof msg);
    printf("last: \"%s\"\n", msg);
    int quit = -1;
    write_all(go[1], &quit, sizeof quit);
    int status = 0;
    pid_t got = waitpid(child, &status, 0);
    printf("waitpid: %s, child exited with status %d\n", got == child ? "my child" : "another process",
           WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}
