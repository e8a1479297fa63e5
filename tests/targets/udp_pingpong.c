// A UDP client and server (parent and child, or two programs) with datagrams always queued at
// both: after a restart every datagram arrives once, in order, from the same sender address.
//
// usage: udp_pingpong ADDR N [connected]: the parent binds the server's socket and its own to
// ADDR (127.0.0.1, ::1...) on ports the kernel picks, and forks the server. The client keeps 8
// requests outstanding: it sends 8, then reads each reply slowly and sends the next request. The
// server reads each request slowly, checks its sequence number, its payload and that recvfrom
// reports the client's address, and answers with what it found. The client checks each reply the
// same way (sequence, payload, sender: the server's address) and prints one line per reply, and
// every 10 replies whether its socket's names are still the first ones. With `connected` the
// client connects its socket to the server's and uses send/recv (recvfrom still reports the
// sender).
//
// usage: udp_pingpong ADDR N server SPORT CPORT | client SPORT CPORT: the server alone (bound to
// ADDR:SPORT, expecting its client at ADDR:CPORT; it exits at the client's "bye"), or the client
// alone (bound to ADDR:CPORT; it says hello until the server answers, then runs as above). After
// the client's ports, `connected` connects it to the server, `pause` makes it stop for 1.5 s
// after reply 19, with nothing in flight (it prints "client pauses" first).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WINDOW 8

static int family;
static int pause_at = -1;

static void die(const char *what) {
    dprintf(1, "error: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static socklen_t make_addr(const char *ip, int port, struct sockaddr_storage *a) {
    memset(a, 0, sizeof *a);
    if (family == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)a;
        s->sin_family = AF_INET;
        s->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, ip, &s->sin_addr) != 1)
            die("inet_pton");
        return sizeof *s;
    }
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)a;
    s->sin6_family = AF_INET6;
    s->sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, ip, &s->sin6_addr) != 1)
        die("inet_pton");
    return sizeof *s;
}

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
}

static int bound_socket(const char *ip, int port, struct sockaddr_storage *name) {
    int fd = socket(family, SOCK_DGRAM, 0);
    if (fd < 0)
        die("socket");
    struct sockaddr_storage a;
    socklen_t len = make_addr(ip, port, &a);
    if (bind(fd, (struct sockaddr *)&a, len) != 0)
        die("bind");
    socklen_t l = sizeof *name;
    if (getsockname(fd, (struct sockaddr *)name, &l) != 0)
        die("getsockname");
    return fd;
}

// A request or reply: "KIND SEQ SUM" then a payload whose size and bytes depend on SEQ.
static int fill(char *buf, const char *kind, int seq, const char *extra) {
    int n = sprintf(buf, "%s %d %s|", kind, seq, extra);
    int pad = (seq * 37) % 900;
    for (int i = 0; i < pad; i++)
        buf[n + i] = (char)('a' + (seq + i) % 26);
    return n + pad;
}

// Check a datagram against `kind` and `seq`: its header, its payload.
static int check(const char *buf, int len, const char *kind, int seq, char *extra, size_t size) {
    char k[16];
    int s;
    char e[64];
    if (sscanf(buf, "%15s %d %63[^|]|", k, &s, e) != 3 || strcmp(k, kind) != 0 || s != seq)
        return 0;
    const char *bar = memchr(buf, '|', (size_t)len);
    if (!bar)
        return 0;
    int n = (int)(bar - buf) + 1;
    int pad = (seq * 37) % 900;
    if (len != n + pad)
        return 0;
    for (int i = 0; i < pad; i++)
        if (buf[n + i] != (char)('a' + (seq + i) % 26))
            return 0;
    snprintf(extra, size, "%s", e);
    return 1;
}

static ssize_t recv_from(int fd, char *buf, size_t size, struct sockaddr_storage *from) {
    socklen_t l = sizeof *from;
    ssize_t r;
    do
        r = recvfrom(fd, buf, size - 1, 0, (struct sockaddr *)from, &l);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        die("recvfrom");
    buf[r] = 0;
    return r;
}

static void send_to(int fd, const char *buf, int len, const struct sockaddr_storage *to,
                    int connected) {
    ssize_t w;
    do
        w = connected ? send(fd, buf, (size_t)len, 0)
                      : sendto(fd, buf, (size_t)len, 0, (const struct sockaddr *)to,
                               to->ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                                        : sizeof(struct sockaddr_in6));
    while (w < 0 && errno == EINTR);
    if (w != len)
        die("send");
}

static void server(int fd, const struct sockaddr_storage *client) {
    static char buf[2048], reply[2048], bad[48];
    int expected = 0;
    for (;;) {
        sleep_ms(25);
        struct sockaddr_storage from;
        ssize_t r = recv_from(fd, buf, sizeof buf, &from);
        if (strcmp(buf, "bye") == 0)
            return;
        if (strcmp(buf, "hello") == 0) {
            send_to(fd, "hi", 2, &from, 0);
            continue;
        }
        // The first thing wrong is reported in every reply after it.
        char extra[64];
        if (!bad[0] && !check(buf, (int)r, "req", expected, extra, sizeof extra))
            snprintf(bad, sizeof bad, "bad-request-at-%d", expected);
        else if (!bad[0] && !same_addr(&from, client))
            snprintf(bad, sizeof bad, "bad-sender-at-%d", expected);
        int n = fill(reply, "rep", expected, bad[0] ? bad : "ok");
        send_to(fd, reply, n, &from, 0);
        expected++;
    }
}

