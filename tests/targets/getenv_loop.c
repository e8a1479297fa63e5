// Exercises the environment: reads getenv("REWIND_PROBE") at every step, so a restart --env shows.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define STEPS 20

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("getenv_loop: %d steps\n", STEPS);
    for (int step = 0; step < STEPS; step++) {
        const char *v = getenv("REWIND_PROBE");
        printf("step %2d: REWIND_PROBE=%s\n", step, v ? v : "(unset)");
        sleep_ms(100);
    }
    printf("done\n");
    return 0;
}
