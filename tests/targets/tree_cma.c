// A parent and child that read and write each other's memory with process_vm_readv/process_vm_writev (cross-memory attach, as MPI's UCX does), by the pids they learned before any checkpoint.
//
// usage: tree_cma STEPS [DELAY_US]: in lockstep over two pipes, each step the
// parent puts a seed in its slot of an array; the child reads it from the
// parent's memory, writes its answer into the parent's slot of another
// array, and the parent reads the child's step counter from the child's
// memory. The parent prints what it found. A read or write that reached
// another process (an old pid) leaves the parent's slot empty: "MISSING".
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_STEPS 256

static volatile uint64_t seeds[MAX_STEPS];
static volatile uint64_t answers[MAX_STEPS];
static volatile uint64_t child_steps;

static int transfer(pid_t pid, volatile void *local, volatile void *remote, size_t len, int write) {
    struct iovec l = {.iov_base = (void *)local, .iov_len = len};
    struct iovec r = {.iov_base = (void *)remote, .iov_len = len};
    ssize_t n = write ? process_vm_writev(pid, &l, 1, &r, 1, 0)
                      : process_vm_readv(pid, &l, 1, &r, 1, 0);
    return n == (ssize_t)len ? 0 : -1;
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 40;
    useconds_t delay = argc > 2 ? (useconds_t)atoi(argv[2]) : 50000;
    if (steps > MAX_STEPS)
        steps = MAX_STEPS;
    int down[2], up[2];
    if (pipe(down) != 0 || pipe(up) != 0) {
        perror("pipe");
        return 1;
    }
    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        char c;
        for (int i = 0; i < steps; i++) {
            if (read(down[0], &c, 1) != 1)
                _exit(1);
            uint64_t seed = 0;
            if (transfer(parent, &seed, &seeds[i], sizeof seed, 0) != 0)
                seed = 0;
            uint64_t answer = seed * 6364136223846793005ull + 1442695040888963407ull;
            transfer(parent, &answer, &answers[i], sizeof answer, 1);
            child_steps = (uint64_t)i + 1;
            if (write(up[1], &c, 1) != 1)
                _exit(1);
        }
        // The parent reads our counter once more before we go.
        if (read(down[0], &c, 1) != 1)
            _exit(1);
        _exit(0);
    }
    uint64_t seed = 0x5eed;
    for (int i = 0; i < steps; i++) {
        seeds[i] = seed;
        if (write(down[1], "s", 1) != 1) {
            perror("write");
            return 1;
        }
        char c;
        if (read(up[0], &c, 1) != 1) {
            perror("read");
            return 1;
        }
        uint64_t counted = 0;
        if (transfer(child, &counted, &child_steps, sizeof counted, 0) != 0)
            counted = 0;
        if (answers[i])
            printf("step %d: the child answered %016llx and counts %llu steps\n", i,
                   (unsigned long long)answers[i], (unsigned long long)counted);
        else
            printf("step %d: MISSING answer; the child counts %llu steps\n", i,
                   (unsigned long long)counted);
        fflush(stdout);
        seed = answers[i] ^ (seed >> 3);
        usleep(delay);
    }
    if (write(down[1], "e", 1) != 1) {
        perror("write");
        return 1;
    }
    int status;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "the child failed\n");
        return 1;
    }
    printf("cma done\n");
    return 0;
}
