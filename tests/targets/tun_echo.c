/* Tun device echo server (tun plugin): UDP and ICMP echo answered through the tun fd, pausing so packets queue. */
/*
 * tun_echo IFNAME COUNT [PAUSE_AFTER PAUSE_MS [tap]]
 *
 * Creates the tun device IFNAME (IFF_TUN | IFF_NO_PI; a pattern like tun%d
 * works), gives it 10.77.0.1/24 and brings it up with socket ioctls, prints
 * "ready NAME" with the name the kernel gave it, then answers
 * what the kernel routes to the peer 10.77.0.2: UDP datagrams to port 7
 * whose payload is "seq N" (the reply carries the same payload back) and
 * ICMP echo requests. One line per packet answered: "udp N" or "icmp N".
 * Other packets (IPv6 router solicitations...) are ignored. After answering
 * PAUSE_AFTER packets it sleeps PAUSE_MS milliseconds without reading, so
 * packets sent meanwhile queue in the device. Exits 0 after COUNT answers.
 *
 * With "tap": a tap device with the packet-information header and a 12-byte
 * virtio-net header (TUNSETVNETHDRSZ) on every frame; it answers ARP for
 * 10.77.0.2 with the MAC 02:00:00:00:77:02 (not counted, not printed).
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

static uint16_t checksum(const uint8_t *p, size_t n) {
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < n; i += 2)
        sum += (uint32_t)p[i] << 8 | p[i + 1];
    if (n & 1)
        sum += (uint32_t)p[n - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static void set_addr(int s, const char *ifname, unsigned long req, const char *addr) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    sin->sin_family = AF_INET;
    inet_pton(AF_INET, addr, &sin->sin_addr);
    if (ioctl(s, req, &ifr) < 0)
        die("SIOCSIF address");
}

/* Answer one packet in place; returns the length to write back (0: ignore)
 * and sets *what and *seq. */
static size_t answer(uint8_t *p, size_t n, const char **what, long *seq) {
    if (n < 20 || p[0] >> 4 != 4)
        return 0;
    size_t ihl = (size_t)(p[0] & 15) * 4;
    size_t total = (size_t)p[2] << 8 | p[3];
    if (ihl < 20 || total > n || total < ihl + 8)
        return 0;
    uint8_t tmp[4];
    memcpy(tmp, p + 12, 4);
    memcpy(p + 12, p + 16, 4);
    memcpy(p + 16, tmp, 4);
    uint8_t *l4 = p + ihl;
    size_t l4len = total - ihl;
    if (p[9] == 17) { /* UDP to port 7 */
        if ((l4[2] << 8 | l4[3]) != 7)
            return 0;
        char payload[32] = {0};
        size_t plen = l4len - 8 < sizeof payload - 1 ? l4len - 8 : sizeof payload - 1;
        memcpy(payload, l4 + 8, plen);
        if (sscanf(payload, "seq %ld", seq) != 1)
            return 0;
        memcpy(tmp, l4, 2);
        memcpy(l4, l4 + 2, 2);
        memcpy(l4 + 2, tmp, 2);
        l4[6] = l4[7] = 0; /* no UDP checksum */
        *what = "udp";
    } else if (p[9] == 1 && l4[0] == 8) { /* ICMP echo request */
        l4[0] = 0;
        l4[2] = l4[3] = 0;
        uint16_t c = checksum(l4, l4len);
        l4[2] = c >> 8;
        l4[3] = c & 0xff;
        *seq = l4[6] << 8 | l4[7];
        *what = "icmp";
    } else {
        return 0;
    }
    p[8] = 64;
    p[10] = p[11] = 0;
    uint16_t c = checksum(p, ihl);
    p[10] = c >> 8;
    p[11] = c & 0xff;
    return total;
}

static const uint8_t peer_mac[6] = {2, 0, 0, 0, 0x77, 2};

/* Tap mode: answer an Ethernet frame in place (ARP for the peer, or IPv4
 * through answer()); returns the length to write back. */
static size_t answer_frame(uint8_t *f, size_t n, const char **what, long *seq) {
    if (n < 14)
        return 0;
    uint16_t type = f[12] << 8 | f[13];
    size_t len;
    if (type == 0x0806) {
        uint8_t *a = f + 14;
        static const uint8_t peer_ip[4] = {10, 77, 0, 2};
        if (n < 14 + 28 || (a[6] << 8 | a[7]) != 1 || memcmp(a + 24, peer_ip, 4) != 0)
            return 0;
        a[7] = 2; /* reply */
        memcpy(a + 18, a + 8, 10); /* target = the asker */
        memcpy(a + 8, peer_mac, 6);
        memcpy(a + 14, peer_ip, 4);
        len = n < 14 + 28 ? n : 14 + 28;
        *what = NULL;
    } else if (type == 0x0800) {
        len = answer(f + 14, n - 14, what, seq);
        if (len == 0)
            return 0;
        len += 14;
    } else {
        return 0;
    }
    memcpy(f, f + 6, 6);
    memcpy(f + 6, peer_mac, 6);
    return len;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s IFNAME COUNT [PAUSE_AFTER PAUSE_MS]\n", argv[0]);
        return 2;
    }
    const char *ifname = argv[1];
    long count = atol(argv[2]);
    long pause_after = argc > 3 ? atol(argv[3]) : -1;
    long pause_ms = argc > 4 ? atol(argv[4]) : 0;
    int tap = argc > 5 && strcmp(argv[5], "tap") == 0;
    /* tap: struct tun_pi, then the virtio-net header, then the frame. */
    size_t hdr = tap ? 4 + 12 : 0;

    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        die("/dev/net/tun");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = tap ? IFF_TAP | IFF_VNET_HDR : IFF_TUN | IFF_NO_PI;
    strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0)
        die("TUNSETIFF");
    int vnet_hdr_sz = 12;
    if (tap && ioctl(fd, TUNSETVNETHDRSZ, &vnet_hdr_sz) < 0)
        die("TUNSETVNETHDRSZ");
    /* The kernel names the device ("tun%d" becomes "tun0"). */
    char name[IFNAMSIZ];
    memcpy(name, ifr.ifr_name, IFNAMSIZ);
    name[IFNAMSIZ - 1] = 0;
    ifname = name;

    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        die("socket");
    set_addr(s, ifname, SIOCSIFADDR, "10.77.0.1");
    set_addr(s, ifname, SIOCSIFNETMASK, "255.255.255.0");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        die("SIOCGIFFLAGS");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        die("SIOCSIFFLAGS");
    close(s);
    printf("ready %s\n", ifname);
    fflush(stdout);

    static uint8_t buf[65536];
    for (long answered = 0; answered < count;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0)
            die("read");
        const char *what = NULL;
        long seq = 0;
        size_t len;
        if (tap) {
            if ((size_t)n < hdr)
                continue;
            len = answer_frame(buf + hdr, (size_t)n - hdr, &what, &seq);
            if (len == 0)
                continue;
            memset(buf, 0, hdr); /* no flags, no offloads */
            buf[2] = buf[hdr + 12];
            buf[3] = buf[hdr + 13];
            len += hdr;
        } else {
            len = answer(buf, (size_t)n, &what, &seq);
            if (len == 0)
                continue;
        }
        if (write(fd, buf, len) != (ssize_t)len)
            die("write");
        if (what == NULL)
            continue;
        printf("%s %ld\n", what, seq);
        fflush(stdout);
        answered++;
        if (answered == pause_after) {
            struct timespec ts = {pause_ms / 1000, (pause_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return 0;
}
