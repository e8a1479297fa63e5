/* A small program to debug: loops, recursion, calls into libc, a signal
 * handler and a few syscalls. Built with -O0 so every line has code. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct point {
    int x;
    int y;
};

int counter;
long total;
struct point origin = {3, 4};
static volatile sig_atomic_t got_signal;

static void on_alarm(int sig)
{
    got_signal = sig;
}

int fact(int n)
{
    if (n <= 1)
        return 1;
    return n * fact(n - 1);
}

long sum_to(int n)
{
    long s = 0;
    for (int i = 1; i <= n; i++)
        s += i;
    return s;
}

int main(void)
{
    char buf[64];
    signal(SIGALRM, on_alarm);
    for (int round = 0; round < 5; round++) {
        counter++;
        total += sum_to(100 * (round + 1));
        snprintf(buf, sizeof buf, "round %d total %ld\n", round, total);
        write(1, buf, strlen(buf));
    }
    raise(SIGALRM);
    origin.x = fact(6);
    printf("fact %d signal %d counter %d\n", origin.x, (int)got_signal, counter);
    return 0;
}
