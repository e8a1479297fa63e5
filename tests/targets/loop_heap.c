// Exercises a plain counting loop whose heap keeps growing (brk) and is checksummed at every step.
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STEPS 30
#define BLOCK_BYTES (16 * 1024) /* below the mmap threshold: comes from brk */

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    unsigned char *blocks[STEPS];
    uint64_t sum = 0xcbf29ce484222325ULL;
    printf("loop_heap: %d steps\n", STEPS);
    for (int step = 0; step < STEPS; step++) {
        blocks[step] = malloc(BLOCK_BYTES);
        if (!blocks[step]) {
            perror("malloc");
            return 1;
        }
        for (size_t i = 0; i < BLOCK_BYTES; i++)
            blocks[step][i] = (unsigned char)(i * 7 + step * 13 + (i >> 8));
        /* Touch every earlier block too, so all of the heap must survive a restart. */
        uint64_t h = 0xcbf29ce484222325ULL;
        for (int b = 0; b <= step; b++) {
            blocks[b][step] ^= 0x5a;
            h = fnv1a(h, blocks[b], BLOCK_BYTES);
        }
        sum = sum * 31 + h;
        printf("step %2d: heap %3d KiB checksum %016llx running %016llx\n", step,
               (step + 1) * BLOCK_BYTES / 1024, (unsigned long long)h, (unsigned long long)sum);
        sleep_ms(60);
    }
    for (int b = 0; b < STEPS; b++)
        free(blocks[b]);
    printf("done: %016llx\n", (unsigned long long)sum);
    return 0;
}
