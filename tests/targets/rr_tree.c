/* A process tree for record/replay: the parent maps a shared counter
 * (MAP_SHARED anonymous) and a pipe, forks N workers that each add to
 * the counter under a spin lock held in the shared page, read the clock
 * and random bytes, and report through the pipe; one worker forks a
 * grandchild; the parent also runs a program through posix_spawn (vfork
 * and exec) and through fork + exec, then waits for everyone.
 *
 * Usage: rr_tree [workers] [rounds]
 * Prints every report (sorted by worker), the shared total and each exit
 * status; its output depends on the schedule only through values that
 * record/replay must reproduce (time, random bytes, pids). */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct shared {
    atomic_int lock;
    long total;
    long order[64];
    atomic_int next;
};

static void lock(struct shared *s) {
    int expected = 0;
    while (!atomic_compare_exchange_weak(&s->lock, &expected, 1)) {
        expected = 0;
    }
}

static void unlock(struct shared *s) { atomic_store(&s->lock, 0); }

static void worker(struct shared *s, int id, int rounds, int out) {
    unsigned char rnd[4] = {0};
    if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd) {
        _exit(100);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long local = 0;
    for (int r = 0; r < rounds; r++) {
        lock(s);
        s->total += id + 1;
        unlock(s);
        local += (r * 7 + id) % 13;
    }
    int slot = atomic_fetch_add(&s->next, 1);
    if (slot < 64) {
        s->order[slot] = id;
    }
    if (id == 0) {
        /* A grandchild. */
        pid_t g = fork();
        if (g == 0) {
            lock(s);
            s->total += 1000;
            unlock(s);
            _exit(7);
        }
        int st = 0;
        waitpid(g, &st, 0);
        local += WEXITSTATUS(st);
    }
    char line[160];
    int n = snprintf(line, sizeof line,
                     "worker %d pid %d local %ld rnd %02x%02x%02x%02x sec %ld\n", id,
                     (int)getpid(), local, rnd[0], rnd[1], rnd[2], rnd[3], (long)ts.tv_sec);
    if (write(out, line, n) != n) {
        _exit(101);
    }
    _exit(10 + id);
}

int main(int argc, char **argv) {
    int workers = argc > 1 ? atoi(argv[1]) : 3;
    int rounds = argc > 2 ? atoi(argv[2]) : 20000;
    if (workers < 1 || workers > 16) {
        fprintf(stderr, "rr_tree: 1 to 16 workers\n");
        return 2;
    }
    struct shared *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    memset(s, 0, sizeof *s);
    int p[2];
    if (pipe(p) != 0) {
        perror("pipe");
        return 1;
    }
    pid_t pids[16];
    for (int i = 0; i < workers; i++) {
        pids[i] = fork();
        if (pids[i] < 0) {
            perror("fork");
            return 1;
        }
        if (pids[i] == 0) {
            close(p[0]);
            worker(s, i, rounds, p[1]);
        }
    }
    close(p[1]);
    /* A program through posix_spawn (clone with CLONE_VM|CLONE_VFORK). */
    pid_t spawned;
    char *echo_argv[] = {"/bin/echo", "spawned", "echo", NULL};
    if (posix_spawn(&spawned, "/bin/echo", NULL, NULL, echo_argv, environ) != 0) {
        perror("posix_spawn");
        return 1;
    }
    /* And through fork + exec. */
    pid_t shell = fork();
    if (shell == 0) {
        execl("/bin/sh", "sh", "-c", "echo forked shell $((6 * 7))", (char *)NULL);
        _exit(127);
    }
    char buf[4096];
    size_t have = 0;
    ssize_t n;
    while ((n = read(p[0], buf + have, sizeof buf - 1 - have)) > 0) {
        have += n;
    }
    buf[have] = 0;
    int st = 0;
    waitpid(spawned, &st, 0);
    printf("spawned exit %d\n", WEXITSTATUS(st));
    waitpid(shell, &st, 0);
    printf("shell exit %d\n", WEXITSTATUS(st));
    for (int i = 0; i < workers; i++) {
        waitpid(pids[i], &st, 0);
        printf("worker %d exit %d\n", i, WEXITSTATUS(st));
    }
    /* Reports in worker order. */
    for (int i = 0; i < workers; i++) {
        char key[32];
        snprintf(key, sizeof key, "worker %d ", i);
        char *at = strstr(buf, key);
        if (at) {
            char *end = strchr(at, '\n');
            printf("%.*s\n", end ? (int)(end - at) : (int)strlen(at), at);
        }
    }
    printf("order");
    for (int i = 0; i < workers && i < 64; i++) {
        printf(" %ld", s->order[i]);
    }
    printf("\ntotal %ld\n", s->total);
    return 0;
}
