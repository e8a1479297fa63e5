// Socket pairs inside one process (stream and datagram), with messages queued in them at the checkpoint: after a restart every message arrives once, in order.
//
// A producer thread writes 40 numbered messages at once into a datagram pair
// and 40 numbered lines into a stream pair; the main thread reads them
// slowly (one every 40 ms, alternating), printing each: most of them are
// still queued in the kernel when the checkpoint comes.
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int dgram[2], stream[2];

static void *producer(void *arg) {
    (void)arg;
    char msg[64];
    for (int i = 1; i <= 40; i++) {
        int n = snprintf(msg, sizeof msg, "datagram %d", i);
        if (send(dgram[1], msg, (size_t)n, 0) != n)
            perror("send dgram");
        n = snprintf(msg, sizeof msg, "line %d\n", i);
        if (write(stream[1], msg, (size_t)n) != n)
            perror("write stream");
    }
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, dgram) || socketpair(AF_UNIX, SOCK_STREAM, 0, stream)) {
        perror("socketpair");
        return 1;
    }
    pthread_t t;
    pthread_create(&t, NULL, producer, NULL);
    pthread_join(t, NULL);
    char buf[128];
    size_t have = 0;
    for (int i = 1; i <= 40; i++) {
        ssize_t n = recv(dgram[0], buf, sizeof buf - 1, 0);
        if (n < 0) {
            perror("recv");
            return 1;
        }
        buf[n] = 0;
        printf("got %s\n", buf);
        /* One line from the stream, byte by byte up to the newline. */
        char line[64];
        have = 0;
        while (have < sizeof line - 1 && read(stream[0], &line[have], 1) == 1 && line[have] != '\n')
            have++;
        line[have] = 0;
        printf("got %s\n", line);
        usleep(40000);
    }
    printf("done\n");
    return 0;
}
