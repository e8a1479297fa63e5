// Exercises MAP_SHARED memory under record and debug: a single process keeps counters in shared anonymous memory and in private memory, one write(2) per step, and sets a shared flag once halfway (an in-memory snapshot must keep its own copy of shared memory).
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define STEPS 240

struct shared {
    long counter;
    long flag;
};

static struct shared *sh;
static volatile long priv_counter;
static volatile int current_step;
static volatile long sink;

// Called once per step; the debugger breaks here.
__attribute__((noinline)) void mark(int step) {
    char line[64];
    int n = snprintf(line, sizeof line, "step %d shared %ld flag %ld\n", step, sh->counter, sh->flag);
    if (write(1, line, (size_t)n) != n) _exit(3);
}

int main(void) {
    sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) return 1;
    for (int step = 0; step < STEPS; step++) {
        sh->counter = step;
        priv_counter = step;
        current_step = step;
        if (step == STEPS / 2) sh->flag = 777;
        // A few milliseconds of work: the replay takes snapshots on the way.
        for (long i = 0; i < 400000; i++) sink += i;
        mark(step);
    }
    return 0;
}
