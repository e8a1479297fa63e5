// A TCP or unix socket server whose listening socket must be bound again at restart: it answers one line per client, for N clients.
//
// usage: tcp_server PORT|/PATH|@NAME N: listens on 127.0.0.1:PORT (or the
// unix socket PATH, or the abstract unix name NAME), prints "listening",
// then for each client reads a line, prints "client I: LINE" and answers
// "echo I: LINE".
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: tcp_server PORT N\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int l, one = 1, bad;
    if (argv[1][0] == '/' || argv[1][0] == '@') {
        struct sockaddr_un u = {.sun_family = AF_UNIX};
        size_t len = strlen(argv[1]);
        if (len >= sizeof u.sun_path)
            return 2;
        memcpy(u.sun_path, argv[1], len);
        if (argv[1][0] == '@')
            u.sun_path[0] = 0;
        unlink(argv[1]);
        l = socket(AF_UNIX, SOCK_STREAM, 0);
        bad = bind(l, (struct sockaddr *)&u, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (argv[1][0] == '/')));
    } else {
        l = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bad = bind(l, (struct sockaddr *)&a, sizeof a);
    }
    if (bad || listen(l, 8)) {
        perror("listen");
        return 1;
    }
    printf("listening\n");
    for (int i = 1; i <= atoi(argv[2]); i++) {
        int c = accept(l, NULL, NULL);
        if (c < 0) {
            perror("accept");
            return 1;
        }
        char line[256];
        ssize_t n = 0, r;
        while (n < (ssize_t)sizeof line - 1 && (r = read(c, line + n, 1)) == 1 && line[n] != '\n')
            n++;
        line[n] = 0;
        printf("client %d: %s\n", i, line);
        char out[300];
        int m = snprintf(out, sizeof out, "echo %d: %s\n", i, line);
        if (write(c, out, (size_t)m) != m)
            perror("write");
        close(c);
    }
    printf("done\n");
    return 0;
}
