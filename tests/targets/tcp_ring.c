// A 3-process token ring over TCP (forked by one parent, or three separate programs): a large token and acknowledgments are in flight in both directions of every connection most of the time; a restart must deliver every byte once.
//
// usage: tcp_ring ADDR ROUNDS [DELAY_MS]: the parent listens on ADDR (an IPv4
// or IPv6 address, port chosen by the kernel), makes three TCP connections
// through that listener (member i -> member i+1), closes the listener and
// forks the three members. Member 0 sends the first token; every member that
// receives a token prints one line about it (so the lines are totally
// ordered by the token), acknowledges it back to the sender on the same
// connection, checks the acknowledgment of its own previous token, sleeps
// DELAY_MS (default 20) and forwards a new token (100 bytes to ~300 KB of
// deterministic data) to the right. Each member checks that its sockets
// still report the addresses they had. The parent prints "ring done" once
// the three members exit successfully.
//
// usage: tcp_ring member I ADDR PORT NEXT_ADDR NEXT_PORT ROUNDS [DELAY_MS]:
// member I of a ring of three separate programs: it listens on ADDR:PORT,
// connects to the next member at NEXT_ADDR:NEXT_PORT (retrying until it
// listens), accepts the previous member, then plays as above and prints
// "member I done".
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MEMBERS 3
#define MAGIC 0x746f6b6eu

struct head {
    uint32_t magic, round, len, sum;
};

static void die(const char *what) {
    dprintf(1, "error: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die("write");
        }
        p += w;
        n -= (size_t)w;
    }
}

static int read_all(int fd, void *buf, size_t n) {
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("read");
        }
        if (r == 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static uint32_t token_len(uint32_t round, int member) {
    return 100 + (round * 7919u + (uint32_t)member * 104729u) % 300000u;
}

static void fill(unsigned char *buf, uint32_t len, uint32_t seed, uint32_t *sum) {
    uint32_t x = seed * 2654435761u + 1, s = 0;
    for (uint32_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (unsigned char)(x >> 16);
        s = s * 31 + buf[i];
    }
    *sum = s;
}

static void send_token(int fd, uint32_t round, int member, unsigned char *buf) {
    struct head h = {MAGIC, round, token_len(round, member), 0};
    fill(buf, h.len, round * 10 + (uint32_t)member, &h.sum);
    write_all(fd, &h, sizeof h);
    write_all(fd, buf, h.len);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void same_names(int fd, const struct sockaddr_storage *local,
                       const struct sockaddr_storage *peer, int member, const char *which) {
    struct sockaddr_storage a, b;
    socklen_t la = sizeof a, lb = sizeof b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    if (getsockname(fd, (struct sockaddr *)&a, &la) != 0 ||
        getpeername(fd, (struct sockaddr *)&b, &lb) != 0) {
        dprintf(1, "member %d: %s socket: getsockname/getpeername: %s\n", member, which,
                strerror(errno));
        exit(1);
    }
    if (memcmp(&a, local, sizeof a) != 0 || memcmp(&b, peer, sizeof b) != 0) {
        dprintf(1, "member %d: %s socket: addresses changed\n", member, which);
        exit(1);
    }
}

static int separate;

static void member(int i, int left, int right, uint32_t rounds, int delay) {
    unsigned char *buf = malloc(400000);
    if (!buf)
        die("malloc");
    struct sockaddr_storage ll, lp, rl, rp;
    socklen_t n;
    memset(&ll, 0, sizeof ll);
    memset(&lp, 0, sizeof lp);
    memset(&rl, 0, sizeof rl);
    memset(&rp, 0, sizeof rp);
    n = sizeof ll;
    getsockname(left, (struct sockaddr *)&ll, &n);
    n = sizeof lp;
    getpeername(left, (struct sockaddr *)&lp, &n);
    n = sizeof rl;
    getsockname(right, (struct sockaddr *)&rl, &n);
    n = sizeof rp;
    getpeername(right, (struct sockaddr *)&rp, &n);
    if (i == 0)
        send_token(right, 1, i, buf);
    for (uint32_t k = 1; k <= rounds; k++) {
        struct head h;
        if (read_all(left, &h, sizeof h) != 0 || h.magic != MAGIC) {
            dprintf(1, "member %d: bad token header at round %u\n", i, k);
            exit(1);
        }
        if (h.len > 400000 || read_all(left, buf, h.len) != 0) {
            dprintf(1, "member %d: short token at round %u\n", i, k);
            exit(1);
        }
        uint32_t s = 0;
        for (uint32_t j = 0; j < h.len; j++)
            s = s * 31 + buf[j];
        dprintf(1, "member %d got token %u: %u bytes, sum %08x%s\n", i, h.round, h.len, h.sum,
                s == h.sum ? "" : " CORRUPT");
        uint32_t ack = h.round;
        write_all(left, &ack, sizeof ack);
        // The acknowledgment of this member's previous token.
        uint32_t want = i == 0 ? k : k - 1;
        if (want > 0) {
            uint32_t got;
            if (read_all(right, &got, sizeof got) != 0 || got != want) {
                dprintf(1, "member %d: bad ack at round %u\n", i, k);
                exit(1);
            }
        }
        if (k % 8 == 0) {
            same_names(left, &ll, &lp, i, "left");
            same_names(right, &rl, &rp, i, "right");
        }
        sleep_ms(delay);
        if (!(i == 0 && k == rounds))
            send_token(right, i == 0 ? k + 1 : k, i, buf);
    }
    if (i != 0) {
        uint32_t got;
        if (read_all(right, &got, sizeof got) != 0 || got != rounds) {
            dprintf(1, "member %d: bad last ack\n", i);
            exit(1);
        }
    }
    if (separate)
        dprintf(1, "member %d done\n", i);
    exit(0);
}

static socklen_t parse(const char *addr, int port, struct sockaddr_storage *ss, int *family) {
    memset(ss, 0, sizeof *ss);
    if (strchr(addr, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, addr, &a->sin6_addr) != 1)
            die("inet_pton");
        *family = AF_INET6;
        return sizeof *a;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &a->sin_addr) != 1)
        die("inet_pton");
    *family = AF_INET;
    return sizeof *a;
}

