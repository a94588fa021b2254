/* A tuned libuv TCP echo server: the fastest plain C libuv echo we know how to write, so that a
 * benchmark against it measures the client (or the other server), not this one. One 64 KiB
 * buffer per connection, handed out by alloc_cb; on read it tries `uv_try_write` for the whole
 * chunk first (no uv_write_t, no extra epoll_ctl when the socket takes it all). What the socket
 * does not take is queued with one uv_write from the same buffer, and reading stops until that
 * write completes (backpressure: the buffer is in use until then), then resumes.
 *
 *   ./uv-echo-tuned [PORT] [WORKERS]     (default 7001, 1; workers share the port with SO_REUSEPORT)
 */
#include <uv.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define BUFFER_SIZE (64 * 1024)

typedef struct {
    uv_tcp_t tcp;       /* first: the handle's address is the connection's */
    uv_write_t req;     /* at most one queued write at a time (reads stop while it is pending) */
    char buffer[BUFFER_SIZE];
} conn_t;

static int port = 7001;

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void alloc_buffer(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    conn_t *c = (conn_t *)handle;
    buf->base = c->buffer;
    buf->len = BUFFER_SIZE;
}

static void on_close(uv_handle_t *handle) { free(handle); }

static void close_conn(uv_stream_t *stream) {
    if (!uv_is_closing((uv_handle_t *)stream)) uv_close((uv_handle_t *)stream, on_close);
}

static void after_write(uv_write_t *req, int status) {
    uv_stream_t *stream = req->handle;
    if (status < 0) {
        close_conn(stream);
        return;
    }
    if (uv_read_start(stream, alloc_buffer, on_read) < 0) close_conn(stream);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
    conn_t *c = (conn_t *)stream;
    if (nread <= 0) {
        if (nread < 0) close_conn(stream);
        return;
    }
    uv_buf_t out = uv_buf_init(buf->base, (unsigned int)nread);
    int written = uv_try_write(stream, &out, 1);
    if (written == nread) return;
    if (written < 0 && written != UV_EAGAIN && written != UV_ENOSYS) {
        close_conn(stream);
        return;
    }
    if (written > 0) out = uv_buf_init(buf->base + written, (unsigned int)(nread - written));
    /* The rest goes out from the same buffer: no more reads into it until the write is done. */
    uv_read_stop(stream);
    if (uv_write(&c->req, stream, &out, 1, after_write) < 0) close_conn(stream);
}

static void on_connection(uv_stream_t *server, int status) {
    if (status < 0) return;
    conn_t *c = malloc(sizeof(conn_t));
    uv_tcp_init(server->loop, &c->tcp);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) == 0) {
        uv_tcp_nodelay(&c->tcp, 1);
        uv_read_start((uv_stream_t *)&c->tcp, alloc_buffer, on_read);
    } else {
        uv_close((uv_handle_t *)&c->tcp, on_close);
    }
}

static void *worker(void *arg) {
    (void)arg;
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_tcp_t server;
    uv_tcp_init_ex(&loop, &server, AF_INET);
    uv_os_fd_t fd;
    int on = 1;
    uv_fileno((uv_handle_t *)&server, &fd);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    int r = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    if (r == 0) r = uv_listen((uv_stream_t *)&server, 1024, on_connection);
    if (r != 0) {
        fprintf(stderr, "uv-echo-tuned: listen 127.0.0.1:%d: %s\n", port, uv_strerror(r));
        exit(1);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) port = atoi(argv[1]);
    int workers = argc > 2 ? atoi(argv[2]) : 1;
    signal(SIGPIPE, SIG_IGN);
    pthread_t threads[64];
    if (workers < 1 || workers > 64) workers = 1;
    for (int i = 0; i < workers; i++) pthread_create(&threads[i], NULL, worker, NULL);
    fprintf(stderr, "uv-echo-tuned: 127.0.0.1:%d, %d worker(s)\n", port, workers);
    for (int i = 0; i < workers; i++) pthread_join(threads[i], NULL);
    return 0;
}
