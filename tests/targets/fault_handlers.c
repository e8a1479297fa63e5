// Exercises SIGSEGV, SIGTRAP and SIGILL handlers that programs rely on (a JVM's safepoints are SIGSEGVs), in two threads, across checkpoints.
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#define ROUNDS 30

static char *guard[2]; /* one PROT_NONE page per thread */
static volatile sig_atomic_t segv[2], trap[2], ill[2];
static __thread int me;

static void on_segv(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    /* Only the page this thread touched on purpose: anything else is a real crash. */
    if ((char *)si->si_addr < guard[me] || (char *)si->si_addr >= guard[me] + 4096) {
        signal(SIGSEGV, SIG_DFL);
        return;
    }
    segv[me]++;
    mprotect(guard[me], 4096, PROT_READ | PROT_WRITE);
}

static void on_trap(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)si;
    (void)uc;
    trap[me]++;
}

static void on_ill(int sig, siginfo_t *si, void *ucv) {
    (void)sig;
    (void)si;
    ucontext_t *uc = ucv;
    ill[me]++;
    uc->uc_mcontext.gregs[REG_RIP] += 2; /* past the ud2 */
}

/* One of each fault; the handlers must have run once each. */
static int faults(void) {
    int before = segv[me] + trap[me] + ill[me];
    mprotect(guard[me], 4096, PROT_NONE);
    guard[me][8] = 1; /* SIGSEGV, then the store succeeds */
    __asm__ volatile("int3");
    __asm__ volatile("ud2");
    return segv[me] + trap[me] + ill[me] - before;
}

static void *worker(void *arg) {
    (void)arg;
    me = 1;
    for (int i = 0; i < ROUNDS; i++) {
        if (faults() != 3)
            return (void *)1;
        usleep(20000);
    }
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sa.sa_sigaction = on_segv;
    sigaction(SIGSEGV, &sa, NULL);
    sa.sa_sigaction = on_trap;
    sigaction(SIGTRAP, &sa, NULL);
    sa.sa_sigaction = on_ill;
    sigaction(SIGILL, &sa, NULL);
    for (int i = 0; i < 2; i++)
        guard[i] = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    for (int i = 0; i < ROUNDS; i++) {
        int got = faults();
        printf("round %2d: %d of 3 faults handled (main: segv %d trap %d ill %d)\n", i, got,
               (int)segv[0], (int)trap[0], (int)ill[0]);
        usleep(50000);
    }
    void *ret;
    pthread_join(t, &ret);
    printf("worker: segv %d trap %d ill %d, %s\n", (int)segv[1], (int)trap[1], (int)ill[1],
           ret ? "a fault went unhandled" : "all handled");
    return ret != NULL;
}
