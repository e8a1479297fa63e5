// Bytes held in flight in ptys the program made, while it waits: complete lines, a line ended by EOF, a bare EOF, an escaped special character and a partial line for a canonical reader, raw bytes (signal characters included) for a raw one, output (echo and processed newlines) for the masters' readers, in packet mode too; then it reads them all back and prints what it got, with the ptys' settings.
//
// usage: pty_queues GO_FILE
//
// Three ptys: A (canonical, echo on, exclusive mode), B (raw, packet mode
// on the master), C (never unlocked). The program types into A's and B's
// masters and writes to their slaves, so bytes wait both ways, prints
// "holding", and waits until GO_FILE exists. Then it reads everything
// (completing A's partial line first) and prints each read, escaped, and
// what it sees of each pty's settings.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
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

static int new_pty(int unlock, int *slave) {
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0 || grantpt(m) < 0)
        die("posix_openpt");
    if (unlock) {
        if (unlockpt(m) < 0)
            die("unlockpt");
        *slave = open(ptsname(m), O_RDWR | O_NOCTTY | O_NONBLOCK);
        if (*slave < 0)
            die("open slave");
    }
    return m;
}

static void put(int fd, const char *s, size_t n) {
    if (write(fd, s, n) != (ssize_t)n)
        die("write");
}

static void show(const char *what, const char *buf, ssize_t n) {
    char out[8192];
    size_t k = 0;
    for (ssize_t i = 0; i < n && k < sizeof out - 8; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c >= 32 && c < 127 && c != '\\')
            out[k++] = (char)c;
        else
            k += (size_t)snprintf(out + k, 8, "\\x%02x", c);
    }
    out[k] = 0;
    dprintf(1, "%s %zd: %s\n", what, n, out);
}

/* Everything a non-blocking descriptor gives, until nothing more comes
 * for a while: each read shown (a canonical reader gets one line per read),
 * or all of it at once (`whole`; a packet-mode master's reads each start
 * with a header, 0 for data, left out). */
static void read_all(const char *what, int fd, int whole, int packet) {
    static char all[1 << 16];
    size_t n_all = 0;
    char buf[8192];
    for (int reads = 0; reads < 1000; reads++) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EAGAIN) {
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, 200) > 0)
                continue;
            break;
        }
        if (n < 0)
            die("read");
        char *data = buf;
        if (packet && n > 0) {
            if (buf[0] != 0)
                dprintf(1, "%s: packet status %#x\n", what, buf[0]);
            data++;
            n--;
        }
        if (whole) {
            memcpy(all + n_all, data, (size_t)n);
            n_all += (size_t)n;
        } else {
            show(what, data, n); /* 0 bytes: an EOF */
        }
    }
    if (whole)
        show(what, all, (ssize_t)n_all);
}

static void settings(const char *what, int fd) {
    struct termios t;
    struct winsize ws = {0};
    int excl = -1, lock = -1;
    tcgetattr(fd, &t);
    ioctl(fd, TIOCGWINSZ, &ws);
    ioctl(fd, TIOCGEXCL, &excl);
    dprintf(1, "%s: iflag %o oflag %o lflag %o cc %d %d %d %d %d window %dx%d excl %d", what,
            t.c_iflag, t.c_oflag, t.c_lflag, t.c_cc[VEOF], t.c_cc[VERASE], t.c_cc[VLNEXT],
            t.c_cc[VMIN], t.c_cc[VTIME], ws.ws_row, ws.ws_col, excl);
    if (ioctl(fd, TIOCGPTLCK, &lock) == 0)
        dprintf(1, " locked %d", lock);
    dprintf(1, "\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        dprintf(1, "usage: pty_queues GO_FILE\n");
        return 2;
    }
    int sa, sb, sc = -1;
    int a = new_pty(1, &sa), b = new_pty(1, &sb), c = new_pty(0, &sc);
    fcntl(a, F_SETFL, O_NONBLOCK);
    fcntl(b, F_SETFL, O_NONBLOCK);
    struct winsize wa = {40, 132, 0, 0}, wc = {7, 9, 0, 0};
    ioctl(a, TIOCSWINSZ, &wa);
    ioctl(c, TIOCSWINSZ, &wc);
    /* A: canonical, echo (control characters as ^X), exclusive. */
    struct termios t;
    tcgetattr(sa, &t);
    t.c_lflag |= ICANON | ECHO | ECHOCTL | ISIG | IEXTEN;
    t.c_iflag |= ICRNL;
    t.c_oflag |= OPOST | ONLCR;
    t.c_cc[VEOL] = '#';
    tcsetattr(sa, TCSANOW, &t);
    ioctl(sa, TIOCEXCL);
    /* B: raw, packet mode on the master. */
    tcgetattr(sb, &t);
    cfmakeraw(&t);
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    tcsetattr(sb, TCSANOW, &t);
    int one = 1;
    ioctl(b, TIOCPKT, &one);
    /* Input for A's reader: lines (one ended by EOL, one by CR), an erase, a
     * line ended by EOF, a bare EOF, a literal ^D and EOL escaped by ^V, and
     * a partial line. */
    static const char in_a[] = "first line\ncr line\rtypo\x7fo!\nhash ends#"
                               "eof ended\x04\x04" "esc a\x16\x04" "b\x16#c\n"
                               "tab\there\npartial li";
    /* Output for A's master reader, then the echo of the input (written
     * after: the echo comes when the line discipline takes the input). */
    put(sa, "out 1\nout 2\tend\n", 16);
    put(a, in_a, sizeof in_a - 1);
    /* B both ways: raw bytes, signal characters and NULs included. */
    static const char in_b[] = "raw\003\032\000\177\r\n!", out_b[] = "from b\n\000\377";
    put(b, in_b, sizeof in_b - 1);
    put(sb, out_b, sizeof out_b - 1);
    /* C: nothing can be opened on it; its master takes input anyway. */
    put(c, "locked in\n", 10);
    dprintf(1, "holding\n");
    while (access(argv[1], F_OK) != 0)
        sleep_ms(10);
    dprintf(1, "going on\n");
    put(a, "ne\n", 3);
    read_all("a reads", sa, 0, 0);
    read_all("a master got", a, 1, 0);
    read_all("b got", sb, 1, 0);
    read_all("b master got", b, 1, 1);
    settings("a", sa);
    settings("b", sb);
    settings("c", c);
    int fresh = open(ptsname(c), O_RDWR | O_NOCTTY);
    dprintf(1, "c slave opens: %s\n", fresh < 0 ? strerror(errno) : "yes");
    return 0;
}
