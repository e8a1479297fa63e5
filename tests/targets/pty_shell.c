// A pseudo-terminal made by the program: a child leads a session whose controlling terminal it is and runs a foreground job (a process group of its own) that answers requests typed on it, with requests, echo and replies in flight both ways, partial lines, EOF, canonical and raw modes, Ctrl-C and window size changes; only the parent (the driver, holding the master) prints.
//
// usage: pty_shell N
//
// The parent opens /dev/ptmx and forks the "shell": it calls setsid, opens
// the slave (its controlling terminal now), and forks the "job" into a
// process group of its own, which it makes the terminal's foreground. The
// job reads requests on the terminal (slowly) and answers each with one
// write; the parent types requests in two pieces each, keeps four ahead,
// and reads the answers slowly, printing each. In canonical mode echo is on
// (output processing off, so an answer is one piece of output); the parent
// checks at the end that what was echoed is exactly what it typed there. In
// raw mode (no echo, output processing on) requests are 6-byte records. A
// Ctrl-C typed on the terminal must reach the job (the foreground), and so
// must a SIGWINCH when the parent changes the window size. When the job
// ends, the shell takes the foreground back and answers a last line. Every
// answer says what the job or shell sees of its terminal (controlling
// terminal, foreground, window size).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    dprintf(1, "error: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void write_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die("write");
        }
        buf += w;
        n -= (size_t)w;
    }
}

/* ---- the job and the shell, on the slave ---- */

static volatile sig_atomic_t got_int, got_winch;
static void on_int(int sig) { (void)sig; got_int++; }
static void on_winch(int sig) { (void)sig; got_winch++; }

/* What a process sees of its terminal. */
static void facts(char *out, size_t size) {
    struct winsize ws = {0};
    ioctl(0, TIOCGWINSZ, &ws);
    int ctty = 0, same = 0;
    int t = open("/dev/tty", O_RDWR | O_NOCTTY);
    if (t >= 0) {
        unsigned a = 0, b = 1; /* the device behind /dev/tty and behind fd 0 */
        ctty = 1;
        same = ioctl(t, TIOCGDEV, &a) == 0 && ioctl(0, TIOCGDEV, &b) == 0 && a == b;
        close(t);
    }
    snprintf(out, size, "leader=%d fg=%d ctty=%d sameterm=%d window=%dx%d",
             getsid(0) == getpid(), tcgetpgrp(0) == getpgrp(), ctty, same, ws.ws_row,
             ws.ws_col);
}

static void say(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    write_all(1, buf, (size_t)n); /* one write: one piece of output */
}

static long decode(const char *letters) {
    long v = 0;
    for (const char *p = letters; *p >= 'A' && *p <= 'P'; p++)
        v = v * 16 + (*p - 'A');
    return v;
}

static void job(void) {
    struct termios canon, raw;
    tcgetattr(0, &canon);
    raw = canon;
    raw.c_lflag &= ~(ICANON | ECHO | ISIG);
    raw.c_oflag |= OPOST | ONLCR;
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    int in_raw = 0;
    sigset_t block, open_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGWINCH);
    sigprocmask(SIG_BLOCK, &block, &open_mask);
    sigdelset(&open_mask, SIGINT);
    sigdelset(&open_mask, SIGWINCH);
    struct sigaction sa = {0};
    sa.sa_handler = on_int;
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_winch;
    sigaction(SIGWINCH, &sa, NULL);
    char buf[4096], f[256];
    for (;;) {
        sleep_ms(25);
        if (got_int) {
            got_int = 0;
            say("job: interrupted\n");
        }
        if (got_winch) {
            got_winch = 0;
            facts(f, sizeof f);
            say("job: window changed, %s\n", f);
        }
        struct pollfd p = {0, POLLIN, 0};
        int r = ppoll(&p, 1, NULL, &open_mask);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            die("ppoll");
        if (in_raw) {
            size_t have = 0;
            while (have < 6) {
                ssize_t n = read(0, buf + have, 6 - have);
                if (n <= 0)
                    die("read raw");
                have += (size_t)n;
            }
            buf[6] = 0;
            if (buf[0] == 'C') {
                tcsetattr(0, TCSANOW, &canon);
                in_raw = 0;
                say("mode canonical\n");
            } else {
                long k = atol(buf + 1);
                say("raw %ld = %ld\n", k, 3 * k + 7);
            }
            continue;
        }
        ssize_t n = read(0, buf, sizeof buf - 1);
        if (n < 0)
            die("read");
        if (n == 0) {
            say("got eof\n");
            continue;
        }
        buf[n] = 0;
        if (buf[n - 1] != '\n') {
            say("got unterminated %s\n", buf);
            continue;
        }
        buf[n - 1] = 0;
        if (buf[0] == 'X') {
            long k = decode(buf + 1);
            say("rep %ld = %ld\n", k, k * k + 1);
        } else if (strcmp(buf, "INFO") == 0) {
            facts(f, sizeof f);
            say("info job %s\n", f);
        } else if (strcmp(buf, "RAW") == 0) {
            tcsetattr(0, TCSANOW, &raw);
            in_raw = 1;
            say("mode raw\n");
        } else if (strcmp(buf, "QUIT") == 0) {
            say("job: bye\n");
            exit(0);
        } else {
            say("unknown %s\n", buf);
        }
    }
}

