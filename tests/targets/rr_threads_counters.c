// Exercises a thread schedule: 4 threads take mutexes in a racy order, make syscalls, and poll a racy flag.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define THREADS 4
#define ITERATIONS 300
#define REPORT_EVERY 25

static pthread_mutex_t counters_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t total;
static uint64_t order_hash = 17; /* depends on who took counters_lock when: the schedule's fingerprint */
static int turns[THREADS];

static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
static int polls[THREADS];
static int finished_before_flag;

/* Racy but benign: thread 0 sets it when done, the others poll it without a lock. */
static volatile int done;

static void say(const char *text) {
    size_t len = strlen(text);
    while (len > 0) {
        ssize_t n = write(1, text, len);
        if (n <= 0)
            return;
        text += n;
        len -= (size_t)n;
    }
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    char line[128];
    for (int i = 1; i <= ITERATIONS; i++) {
        pthread_mutex_lock(&counters_lock);
        total += (uint64_t)(id + 1);
        order_hash = order_hash * 31 + (uint64_t)(id + 1);
        turns[id]++;
        pthread_mutex_unlock(&counters_lock);
        if (i % REPORT_EVERY == 0) {
            snprintf(line, sizeof line, "thread %d: iteration %d\n", id, i);
            say(line);
            usleep(800 - 100 * id); /* thread 0 is the slowest, so the others poll done */
        }
    }
    if (id == 0) {
        done = 1;
        say("thread 0: set done\n");
        return NULL;
    }
    int my_polls = 0;
    int saw_it_at_once = done;
    while (!done) {
        my_polls++;
        usleep(200);
    }
    pthread_mutex_lock(&stats_lock);
    polls[id] = my_polls;
    if (saw_it_at_once)
        finished_before_flag++;
    pthread_mutex_unlock(&stats_lock);
    snprintf(line, sizeof line, "thread %d: saw done after %d polls\n", id, my_polls);
    say(line);
    return NULL;
}

int main(void) {
    printf("rr_threads_counters: %d threads x %d iterations\n", THREADS, ITERATIONS);
    fflush(stdout);
    pthread_t threads[THREADS];
    for (int id = 0; id < THREADS; id++) {
        int err = pthread_create(&threads[id], NULL, worker, (void *)(intptr_t)id);
        if (err) {
            printf("pthread_create: %s\n", strerror(err));
            return 1;
        }
    }
    for (int id = 0; id < THREADS; id++)
        pthread_join(threads[id], NULL);

    uint64_t expected = 0;
    for (int id = 0; id < THREADS; id++)
        expected += (uint64_t)ITERATIONS * (uint64_t)(id + 1);
    printf("total %llu (expected %llu): %s\n", (unsigned long long)total,
           (unsigned long long)expected, total == expected ? "ok" : "LOST UPDATES");
    printf("turns: %d %d %d %d\n", turns[0], turns[1], turns[2], turns[3]);
    printf("lock order hash: %016llx\n", (unsigned long long)order_hash);
    printf("polls: %d %d %d, threads that found done already set: %d\n", polls[1], polls[2], polls[3],
           finished_before_flag);
    return 0;
}
