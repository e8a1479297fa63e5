/* Signals delivered while a call waits under a temporary mask: SIGCHLD
 * stays blocked except inside ppoll, pselect and sigsuspend, as in make's
 * job loop. Each round forks a child that exits after a short sleep and
 * waits for its SIGCHLD in one of the three calls; the handler counts it
 * and notes the mask it ran under; after the call SIGCHLD must be blocked
 * again (the kernel restores the thread's own mask after the handler).
 * Prints one line per round. */
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got, usr1_blocked_in_handler;

static void on_chld(int sig) {
    (void)sig;
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    usr1_blocked_in_handler = sigismember(&now, SIGUSR1);
    got++;
}

int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_chld;
    sigaction(SIGCHLD, &sa, NULL);
    sigset_t block, wait_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, NULL);
    /* Inside the calls SIGCHLD is let through, SIGUSR1 stays blocked. */
    sigemptyset(&wait_mask);
    sigaddset(&wait_mask, SIGUSR1);
    const char *names[] = {"ppoll", "pselect", "sigsuspend"};
    for (int i = 0; i < 6; i++) {
        int before = got;
        pid_t c = fork();
        if (c < 0) {
            perror("fork");
            return 1;
        }
        if (c == 0) {
            usleep(5000 + 3000 * i);
            _exit(i);
        }
        int r = 0;
        while (got == before) {
            switch (i % 3) {
            case 0:
                r = ppoll(NULL, 0, NULL, &wait_mask);
                break;
            case 1:
                r = pselect(0, NULL, NULL, NULL, NULL, &wait_mask);
                break;
            default:
                r = sigsuspend(&wait_mask);
                break;
            }
        }
        int st = 0;
        waitpid(c, &st, 0);
        sigset_t now;
        sigprocmask(SIG_BLOCK, NULL, &now);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        printf("%-10s returned %d, %d signals, child status %d, usr1 blocked in handler %d, "
               "chld blocked after %d, clock %ld.%09ld\n",
               names[i % 3], r, (int)got, WEXITSTATUS(st), (int)usr1_blocked_in_handler,
               sigismember(&now, SIGCHLD), (long)ts.tv_sec, ts.tv_nsec);
    }
    return 0;
}
