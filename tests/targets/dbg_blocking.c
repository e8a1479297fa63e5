// Exercises syscalls that end long after they began: a thread waits in read() on a pipe until the main thread writes to it (the byte lands in a global), the main thread sleeps in nanosleep.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static int fds[2];
static char received; /* written by the kernel, at the end of the reader's read() */
static volatile uint64_t work = 1;

static void compute(int rounds) {
    for (int i = 0; i < rounds; i++)
        work = work * 31 + (uint64_t)i;
}

static void *reader(void *arg) {
    (void)arg;
    ssize_t n = read(fds[0], &received, 1); /* waits for main's write */
    compute(10);
    return (void *)(intptr_t)(n == 1 ? received : '?');
}

int main(void) {
    if (pipe(fds) != 0)
        return 1;
    pthread_t thread;
    if (pthread_create(&thread, NULL, reader, NULL) != 0)
        return 1;
    struct timespec pause = {0, 20 * 1000 * 1000};
    nanosleep(&pause, NULL);
    compute(10);
    if (write(fds[1], "x", 1) != 1)
        return 1;
    void *got = NULL;
    pthread_join(thread, &got);
    nanosleep(&pause, NULL);
    compute(10);
    printf("reader got %c, work %llu\n", (char)(intptr_t)got, (unsigned long long)work);
    return 0;
}
