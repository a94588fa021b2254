/* A churn client for reload benchmarks: CONCURRENCY slots of short connections, each a
 * non-blocking connect, one 200-byte patterned write, exactly 200 bytes read back and compared
 * with memcmp, a close (a FIN), and at once the next one; beside them LONG streams that each
 * send a 4 KiB chunk every 10 ms and check every byte of the echo for the whole run. Run it
 * against a relay while the relay is reloaded, and cut the reloads' windows out of its slices.
 *
 *   ./churn HOST PORT CONCURRENCY LONG DURATION_S [THREADS [TIMEOUT_MS [RATE]]]
 * THREADS (default 1) each run their own epoll loop with CONCURRENCY / THREADS slots and every
 * THREADS-th long stream. TIMEOUT_MS (default 2000): a short exchange with no complete answer this
 * long after its connect() call is a timeout (closed, counted, replaced). RATE (default 0: closed
 * loop, a slot starts its next exchange as soon as one ends): at most this many exchanges start
 * per second, all threads together, paced every millisecond (a free slot waits for its turn),
 * so the client and the relay are not saturated and a reload's delay is not hidden in queueing;
 * CONCURRENCY is then the most in flight at once.
 *
 * Everything about a short exchange is counted in the 100 ms slice in which its connect() was
 * called (so a failure found 2 s later, a timeout, still points at the moment it started):
 * completed exchanges; failures by kind, refused (ECONNREFUSED at connect), reset (ECONNRESET or
 * EPIPE at connect, write or read), timeout, wrong (an echoed byte differs), eof (the connection
 * ended before 200 bytes came back), other (any other error, EADDRNOTAVAIL say); the connect time
 * of each (connect() to writable) and its exchange time (connect() to the 200th byte), in µs.
 *
 * prints, on stdout, one JSON object a line: first one per slice,
 *   {"slice":I,"t":MONOTONIC_S,"ok":N,"refused":N,"reset":N,"timeout":N,"wrong":N,"eof":N,"other":N,
 *    "connect_us":[...],"exchange_us":[...]}
 * where t is the slice's start on CLOCK_MONOTONIC (Python's time.monotonic() on Linux), then the
 * summary, {"summary":{...}}: totals, failures by kind, connect and exchange p50/p99/max over
 * the run, the exchanges in flight at the end (not counted), and per long stream its bytes sent
 * and verified, its longest stall (no echoed byte while some were due) and why it broke, if it did.
 * Exit status 1 when a short exchange failed or a long stream broke or lost bytes.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
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

#define SIZE 200
#define CHUNK 4096
#define PACE_S 0.010
#define SLICE_S 0.100

enum { OK, REFUSED, RESET, TIMEOUT, WRONG, EARLY_EOF, OTHER, KINDS };
static const char *kind_names[KINDS] = {"ok", "refused", "reset", "timeout", "wrong", "eof", "other"};

typedef struct {
    uint32_t *v;
    long n, cap;
} samples_t;

typedef struct {
    long counts[KINDS];
    samples_t connect_us, exchange_us;
} slice_t;

enum { IDLE, CONNECTING, READING };

typedef struct {
    int is_long;
    int fd;
    int state;
    long start;       /* where this connection's pattern starts in the ring */
    long received;    /* bytes of the echo read so far */
    double opened;    /* when connect() was called */
    long slice;       /* the slice of that call */
} slot_t;

typedef struct {
    int is_long;
    int fd;
    int connected;
    long sent, verified, due; /* due: bytes the pacing asks for so far */
    double next_chunk, last_progress, max_stall;
    const char *broken;       /* why it broke, or NULL */
} stream_t;

typedef struct {
    int ep;
    int n_slots, n_streams;
    slot_t *slots;
    stream_t *streams;
    slice_t *slices;
    long started;
    long in_flight_at_end;
    double rate;      /* exchanges a second this thread may start; 0: no pacing */
    long paced;       /* exchanges started under the pacing */
} worker_t;

