// Exercises a file (argv[1]) mapped MAP_PRIVATE: read through the mapping, then changed in the private copy.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t fnv1a(const unsigned char *bytes, size_t n) {
    uint64_t hash = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        hash ^= bytes[i];
        hash *= 0x100000001b3ULL;
    }
    return hash;
}

/* The first line of the mapping, at most 60 bytes of it. */
static void print_first_line(const char *when, const char *map, size_t size) {
    size_t len = 0;
    while (len < size && len < 60 && map[len] != '\n')
        len++;
    printf("%s: first line \"%.*s\"\n", when, (int)len, map);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        fprintf(stderr, "usage: rr_mmap_file FILE\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        printf("open %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size == 0) {
        printf("fstat %s: %s\n", argv[1], st.st_size == 0 ? "empty file" : strerror(errno));
        return 1;
    }
    size_t size = (size_t)st.st_size;
    /* Writable although the file is opened read-only: MAP_PRIVATE copies on write. */
    unsigned char *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        printf("mmap: %s\n", strerror(errno));
        return 1;
    }
    close(fd); /* the mapping keeps the file */
    printf("rr_mmap_file: mapped %zu bytes MAP_PRIVATE\n", size);
    uint64_t original = fnv1a(map, size);
    printf("as mapped: fnv1a %016llx\n", (unsigned long long)original);
    print_first_line("as mapped", (const char *)map, size);

    /* Change the private copy: upper-case every letter, and stamp every 4096th byte. */
    size_t changed = 0;
    for (size_t i = 0; i < size; i++) {
        if (map[i] >= 'a' && map[i] <= 'z') {
            map[i] = (unsigned char)(map[i] - 'a' + 'A');
            changed++;
        }
    }
    for (size_t i = 4095; i < size; i += 4096)
        map[i] = '#';
    printf("changed: %zu letters upper-cased, fnv1a %016llx\n", changed,
           (unsigned long long)fnv1a(map, size));
    print_first_line("changed", (const char *)map, size);

    /* The file itself is untouched: read it again through a fresh descriptor. */
    fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        printf("open %s again: %s\n", argv[1], strerror(errno));
        return 1;
    }
    static unsigned char buf[64 * 1024];
    uint64_t hash = 0xcbf29ce484222325ULL;
    size_t bytes = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            hash ^= buf[i];
            hash *= 0x100000001b3ULL;
        }
        bytes += (size_t)n;
    }
    close(fd);
    printf("file read again: %zu bytes, fnv1a %016llx, same as mapped: %s\n", bytes,
           (unsigned long long)hash, hash == original ? "yes" : "no");
    munmap(map, size);
    printf("done\n");
    return 0;
}
