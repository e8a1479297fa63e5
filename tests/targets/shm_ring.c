// Exercises MAP_SHARED memory across a process tree: a producer (parent) and a consumer (forked child) pass items through a ring buffer in shared memory (anonymous, memfd, POSIX shm_open linked or unlinked) guarded by process-shared semaphores living in it, and the producer rewrites pages of a large shared block that the consumer checksums.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 8
#define PAGE 4096

/* Usage: shm_ring MODE ITEMS [BLOCK_MIB [NAME [PAUSE_MS]]]
 *   MODE: anon | memfd | posix | posix-unlinked
 *   NAME: the POSIX shm object's name (posix modes), without the slash. */

struct ring {
    sem_t mutex, items, slots;
    unsigned head, tail;
    long buf[SLOTS];
};

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static void sem_wait_all(sem_t *s) {
    while (sem_wait(s) == -1) {
        if (errno != EINTR) {
            printf("sem_wait failed: %s\n", strerror(errno));
            exit(3);
        }
    }
}

static uint64_t next(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static uint64_t checksum(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i += 64) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s anon|memfd|posix|posix-unlinked ITEMS [BLOCK_MIB [NAME [PAUSE_MS]]]\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    int items = atoi(argv[2]);
    size_t block = (size_t)(argc > 3 ? atoi(argv[3]) : 1) << 20;
    char name[256];
    snprintf(name, sizeof name, "/%s", argc > 4 ? argv[4] : "rewind-shm-ring");
    long pause_ms = argc > 5 ? atol(argv[5]) : 20;
    size_t ring_len = (sizeof(struct ring) + PAGE - 1) / PAGE * PAGE;
    size_t len = ring_len + block;
    setvbuf(stdout, NULL, _IOLBF, 0);

    void *mem;
    if (strcmp(mode, "anon") == 0) {
        mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    } else {
        int fd;
        if (strcmp(mode, "memfd") == 0) {
            fd = memfd_create("shm_ring", MFD_CLOEXEC);
        } else if (strncmp(mode, "posix", 5) == 0) {
            fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
        } else {
            fprintf(stderr, "unknown mode %s\n", mode);
            return 2;
        }
        if (fd < 0 || ftruncate(fd, (off_t)len) != 0) {
            perror("shared object");
            return 1;
        }
        mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (strcmp(mode, "posix-unlinked") == 0) shm_unlink(name);
    }
    if (mem == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    struct ring *r = mem;
    unsigned char *blk = (unsigned char *)mem + ring_len;
    size_t pages = block / PAGE;
    // The block's first contents: random, so incompressible.
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < block; i += 8) {
        uint64_t v = next(&x);
        memcpy(blk + i, &v, 8);
    }
    if (sem_init(&r->mutex, 1, 1) || sem_init(&r->items, 1, 0) || sem_init(&r->slots, 1, SLOTS)) {
        perror("sem_init");
        return 1;
    }
    // One protected page in the middle of the block: the mapping is split.
    if (pages > 4) mprotect(blk + 2 * PAGE, PAGE, PROT_READ);
    printf("block of %zu pages, checksum %016llx\n", pages, (unsigned long long)checksum(blk, block));

    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        uint64_t total = 0;
        for (int i = 0; i < items; i++) {
            sem_wait_all(&r->items);
            sem_wait_all(&r->mutex);
            long v = r->buf[r->tail % SLOTS];
            r->tail++;
            sem_post(&r->mutex);
            sem_post(&r->slots);
            // The page the producer wrote for this item (never touched by
            // this process before).
            size_t page = pages ? (size_t)i * 7 % pages : 0;
            uint64_t word = 0;
            if (pages) memcpy(&word, blk + page * PAGE + 8, 8);
            total += (uint64_t)v;
            printf("consumer: item %d value %ld page %zu word %016llx\n", i, v, page,
                   (unsigned long long)word);
        }
        printf("consumer: total %llu, block checksum %016llx\n", (unsigned long long)total,
               (unsigned long long)checksum(blk, block));
        return 0;
    }
    for (int i = 0; i < items; i++) {
        long v = (long)(i * 2654435761u % 1000003u);
        size_t page = pages ? (size_t)i * 7 % pages : 0;
        if (pages && page != 2) {
            uint64_t word = next(&x);
            memcpy(blk + page * PAGE + 8, &word, 8);
        }
        sem_wait_all(&r->slots);
        sem_wait_all(&r->mutex);
        r->buf[r->head % SLOTS] = v;
        r->head++;
        sem_post(&r->mutex);
        sem_post(&r->items);
        sleep_ms(pause_ms);
    }
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    printf("producer: consumer exited with %d after %u items\n",
           WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), r->tail);
    if (strcmp(mode, "posix") == 0) shm_unlink(name);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
