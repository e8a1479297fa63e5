// Exercises 8 threads sharing a bounded queue guarded by a mutex and condition variables, in rounds.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define WORKERS 8
#define ROUNDS 20
#define ITEMS_PER_ROUND 64
#define QUEUE_CAP 8
#define STOP UINT64_MAX

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static struct {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    uint64_t items[QUEUE_CAP];
    int head, len;
} queue = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0, 0};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t round_done;
    uint64_t sum;
    int processed;
} results = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

static pthread_barrier_t finish_line;

static void push(uint64_t item) {
    pthread_mutex_lock(&queue.lock);
    while (queue.len == QUEUE_CAP)
        pthread_cond_wait(&queue.not_full, &queue.lock);
    queue.items[(queue.head + queue.len) % QUEUE_CAP] = item;
    queue.len++;
    pthread_cond_signal(&queue.not_empty);
    pthread_mutex_unlock(&queue.lock);
}

static uint64_t pop(void) {
    pthread_mutex_lock(&queue.lock);
    while (queue.len == 0)
        pthread_cond_wait(&queue.not_empty, &queue.lock);
    uint64_t item = queue.items[queue.head];
    queue.head = (queue.head + 1) % QUEUE_CAP;
    queue.len--;
    pthread_cond_signal(&queue.not_full);
    pthread_mutex_unlock(&queue.lock);
    return item;
}

static uint64_t work(uint64_t x) {
    for (int i = 0; i < 1000; i++)
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return x >> 16;
}

static void *worker(void *arg) {
    (void)arg;
    for (;;) {
        uint64_t item = pop();
        if (item == STOP)
            break;
        uint64_t r = work(item);
        sleep_ms(1);
        pthread_mutex_lock(&results.lock);
        results.sum += r;
        if (++results.processed == ITEMS_PER_ROUND)
            pthread_cond_signal(&results.round_done);
        pthread_mutex_unlock(&results.lock);
    }
    pthread_barrier_wait(&finish_line);
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    pthread_t threads[WORKERS];
    pthread_barrier_init(&finish_line, NULL, WORKERS + 1);
    for (int i = 0; i < WORKERS; i++)
        pthread_create(&threads[i], NULL, worker, NULL);
    printf("threads_mutex: %d workers, %d rounds of %d items\n", WORKERS, ROUNDS, ITEMS_PER_ROUND);
    uint64_t total = 0;
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < ITEMS_PER_ROUND; i++)
            push((uint64_t)round * ITEMS_PER_ROUND + i + 1);
        pthread_mutex_lock(&results.lock);
        while (results.processed < ITEMS_PER_ROUND)
            pthread_cond_wait(&results.round_done, &results.lock);
        uint64_t sum = results.sum;
        results.sum = 0;
        results.processed = 0;
        pthread_mutex_unlock(&results.lock);
        total += sum;
        printf("round %2d: sum %016llx\n", round, (unsigned long long)sum);
        sleep_ms(80); /* every worker now waits on the queue's condition variable */
    }
    for (int i = 0; i < WORKERS; i++)
        push(STOP);
    pthread_barrier_wait(&finish_line);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(threads[i], NULL);
    printf("done: total %016llx\n", (unsigned long long)total);
    return 0;
}