static void names(int fd, const struct sockaddr_storage *first, int connected,
                  const struct sockaddr_storage *server_addr) {
    struct sockaddr_storage now, peer;
    socklen_t l = sizeof now;
    int same = getsockname(fd, (struct sockaddr *)&now, &l) == 0 && same_addr(&now, first);
    const char *peer_ok = "none";
    l = sizeof peer;
    if (getpeername(fd, (struct sockaddr *)&peer, &l) == 0)
        peer_ok = same_addr(&peer, server_addr) ? "server" : "other";
    else if (connected)
        peer_ok = "lost";
    printf("client names: local %s, peer %s\n", same ? "unchanged" : "CHANGED", peer_ok);
}

static void client(int fd, const struct sockaddr_storage *me, const struct sockaddr_storage *srv,
                   int n, int connected, int handshake) {
    static char buf[2048], req[2048];
    if (connected && connect(fd, (const struct sockaddr *)srv,
                             srv->ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                                       : sizeof(struct sockaddr_in6)) != 0)
        die("connect");
    if (handshake) {
        // Say hello until the server answers (it may not be bound yet).
        for (;;) {
            send_to(fd, "hello", 5, srv, connected);
            struct timeval tv = {0, 100000};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            struct sockaddr_storage from;
            socklen_t l = sizeof from;
            ssize_t r = recvfrom(fd, buf, sizeof buf - 1, 0, (struct sockaddr *)&from, &l);
            if (r == 2 && memcmp(buf, "hi", 2) == 0)
                break;
        }
        struct timeval none = {0, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    }
    int sent = 0;
    for (; sent < WINDOW && sent < n; sent++)
        send_to(fd, req, fill(req, "req", sent, "c"), srv, connected);
    for (int got = 0; got < n;) {
        sleep_ms(30);
        struct sockaddr_storage from;
        ssize_t r = recv_from(fd, buf, sizeof buf, &from);
        if (r == 2 && memcmp(buf, "hi", 2) == 0)
            continue; // an answer to an extra hello
        char verdict[64];
        if (!check(buf, (int)r, "rep", got, verdict, sizeof verdict)) {
            printf("reply %d: WRONG (%.40s)\n", got, buf);
            exit(2);
        }
        printf("reply %d: server says %s, sender %s\n", got, verdict,
               same_addr(&from, srv) ? "is the server" : "WRONG");
        fflush(stdout);
        got++;
        if (got % 10 == 0) {
            names(fd, me, connected, srv);
            fflush(stdout);
        }
        if (got == pause_at && sent == got) {
            printf("client pauses\n");
            fflush(stdout);
            sleep_ms(1500);
        }
        // Keep WINDOW requests outstanding, but none past the pause until it.
        while (sent < n && sent - got < WINDOW && (got >= pause_at || sent < pause_at)) {
            send_to(fd, req, fill(req, "req", sent, "c"), srv, connected);
            sent++;
        }
    }
    send_to(fd, "bye", 3, srv, connected);
    printf("client done\n");
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s ADDR N [connected | server SPORT CPORT | client SPORT CPORT]\n",
                argv[0]);
        return 2;
    }
    const char *ip = argv[1];
    family = strchr(ip, ':') ? AF_INET6 : AF_INET;
    int n = atoi(argv[2]);
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    struct sockaddr_storage srv, me;
    if (argc >= 6 && strcmp(argv[3], "server") == 0) {
        int fd = bound_socket(ip, atoi(argv[4]), &srv);
        struct sockaddr_storage c;
        make_addr(ip, atoi(argv[5]), &c);
        server(fd, &c);
        return 0;
    }
    if (argc >= 6 && strcmp(argv[3], "client") == 0) {
        int fd = bound_socket(ip, atoi(argv[5]), &me);
        make_addr(ip, atoi(argv[4]), &srv);
        int connected = 0;
        for (int i = 6; i < argc; i++) {
            if (strcmp(argv[i], "connected") == 0)
                connected = 1;
            else if (strcmp(argv[i], "pause") == 0)
                pause_at = 20;
        }
        client(fd, &me, &srv, n, connected, 1);
        return 0;
    }
    int connected = argc >= 4 && strcmp(argv[3], "connected") == 0;
    int s = bound_socket(ip, 0, &srv);
    int c = bound_socket(ip, 0, &me);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        close(c);
        server(s, &me);
        _exit(0);
    }
    close(s);
    client(c, &me, &srv, n, connected, 0);
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        printf("server failed\n");
        return 1;
    }
    return 0;
}
