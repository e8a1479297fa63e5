/* Syscall-heavy program to debug: thousands of reads and clock reads (each
 * an event of the recording), with hit() called every 500 iterations. */
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

long total;
int last_hit;

__attribute__((noinline)) void hit(int i)
{
    last_hit = i;
}

int main(void)
{
    int fd = open("/proc/self/stat", O_RDONLY);
    char buf[64];
    struct timespec ts;
    for (int i = 1; i <= 3000; i++) {
        if (fd >= 0 && pread(fd, buf, sizeof buf, 0) > 0)
            total += buf[0] != 0;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (i % 500 == 0)
            hit(i);
    }
    printf("total %ld last %d\n", total, last_hit);
    return 0;
}