static void shell(const char *slave) {
    if (setsid() < 0)
        die("setsid");
    int s = open(slave, O_RDWR); /* a session leader's first terminal */
    if (s < 0)
        die("open slave");
    ioctl(s, TIOCSCTTY, 0);
    dup2(s, 0);
    dup2(s, 1);
    dup2(s, 2);
    if (s > 2)
        close(s);
    struct termios t;
    tcgetattr(0, &t);
    t.c_lflag |= ICANON | ECHO | ISIG | NOFLSH;
    t.c_lflag &= ~ECHOCTL;
    t.c_oflag &= ~OPOST;
    tcsetattr(0, TCSANOW, &t);
    signal(SIGTTOU, SIG_IGN);
    pid_t j = fork();
    if (j < 0)
        die("fork job");
    if (j == 0) {
        setpgid(0, 0);
        tcsetpgrp(0, getpgrp());
        signal(SIGTTOU, SIG_DFL);
        job();
    }
    setpgid(j, j);
    tcsetpgrp(0, j);
    int status;
    while (waitpid(j, &status, 0) < 0 && errno == EINTR) {
    }
    tcsetpgrp(0, getpgrp());
    char f[256], buf[256];
    facts(f, sizeof f);
    say("shell: job ended with status %d, %s\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1, f);
    ssize_t n = read(0, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    say("shell: bye after %zd bytes\n", n);
    exit(0);
}

/* ---- the driver, on the master ---- */

static int master;
static char typed[1 << 16], echoed[1 << 16]; /* in echo phases */
static size_t n_typed, n_echoed;
static int echo_on = 1;
static char reply[1024];
static size_t n_reply;
static int outstanding, replies;

/* Type `s` on the terminal, in two pieces. */
static void type(const char *s) {
    size_t n = strlen(s), half = n / 2;
    if (echo_on) {
        for (size_t i = 0; i < n; i++)
            if (s[i] != 4) /* EOF is not echoed */
                typed[n_typed++] = s[i];
    }
    write_all(master, s, half);
    sleep_ms(4);
    write_all(master, s + half, n - half);
}

/* Read what is there (waiting for some), sort answers from echo. */
static void take(void) {
    char buf[4096];
    ssize_t n = read(master, buf, sizeof buf);
    if (n < 0)
        die("read master");
    for (ssize_t i = 0; i < n; i++) {
        char c = buf[i];
        /* An answer starts with a lowercase letter and ends with its newline
         * (one piece of output); everything else is echo. */
        if (n_reply > 0 || (c >= 'a' && c <= 'z')) {
            if (c == '\r')
                continue;
            reply[n_reply++] = c;
            if (c == '\n' || n_reply == sizeof reply - 1) {
                reply[n_reply] = 0;
                dprintf(1, "%s", reply);
                n_reply = 0;
                outstanding--;
                replies++;
            }
        } else {
            echoed[n_echoed++] = c;
        }
    }
}

static void wait_replies(int at_most) {
    while (outstanding > at_most) {
        sleep_ms(20);
        take();
    }
}

static void request(const char *s) {
    wait_replies(3);
    type(s);
    outstanding++;
}

static void letters(long k, char *out) {
    char tmp[32];
    int n = 0;
    do {
        tmp[n++] = (char)('A' + k % 16);
        k /= 16;
    } while (k);
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = 0;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 60;
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
        close(master);
        shell(slave);
    }
    /* Type nothing before the shell has set the terminal up: echo of a
     * newline under the default settings (output processing on) would be
     * "\r\n". The master's settings calls reach the slave's termios. */
    for (;;) {
        struct termios t;
        if (tcgetattr(master, &t) == 0 && !(t.c_oflag & OPOST) && (t.c_lflag & ECHO) &&
            !(t.c_lflag & ECHOCTL))
            break;
        sleep_ms(2);
    }
    char line[64];
    dprintf(1, "driver: started\n");
    for (int k = 0; k < n; k++) {
        letters(k, line + 1);
        line[0] = 'X';
        strcat(line, "\n");
        request(line);
        if (k % 10 == 5)
            request("INFO\n");
        if (k == n / 3) {
            request("TAIL\x04");
            request("\x04");
            wait_replies(0);
            type("\x03");
            outstanding++;
            wait_replies(0);
            ws.ws_row = (unsigned short)(30 + k);
            ws.ws_col = (unsigned short)(90 + k);
            ioctl(master, TIOCSWINSZ, &ws);
            outstanding++;
            wait_replies(0);
        }
        if (k == n / 2) {
            request("RAW\n");
            wait_replies(0);
            echo_on = 0;
            for (int r = 0; r < n / 2; r++) {
                snprintf(line, sizeof line, "R%05d", r);
                request(line);
            }
            request("C00000");
            wait_replies(0);
            echo_on = 1;
        }
    }
    request("INFO\n");
    request("QUIT\n");
    outstanding++; /* the shell's "job ended" */
    wait_replies(0);
    type("LAST\n");
    outstanding++;
    wait_replies(0);
    int status;
    while (waitpid(sh, &status, 0) < 0 && errno == EINTR) {
    }
    char now[64] = "";
    ptsname_r(master, now, sizeof now);
    struct winsize got = {0};
    ioctl(master, TIOCGWINSZ, &got);
    int same_echo = n_typed == n_echoed && memcmp(typed, echoed, n_typed) == 0;
    dprintf(1, "driver: %d answers, echo %s (%zu bytes typed, %zu echoed), slave %s, window %dx%d, shell status %d\n",
            replies, same_echo ? "as typed" : "DIFFERS", n_typed, n_echoed,
            strcmp(now, slave) == 0 ? "unchanged" : "CHANGED", got.ws_row, got.ws_col,
            WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}
