// Benchmark target for reverse execution in a threaded program: 4 threads
// compute in slices of ~0.1 ms separated by syscalls (events, and thread
// switches when recorded); thread 0 calls mark() after spans of about
// 2 s, 200 ms and 10 ms of its own work (argv[1]: loop iterations per ms).
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#define THREADS 4
static volatile unsigned long sink[THREADS];
static volatile int done;
static unsigned long per_ms = 300000, scale = 1;
__attribute__((noinline)) void mark(int i) { sink[0] += (unsigned long)i; }
static void slice(int id) {
    unsigned long x = (unsigned long)id + 1;
    for (unsigned long i = 0; i < per_ms / 10; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; }
    sink[id] += x;
    (void)getppid(); /* an event */
}
static void *worker(void *arg) {
    int id = (int)(long)arg;
    if (id == 0) {
        unsigned long spans[3] = {20000 / scale, 2000 / scale, 100};
        mark(0);
        for (int s = 0; s < 3; s++) {
            for (unsigned long k = 0; k < spans[s]; k++) slice(0);
            mark(s + 1);
        }
        done = 1;
    } else {
        while (!done) slice(id);
    }
    return NULL;
}
int main(int c, char **v) {
    if (c > 1) per_ms = strtoul(v[1], 0, 10);
    if (c > 2) scale = strtoul(v[2], 0, 10);
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    printf("%lu %lu %lu %lu\n", sink[0], sink[1], sink[2], sink[3]);
    return 0;
}
