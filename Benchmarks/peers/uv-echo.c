/* A minimal libuv TCP echo server in the shape of libuv's own echo examples: a malloc for
 * every read, freed once the write that echoes it completes. The C baseline FastAlloc's
 * server and load client are measured against.
 *
 *   ./uv-echo [PORT] [WORKERS]     (default 7001, 1; workers share the port with SO_REUSEPORT)
 */
#include <uv.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef struct {
    uv_write_t req;
    uv_buf_t buf;
} write_req_t;

static int port = 7001;

static void alloc_buffer(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
    (void)handle;
    buf->base = malloc(suggested);
    buf->len = suggested;
}

static void on_close(uv_handle_t *handle) { free(handle); }

static void after_write(uv_write_t *req, int status) {
    write_req_t *wr = (write_req_t *)req;
    uv_handle_t *stream = (uv_handle_t *)req->handle;
    free(wr->buf.base);
    free(wr);
    if (status < 0 && !uv_is_closing(stream)) uv_close(stream, on_close);
}

static void on_read(uv_stream_t *client, ssize_t nread, const uv_buf_t *buf) {
    if (nread > 0) {
        write_req_t *req = malloc(sizeof(write_req_t));
        req->buf = uv_buf_init(buf->base, (unsigned int)nread);
        if (uv_write(&req->req, client, &req->buf, 1, after_write) < 0) {
            free(buf->base);
            free(req);
            uv_close((uv_handle_t *)client, on_close);
        }
        return;
    }
    free(buf->base);
    if (nread < 0 && !uv_is_closing((uv_handle_t *)client)) uv_close((uv_handle_t *)client, on_close);
}

static void on_connection(uv_stream_t *server, int status) {
    if (status < 0) return;
    uv_tcp_t *client = malloc(sizeof(uv_tcp_t));
    uv_tcp_init(server->loop, client);
    if (uv_accept(server, (uv_stream_t *)client) == 0) {
        uv_tcp_nodelay(client, 1);
        uv_read_start((uv_stream_t *)client, alloc_buffer, on_read);
    } else {
        uv_close((uv_handle_t *)client, on_close);
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
        fprintf(stderr, "uv-echo: listen 127.0.0.1:%d: %s\n", port, uv_strerror(r));
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
    fprintf(stderr, "uv-echo: 127.0.0.1:%d, %d worker(s)\n", port, workers);
    for (int i = 0; i < workers; i++) pthread_join(threads[i], NULL);
    return 0;
}
