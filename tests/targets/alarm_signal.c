// Exercises a SIGALRM handler and an alarm() that is still pending when the checkpoint lands.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t ticks;

static void on_alarm(int sig) {
    (void)sig;
    ticks++;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL); /* no SA_RESTART: a sleep is interrupted by the tick */

    printf("alarm_signal: 2 rounds of alarm(1)\n");

    /* Round 1: SIGALRM blocked except inside sigsuspend, so the tick cannot be missed. */
    sigset_t alrm, unblocked;
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    sigprocmask(SIG_BLOCK, &alrm, &unblocked);
    sigdelset(&unblocked, SIGALRM);
    printf("round 1: alarm(1) armed, ticks %d\n", (int)ticks);
    alarm(1);
    while (ticks < 1)
        sigsuspend(&unblocked);
    printf("round 1: tick received in sigsuspend, ticks %d\n", (int)ticks);
    sigprocmask(SIG_UNBLOCK, &alrm, NULL);

    /* Round 2: a long nanosleep that only the tick can cut short. */
    printf("round 2: alarm(1) armed, ticks %d\n", (int)ticks);
    alarm(1);
    struct timespec ts = {5, 0};
    int r = nanosleep(&ts, &ts);
    if (r == -1 && errno == EINTR)
        printf("round 2: nanosleep interrupted by the tick, ticks %d\n", (int)ticks);
    else
        printf("round 2: nanosleep ran out without a tick, ticks %d\n", (int)ticks);

    printf("done: ticks %d, alarm left %u\n", (int)ticks, alarm(0));
    return 0;
}
