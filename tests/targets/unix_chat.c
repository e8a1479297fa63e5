// A client and a server (parent and child, or two programs) over a unix socket (stream, seqpacket or datagram; named by a path, an abstract name, or a socketpair), with requests and replies in flight both ways: after a restart every message arrives once, in order, and the names both ends report stay the same.
//
// usage: unix_chat stream|seqpacket|dgram /PATH|@NAME|pair N: the parent
// makes the server's socket (a listener, a bound datagram socket or a socket
// pair) and forks the server; then, as the client, it sends N requests in
// batches of 4 without waiting and reads the 4 replies slowly. The server
// reads each request slowly and answers with what getsockname/getpeername
// (or recvfrom) tell it. Only the client prints: one line per reply, and
// its own names every 10 replies. A datagram client binds NAME.c first.
//
// usage: unix_chat stream|seqpacket|dgram /PATH|@NAME N server|client: the
// server alone (it makes its socket, serves one client, and exits at its
// "bye"), or the client alone (it connects, retrying until the server
// listens, and prints as above).
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int type;

static void die(const char *what) {
    dprintf(1, "error: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static socklen_t make_addr(const char *name, struct sockaddr_un *a) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    size_t n = strlen(name);
    if (n >= sizeof a->sun_path)
        die("name too long");
    memcpy(a->sun_path, name, n);
    if (name[0] == '@')
        a->sun_path[0] = 0;
    else
        n++;
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
}

static void show(const struct sockaddr_un *a, socklen_t len, char *out, size_t size) {
    size_t n = len > offsetof(struct sockaddr_un, sun_path)
                   ? len - offsetof(struct sockaddr_un, sun_path)
                   : 0;
    if (n == 0) {
        snprintf(out, size, "(unnamed)");
        return;
    }
    if (a->sun_path[0] == 0)
        snprintf(out, size, "@%.*s", (int)n - 1, a->sun_path + 1);
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

// One message: a stream frames it with its length; other types keep bounds.
static void send_msg(int fd, const char *buf, uint32_t len, const struct sockaddr_un *to,
                     socklen_t tolen) {
    if (type == SOCK_STREAM) {
        if (write(fd, &len, 4) != 4)
            die("write");
        uint32_t off = 0;
        while (off < len) {
            ssize_t w = write(fd, buf + off, len - off);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                die("write");
            }
            off += (uint32_t)w;
        }
        return;
    }
    ssize_t w;
    do
        w = sendto(fd, buf, len, 0, (const struct sockaddr *)to, tolen);
    while (w < 0 && errno == EINTR);
    if (w != (ssize_t)len)
        die("send");
}

static int read_full(int fd, char *buf, uint32_t n) {
    uint32_t off = 0;
    while (off < n) {
        ssize_t r = read(fd, buf + off, n - off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        off += (uint32_t)r;
    }
    return 0;
}

static int recv_msg(int fd, char *buf, uint32_t size, struct sockaddr_un *from, socklen_t *fromlen) {
    if (type == SOCK_STREAM) {
        uint32_t len;
        if (read_full(fd, (char *)&len, 4) != 0 || len >= size || read_full(fd, buf, len) != 0)
            return -1;
        buf[len] = 0;
        if (from)
            *fromlen = 0;
        return (int)len;
    }
    ssize_t r;
    do
        r = recvfrom(fd, buf, size - 1, 0, (struct sockaddr *)from, fromlen);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -1;
    buf[r] = 0;
    return (int)r;
}

static void server(int fd, int listener) {
    static char buf[8192], reply[16384];
    if (listener >= 0) {
        fd = accept(listener, NULL, NULL);
        if (fd < 0)
            die("accept");
    }
    for (;;) {
        struct sockaddr_un from;
        socklen_t fromlen = sizeof from;
        sleep_ms(10);
        int n = recv_msg(fd, buf, sizeof buf, &from, &fromlen);
        if (n < 0)
            die("server recv");
        if (strcmp(buf, "bye") == 0)
            exit(0);
        char view[300];
        if (type == SOCK_DGRAM && fromlen > offsetof(struct sockaddr_un, sun_path)) {
            struct sockaddr_un me;
            socklen_t melen = sizeof me;
            char x[128], y[128];
            getsockname(fd, (struct sockaddr *)&me, &melen);
            show(&me, melen, x, sizeof x);
            show(&from, fromlen, y, sizeof y);
            snprintf(view, sizeof view, "local=%s from=%s", x, y);
        } else {
            names(fd, view, sizeof view);
            fromlen = 0;
        }
        // The request's first word and number, then what the server sees.
        char word[32];
        int num = -1;
        sscanf(buf, "%31s %d", word, &num);
        int len = snprintf(reply, sizeof reply, "reply %d (%d bytes) | server %s | ", num, n, view);
        int pad = (num * 53) % 2000;
        for (int i = 0; i < pad && len < (int)sizeof reply - 1; i++)
            reply[len++] = (char)('a' + (num + i) % 26);
        send_msg(fd, reply, (uint32_t)len, fromlen ? &from : NULL, fromlen);
    }
}

int main(int argc, char **argv) {
    if (argc < 4) {
        dprintf(2, "usage: unix_chat stream|seqpacket|dgram /PATH|@NAME|pair N\n");
        return 2;
    }
    type = strcmp(argv[1], "stream") == 0      ? SOCK_STREAM
           : strcmp(argv[1], "seqpacket") == 0 ? SOCK_SEQPACKET
                                               : SOCK_DGRAM;
    const char *name = argv[2];
    int n = atoi(argv[3]);
    const char *mode = argc > 4 ? argv[4] : "both";
    int pair = strcmp(name, "pair") == 0;
    if (pair && strcmp(mode, "both") != 0) {
        dprintf(2, "unix_chat: a socket pair needs both ends in one program\n");
        return 2;
    }
    int alone_client = strcmp(mode, "client") == 0;
    int sv[2] = {-1, -1}, listener = -1, srv = -1;
    struct sockaddr_un addr;
    socklen_t addrlen = 0;
    if (pair) {
        if (socketpair(AF_UNIX, type, 0, sv) != 0)
            die("socketpair");
        srv = sv[1];
    } else if (alone_client) {
        addrlen = make_addr(name, &addr);
    } else {
        if (name[0] == '/')
            unlink(name);
        addrlen = make_addr(name, &addr);
        int s = socket(AF_UNIX, type, 0);
        if (s < 0 || bind(s, (struct sockaddr *)&addr, addrlen) != 0)
            die("bind");
        if (type == SOCK_DGRAM)
            srv = s;
        else if (listen(s, 4) != 0)
            die("listen");
        else
            listener = s;
    }
    if (strcmp(mode, "server") == 0)
        server(srv, listener);
    pid_t kid = alone_client ? 0 : fork();
    if (kid < 0)
        die("fork");
    if (kid == 0 && !alone_client) {
        if (pair)
            close(sv[0]);
        server(srv, listener);
    }
    int fd;
    if (pair) {
        close(sv[1]);
        fd = sv[0];
    } else {
        if (listener >= 0)
            close(listener);
        if (srv >= 0)
            close(srv);
        fd = socket(AF_UNIX, type, 0);
        if (fd < 0)
            die("socket");
        if (type == SOCK_DGRAM) {
            char mine[120];
            struct sockaddr_un me;
            snprintf(mine, sizeof mine, "%s.c", name);
            if (mine[0] == '/')
                unlink(mine);
            socklen_t melen = make_addr(mine, &me);
            if (bind(fd, (struct sockaddr *)&me, melen) != 0)
                die("bind client");
        }
        // Alone, the client waits for the server to be there.
        int tries = 0;
        while (connect(fd, (struct sockaddr *)&addr, addrlen) != 0) {
            if (!alone_client || ++tries > 3000)
                die("connect");
            sleep_ms(10);
        }
    }
    static char buf[16384];
    for (int i = 0; i < n; i += 4) {
        int batch = n - i < 4 ? n - i : 4;
        for (int j = 0; j < batch; j++) {
            int num = i + j;
            int len = snprintf(buf, sizeof buf, "req %d ", num);
            int pad = (num * 37) % 3000;
            for (int k = 0; k < pad; k++)
                buf[len++] = (char)('A' + (num + k) % 26);
            send_msg(fd, buf, (uint32_t)len, NULL, 0);
        }
        for (int j = 0; j < batch; j++) {
            sleep_ms(15);
            int r = recv_msg(fd, buf, sizeof buf, NULL, NULL);
            if (r < 0)
                die("client recv");
            char *cut = strstr(buf, " | ");
            char *cut2 = cut ? strstr(cut + 3, " | ") : NULL;
            uint32_t sum = 0;
            for (int k = 0; k < r; k++)
                sum = sum * 31 + (unsigned char)buf[k];
            if (cut2)
                *cut2 = 0;
            dprintf(1, "%s | %d bytes, sum %08x\n", buf, r, sum);
            if ((i + j) % 10 == 9) {
                char view[300];
                names(fd, view, sizeof view);
                dprintf(1, "client %s\n", view);
            }
        }
    }
    send_msg(fd, "bye", 3, NULL, 0);
    if (alone_client) {
        dprintf(1, "chat done\n");
        return 0;
    }
    int status;
    while (waitpid(kid, &status, 0) < 0)
        if (errno != EINTR)
            die("waitpid");
    if (!pair && name[0] == '/') {
        char mine[120];
        snprintf(mine, sizeof mine, "%s.c", name);
        unlink(name);
        unlink(mine);
    }
    dprintf(1, "chat done (server status %d)\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}
