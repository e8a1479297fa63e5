// Exercises epoll instances watching each other (the watched one has the higher number) and a watch added through a descriptor closed since, whose number now names another file (MPICH's UCX does both).
//
// usage: epoll_nested STEPS [DELAY_US]: an outer epoll watches an inner
// epoll and pipe B; the inner one watches pipe A through a dup of A's read
// end that is then closed (the watch lives on, A's read end holding the
// file), and that number is reused by /dev/null. Each step writes a line to
// A or B (in turn), waits on the outer epoll, follows the inner one when it
// is the ready one, reads the line and prints which watches led to it.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

enum { FROM_INNER = 1, FROM_B = 2, FROM_A = 3 };

static int wait_one(int ep, int timeout) {
    struct epoll_event ev[4];
    int n;
    do
        n = epoll_wait(ep, ev, 4, timeout);
    while (n == -1 && errno == EINTR);
    if (n != 1) {
        fprintf(stderr, "epoll_wait(%d): %d events (%s)\n", ep, n, n < 0 ? strerror(errno) : "");
        exit(1);
    }
    return (int)ev[0].data.u64;
}

static void watch(int ep, int fd, int data) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (unsigned)data};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        perror("epoll_ctl");
        exit(1);
    }
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 40;
    useconds_t delay = argc > 2 ? (useconds_t)atoi(argv[2]) : 50000;
    int outer = epoll_create1(0);
    int a[2], b[2];
    if (outer < 0 || pipe(a) != 0 || pipe(b) != 0) {
        perror("setup");
        return 1;
    }
    int inner = epoll_create1(0);
    int a_dup = dup(a[0]);
    if (inner < 0 || a_dup < 0) {
        perror("setup");
        return 1;
    }
    watch(inner, a_dup, FROM_A);
    close(a_dup);
    // The closed number names another file now.
    int other = open("/dev/null", O_RDONLY);
    if (other != a_dup) {
        fprintf(stderr, "/dev/null got fd %d, not %d\n", other, a_dup);
        return 1;
    }
    watch(outer, inner, FROM_INNER);
    watch(outer, b[0], FROM_B);
    printf("outer %d inner %d (watching pipe A through closed fd %d)\n", outer, inner, a_dup);
    fflush(stdout);

    for (int i = 0; i < steps; i++) {
        int to_a = i % 2 == 0;
        char line[32];
        int len = snprintf(line, sizeof line, "message %d\n", i);
        if (write(to_a ? a[1] : b[1], line, (size_t)len) != len) {
            perror("write");
            return 1;
        }
        int got = wait_one(outer, -1);
        const char *path;
        int from;
        if (got == FROM_INNER) {
            if (wait_one(inner, 0) != FROM_A) {
                fprintf(stderr, "step %d: the inner epoll reported something else\n", i);
                return 1;
            }
            path = "outer -> inner -> pipe A";
            from = a[0];
        } else if (got == FROM_B) {
            path = "outer -> pipe B";
            from = b[0];
        } else {
            fprintf(stderr, "step %d: unexpected event %d\n", i, got);
            return 1;
        }
        char buf[64];
        ssize_t n = read(from, buf, sizeof buf - 1);
        if (n <= 0) {
            perror("read");
            return 1;
        }
        buf[n] = 0;
        printf("step %d via %s: %s", i, path, buf);
        fflush(stdout);
        usleep(delay);
    }
    printf("epoll done\n");
    return 0;
}