static unsigned char *ring;
static struct sockaddr_in addr;
static double t0, duration, timeout_s;
static long n_slices;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void add_sample(samples_t *s, double us) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->v = realloc(s->v, s->cap * sizeof(uint32_t));
    }
    s->v[s->n++] = us > 4e9 ? 4000000000u : (uint32_t)us;
}

static long slice_of(double t) {
    long i = (long)((t - t0) / SLICE_S);
    return i < 0 ? 0 : i >= n_slices ? n_slices - 1 : i;
}

static int kind_of_errno(int error) {
    switch (error) {
    case ECONNREFUSED: return REFUSED;
    case ECONNRESET: case EPIPE: return RESET;
    case ETIMEDOUT: return TIMEOUT;
    default: return OTHER;
    }
}

/* Under pacing, whether one more exchange may start now (and counts it). A thread that fell
 * behind (every slot busy) may catch up by at most a slot's worth per slot, not in one burst. */
static int may_start(worker_t *w, double t) {
    if (w->rate <= 0) return 1;
    double allowed = (t - t0) * w->rate;
    if (w->paced < allowed - w->n_slots) w->paced = (long)allowed - w->n_slots;
    if (w->paced >= allowed) return 0;
    w->paced++;
    return 1;
}

static void open_slot(worker_t *w, slot_t *s) {
    if (!may_start(w, now_s())) {
        s->state = IDLE;
        return;
    }
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s->fd < 0) {
        perror("socket");
        exit(2);
    }
    int on = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    s->received = 0;
    s->start = (w->started++ * 40503L) & (PERIOD - 1);
    s->opened = now_s();
    s->slice = slice_of(s->opened);
    if (connect(s->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 && errno != EINPROGRESS) {
        /* Seen at once (EADDRNOTAVAIL: no local port left): counted, and the slot waits for the
         * next timer pass before it tries again, so a failing connect does not spin. */
        w->slices[s->slice].counts[kind_of_errno(errno)]++;
        close(s->fd);
        s->fd = -1;
        s->state = IDLE;
        return;
    }
    s->state = CONNECTING;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
    epoll_ctl(w->ep, EPOLL_CTL_ADD, s->fd, &ev);
}

static void end_slot(worker_t *w, slot_t *s, int kind, int reopen) {
    w->slices[s->slice].counts[kind]++;
    close(s->fd);
    s->fd = -1;
    s->state = IDLE;
    if (reopen) open_slot(w, s);
}

static void on_slot(worker_t *w, slot_t *s, uint32_t events, unsigned char *buf, int reopen) {
    if (s->state == CONNECTING) {
        int error = 0;
        socklen_t length = sizeof(error);
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &error, &length);
        if (error || (events & (EPOLLERR | EPOLLHUP))) {
            end_slot(w, s, kind_of_errno(error ? error : ECONNRESET), reopen);
            return;
        }
        if (!(events & EPOLLOUT)) return;
        add_sample(&w->slices[s->slice].connect_us, (now_s() - s->opened) * 1e6);
        /* A fresh socket's send buffer takes 200 bytes in one write. */
        ssize_t n = write(s->fd, ring + s->start, SIZE);
        if (n != SIZE) {
            end_slot(w, s, n < 0 ? kind_of_errno(errno) : OTHER, reopen);
            return;
        }
        s->state = READING;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
        epoll_ctl(w->ep, EPOLL_CTL_MOD, s->fd, &ev);
        return;
    }
    ssize_t r = read(s->fd, buf, SIZE - s->received);
    if (r < 0 && errno == EAGAIN) return;
    if (r < 0) {
        end_slot(w, s, kind_of_errno(errno), reopen);
        return;
    }
    if (r == 0) {
        end_slot(w, s, EARLY_EOF, reopen);
        return;
    }
    if (memcmp(buf, ring + s->start + s->received, r) != 0) {
        end_slot(w, s, WRONG, reopen);
        return;
    }
    s->received += r;
    if (s->received == SIZE) {
        add_sample(&w->slices[s->slice].exchange_us, (now_s() - s->opened) * 1e6);
        end_slot(w, s, OK, reopen);
    }
}

