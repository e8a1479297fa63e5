// Exercises a timerfd and a pipe watched by one epoll instance, the timer armed when the checkpoint lands.
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define TICKS 20
enum { TIMER = 1, PIPE = 2 };

static int wait_one(int ep) {
    struct epoll_event ev[4];
    int n;
    do
        n = epoll_wait(ep, ev, 4, -1);
    while (n == -1 && errno == EINTR);
    if (n != 1) {
        printf("epoll_wait returned %d events, expected 1\n", n);
        return -1;
    }
    return (int)ev[0].data.u32;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int tfd = timerfd_create(CLOCK_MONOTONIC, 0);
    int p[2];
    int ep = epoll_create1(0);
    if (tfd < 0 || pipe(p) != 0 || ep < 0) {
        perror("setup");
        return 1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = TIMER};
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
    ev.data.u32 = PIPE;
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);

    printf("timerfd_epoll: %d one-shot 100 ms timers, a pipe message every 5\n", TICKS);
    uint64_t total = 0;
    for (int tick = 0; tick < TICKS; tick++) {
        if (tick % 5 == 0) {
            /* The timer is disarmed here, so the pipe is the only thing that can be ready. */
            char msg[32];
            int len = snprintf(msg, sizeof msg, "ping %d", tick / 5);
            if (write(p[1], msg, len) != len) {
                perror("write pipe");
                return 1;
            }
            if (wait_one(ep) != PIPE)
                return 1;
            char got[32] = {0};
            if (read(p[0], got, sizeof got - 1) != len) {
                perror("read pipe");
                return 1;
            }
            printf("tick %2d: pipe says \"%s\"\n", tick, got);
        }
        struct itimerspec its = {.it_interval = {0, 0}, .it_value = {0, 100 * 1000 * 1000}};
        timerfd_settime(tfd, 0, &its, NULL);
        if (wait_one(ep) != TIMER)
            return 1;
        uint64_t expirations = 0;
        if (read(tfd, &expirations, sizeof expirations) != sizeof expirations) {
            perror("read timerfd");
            return 1;
        }
        total += expirations;
        printf("tick %2d: timer expirations %llu, total %llu\n", tick, (unsigned long long)expirations,
               (unsigned long long)total);
    }
    printf("done: %llu expirations\n", (unsigned long long)total);
    return 0;
}
