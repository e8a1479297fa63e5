// Exercises a pipe between two threads that always holds unread bytes: bursts in, slow reads out.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define BURSTS 12
#define BURST_BYTES 4096
#define CHUNK_BYTES 1024

static int fds[2];

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static unsigned char byte_at(uint64_t k) { return (unsigned char)(k * 131 + k / 7); }

static void *writer(void *arg) {
    (void)arg;
    unsigned char burst[BURST_BYTES];
    for (int b = 0; b < BURSTS; b++) {
        for (int i = 0; i < BURST_BYTES; i++)
            burst[i] = byte_at((uint64_t)b * BURST_BYTES + i);
        /* Bursts are at most PIPE_BUF bytes, so each write is atomic and never short. */
        if (write(fds[1], burst, BURST_BYTES) != BURST_BYTES) {
            perror("write");
            return NULL;
        }
        sleep_ms(150);
    }
    close(fds[1]);
    return NULL;
}

static ssize_t read_full(int fd, unsigned char *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += n;
    }
    return got;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (pipe(fds) != 0) {
        perror("pipe");
        return 1;
    }
    pthread_t w;
    pthread_create(&w, NULL, writer, NULL);
    printf("pipe_threads: %d bursts of %d bytes, read in %d-byte chunks\n", BURSTS, BURST_BYTES,
           CHUNK_BYTES);
    uint64_t total = 0, sum = 0xcbf29ce484222325ULL;
    int bad = 0;
    for (int chunk = 0;; chunk++) {
        unsigned char buf[CHUNK_BYTES];
        ssize_t n = read_full(fds[0], buf, CHUNK_BYTES);
        if (n < 0) {
            perror("read");
            return 1;
        }
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != byte_at(total + i))
                bad++;
            sum ^= buf[i];
            sum *= 0x100000001b3ULL;
        }
        total += n;
        printf("chunk %2d: %zd bytes, total %6llu, checksum %016llx, wrong bytes %d\n", chunk, n,
               (unsigned long long)total, (unsigned long long)sum, bad);
        sleep_ms(40);
    }
    pthread_join(w, NULL);
    printf("done: %llu bytes, checksum %016llx, wrong bytes %d\n", (unsigned long long)total,
           (unsigned long long)sum, bad);
    return 0;
}
