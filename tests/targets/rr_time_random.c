// Exercises nondeterministic inputs: four clocks, rdtsc/rdtscp, getrandom, /dev/urandom and getpid.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 3

static uint64_t rdtsc(void) {
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static uint64_t rdtscp(uint32_t *aux) {
    uint32_t lo, hi, c;
    __asm__ volatile("rdtscp" : "=a"(lo), "=d"(hi), "=c"(c));
    *aux = c;
    return ((uint64_t)hi << 32) | lo;
}

static void print_hex(const char *what, int round, const unsigned char *bytes, size_t n) {
    printf("round %d %s:", round, what);
    for (size_t i = 0; i < n; i++)
        printf(" %02x", bytes[i]);
    printf("\n");
}

/* Reads exactly n bytes, or dies saying why. */
static void read_all(int fd, unsigned char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            printf("read /dev/urandom: %s\n", r < 0 ? strerror(errno) : "end of file");
            _exit(1);
        }
        got += (size_t)r;
    }
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("rr_time_random: %d rounds of every time and randomness source\n", ROUNDS);
    int urandom = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (urandom < 0) {
        printf("open /dev/urandom: %s\n", strerror(errno));
        return 1;
    }

    uint64_t previous_tsc = 0;
    struct timespec previous_mono = {0, 0};
    for (int round = 0; round < ROUNDS; round++) {
        time_t now = time(NULL);
        struct timespec real, mono;
        clock_gettime(CLOCK_REALTIME, &real);
        clock_gettime(CLOCK_MONOTONIC, &mono);
        struct timeval tv;
        gettimeofday(&tv, NULL);
        uint64_t tsc = rdtsc();
        uint32_t aux;
        uint64_t tscp = rdtscp(&aux);

        printf("round %d time: %lld\n", round, (long long)now);
        printf("round %d clock_realtime: %lld.%09ld\n", round, (long long)real.tv_sec, real.tv_nsec);
        printf("round %d clock_monotonic: %lld.%09ld\n", round, (long long)mono.tv_sec, mono.tv_nsec);
        printf("round %d gettimeofday: %lld.%06ld\n", round, (long long)tv.tv_sec, (long)tv.tv_usec);
        printf("round %d rdtsc: %llu\n", round, (unsigned long long)tsc);
        printf("round %d rdtscp: %llu aux %u\n", round, (unsigned long long)tscp, aux);
        /* Derived facts, so a replay that returns garbage in the right shape still shows. */
        int mono_forward = mono.tv_sec > previous_mono.tv_sec ||
                           (mono.tv_sec == previous_mono.tv_sec && mono.tv_nsec >= previous_mono.tv_nsec);
        printf("round %d monotonic goes forward: %s, tsc goes forward: %s\n", round,
               mono_forward ? "yes" : "no", tsc > previous_tsc && tscp >= tsc ? "yes" : "no");
        previous_tsc = tsc;
        previous_mono = mono;

        unsigned char random[16];
        ssize_t n = getrandom(random, sizeof random, 0);
        if (n != (ssize_t)sizeof random) {
            printf("getrandom: %zd (%s)\n", n, n < 0 ? strerror(errno) : "short");
            return 1;
        }
        print_hex("getrandom", round, random, sizeof random);
        read_all(urandom, random, sizeof random);
        print_hex("urandom", round, random, sizeof random);
        printf("round %d getpid: %d\n", round, (int)getpid());

        usleep(20 * 1000);
    }
    close(urandom);
    printf("done\n");
    return 0;
}
