// Benchmark target: compute-bound loop (argv[1] iterations of integer mixing), one line of output.
#include <stdio.h>
#include <stdlib.h>
int main(int c, char **v) { unsigned long n = c > 1 ? strtoul(v[1], 0, 10) : 300000000UL, x = 1;
  for (unsigned long i = 0; i < n; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; }
  printf("%lu\n", x); return 0; }
