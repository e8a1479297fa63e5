// Exercises a file read in steps (its offset) while another file, opened O_APPEND, grows line by line.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 40
#define MAX_STEPS 30

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 3) {
        fprintf(stderr, "usage: file_rw INPUT APPENDED\n");
        return 2;
    }
    int in = open(argv[1], O_RDONLY);
    if (in < 0) {
        perror(argv[1]);
        return 1;
    }
    int out = open(argv[2], O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (out < 0) {
        perror(argv[2]);
        return 1;
    }
    printf("file_rw: reading %d-byte chunks\n", CHUNK);
    uint64_t sum = 0xcbf29ce484222325ULL;
    int step;
    for (step = 0; step < MAX_STEPS; step++) {
        char buf[CHUNK + 1];
        ssize_t n = read(in, buf, CHUNK);
        if (n < 0) {
            perror("read");
            return 1;
        }
        if (n == 0)
            break;
        buf[n] = 0;
        for (ssize_t i = 0; i < n; i++) {
            sum ^= (unsigned char)buf[i];
            sum *= 0x100000001b3ULL;
            if (buf[i] == '\n')
                buf[i] = '|';
        }
        off_t offset = lseek(in, 0, SEEK_CUR);
        int append = (fcntl(out, F_GETFL) & O_APPEND) != 0;
        printf("step %2d: read %2zd bytes \"%s\" offset %4lld o_append %s checksum %016llx\n", step, n,
               buf, (long long)offset, append ? "yes" : "NO", (unsigned long long)sum);
        char line[128];
        int len = snprintf(line, sizeof line, "step %2d: checksum %016llx\n", step, (unsigned long long)sum);
        if (write(out, line, len) != len) {
            perror("write");
            return 1;
        }
        sleep_ms(70);
    }
    struct stat st;
    fstat(out, &st);
    printf("done: %d steps, appended file is %lld bytes\n", step, (long long)st.st_size);
    return 0;
}
