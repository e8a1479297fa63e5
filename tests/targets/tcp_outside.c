// A TCP client of a server outside the checkpoint: after a restart its connection must come back closed (EPIPE), never silently swallow data.
//
// usage: tcp_outside PORT [TICKS]: connects to 127.0.0.1:PORT, then every
// 50 ms sends "tick N\n" and prints "sent N" or "send N failed: <error>".
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: tcp_outside PORT [TICKS]\n");
        return 2;
    }
    int ticks = argc > 2 ? atoi(argv[2]) : 40;
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        perror("connect");
        return 1;
    }
    for (int i = 1; i <= ticks; i++) {
        char msg[32];
        int n = snprintf(msg, sizeof msg, "tick %d\n", i);
        if (send(s, msg, (size_t)n, 0) == n)
            printf("sent %d\n", i);
        else
            printf("send %d failed: %s\n", i, strerror(errno));
        usleep(50000);
    }
    return 0;
}
