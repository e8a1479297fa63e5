// Syscall-buffer fixture: many small syscalls of the kinds `rewind record` takes through its
// in-process buffer (reads and writes of regular files, lseek, fstat, newfstatat, clock_gettime,
// gettimeofday, getpid, reads of /dev/urandom), mixed with pipe traffic (always traced).
//   sbuf_io DIR io N        one thread
//   sbuf_io DIR alarm N     the same under a SIGALRM every 200 us whose handler reads and writes
//   sbuf_io DIR threads N   4 threads doing it at once (a mutex around a shared sum)
//   sbuf_io DIR vfork N     N vfork children that make buffered calls in the parent's memory
// Prints checksums (deterministic) and clock, random and alarm-count lines (not deterministic).
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *dir;
static long n;
static volatile sig_atomic_t alarms;
static int alarm_fd = -1, urandom_fd = -1;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long shared_sum;

static void on_alarm(int sig) {
    (void)sig;
    alarms++;
    unsigned char b[8];
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (read(urandom_fd, b, sizeof b) == sizeof b && write(alarm_fd, b, sizeof b) != sizeof b)
        _exit(3);
}

static unsigned long work(int id, char *clock_line, size_t len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/data-%d.bin", dir, id);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror("open");
        exit(2);
    }
    // 4096 small writes, then read back in small pieces.
    for (int i = 0; i < 4096; i++) {
        unsigned char b[16];
        for (int j = 0; j < 16; j++)
            b[j] = (unsigned char)(i * 31 + j * 7 + id);
        if (write(fd, b, 16) != 16)
            exit(4);
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size != 4096 * 16)
        exit(5);
    if (stat(path, &st) != 0 || st.st_size != 4096 * 16)
        exit(6);
    int p[2];
    if (pipe(p) != 0)
        exit(7);
    unsigned long sum = 0;
    struct timespec last = {0, 0};
    for (long i = 0; i < n; i++) {
        unsigned char b[16];
        long off = (i * 48) % (4096 * 16 - 16);
        if (pread(fd, b, 16, off) != 16)
            exit(8);
        sum = sum * 33 + b[3] + b[11];
        if (i % 64 == 0) {
            if (lseek(fd, off, SEEK_SET) != off || read(fd, b, 16) != 16)
                exit(9);
            sum += b[0];
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            if (ts.tv_sec < last.tv_sec)
                exit(10);
            last = ts;
            struct timeval tv;
            gettimeofday(&tv, NULL);
            sum += (unsigned long)getpid() == (unsigned long)getpid();
        }
        if (i % 256 == 0) {
            // Pipe traffic (traced) between buffered calls.
            if (write(p[1], b, 16) != 16 || read(p[0], b, 16) != 16)
                exit(11);
            sum += b[5];
        }
    }
    close(p[0]);
    close(p[1]);
    close(fd);
    snprintf(clock_line, len, "clock %d: %ld.%09ld", id, (long)last.tv_sec, last.tv_nsec);
    return sum;
}

static void *thread_main(void *arg) {
    int id = (int)(long)arg;
    char line[128];
    unsigned long s = work(id, line, sizeof line);
    pthread_mutex_lock(&lock);
    shared_sum += s;
    printf("thread %d: sum %lu\n%s\n", id, s, line);
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: sbuf_io DIR io|alarm|threads N\n");
        return 2;
    }
    dir = argv[1];
    n = strtol(argv[3], 0, 10);
    urandom_fd = open("/dev/urandom", O_RDONLY);
    unsigned char r[8];
    if (urandom_fd < 0 || read(urandom_fd, r, sizeof r) != sizeof r)
        return 12;
    printf("random: %02x%02x%02x%02x%02x%02x%02x%02x\n", r[0], r[1], r[2], r[3], r[4], r[5], r[6],
           r[7]);
    if (strcmp(argv[2], "vfork") == 0) {
        long parent_sum = 0;
        for (long i = 0; i < n; i++) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            parent_sum += getpid() > 0;
            pid_t pid = vfork();
            if (pid == 0) {
                // In the parent's memory: buffered calls, then gone.
                clock_gettime(CLOCK_MONOTONIC, &ts);
                if (getpid() <= 0)
                    _exit(1);
                _exit(0);
            }
            int status = 0;
            if (pid < 0 || waitpid(pid, &status, 0) != pid || status != 0)
                return 13;
        }
        printf("vfork children: %ld\n", parent_sum);
        return 0;
    }
    if (strcmp(argv[2], "threads") == 0) {
        pthread_t t[4];
        for (long i = 0; i < 4; i++)
            pthread_create(&t[i], NULL, thread_main, (void *)i);
        for (int i = 0; i < 4; i++)
            pthread_join(t[i], NULL);
        printf("all: %lu\n", shared_sum);
        return 0;
    }
    if (strcmp(argv[2], "alarm") == 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/alarm.bin", dir);
        alarm_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm;
        sa.sa_flags = SA_RESTART;
        sigaction(SIGALRM, &sa, NULL);
        struct itimerval it = {{0, 200}, {0, 200}};
        setitimer(ITIMER_REAL, &it, NULL);
    }
    char line[128];
    unsigned long s = work(0, line, sizeof line);
    if (alarm_fd >= 0) {
        struct itimerval off = {{0, 0}, {0, 0}};
        setitimer(ITIMER_REAL, &off, NULL);
        printf("alarms: %d\n", (int)alarms);
    }
    printf("sum %lu\n%s\n", s, line);
    return 0;
}
