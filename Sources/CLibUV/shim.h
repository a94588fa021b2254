#ifndef FASTALLOC_CLIBUV_SHIM_H
#define FASTALLOC_CLIBUV_SHIM_H

#include <uv.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <stdint.h>
#include <sys/timerfd.h>
#include <unistd.h>

/// Debian's libuv 1.44 has no UV_TCP_REUSEPORT: set SO_REUSEPORT on the handle's socket, which
/// uv_tcp_init_ex(loop, handle, family) created, before binding. Returns 0 or a UV_E* code.
static inline int fastalloc_uv_tcp_reuseport(uv_tcp_t *handle) {
    uv_os_fd_t fd;
    int status = uv_fileno((const uv_handle_t *)handle, &fd);
    if (status != 0) return status;
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0) return uv_translate_sys_error(errno);
    return 0;
}

/// TCP_NODELAY and keepalive on the handle's socket, set directly: one setsockopt each, where
/// uv_tcp_nodelay + uv_tcp_keepalive (libuv 1.44 sets TCP_KEEPINTVL 1 and TCP_KEEPCNT 10 behind
/// TCP_KEEPIDLE) and then our own interval and count took seven. `idle` 0 leaves keepalive as
/// it is (off on a new socket). On a listening socket the settings are inherited by every
/// connection it accepts (Linux copies them into the accepted socket). Returns 0 or a UV_E* code.
static inline int fastalloc_uv_tcp_options(uv_tcp_t *handle, int nodelay, int idle, int interval, int count) {
    uv_os_fd_t fd;
    int status = uv_fileno((const uv_handle_t *)handle, &fd);
    if (status != 0) return status;
    int on = 1;
    if (nodelay && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) != 0) return uv_translate_sys_error(errno);
    if (idle <= 0) return 0;
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) != 0) return uv_translate_sys_error(errno);
    if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) != 0) return uv_translate_sys_error(errno);
    if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval)) != 0) return uv_translate_sys_error(errno);
    if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count)) != 0) return uv_translate_sys_error(errno);
    return 0;
}

/// A non-blocking CLOCK_MONOTONIC timerfd (the clock uv_hrtime reads). Returns the fd or a
/// negative UV_E* code.
static inline int fastalloc_timerfd_create(void) {
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    return fd >= 0 ? fd : uv_translate_sys_error(errno);
}

/// Arms the timerfd to expire once at `deadline` nanoseconds of CLOCK_MONOTONIC (0 disarms).
static inline int fastalloc_timerfd_arm(int fd, uint64_t deadline) {
    struct itimerspec spec = {0};
    spec.it_value.tv_sec = (time_t)(deadline / 1000000000u);
    spec.it_value.tv_nsec = (long)(deadline % 1000000000u);
    return timerfd_settime(fd, TFD_TIMER_ABSTIME, &spec, NULL) == 0 ? 0 : uv_translate_sys_error(errno);
}

/// Reads (and so clears) the timerfd's expiry count; 0 if it had not expired.
static inline uint64_t fastalloc_timerfd_consume(int fd) {
    uint64_t expirations = 0;
    return read(fd, &expirations, sizeof expirations) == (ssize_t)sizeof expirations ? expirations : 0;
}

#endif
