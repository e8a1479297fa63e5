// Exercises a descriptor of shared memory the process also maps (POSIX shm unlinked after mmap, or a memfd) that children open through /proc/<parent>/fd, as UCX's peers do: after a restart the descriptor and the mapping must be one object.
//
// usage: shm_fd_peer posix|memfd NAME STEPS [DELAY_US]: the parent makes the
// object (shm_open NAME then shm_unlink, or memfd_create NAME) of 64 KiB,
// maps its first 8 KiB, writes a tail at 60 KiB through the descriptor (a
// part it does not map) and keeps the descriptor. Each step forks a child
// that opens /proc/<parent>/fd/<fd>, maps all of it and writes a value
// derived from the step, the tail and what the parent wrote before; the
// parent waits for it and prints what its own mapping shows, then writes
// the next seed.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define SIZE (64 * 1024)
#define MAPPED (8 * 1024)
#define TAIL (60 * 1024)

struct shared {
    uint64_t seed;
    uint64_t answers[512];
};

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: shm_fd_peer posix|memfd NAME STEPS [DELAY_US]\n");
        return 2;
    }
    int memfd = strcmp(argv[1], "memfd") == 0;
    const char *name = argv[2];
    int steps = atoi(argv[3]);
    useconds_t delay = argc > 4 ? (useconds_t)atoi(argv[4]) : 50000;
    if (steps > 512)
        steps = 512;
    int fd = memfd ? memfd_create(name, 0) : shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || ftruncate(fd, SIZE) != 0) {
        perror("make the object");
        return 1;
    }
    struct shared *s = mmap(NULL, MAPPED, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (s == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    if (!memfd)
        shm_unlink(name);
    char tail[64];
    int tail_len = snprintf(tail, sizeof tail, "the tail of %s", argv[1]);
    if (pwrite(fd, tail, (size_t)tail_len, TAIL) != tail_len) {
        perror("pwrite");
        return 1;
    }
    s->seed = 0x5eed;
    for (int i = 0; i < steps; i++) {
        pid_t child = fork();
        if (child < 0) {
            perror("fork");
            return 1;
        }
        if (child == 0) {
            char path[64];
            snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)getppid(), fd);
            int peer = open(path, O_RDWR);
            if (peer < 0) {
                perror(path);
                _exit(1);
            }
            struct shared *p = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, peer, 0);
            if (p == MAP_FAILED) {
                perror("child mmap");
                _exit(1);
            }
            uint64_t h = 0;
            for (const char *c = (const char *)p + TAIL; *c; c++)
                h = h * 131 + (unsigned char)*c;
            p->answers[i] = p->seed * 6364136223846793005ull + (uint64_t)i + h;
            _exit(0);
        }
        int status;
        if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status)) {
            fprintf(stderr, "step %d: the child failed\n", i);
            return 1;
        }
        printf("step %d: the child answered %016llx\n", i, (unsigned long long)s->answers[i]);
        fflush(stdout);
        s->seed = s->answers[i] ^ (s->seed >> 7);
        usleep(delay);
    }
    printf("shm_fd_peer done\n");
    return 0;
}
