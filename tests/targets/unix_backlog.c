// Connections a unix listener has not accepted yet: after a restart they are still there, in order.
//
// usage: unix_backlog PATH K: the parent listens on PATH and forks a client, which connects K
// times in a row and then, connection by connection, waits for the server's greeting, prints it
// with its own names, answers "ack I" and prints the server's "bye". The server accepts one
// connection every 250 ms (the others wait in its queue, the client having sent nothing on them
// yet), greets it with the names it sees, reads the ack and says bye. Only the client prints, and
// the parent prints "done" once the client has exited.
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
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

static void show(const struct sockaddr_un *a, socklen_t len, char *out, size_t size) {
    size_t n = len > offsetof(struct sockaddr_un, sun_path)
                   ? len - offsetof(struct sockaddr_un, sun_path)
                   : 0;
    if (n == 0)
        snprintf(out, size, "(unnamed)");
    else
        snprintf(out, size, "%s", a->sun_path);
}

static void names(int fd, char *out, size_t size) {
    struct sockaddr_un a, b;
    socklen_t la = sizeof a, lb = sizeof b;
    char x[128], y[128];
    if (getsockname(fd, (struct sockaddr *)&a, &la) != 0)
        snprintf(x, sizeof x, "error %d", errno);
    else
        show(&a, la, x, sizeof x);
    if (getpeername(fd, (struct sockaddr *)&b, &lb) != 0)
        snprintf(y, sizeof y, "(none: %s)", strerror(errno));
    else
        show(&b, lb, y, sizeof y);
    snprintf(out, size, "local=%s peer=%s", x, y);
}

// One line (up to '\n'), without it; -1 at the end of the stream.
static int read_line(int fd, char *buf, size_t size) {
    size_t n = 0;
    for (;;) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        if (c == '\n' || n + 1 >= size)
            break;
        buf[n++] = c;
    }
    buf[n] = 0;
    return (int)n;
}

static void write_all(int fd, const char *s) {
    size_t len = strlen(s), off = 0;
    while (off < len) {
        ssize_t w = write(fd, s + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("write");
        off += (size_t)w;
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        dprintf(2, "usage: unix_backlog PATH K\n");
        return 2;
    }
    const char *path = argv[1];
    int k = atoi(argv[2]);
    if (k < 1 || k > 64)
        return 2;
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr.sun_path)
        die("path too long");
    strcpy(addr.sun_path, path);
    unlink(path);
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(l, 64) != 0)
        die("listen");
    pid_t kid = fork();
    if (kid < 0)
        die("fork");
    if (kid == 0) {
        close(l);
        int fds[64];
        for (int i = 0; i < k; i++) {
            fds[i] = socket(AF_UNIX, SOCK_STREAM, 0);
            if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&addr, sizeof addr) != 0)
                die("connect");
        }
        char buf[512], view[300];
        for (int i = 0; i < k; i++) {
            if (read_line(fds[i], buf, sizeof buf) < 0)
                die("no greeting");
            names(fds[i], view, sizeof view);
            dprintf(1, "client: connection %d got \"%s\" (client %s)\n", i, buf, view);
            char ack[32];
            snprintf(ack, sizeof ack, "ack %d\n", i);
            write_all(fds[i], ack);
            if (read_line(fds[i], buf, sizeof buf) < 0)
                die("no bye");
            dprintf(1, "client: connection %d: %s\n", i, buf);
            close(fds[i]);
        }
        return 0;
    }
    for (int n = 0; n < k; n++) {
        sleep_ms(250);
        int c = accept(l, NULL, NULL);
        if (c < 0)
            die("accept");
        char view[300], buf[512];
        names(c, view, sizeof view);
        snprintf(buf, sizeof buf, "hello %d, server %s\n", n, view);
        write_all(c, buf);
        char ack[64];
        if (read_line(c, ack, sizeof ack) < 0)
            die("no ack");
        snprintf(buf, sizeof buf, "bye %d after \"%s\"\n", n, ack);
        write_all(c, buf);
        close(c);
    }
    int status;
    while (waitpid(kid, &status, 0) < 0)
        if (errno != EINTR)
            die("waitpid");
    unlink(path);
    dprintf(1, "done (client status %d)\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}
