// Keeps rewriting a counter into every page of private and MAP_SHARED memory, checking each page still holds the previous pass's value (forked checkpoints: an image must hold memory at the checkpoint, not later writes).
//
// Usage: cow_counter MIB PASSES [fork | fork-subreaper]
//
// MIB MiB of private anonymous memory (its first MiB marked MADV_DONTFORK, the next MADV_WIPEONFORK:
// a fork does not copy them) and MIB/4 of MAP_SHARED anonymous memory are filled with random bytes,
// then pass after pass every page gets the pass number in its first and last
// words, after checking that both still hold the number of the pass before. A restored image
// whose memory is not all from one moment (pages written after the checkpoint, or shared memory
// read later than the rest) breaks that invariant: the program prints where and exits 1. With
// "fork", a child process does the same over the shared memory while the parent does the private
// memory; the parent waits for it. With "fork-subreaper" the parent is a child subreaper too, and
// reaps every child it gets, saying so of any it did not make (an orphan of its child's would be
// adopted by it). Every 20 passes the parent prints "pass N"; at the end it prints a hash of all
// the memory (the same in every run) and "done".
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096
#define WORDS (PAGE / 8)

static void fill(uint64_t *p, size_t bytes, uint64_t seed) {
    uint64_t x = seed;
    for (size_t i = 0; i < bytes / 8; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = x;
    }
    for (size_t page = 0; page < bytes / PAGE; page++) {
        p[page * WORDS] = 0;
        p[page * WORDS + WORDS - 1] = 0;
    }
}

// One pass over `pages` pages: check the previous pass's value, write this one's.
static int pass(volatile uint64_t *p, size_t pages, uint64_t n, const char *what) {
    for (size_t page = 0; page < pages; page++) {
        volatile uint64_t *first = &p[page * WORDS], *last = &p[page * WORDS + WORDS - 1];
        if (*first != n - 1 || *last != n - 1) {
            printf("%s memory: page %zu holds %llu and %llu at pass %llu, not %llu\n", what, page,
                   (unsigned long long)*first, (unsigned long long)*last, (unsigned long long)n,
                   (unsigned long long)(n - 1));
            fflush(stdout);
            return 1;
        }
        *first = n;
        *last = n;
    }
    return 0;
}

static uint64_t hash(const uint64_t *p, size_t bytes, uint64_t h) {
    for (size_t i = 0; i < bytes / 8; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: cow_counter MIB PASSES [fork | fork-subreaper]\n");
        return 2;
    }
    size_t bytes = strtoull(argv[1], 0, 10) << 20;
    uint64_t passes = strtoull(argv[2], 0, 10);
    int subreaper = argc > 3 && strcmp(argv[3], "fork-subreaper") == 0;
    int forked = subreaper || (argc > 3 && strcmp(argv[3], "fork") == 0);
    if (subreaper && prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
        perror("prctl");
        return 2;
    }
    size_t shared_bytes = bytes / 4;
    uint64_t *priv = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t *shared =
        mmap(NULL, shared_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (priv == MAP_FAILED || shared == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    fill(priv, bytes, 88172645463325252ull);
    fill(shared, shared_bytes, 1181783497276652981ull);
    if (bytes >= 2 << 20 && (madvise(priv, 1 << 20, MADV_DONTFORK) != 0 ||
                             madvise((char *)priv + (1 << 20), 1 << 20, MADV_WIPEONFORK) != 0)) {
        perror("madvise");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    pid_t child = -1;
    if (forked) {
        child = fork();
        if (child < 0) {
            perror("fork");
            return 2;
        }
        if (child == 0) {
            for (uint64_t n = 1; n <= passes; n++)
                if (pass(shared, shared_bytes / PAGE, n, "shared")) _exit(1);
            _exit(0);
        }
    }
    for (uint64_t n = 1; n <= passes; n++) {
        if (pass(priv, bytes / PAGE, n, "private")) return 1;
        if (!forked && pass(shared, shared_bytes / PAGE, n, "shared")) return 1;
        if (n % 20 == 0) printf("pass %llu\n", (unsigned long long)n);
    }
    if (forked) {
        int status, child_status = -1;
        pid_t w;
        // Every child, including any it did not make (__WALL: whatever its exit signal).
        while ((w = waitpid(-1, &status, subreaper ? __WALL : 0)) > 0) {
            if (w == child)
                child_status = status;
            else
                printf("reaped a child it did not make (%d)\n", (int)w);
            if (!subreaper) break;
        }
        if (child_status == -1) {
            perror("waitpid");
            return 2;
        }
        printf("child %s\n",
               WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0 ? "ok" : "failed");
        if (!WIFEXITED(child_status) || WEXITSTATUS(child_status) != 0) return 1;
    }
    printf("hash %016llx\n",
           (unsigned long long)hash(shared, shared_bytes, hash(priv, bytes, 0xcbf29ce484222325ull)));
    printf("done\n");
    return 0;
}
