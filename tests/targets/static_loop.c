// Exercises a statically linked binary (no dynamic loader, no shared libc): a loop with checksums.
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define STEPS 30

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    size_t words = 4096;
    uint64_t *data = calloc(words, sizeof *data);
    uint64_t x = 88172645463325252ULL;
    printf("static_loop: %d steps\n", STEPS);
    for (int step = 0; step < STEPS; step++) {
        /* Grow the heap a little each step: it must stay growable after a restart. */
        words += 512;
        data = realloc(data, words * sizeof *data);
        if (!data) {
            perror("realloc");
            return 1;
        }
        uint64_t h = 0;
        for (size_t i = 0; i < words; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data[i] ^= x;
            h = (h ^ data[i]) * 0x100000001b3ULL;
        }
        printf("step %2d: %5zu words checksum %016llx\n", step, words, (unsigned long long)h);
        sleep_ms(60);
    }
    free(data);
    printf("done\n");
    return 0;
}
