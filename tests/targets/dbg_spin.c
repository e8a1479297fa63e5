/* A long syscall-free loop between two calls of mark(): for interrupting a
 * debugger command with Ctrl-C. argv[1]: loop iterations (millions). */
#include <stdio.h>
#include <stdlib.h>
volatile unsigned long sink;
__attribute__((noinline)) void mark(int i) { sink += (unsigned long)i; }
int main(int argc, char **argv)
{
    unsigned long n = (argc > 1 ? strtoul(argv[1], 0, 10) : 100) * 1000000UL, x = 1;
    mark(0);
    for (unsigned long i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    sink += x;
    mark(1);
    printf("%lu\n", sink);
    return 0;
}
