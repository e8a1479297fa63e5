// Benchmark target: argv[2] (default one million) 16-byte preads of the file argv[1].
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
int main(int c, char **v) { int fd = open(v[1], O_RDONLY); char b[16]; unsigned long s = 0;
  long n = c > 2 ? strtol(v[2], 0, 10) : 1000000;
  for (long i = 0; i < n; i++) { if (pread(fd, b, 16, (i * 16) % 4096) != 16) return 1; s += b[3]; }
  printf("%lu\n", s); return 0; }
