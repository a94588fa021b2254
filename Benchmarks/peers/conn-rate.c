/* A closed-loop connection-rate client: CONCURRENCY slots, each doing one short exchange after
 * another: a non-blocking connect, one SIZE-byte message written, its echo read and checked byte
 * for byte, close (a FIN), and at once the next connection. The latency of an exchange is from
 * the connect() call to the first byte of the echo (so it holds the accept, the relay's upstream
 * connect and one round trip). Exchanges that end in the warm-up are not counted.
 *
 *   ./conn-rate HOST PORT CONCURRENCY SIZE DURATION_S WARMUP_S [v1|v2]
 * With v1 or v2, each connection's message is preceded, in the same write, by a PROXY protocol
 * header of that version (haproxy's doc/proxy-protocol.txt) for a made-up client, 192.0.2.1
 * port 1024-65023, to 198.51.100.1:7000: a server with --accept-proxy takes it and echoes the
 * message alone.
 * prints: connections_per_s p50_us p99_us mismatched_bytes failures connections all_connections
 * (connections: those of the measured window; all_connections: with the warm-up's, for CPU per connection)
 * Exit status 1 on any failed connection (refused, reset, closed before its echo) or mismatch.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "pattern.h"

typedef struct {
    int fd;
    int connected;
    long start;       /* where this connection's pattern starts in the ring */
    long received;    /* bytes of the echo read so far */
    double opened;    /* when connect() was called */
} slot_t;

static unsigned char *ring;
static long size, started_connections, failures, mismatched;
static struct sockaddr_in addr;
static int ep;
static double *samples;
static int proxy_version;  /* 0: no PROXY header; 1 or 2 */

/* The PROXY header for a connection (client port from its number); returns its length. */
static size_t proxy_header(unsigned char *out, long number) {
    unsigned port = 1024 + (unsigned)(number % 64000);
    if (proxy_version == 1)
        return (size_t)sprintf((char *)out, "PROXY TCP4 192.0.2.1 198.51.100.1 %u 7000\r\n", port);
    static const unsigned char signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    memcpy(out, signature, 12);
    out[12] = 0x21;  /* version 2, PROXY */
    out[13] = 0x11;  /* TCP over IPv4 */
    out[14] = 0;
    out[15] = 12;
    const unsigned char addresses[8] = {192, 0, 2, 1, 198, 51, 100, 1};
    memcpy(out + 16, addresses, 8);
    out[24] = port >> 8;
    out[25] = port & 0xFF;
    out[26] = 7000 >> 8;
    out[27] = 7000 & 0xFF;
    return 28;
}
static long sample_count, sample_capacity;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void open_slot(slot_t *s) {
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s->fd < 0) {
        perror("socket");
        exit(1);
    }
    int on = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    s->connected = 0;
    s->received = 0;
    s->start = (started_connections++ * 40503L) & (PERIOD - 1);
    s->opened = now_s();
    if (connect(s->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 && errno != EINPROGRESS) {
        perror("connect");  /* EADDRNOTAVAIL (no local port left) is a failure too */
        exit(1);
    }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = s};
    epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s HOST PORT CONCURRENCY SIZE DURATION_S WARMUP_S [v1|v2]\n", argv[0]);
        return 64;
    }
    if (argc > 7) {
        if (strcmp(argv[7], "v1") == 0) proxy_version = 1;
        else if (strcmp(argv[7], "v2") == 0) proxy_version = 2;
        else {
            fprintf(stderr, "conn-rate: the PROXY header version is v1 or v2, not %s\n", argv[7]);
            return 64;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    int n = atoi(argv[3]);
    size = atol(argv[4]);
    double duration = atof(argv[5]), warmup = atof(argv[6]);
    if (n < 1 || size < 1 || size > PERIOD) {
        fprintf(stderr, "conn-rate: CONCURRENCY >= 1 and 1 <= SIZE <= %d\n", PERIOD);
        return 64;
    }
    ring = pattern_ring(size);
    addr = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    sample_capacity = 1 << 16;
    samples = malloc(sample_capacity * sizeof(double));
    unsigned char *buf = malloc(size);

    ep = epoll_create1(0);
    slot_t *slots = calloc(n, sizeof(slot_t));
    for (int i = 0; i < n; i++) open_slot(&slots[i]);
    struct epoll_event events[1024];
    double start = now_s(), measure_from = start + warmup, end = measure_from + duration;
    double t;
    long connections = 0, all_connections = 0;
    while ((t = now_s()) < end) {
        int k = epoll_wait(ep, events, 1024, 10);
        for (int e = 0; e < k; e++) {
            slot_t *s = events[e].data.ptr;
            if (!s->connected) {
                int error = 0;
                socklen_t length = sizeof(error);
                getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &error, &length);
                if (error || (events[e].events & (EPOLLERR | EPOLLHUP))) {
                    fprintf(stderr, "conn-rate: connect failed: %s\n", strerror(error ? error : ECONNRESET));
                    failures++;
                    close(s->fd);
                    open_slot(s);
                    continue;
                }
                if (!(events[e].events & EPOLLOUT)) continue;
                /* A fresh socket's send buffer takes SIZE (<= 64 KiB) bytes, and a PROXY header
                 * before them, in one write. */
                unsigned char header[108];
                size_t header_length = proxy_version ? proxy_header(header, started_connections) : 0;
                struct iovec parts[2] = {{header, header_length}, {ring + s->start, (size_t)size}};
                if (writev(s->fd, parts + (header_length ? 0 : 1), header_length ? 2 : 1) != (ssize_t)(header_length + size)) {
                    fprintf(stderr, "conn-rate: short write\n");
                    failures++;
                    close(s->fd);
                    open_slot(s);
                    continue;
                }
                s->connected = 1;
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
                epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
                continue;
            }
            ssize_t r = read(s->fd, buf, size - s->received);
            if (r < 0 && errno == EAGAIN) continue;
            if (r <= 0) {
                fprintf(stderr, "conn-rate: connection ended after %ld of %ld bytes\n", s->received, size);
                failures++;
                close(s->fd);
                open_slot(s);
                continue;
            }
            if (s->received == 0 && t >= measure_from) {
                if (sample_count == sample_capacity) {
                    sample_capacity *= 2;
                    samples = realloc(samples, sample_capacity * sizeof(double));
                }
                samples[sample_count++] = (now_s() - s->opened) * 1e6;
            }
            if (memcmp(buf, ring + s->start + s->received, r) != 0) mismatched += r;
            s->received += r;
            if (s->received == size) {
                if (t >= measure_from) connections++;
                all_connections++;
                close(s->fd);
                open_slot(s);
            }
        }
    }
    qsort(samples, sample_count, sizeof(double), compare);
    double p50 = sample_count ? samples[(sample_count - 1) / 2] : 0;
    double p99 = sample_count ? samples[(long)((sample_count - 1) * 0.99)] : 0;
    printf("%.0f %.1f %.1f %ld %ld %ld %ld\n", connections / duration, p50, p99, mismatched, failures, connections,
           all_connections);
    return mismatched || failures ? 1 : 0;
}
