// Exercises preemption: a thread spins on a flag without any syscall until another thread sets it.
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static volatile int go, done;
static volatile unsigned long spins;

static void *setter(void *arg) {
    (void)arg;
    usleep(50000);
    go = 1;
    return NULL;
}

static void *spinner(void *arg) {
    (void)arg;
    while (!go) {
        // no syscall in here: only preemption lets the setter run
    }
    done = 1;
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int round = 0; round < 3; round++) {
        go = done = 0;
        pthread_t a, b;
        pthread_create(&a, NULL, spinner, NULL);
        pthread_create(&b, NULL, setter, NULL);
        pthread_join(a, NULL);
        pthread_join(b, NULL);
        printf("round %d: spinner saw the flag, done=%d\n", round, done);
    }
    return 0;
}
