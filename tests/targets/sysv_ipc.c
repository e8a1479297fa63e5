// Exercises System V IPC across a process tree: a producer (parent) and a consumer (forked child) pass items through a ring buffer in a SysV shared memory segment guarded by a SysV semaphore set, every item also goes over a SysV message queue that the consumer reads a few items late (messages are always queued), and a second segment holds a note while nobody has it attached; every object is removed at the end.
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 8
#define LAG 4
#define PAGE 4096

/* Usage: sysv_ipc ITEMS KEY [rmid] [PAUSE_MS]
 *   KEY: the segment's key; the semaphore set, the queue and the note's
 *   segment use KEY+1, KEY+2 and KEY+3 (0: IPC_PRIVATE for all). "rmid": the segment is marked
 *   for removal as soon as it is attached (it lives while attached). */

enum { MUTEX, ITEMS, FREE };

struct ring {
    unsigned head, tail;
    long buf[SLOTS];
};

struct msg {
    long type;
    char text[64];
};

static int semid;

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static void op(unsigned short sem, short delta) {
    struct sembuf b = {sem, delta, 0};
    while (semop(semid, &b, 1) == -1) {
        if (errno != EINTR) {
            printf("semop failed: %s\n", strerror(errno));
            exit(3);
        }
    }
}

static void receive(int q, int item) {
    struct msg m;
    while (msgrcv(q, &m, sizeof m.text, 0, 0) < 0) {
        if (errno != EINTR) {
            printf("msgrcv failed: %s\n", strerror(errno));
            exit(4);
        }
    }
    printf("consumer: message type %ld \"%s\" (after item %d)\n", m.type, m.text, item);
}

static key_t key_of(long base, int n) {
    return base == 0 ? IPC_PRIVATE : (key_t)(base + n);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s ITEMS KEY [rmid] [PAUSE_MS]\n", argv[0]);
        return 2;
    }
    int items = atoi(argv[1]);
    long key = strtol(argv[2], NULL, 0);
    int rmid = argc > 3 && strcmp(argv[3], "rmid") == 0;
    long pause_ms = argc > 4 ? atol(argv[4]) : 20;
    setvbuf(stdout, NULL, _IOLBF, 0);

    size_t size = 3 * PAGE + 100;
    int shmid = shmget(key_of(key, 0), size, IPC_CREAT | IPC_EXCL | 0640);
    semid = semget(key_of(key, 1), 3, IPC_CREAT | IPC_EXCL | 0600);
    int q = msgget(key_of(key, 2), IPC_CREAT | IPC_EXCL | 0620);
    int spare = shmget(key_of(key, 3), 2 * PAGE, IPC_CREAT | IPC_EXCL | 0600);
    if (shmid < 0 || semid < 0 || q < 0 || spare < 0) {
        perror("get");
        return 1;
    }
    fprintf(stderr, "ids: shm %d sem %d msg %d spare %d\n", shmid, semid, q, spare);
    // A note in the second page of the spare segment, detached until the end.
    char *note = shmat(spare, NULL, 0);
    if (note == (void *)-1) {
        perror("shmat");
        return 1;
    }
    snprintf(note + PAGE, 64, "note of %d items", items);
    shmdt(note);
    unsigned short init[3] = {1, 0, SLOTS};
    if (semctl(semid, 0, SETALL, init) != 0) {
        perror("semctl");
        return 1;
    }
    struct ring *r = shmat(shmid, NULL, 0);
    if (r == (void *)-1) {
        perror("shmat");
        return 1;
    }
    if (rmid) shmctl(shmid, IPC_RMID, NULL);
    // Past the ring, a page the producer fills and the consumer checks.
    unsigned char *page = (unsigned char *)r + 2 * PAGE;
    memset(page, 0x5a, PAGE);
    printf("objects made\n");

    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        long total = 0;
        for (int i = 0; i < items; i++) {
            op(ITEMS, -1);
            op(MUTEX, -1);
            long v = r->buf[r->tail % SLOTS];
            r->tail++;
            op(MUTEX, 1);
            op(FREE, 1);
            total += v;
            printf("consumer: item %d value %ld byte %d\n", i, v, page[i % PAGE]);
            if (i >= LAG) receive(q, i);
        }
        for (int i = items < LAG ? 0 : items - LAG; i < items; i++) receive(q, items);
        printf("consumer: total %ld\n", total);
        shmdt(r);
        return 0;
    }
    for (int i = 0; i < items; i++) {
        long v = (long)(i * 2654435761u % 1000003u);
        page[i % PAGE] = (unsigned char)(i * 13);
        struct msg m = {1 + i % 3, ""};
        snprintf(m.text, sizeof m.text, "item %d is %ld", i, v);
        if (msgsnd(q, &m, strlen(m.text) + 1, 0) != 0) {
            printf("msgsnd failed: %s\n", strerror(errno));
            return 1;
        }
        op(FREE, -1);
        op(MUTEX, -1);
        r->buf[r->head % SLOTS] = v;
        r->head++;
        op(MUTEX, 1);
        op(ITEMS, 1);
        sleep_ms(pause_ms);
    }
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    printf("producer: consumer exited with %d after %u items\n",
           WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), r->tail);
    shmdt(r);
    note = shmat(spare, NULL, SHM_RDONLY);
    if (note == (void *)-1) {
        printf("shmat of the note failed: %s\n", strerror(errno));
        return 1;
    }
    printf("producer: %s\n", note + PAGE);
    shmdt(note);
    shmctl(spare, IPC_RMID, NULL);
    if (!rmid) shmctl(shmid, IPC_RMID, NULL);
    semctl(semid, 0, IPC_RMID);
    msgctl(q, IPC_RMID, NULL);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