static int member_program(int argc, char **argv) {
    if (argc < 8) {
        dprintf(2, "usage: tcp_ring member I ADDR PORT NEXT_ADDR NEXT_PORT ROUNDS [DELAY_MS]\n");
        return 2;
    }
    int i = atoi(argv[2]);
    separate = 1;
    struct sockaddr_storage me, next;
    int family, next_family;
    socklen_t melen = parse(argv[3], atoi(argv[4]), &me, &family);
    socklen_t nextlen = parse(argv[5], atoi(argv[6]), &next, &next_family);
    uint32_t rounds = (uint32_t)atoi(argv[7]);
    int delay = argc > 8 ? atoi(argv[8]) : 20;
    int l = socket(family, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (l < 0 || bind(l, (struct sockaddr *)&me, melen) != 0 || listen(l, 4) != 0)
        die("listen");
    int right = -1;
    for (int tries = 0; right < 0; tries++) {
        right = socket(next_family, SOCK_STREAM, 0);
        if (connect(right, (struct sockaddr *)&next, nextlen) == 0)
            break;
        if (tries > 3000)
            die("connect to the next member");
        close(right);
        right = -1;
        sleep_ms(10);
    }
    int left = accept(l, NULL, NULL);
    if (left < 0)
        die("accept");
    close(l);
    dprintf(1, "member %d connected\n", i);
    member(i, left, right, rounds, delay);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "member") == 0)
        return member_program(argc, argv);
    if (argc < 3) {
        dprintf(2, "usage: tcp_ring ADDR ROUNDS [DELAY_MS]\n");
        return 2;
    }
    uint32_t rounds = (uint32_t)atoi(argv[2]);
    int delay = argc > 3 ? atoi(argv[3]) : 20;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    int family;
    if (strchr(argv[1], ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        if (inet_pton(AF_INET6, argv[1], &a->sin6_addr) != 1)
            die("inet_pton");
        len = sizeof *a;
        family = AF_INET6;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        if (inet_pton(AF_INET, argv[1], &a->sin_addr) != 1)
            die("inet_pton");
        len = sizeof *a;
        family = AF_INET;
    }
    int l = socket(family, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&ss, len) != 0 || listen(l, 8) != 0)
        die("listen");
    socklen_t got = sizeof ss;
    if (getsockname(l, (struct sockaddr *)&ss, &got) != 0)
        die("getsockname");
    // conn[i][0]: member i's end toward i+1; conn[i][1]: member i+1's end.
    int conn[MEMBERS][2];
    for (int i = 0; i < MEMBERS; i++) {
        conn[i][0] = socket(family, SOCK_STREAM, 0);
        if (conn[i][0] < 0 || connect(conn[i][0], (struct sockaddr *)&ss, len) != 0)
            die("connect");
        conn[i][1] = accept(l, NULL, NULL);
        if (conn[i][1] < 0)
            die("accept");
    }
    close(l);
    pid_t kids[MEMBERS];
    for (int i = 0; i < MEMBERS; i++) {
        kids[i] = fork();
        if (kids[i] < 0)
            die("fork");
        if (kids[i] == 0) {
            int right = conn[i][0], left = conn[(i + MEMBERS - 1) % MEMBERS][1];
            for (int j = 0; j < MEMBERS; j++)
                for (int e = 0; e < 2; e++)
                    if (conn[j][e] != left && conn[j][e] != right)
                        close(conn[j][e]);
            member(i, left, right, rounds, delay);
        }
    }
    for (int j = 0; j < MEMBERS; j++)
        for (int e = 0; e < 2; e++)
            close(conn[j][e]);
    int ok = 1;
    for (int i = 0; i < MEMBERS; i++) {
        int status;
        while (waitpid(kids[i], &status, 0) < 0)
            if (errno != EINTR)
                die("waitpid");
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            dprintf(1, "member %d failed (status %#x)\n", i, status);
            ok = 0;
        }
    }
    if (ok)
        dprintf(1, "ring done\n");
    return ok ? 0 : 1;
}
