#ifndef FASTALLOC_CLIBUV_SHIM_H
#define FASTALLOC_CLIBUV_SHIM_H

#include <uv.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>

/// Debian's libuv 1.44 has no UV_TCP_REUSEPORT: set SO_REUSEPORT on the handle's socket, which
/// uv_tcp_init_ex(loop, handle, AF_INET) created, before binding. Returns 0 or a UV_E* code.
static inline int fastalloc_uv_tcp_reuseport(uv_tcp_t *handle) {
    uv_os_fd_t fd;
    int status = uv_fileno((const uv_handle_t *)handle, &fd);
    if (status != 0) return status;
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0) return uv_translate_sys_error(errno);
    return 0;
}

/// uv_buf_t's fields by name, for Swift.
static inline uv_buf_t fastalloc_uv_buf(void *base, size_t len) {
    return uv_buf_init((char *)base, (unsigned int)len);
}

#endif
