// An interactive bash (job control on) on a pseudo-terminal the program makes: a pipeline sent to the background, jobs, a foreground pipeline interrupted by Ctrl-C, fg, a job stopped by Ctrl-Z that stays stopped until fg, stty and tty; prints the transcript.
//
// usage: pty_bash [BASH]
//        pty_bash nap     (the job it stops: prints, sleeps 2 s, prints)
//
// The driver opens /dev/ptmx, makes a pipe, and runs `bash --norc
// --noprofile --noediting -i` on the slave (its controlling terminal) with
// the pipe's read end as fd 3. It types one command at a time, each when
// bash's prompt for it has appeared, and prints everything it reads from
// the master (carriage returns dropped; the pid in bash's "[1] 1234"
// replaced by PID, so that runs compare). It waits a while before Ctrl-C
// (a foreground pipeline runs meanwhile) and before `fg` (a background
// pipeline waits for the driver's pipe meanwhile), then feeds the pipe. A
// job stopped by Ctrl-Z must stay stopped (it would print "woke up" early)
// while the driver waits before its fg.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int master;
static char seen[1 << 20];
static size_t n_seen, n_printed;

static void die(const char *what) {
    dprintf(1, "error: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Print the complete lines not printed yet (all of it at the end). */
static void print_lines(int all) {
    for (;;) {
        char *start = seen + n_printed;
        char *nl = memchr(start, '\n', n_seen - n_printed);
        size_t len = nl ? (size_t)(nl - start) + 1 : (all ? n_seen - n_printed : 0);
        if (len == 0)
            return;
        char line[4096];
        size_t k = len < sizeof line - 1 ? len : sizeof line - 1;
        memcpy(line, start, k);
        line[k] = 0;
        int job;
        long pid;
        char rest;
        if (sscanf(line, "[%d] %ld%c", &job, &pid, &rest) == 3 && rest == '\n')
            snprintf(line, sizeof line, "[%d] PID\n", job);
        dprintf(1, "%s", line);
        n_printed += len;
    }
}

/* Read what bash says; false at its end. */
static int take(int ms) {
    struct pollfd p = {master, POLLIN, 0};
    int r = poll(&p, 1, ms);
    if (r < 0 && errno != EINTR)
        die("poll");
    if (r <= 0)
        return 1;
    char buf[4096];
    ssize_t n = read(master, buf, sizeof buf);
    if (n <= 0)
        return 0; /* EIO: every slave is closed */
    for (ssize_t i = 0; i < n && n_seen < sizeof seen - 1; i++)
        if (buf[i] != '\r')
            seen[n_seen++] = buf[i];
    print_lines(0);
    return 1;
}

static size_t count(const char *needle) {
    size_t c = 0, len = strlen(needle);
    seen[n_seen] = 0;
    for (char *p = seen; (p = memmem(p, seen + n_seen - p, needle, len)); p += len)
        c++;
    return c;
}

/* Wait until `needle` has appeared `times` times. */
static void until(const char *needle, size_t times) {
    while (count(needle) < times)
        if (!take(1000))
            die("bash ended early");
}

static size_t prompts;

/* Type a command once bash has printed its prompt for it. */
static void type(const char *cmd) {
    until("]$ ", ++prompts);
    size_t n = strlen(cmd);
    if (write(master, cmd, n) != (ssize_t)n)
        die("write");
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "nap") == 0) {
        /* The job bash stops with Ctrl-Z: one process, that prints. */
        dprintf(1, "going\n");
        sleep_ms(2000);
        dprintf(1, "woke up\n");
        return 0;
    }
    const char *bash = argc > 1 ? argv[1] : "/bin/bash";
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len < 0)
        die("readlink");
    self[len] = 0;
    int feed[2];
    if (pipe(feed) < 0)
        die("pipe");
    master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0)
        die("posix_openpt");
    char slave[64];
    if (ptsname_r(master, slave, sizeof slave) != 0)
        die("ptsname");
    struct winsize ws = {24, 80, 0, 0};
    ioctl(master, TIOCSWINSZ, &ws);
    pid_t sh = fork();
    if (sh < 0)
        die("fork");
    if (sh == 0) {
        setsid();
        int s = open(slave, O_RDWR);
        if (s < 0)
            die("open slave");
        ioctl(s, TIOCSCTTY, 0);
        dup2(s, 0);
        dup2(s, 1);
        dup2(s, 2);
        dup2(feed[0], 3);
        close(s);
        close(master);
        if (feed[0] != 3)
            close(feed[0]);
        close(feed[1]);
        setenv("PS1", "[\\#]$ ", 1);
        setenv("PS2", "> ", 1);
        setenv("TERM", "dumb", 1);
        setenv("HISTFILE", "", 1);
        setenv("NAP", self, 1);
        execl(bash, "bash", "--norc", "--noprofile", "--noediting", "-i", (char *)NULL);
        die("exec bash");
    }
    close(feed[0]);
    type("T0=$(tty); echo start $((6 * 7))\n");
    type("cat <&3 | tr a-z A-Z &\n");
    type("jobs; echo background job listed\n");
    until("background job listed\n", 2); /* its echo, then its output */
    sleep_ms(1500);
    type("sh -c 'echo ready; exec sleep 100' | cat\n");
    until("ready\n", 1);
    sleep_ms(1500);
    if (write(master, "\003", 1) != 1)
        die("write");
    type("fg\n");
    until("tr a-z A-Z\n", 1); /* fg shows the job's command */
    sleep_ms(300);
    if (write(feed[1], "hello from the pipe\n", 20) != 20)
        die("write pipe");
    close(feed[1]);
    type("\"$NAP\" nap\n");
    until("going\n", 1);
    if (write(master, "\032", 1) != 1) /* Ctrl-Z */
        die("write");
    type("jobs; echo stopped job listed\n");
    until("stopped job listed\n", 2);
    sleep_ms(3000); /* a stopped job stays stopped */
    type("fg\n");
    type("jobs; echo no job left\n");
    type("stty -a\n");
    type("[ \"$(tty)\" = \"$T0\" ] && echo same terminal\n");
    type("exit\n");
    while (take(1000)) {
    }
    print_lines(1);
    int status;
    while (waitpid(sh, &status, 0) < 0 && errno == EINTR) {
    }
    dprintf(1, "driver: bash exited with status %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}
