// Exercises interactive input: reads numbers from stdin a line at a time and answers each with a running total.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

long total;

/* Called once per number read. */
__attribute__((noinline)) void got(long v, int n)
{
    total += v;
    char out[64];
    int len = snprintf(out, sizeof out, "line %d total %ld\n", n, total);
    write(1, out, (size_t)len);
}

int main(void)
{
    char line[128];
    int n = 0;
    write(1, "ready\n", 6);
    for (;;) {
        ssize_t k = read(0, line, sizeof line - 1);
        if (k <= 0)
            break;
        line[k] = 0;
        char *p = line;
        for (;;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p)
                break;
            got(v, ++n);
            p = end;
        }
    }
    write(1, "bye\n", 4);
    return 0;
}