static void break_stream(worker_t *w, stream_t *l, const char *why) {
    if (!l->broken) l->broken = why;
    if (l->fd >= 0) {
        epoll_ctl(w->ep, EPOLL_CTL_DEL, l->fd, NULL);
        close(l->fd);
        l->fd = -1;
    }
}

static void stream_events(worker_t *w, stream_t *l) {
    if (l->fd < 0) return;
    uint32_t events = EPOLLIN | (l->sent < l->due ? EPOLLOUT : 0);
    struct epoll_event ev = {.events = events, .data.ptr = l};
    epoll_ctl(w->ep, EPOLL_CTL_MOD, l->fd, &ev);
}

static void stream_write(worker_t *w, stream_t *l) {
    while (l->fd >= 0 && l->sent < l->due) {
        long n = l->due - l->sent;
        if (n > CHUNK) n = CHUNK;
        ssize_t r = write(l->fd, ring + l->sent % PERIOD, n);
        if (r < 0) {
            if (errno == EAGAIN) break;
            break_stream(w, l, errno == ECONNRESET || errno == EPIPE ? "reset" : "write error");
            return;
        }
        l->sent += r;
    }
    stream_events(w, l);
}

static void on_stream(worker_t *w, stream_t *l, uint32_t events, unsigned char *buf, double t) {
    if (!l->connected) {
        int error = 0;
        socklen_t length = sizeof(error);
        getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &error, &length);
        if (error || (events & (EPOLLERR | EPOLLHUP))) {
            break_stream(w, l, kind_names[kind_of_errno(error ? error : ECONNRESET)]);
            return;
        }
        l->connected = 1;
        l->last_progress = t;
        stream_write(w, l);
        return;
    }
    if (events & EPOLLOUT) stream_write(w, l);
    if (l->fd < 0 || !(events & (EPOLLIN | EPOLLERR | EPOLLHUP))) return;
    for (;;) {
        ssize_t r = read(l->fd, buf, CHUNK);  /* the ring's CHUNK extra bytes cover a wrap */
        if (r < 0 && errno == EAGAIN) return;
        if (r < 0) {
            break_stream(w, l, errno == ECONNRESET ? "reset" : "read error");
            return;
        }
        if (r == 0) {
            break_stream(w, l, "eof");
            return;
        }
        if (l->verified + r > l->sent || memcmp(buf, ring + l->verified % PERIOD, r) != 0) {
            break_stream(w, l, "wrong bytes");
            return;
        }
        if (l->sent > l->verified && t - l->last_progress > l->max_stall) l->max_stall = t - l->last_progress;
        l->verified += r;
        l->last_progress = t;
    }
}

