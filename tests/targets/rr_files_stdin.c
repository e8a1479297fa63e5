// Exercises inputs from outside: a file (argv[1]) read in 16 KiB chunks, then lines read from stdin.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (16 * 1024)

static uint64_t fnv1a(uint64_t hash, const unsigned char *bytes, size_t n) {
    for (size_t i = 0; i < n; i++) {
        hash ^= bytes[i];
        hash *= 0x100000001b3ULL;
    }
    return hash;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        fprintf(stderr, "usage: rr_files_stdin FILE < LINES\n");
        return 2;
    }
    printf("rr_files_stdin: reading %s in %d-byte chunks, then stdin\n", argv[1], CHUNK);

    int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        printf("open %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    static unsigned char buf[CHUNK];
    uint64_t file_hash = 0xcbf29ce484222325ULL;
    size_t file_bytes = 0;
    for (int chunk = 0;; chunk++) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            printf("read %s: %s\n", argv[1], strerror(errno));
            return 1;
        }
        if (n == 0)
            break;
        file_hash = fnv1a(file_hash, buf, (size_t)n);
        file_bytes += (size_t)n;
        printf("file chunk %d: %zd bytes, running fnv1a %016llx\n", chunk, n,
               (unsigned long long)file_hash);
    }
    close(fd);
    printf("file: %zu bytes, fnv1a %016llx\n", file_bytes, (unsigned long long)file_hash);

    char line[4096];
    uint64_t stdin_hash = 0xcbf29ce484222325ULL;
    int lines = 0;
    while (fgets(line, sizeof line, stdin)) {
        size_t len = strlen(line);
        stdin_hash = fnv1a(stdin_hash, (const unsigned char *)line, len);
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        printf("stdin line %d (%zu bytes): %s\n", ++lines, len, line);
    }
    printf("stdin: %d lines, fnv1a %016llx\n", lines, (unsigned long long)stdin_hash);
    fprintf(stderr, "rr_files_stdin: read %zu file bytes and %d stdin lines\n", file_bytes, lines);
    return 0;
}
