// Exercises a file (argv[1]) held open read-only across the checkpoint, so restart needs it again.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define STEPS 20

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 2) {
        fprintf(stderr, "usage: open_file FILE\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    printf("open_file: holding the file open for %d steps\n", STEPS);
    for (int step = 0; step < STEPS; step++) {
        char c = 0;
        ssize_t n = read(fd, &c, 1); /* one byte a step: the offset moves */
        printf("step %2d: read %zd byte '%c', offset %lld\n", step, n, n == 1 ? c : '-',
               (long long)lseek(fd, 0, SEEK_CUR));
        sleep_ms(100);
    }
    close(fd);
    printf("done\n");
    return 0;
}
