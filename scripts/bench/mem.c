// Benchmark target: holds N MiB of random or zero-filled (touched) memory, says "ready", then waits.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 0;
    const char *mode = argc > 2 ? argv[2] : "random";
    size_t n = mib << 20;
    if (n) {
        // mmap + explicit writes: every page is really touched (malloc + memset(0)
        // would become calloc and touch nothing).
        volatile uint64_t *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 1;
        uint64_t x = 88172645463325252ull;
        int zero = strcmp(mode, "zero") == 0;
        for (size_t i = 0; i < n / 8; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            p[i] = zero ? 0 : x;
            if (zero && i % 512 == 0) p[i] = 1, p[i] = 0;
        }
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
