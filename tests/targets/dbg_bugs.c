/* Planted bugs for `rewind bisect`: each mode goes wrong once, somewhere
 * in a long run, and the tests find where.
 *
 *   dbg_bugs overflow N TOTAL EVERY   at iteration N of TOTAL, a write one
 *                                     past g.buf overwrites g.sentinel;
 *                                     progress is printed every EVERY
 *   dbg_bugs uaf                      a freed block is reused and a stale
 *                                     pointer sees the new owner's value
 *   dbg_bugs recurse                  one level of a recursive function
 *                                     stores a wrong value
 *   dbg_bugs threads N                a second thread corrupts a value the
 *                                     first one owns, at its N-th round
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct guarded {
    int buf[16];
    int sentinel;
};
struct guarded g = {{0}, 0x5eed};

static int overflow(long n, long total, long every) {
    long sum = 0;
    for (long i = 0; i < total; i++) {
        int k = (int)(i % 16);
        if (i == n)
            k = 16; /* the bug: one past the end */
        g.buf[k] += (int)(i & 7) + 1;
        sum += g.buf[i % 16];
        if (every > 0 && i % every == 0) {
            printf("iteration %ld, sum %ld\n", i, sum);
            fflush(stdout);
        }
    }
    printf("sentinel %#x\n", g.sentinel);
    return g.sentinel == 0x5eed ? 0 : 1;
}

struct node {
    long pad[2]; /* malloc keeps its free-list links here */
    long value;
    struct node *next;
};
struct node *stale;

static int uaf(void) {
    struct node *a = malloc(sizeof *a);
    a->value = 1;
    a->next = NULL;
    stale = a;
    printf("a: %ld\n", stale->value);
    free(a); /* stale now dangles */
    struct node *b = malloc(sizeof *b); /* the same block again */
    b->value = 99;
    b->next = NULL;
    printf("stale sees %ld\n", stale->value);
    free(b);
    return 0;
}

long memo[32];

static long fib(int n) {
    if (n < 2)
        return n;
    if (memo[n])
        return memo[n];
    long v = fib(n - 1) + fib(n - 2);
    if (n == 13)
        v += 1; /* the bug */
    memo[n] = v;
    return v;
}

static int recurse(void) {
    printf("fib(25) = %ld\n", fib(25));
    return 0;
}

struct shared {
    long rounds;
    long value; /* owned by main: always >= 0 */
    pthread_mutex_t lock;
};
struct shared shared = {0, 0, PTHREAD_MUTEX_INITIALIZER};
static long corrupt_at;

static void *corruptor(void *arg) {
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&shared.lock);
        long r = shared.rounds;
        if (r >= corrupt_at)
            shared.value = -1; /* the bug: not this thread's to write */
        pthread_mutex_unlock(&shared.lock);
        if (r >= corrupt_at)
            return NULL;
        usleep(100);
    }
}

static int threads(long n) {
    corrupt_at = n;
    pthread_t t;
    pthread_create(&t, NULL, corruptor, NULL);
    for (long i = 0; i < 2 * n; i++) {
        pthread_mutex_lock(&shared.lock);
        shared.rounds = i;
        if (shared.value >= 0)
            shared.value += i;
        pthread_mutex_unlock(&shared.lock);
        usleep(50);
    }
    pthread_join(t, NULL);
    printf("value %ld after %ld rounds\n", shared.value, shared.rounds);
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "overflow";
    if (!strcmp(mode, "overflow"))
        return overflow(argc > 2 ? atol(argv[2]) : 700000, argc > 3 ? atol(argv[3]) : 1000000,
                        argc > 4 ? atol(argv[4]) : 100000);
    if (!strcmp(mode, "uaf"))
        return uaf();
    if (!strcmp(mode, "recurse"))
        return recurse();
    if (!strcmp(mode, "threads"))
        return threads(argc > 2 ? atol(argv[2]) : 200);
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
