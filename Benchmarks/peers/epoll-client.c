/* A small C epoll load client: the yardstick fastalloc-load is held to. Closed loop: each
 * connection keeps DEPTH messages of SIZE bytes in flight, sends straight from a precomputed
 * pattern ring and checks every echoed byte with memcmp against it.
 *
 *   ./epoll-client HOST PORT CONNECTIONS SIZE DEPTH DURATION_S WARMUP_S
 * prints: msgs_per_s MB_per_s mismatched_bytes
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "pattern.h"

typedef struct {
    int fd;
    long start;        /* where this connection's pattern starts in the ring */
    long written;      /* bytes written */
    long want_written; /* bytes due: messages sent * size */
    long received;     /* bytes echoed back */
} conn_t;

static unsigned char *ring;
static long size, depth;
static long messages, warm_messages, mismatched;
static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void flush_writes(conn_t *c) {
    while (c->written < c->want_written) {
        long pos = (c->start + c->written) % PERIOD;
        long n = c->want_written - c->written;
        if (n > size) n = size;
        ssize_t w = write(c->fd, ring + pos, n);
        if (w < 0) {
            if (errno == EAGAIN) return;
            perror("write");
            exit(1);
        }
        c->written += w;
    }
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: %s HOST PORT CONNECTIONS SIZE DEPTH DURATION_S WARMUP_S\n", argv[0]);
        return 64;
    }
    signal(SIGPIPE, SIG_IGN);
    int n = atoi(argv[3]);
    size = atol(argv[4]);
    depth = atol(argv[5]);
    double duration = atof(argv[6]), warmup = atof(argv[7]);
    ring = pattern_ring(size);

    int ep = epoll_create1(0);
    conn_t *conns = calloc(n, sizeof(conn_t));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
            perror("connect");
            return 1;
        }
        int on = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        conns[i] = (conn_t){.fd = fd, .start = (i * 40503L) & (PERIOD - 1), .want_written = depth * size};
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        flush_writes(&conns[i]);
    }
    static unsigned char buf[256 * 1024];
    struct epoll_event events[1024];
    double start = now_s(), measure_from = start + warmup, end = measure_from + duration;
    double t = start;
    while ((t = now_s()) < end) {
        int k = epoll_wait(ep, events, 1024, 10);
        int measuring = t >= measure_from;
        for (int e = 0; e < k; e++) {
            conn_t *c = events[e].data.ptr;
            if (events[e].events & EPOLLOUT) flush_writes(c);
            if (!(events[e].events & EPOLLIN)) continue;
            for (;;) {
                ssize_t r = read(c->fd, buf, sizeof(buf));
                if (r < 0 && errno == EAGAIN) break;
                if (r <= 0) {
                    fprintf(stderr, "connection closed\n");
                    return 1;
                }
                for (long done = 0; done < r;) {
                    long chunk = r - done < size ? r - done : size;
                    long pos = (c->start + c->received + done) % PERIOD;
                    if (memcmp(buf + done, ring + pos, chunk) != 0) mismatched += chunk;
                    done += chunk;
                }
                long before = c->received / size;
                c->received += r;
                long completed = c->received / size - before;
                if (measuring) messages += completed; else warm_messages += completed;
                c->want_written += completed * size;
                flush_writes(c);
            }
        }
    }
    double seconds = end - measure_from;
    printf("%.0f %.2f %ld\n", messages / seconds, messages * (double)size / seconds / 1e6, mismatched);
    return mismatched ? 1 : 0;
}