static void open_stream(worker_t *w, stream_t *l) {
    l->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int on = 1;
    setsockopt(l->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    if (connect(l->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 && errno != EINPROGRESS) {
        break_stream(w, l, kind_names[kind_of_errno(errno)]);
        return;
    }
    l->next_chunk = t0;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = l};
    epoll_ctl(w->ep, EPOLL_CTL_ADD, l->fd, &ev);
}

/* Paces the long streams (a chunk due every PACE_S; a stream far behind does not burst), times
 * out the short exchanges and starts the paced ones; every 5 ms, or every 1 ms under pacing. */
static void tick(worker_t *w, double t, int reopen) {
    for (int i = 0; i < w->n_streams; i++) {
        stream_t *l = &w->streams[i];
        if (l->fd < 0 || !l->connected) continue;
        if (reopen && t >= l->next_chunk) {
            l->due += CHUNK;
            l->next_chunk += PACE_S;
            if (l->next_chunk < t - 10 * PACE_S) l->next_chunk = t;
            stream_write(w, l);
        }
        if (l->verified == l->sent) l->last_progress = t;  /* nothing due: not a stall */
        else if (t - l->last_progress > l->max_stall) l->max_stall = t - l->last_progress;
    }
    if (!reopen) return;  /* after the run: the exchanges in flight are left, not timed out */
    for (int i = 0; i < w->n_slots; i++) {
        slot_t *s = &w->slots[i];
        if (s->state == IDLE) {
            open_slot(w, s);
        } else if (t - s->opened > timeout_s) {
            end_slot(w, s, TIMEOUT, reopen);
        }
    }
}

static void *run(void *arg) {
    worker_t *w = arg;
    unsigned char buf[CHUNK];
    for (int i = 0; i < w->n_streams; i++) open_stream(w, &w->streams[i]);
    for (int i = 0; i < w->n_slots; i++) open_slot(w, &w->slots[i]);
    struct epoll_event events[1024];
    double end = t0 + duration, last_tick = 0, t;
    /* The run, then up to 2 s for the long streams' last echoes (no new exchange starts). */
    while ((t = now_s()) < end + 2.0) {
        int running = t < end;
        if (!running) {
            int waiting = 0;
            for (int i = 0; i < w->n_streams; i++)
                if (w->streams[i].fd >= 0 && w->streams[i].verified < w->streams[i].sent) waiting = 1;
            if (!waiting) break;
        }
        int k = epoll_wait(w->ep, events, 1024, w->rate > 0 ? 1 : 5);
        t = now_s();
        for (int e = 0; e < k; e++) {
            int is_long = *(int *)events[e].data.ptr;
            if (is_long) on_stream(w, events[e].data.ptr, events[e].events, buf, t);
            else if (running) on_slot(w, events[e].data.ptr, events[e].events, buf, 1);
        }
        if (t - last_tick >= (w->rate > 0 ? 0.001 : 0.005)) {
            tick(w, t, running);
            last_tick = t;
        }
    }
    for (int i = 0; i < w->n_slots; i++)
        if (w->slots[i].state != IDLE) {
            w->in_flight_at_end++;
            close(w->slots[i].fd);
        }
    for (int i = 0; i < w->n_streams; i++)
        if (w->streams[i].fd >= 0) close(w->streams[i].fd);
    return NULL;
}

static int compare_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void print_samples(const char *name, samples_t *s) {
    printf(",\"%s\":[", name);
    for (long i = 0; i < s->n; i++) printf(i ? ",%u" : "%u", s->v[i]);
    printf("]");
}

static void print_percentiles(const char *name, samples_t *s) {
    qsort(s->v, s->n, sizeof(uint32_t), compare_u32);
    if (!s->n) {
        printf("\"%s\":{\"samples\":0,\"p50\":null,\"p99\":null,\"max\":null}", name);
        return;
    }
    printf("\"%s\":{\"samples\":%ld,\"p50\":%u,\"p99\":%u,\"max\":%u}", name, s->n, s->v[(s->n - 1) / 2],
           s->v[(long)((s->n - 1) * 0.99)], s->v[s->n - 1]);
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s HOST PORT CONCURRENCY LONG DURATION_S [THREADS [TIMEOUT_MS [RATE]]]\n", argv[0]);
        return 64;
    }
    signal(SIGPIPE, SIG_IGN);
    int concurrency = atoi(argv[3]), n_long = atoi(argv[4]);
    duration = atof(argv[5]);
    int n_threads = argc > 6 ? atoi(argv[6]) : 1;
    timeout_s = (argc > 7 ? atof(argv[7]) : 2000) / 1000;
    double rate = argc > 8 ? atof(argv[8]) : 0;
    if (concurrency < 0 || n_long < 0 || concurrency + n_long < 1 || duration <= 0 || n_threads < 1 || timeout_s <= 0 ||
        rate < 0) {
        fprintf(stderr, "churn: CONCURRENCY >= 0, LONG >= 0 (not both 0), DURATION_S > 0, THREADS >= 1, TIMEOUT_MS > 0, "
                        "RATE >= 0\n");
        return 64;
    }
    ring = pattern_ring(CHUNK > SIZE ? CHUNK : SIZE);
    addr = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "churn: HOST is an IPv4 address, not %s\n", argv[1]);
        return 64;
    }
    n_slices = (long)(duration / SLICE_S) + 1;
    worker_t *workers = calloc(n_threads, sizeof(worker_t));
    for (int i = 0; i < n_threads; i++) {
        worker_t *w = &workers[i];
        w->ep = epoll_create1(0);
        w->n_slots = concurrency / n_threads + (i < concurrency % n_threads);
        w->n_streams = n_long / n_threads + (i < n_long % n_threads);
        w->slots = calloc(w->n_slots ? w->n_slots : 1, sizeof(slot_t));
        w->streams = calloc(w->n_streams ? w->n_streams : 1, sizeof(stream_t));
        w->slices = calloc(n_slices, sizeof(slice_t));
        for (int j = 0; j < w->n_streams; j++) w->streams[j] = (stream_t){.is_long = 1, .fd = -1};
        w->started = i * 1000003L;
        w->rate = rate / n_threads;
    }
    t0 = now_s();
    pthread_t *threads = calloc(n_threads, sizeof(pthread_t));
    for (int i = 0; i < n_threads; i++) pthread_create(&threads[i], NULL, run, &workers[i]);
    for (int i = 0; i < n_threads; i++) pthread_join(threads[i], NULL);

    /* The slices of every thread, merged. */
    long totals[KINDS] = {0}, in_flight = 0;
    samples_t connect_all = {0}, exchange_all = {0};
    for (long i = 0; i < n_slices; i++) {
        slice_t merged = {0};
        for (int j = 0; j < n_threads; j++) {
            slice_t *s = &workers[j].slices[i];
            for (int k = 0; k < KINDS; k++) merged.counts[k] += s->counts[k];
            for (long x = 0; x < s->connect_us.n; x++) add_sample(&merged.connect_us, s->connect_us.v[x]);
            for (long x = 0; x < s->exchange_us.n; x++) add_sample(&merged.exchange_us, s->exchange_us.v[x]);
        }
        printf("{\"slice\":%ld,\"t\":%.4f", i, t0 + i * SLICE_S);
        for (int k = 0; k < KINDS; k++) {
            printf(",\"%s\":%ld", kind_names[k], merged.counts[k]);
            totals[k] += merged.counts[k];
        }
        print_samples("connect_us", &merged.connect_us);
        print_samples("exchange_us", &merged.exchange_us);
        printf("}\n");
        for (long x = 0; x < merged.connect_us.n; x++) add_sample(&connect_all, merged.connect_us.v[x]);
        for (long x = 0; x < merged.exchange_us.n; x++) add_sample(&exchange_all, merged.exchange_us.v[x]);
        free(merged.connect_us.v);
        free(merged.exchange_us.v);
    }
    long failed = 0;
    for (int k = 1; k < KINDS; k++) failed += totals[k];
    for (int j = 0; j < n_threads; j++) in_flight += workers[j].in_flight_at_end;
    printf("{\"summary\":{\"t0\":%.4f,\"duration_s\":%g,\"concurrency\":%d,\"threads\":%d,\"timeout_ms\":%g,\"rate\":%g,"
           "\"exchanges\":%ld,\"exchanges_per_s\":%.1f,\"failed\":%ld,\"failures\":{",
           t0, duration, concurrency, n_threads, timeout_s * 1000, rate, totals[OK], totals[OK] / duration, failed);
    for (int k = 1; k < KINDS; k++) printf(k > 1 ? ",\"%s\":%ld" : "\"%s\":%ld", kind_names[k], totals[k]);
    printf("},\"in_flight_at_end\":%ld,", in_flight);
    print_percentiles("connect_us", &connect_all);
    printf(",");
    print_percentiles("exchange_us", &exchange_all);
    printf(",\"long_streams\":[");
    int broken = 0, first = 1;
    for (int j = 0; j < n_threads; j++)
        for (int i = 0; i < workers[j].n_streams; i++) {
            stream_t *l = &workers[j].streams[i];
            int intact = !l->broken && l->verified == l->sent && l->sent > 0;
            broken |= !intact;
            printf("%s{\"sent\":%ld,\"verified\":%ld,\"max_stall_ms\":%.1f,\"intact\":%s,\"broken\":", first ? "" : ",",
                   l->sent, l->verified, l->max_stall * 1000, intact ? "true" : "false");
            if (l->broken) printf("\"%s\"}", l->broken);
            else printf("null}");
            first = 0;
        }
    printf("],\"long_streams_intact\":%s}}\n", broken ? "false" : "true");
    return failed || broken ? 1 : 0;
}
