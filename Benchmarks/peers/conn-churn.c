/* Connection churn: THREADS blocking threads, each in a loop of connect, send SIZE bytes, read
 * them back, shutdown(SHUT_WR), read the server's FIN, close, for DURATION_S seconds. Measures
 * what a server spends per connection (accept, session, close), not per message.
 *
 *   ./conn-churn HOST PORT THREADS SIZE DURATION_S
 * prints: connections connections_per_s failures
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in target;
static long size;
static double deadline;
static atomic_long done, failures;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int one(unsigned char *buffer) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    int ok = connect(fd, (struct sockaddr *)&target, sizeof target) == 0;
    if (ok) ok = send(fd, buffer, size, MSG_NOSIGNAL) == size;
    long got = 0;
    while (ok && got < size) {
        ssize_t n = recv(fd, buffer + size + got, size - got, 0);
        if (n <= 0) ok = 0; else got += n;
    }
    if (ok) {
        shutdown(fd, SHUT_WR);
        char end;
        ok = recv(fd, &end, 1, 0) == 0;
    }
    close(fd);
    return ok ? 0 : -1;
}

static void *loop(void *unused) {
    (void)unused;
    unsigned char *buffer = malloc(2 * size);
    memset(buffer, 'x', size);
    while (now_s() < deadline) {
        if (one(buffer) == 0) atomic_fetch_add(&done, 1); else atomic_fetch_add(&failures, 1);
    }
    free(buffer);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s HOST PORT THREADS SIZE DURATION_S\n", argv[0]);
        return 64;
    }
    target.sin_family = AF_INET;
    target.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &target.sin_addr);
    int threads = atoi(argv[3]);
    size = atol(argv[4]);
    double seconds = atof(argv[5]);
    double start = now_s();
    deadline = start + seconds;
    pthread_t ids[256];
    if (threads < 1 || threads > 256) return 64;
    for (int i = 0; i < threads; i++) pthread_create(&ids[i], NULL, loop, NULL);
    for (int i = 0; i < threads; i++) pthread_join(ids[i], NULL);
    double elapsed = now_s() - start;
    printf("%ld %.0f %ld\n", atomic_load(&done), atomic_load(&done) / elapsed, atomic_load(&failures));
    return 0;
}
