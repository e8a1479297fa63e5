// Exercises a large heap (argv[1] MiB, default 1024) filled with PRNG data whose checksum must survive.
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define WAIT_STEPS 10

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static uint64_t checksum(const uint64_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    long mib = argc > 1 ? atol(argv[1]) : 1024;
    if (mib <= 0) {
        fprintf(stderr, "usage: big_heap [MIB]\n");
        return 2;
    }
    size_t words = (size_t)mib * 1024 * 1024 / sizeof(uint64_t);
    uint64_t *heap = malloc(words * sizeof *heap);
    if (!heap) {
        perror("malloc");
        return 1;
    }
    printf("big_heap: filling %ld MiB\n", mib);
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    size_t per_report = words / 8 ? words / 8 : 1;
    for (size_t i = 0; i < words; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        heap[i] = x;
        if ((i + 1) % per_report == 0)
            printf("filled %zu of %zu MiB\n", (i + 1) * sizeof *heap >> 20, words * sizeof *heap >> 20);
    }
    uint64_t before = checksum(heap, words);
    printf("checksum: %016llx\n", (unsigned long long)before);
    for (int step = 0; step < WAIT_STEPS; step++) {
        printf("waiting %2d\n", step);
        sleep_ms(100);
    }
    uint64_t after = checksum(heap, words);
    printf("checksum again: %016llx, %s\n", (unsigned long long)after, after == before ? "same" : "CHANGED");
    free(heap);
    return after != before;
}
