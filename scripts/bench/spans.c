// Benchmark target for reverse execution: mark() is called, then the
// program computes for about 10 s, 1 s and 10 ms (argv[1] loop iterations
// per millisecond), calling mark() after each span; a syscall-free loop,
// so the spans lie between two events.
#include <stdio.h>
#include <stdlib.h>
volatile unsigned long sink;
__attribute__((noinline)) void mark(int i) { sink += (unsigned long)i; }
static void spin(unsigned long n) { unsigned long x = 1;
  for (unsigned long i = 0; i < n; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; }
  sink += x; }
int main(int c, char **v) { unsigned long per_ms = c > 1 ? strtoul(v[1], 0, 10) : 300000UL;
  unsigned long scale = c > 2 ? strtoul(v[2], 0, 10) : 1;
  mark(0); spin(per_ms * 10000 / scale); mark(1); spin(per_ms * 1000 / scale); mark(2);
  spin(per_ms * 10); mark(3); printf("%lu\n", sink); return 0; }
