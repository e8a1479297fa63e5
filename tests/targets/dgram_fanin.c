// Several programs sending datagrams to one hub over unix datagram sockets, with datagrams always
// queued both ways: after a restart every datagram arrives once, in order, from the same sender
// name.
//
// usage: dgram_fanin hub NAME K: the hub binds NAME (a path, or @name for an abstract one) and
// reads slowly; for each datagram it prints the sender's name (recvfrom), the sequence number and
// a checksum, and answers the sender (sendto its name) with an acknowledgment. It exits once K
// senders said "bye".
//
// usage: dgram_fanin sender NAME I N: sender I binds NAME.I and sends N datagrams to the hub in
// windows of 3 (sendto, not connected) before reading the 3 acknowledgments, slowly; it prints
// each acknowledgment with the name it came from, then "bye" goes to the hub. It waits for the
// hub's name to exist first.
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
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
    if (n == 0)
        snprintf(out, size, "(unnamed)");
    else if (a->sun_path[0] == 0)
        snprintf(out, size, "@%.*s", (int)n - 1, a->sun_path + 1);
    else
        snprintf(out, size, "%s", a->sun_path);
}

static int bound(const char *name) {
    struct sockaddr_un a;
    socklen_t len = make_addr(name, &a);
    if (name[0] != '@')
        unlink(name);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, len) != 0)
        die("bind");
    return fd;
}

static ssize_t recv_from(int fd, char *buf, size_t size, struct sockaddr_un *from, socklen_t *len) {
    ssize_t r;
    do {
        *len = sizeof *from;
        r = recvfrom(fd, buf, size - 1, 0, (struct sockaddr *)from, len);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        die("recvfrom");
    buf[r] = 0;
    return r;
}

static int send_to(int fd, const char *buf, size_t len, const struct sockaddr_un *to, socklen_t tolen) {
    ssize_t w;
    do
        w = sendto(fd, buf, len, 0, (const struct sockaddr *)to, tolen);
    while (w < 0 && errno == EINTR);
    return w == (ssize_t)len ? 0 : -1;
}

static uint32_t sum(const char *buf, size_t len) {
    uint32_t s = 0;
    for (size_t k = 0; k < len; k++)
        s = s * 31 + (unsigned char)buf[k];
    return s;
}

static int hub(const char *name, int senders) {
    int fd = bound(name);
    static char buf[8192];
    int byes = 0;
    while (byes < senders) {
        struct sockaddr_un from;
        socklen_t len;
        sleep_ms(9);
        ssize_t r = recv_from(fd, buf, sizeof buf, &from, &len);
        char who[128];
        show(&from, len, who, sizeof who);
        if (strcmp(buf, "bye") == 0) {
            byes++;
            dprintf(1, "from %s: bye\n", who);
            continue;
        }
        int seq = -1;
        sscanf(buf, "msg %d", &seq);
        dprintf(1, "from %s: seq %d, %zd bytes, sum %08x\n", who, seq, r, sum(buf, (size_t)r));
        char ack[64];
        int n = snprintf(ack, sizeof ack, "ack %d", seq);
        if (send_to(fd, ack, (size_t)n, &from, len) != 0)
            die("sendto sender");
    }
    dprintf(1, "hub done\n");
    if (name[0] != '@')
        unlink(name);
    return 0;
}

static int sender(const char *name, int me, int n) {
    char mine[128];
    snprintf(mine, sizeof mine, "%s.%d", name, me);
    int fd = bound(mine);
    struct sockaddr_un hub_addr;
    socklen_t hub_len = make_addr(name, &hub_addr);
    static char buf[8192];
    // The first datagram waits for the hub to be there.
    for (int tries = 0;; tries++) {
        int len = snprintf(buf, sizeof buf, "msg 0 from %d ", me);
        if (send_to(fd, buf, (size_t)len, &hub_addr, hub_len) == 0)
            break;
        if (tries > 3000)
            die("sendto hub");
        sleep_ms(10);
    }
    for (int i = 0; i < n; i += 3) {
        int batch = n - i < 3 ? n - i : 3;
        for (int j = i == 0 ? 1 : 0; j < batch; j++) {
            int seq = i + j;
            int len = snprintf(buf, sizeof buf, "msg %d from %d ", seq, me);
            int pad = (seq * 41 + me * 7) % 1500;
            for (int k = 0; k < pad; k++)
                buf[len++] = (char)('a' + (seq + k + me) % 26);
            if (send_to(fd, buf, (size_t)len, &hub_addr, hub_len) != 0)
                die("sendto hub");
        }
        for (int j = 0; j < batch; j++) {
            sleep_ms(13);
            struct sockaddr_un from;
            socklen_t len;
            recv_from(fd, buf, sizeof buf, &from, &len);
            char who[128];
            show(&from, len, who, sizeof who);
            dprintf(1, "sender %d: %s from %s\n", me, buf, who);
        }
    }
    if (send_to(fd, "bye", 3, &hub_addr, hub_len) != 0)
        die("sendto hub");
    dprintf(1, "sender %d done\n", me);
    if (mine[0] != '@')
        unlink(mine);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "hub") == 0)
        return hub(argv[2], atoi(argv[3]));
    if (argc >= 5 && strcmp(argv[1], "sender") == 0)
        return sender(argv[2], atoi(argv[3]), atoi(argv[4]));
    dprintf(2, "usage: dgram_fanin hub NAME K | sender NAME I N\n");
    return 2;
}
