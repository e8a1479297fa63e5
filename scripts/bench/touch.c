// Benchmark target: touches N MiB of random data, prints a checksum, exits.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
int main(int argc, char **argv) {
    size_t n = (argc > 1 ? strtoul(argv[1], 0, 10) : 64) << 20;
    uint64_t *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    uint64_t x = 88172645463325252ull, sum = 0;
    for (size_t i = 0; i < n / 8; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; p[i] = x; }
    for (size_t i = 0; i < n / 8; i += 512) sum += p[i];
    printf("%llu\n", (unsigned long long)sum);
    return 0;
}
