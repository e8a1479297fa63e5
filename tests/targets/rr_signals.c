// Exercises signals: SIGALRM waking pause(), a handled SIGSEGV left by siglongjmp, SIGCHLD, raise(SIGUSR1).
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* The exit status, not 0, so a test sees that replay carries it over. */
#define EXIT_STATUS 3

static volatile sig_atomic_t alarms, sigchlds, usr1s;
static volatile sig_atomic_t segv_at_expected_address;
static void *volatile expected_fault_address;
static sigjmp_buf after_fault;

static void on_alarm(int sig) {
    (void)sig;
    alarms++;
}

static void on_chld(int sig) {
    (void)sig;
    sigchlds++;
}

static void on_usr1(int sig) {
    (void)sig;
    usr1s++;
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    (void)sig;
    (void)context;
    segv_at_expected_address = info->si_addr == expected_fault_address;
    siglongjmp(after_fault, 1);
}

static void handle(int sig, void (*handler)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("rr_signals: alarm, segv, sigchld, raise\n");

    /* SIGALRM interrupts pause() (no SA_RESTART). */
    handle(SIGALRM, on_alarm, 0);
    alarm(1);
    int r = pause();
    int e = errno;
    printf("alarm: pause returned %d (%s), alarms %d\n", r, r == -1 ? strerror(e) : "no error",
           (int)alarms);

    /* SIGSEGV on a page that was just unmapped, handled, left with siglongjmp. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
    long page = sysconf(_SC_PAGESIZE);
    char *hole = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (hole == MAP_FAILED) {
        printf("mmap: %s\n", strerror(errno));
        return 1;
    }
    munmap(hole, (size_t)page);
    expected_fault_address = hole + 123;
    volatile int survived = 0;
    if (sigsetjmp(after_fault, 1) == 0) {
        *(volatile char *)(hole + 123) = 'x';
        printf("segv: the write to an unmapped page did not fault\n");
    } else {
        survived = 1;
    }
    printf("segv: caught and left by siglongjmp: %s, fault address as expected: %s\n",
           survived ? "yes" : "no", segv_at_expected_address ? "yes" : "no");

    /* SIGCHLD from a child that exits at once; the child prints nothing. */
    handle(SIGCHLD, on_chld, SA_RESTART);
    pid_t child = fork();
    if (child < 0) {
        printf("fork: %s\n", strerror(errno));
        return 1;
    }
    if (child == 0)
        _exit(42);
    int status = 0;
    pid_t waited;
    do
        waited = waitpid(child, &status, 0);
    while (waited == -1 && errno == EINTR);
    printf("sigchld: waitpid found the child: %s, exited %s with status %d, sigchld arrived %d time(s)\n",
           waited == child ? "yes" : "no", WIFEXITED(status) ? "normally" : "abnormally",
           WIFEXITED(status) ? WEXITSTATUS(status) : -1, (int)sigchlds);

    /* A signal sent to itself is handled before raise() returns. */
    handle(SIGUSR1, on_usr1, 0);
    raise(SIGUSR1);
    raise(SIGUSR1);
    printf("raise: SIGUSR1 handled %d time(s)\n", (int)usr1s);

    printf("done, exiting with status %d\n", EXIT_STATUS);
    return EXIT_STATUS;
}
