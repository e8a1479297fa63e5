// TCP connections a listener has not accepted yet: after a restart they are still there, in order,
// from the same client addresses.
//
// usage: tcp_backlog ADDR K: the parent listens on ADDR (127.0.0.1, ::1) on a port the kernel
// picks and forks a client, which connects K times in a row and then, connection by connection,
// waits for the server's greeting, checks it and prints it, answers "ack I" and prints the
// server's "bye". The server accepts one connection every 250 ms (the others wait in its queue,
// the client having sent nothing on them yet) and greets it with the address accept() reported;
// the client checks that this is its socket's address and that its peer is the listener. Only the
// client prints, and the parent prints "done" once the client has exited.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

static void show(const struct sockaddr_storage *a, char *out, size_t size) {
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const void *)a;
        inet_ntop(AF_INET, &s->sin_addr, ip, sizeof ip);
        port = ntohs(s->sin_port);
    } else {
        const struct sockaddr_in6 *s = (const void *)a;
        inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof ip);
        port = ntohs(s->sin6_port);
    }
    snprintf(out, size, "%s/%d", ip, port);
}

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
        dprintf(2, "usage: tcp_backlog ADDR K\n");
        return 2;
    }
    int k = atoi(argv[2]);
    if (k < 1 || k > 64)
        return 2;
    int family = strchr(argv[1], ':') ? AF_INET6 : AF_INET;
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof addr);
    socklen_t alen;
    if (family == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)&addr;
        s->sin_family = AF_INET;
        if (inet_pton(AF_INET, argv[1], &s->sin_addr) != 1)
            die("inet_pton");
        alen = sizeof *s;
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&addr;
        s->sin6_family = AF_INET6;
        if (inet_pton(AF_INET6, argv[1], &s->sin6_addr) != 1)
            die("inet_pton");
        alen = sizeof *s;
    }
    int l = socket(family, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&addr, alen) != 0 || listen(l, 64) != 0)
        die("listen");
    socklen_t got = sizeof addr;
    if (getsockname(l, (struct sockaddr *)&addr, &got) != 0)
        die("getsockname");
    char listener[80];
    show(&addr, listener, sizeof listener);
    pid_t kid = fork();
    if (kid < 0)
        die("fork");
    if (kid == 0) {
        close(l);
        int fds[64];
        for (int i = 0; i < k; i++) {
            fds[i] = socket(family, SOCK_STREAM, 0);
            if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&addr, alen) != 0)
                die("connect");
        }
        char buf[512];
        for (int i = 0; i < k; i++) {
            if (read_line(fds[i], buf, sizeof buf) < 0)
                die("no greeting");
            struct sockaddr_storage me, peer;
            socklen_t lm = sizeof me, lp = sizeof peer;
            char mine[80] = "?", theirs[80] = "?";
            if (getsockname(fds[i], (struct sockaddr *)&me, &lm) == 0)
                show(&me, mine, sizeof mine);
            if (getpeername(fds[i], (struct sockaddr *)&peer, &lp) == 0)
                show(&peer, theirs, sizeof theirs);
            int n = -1;
            char seen[80] = "";
            sscanf(buf, "hello %d, you are %79s", &n, seen);
            dprintf(1, "client: connection %d got hello %d (server sees my address: %s, my peer is the listener: %s)\n",
                    i, n, strcmp(seen, mine) == 0 ? "yes" : "NO", strcmp(theirs, listener) == 0 ? "yes" : "NO");
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
        struct sockaddr_storage from;
        socklen_t fl = sizeof from;
        int c = accept(l, (struct sockaddr *)&from, &fl);
        if (c < 0)
            die("accept");
        char view[80], buf[512];
        show(&from, view, sizeof view);
        snprintf(buf, sizeof buf, "hello %d, you are %s\n", n, view);
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
    dprintf(1, "done (client status %d)\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}
