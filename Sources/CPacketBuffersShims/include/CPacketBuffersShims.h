#ifndef C_PACKET_BUFFERS_SHIMS_H
#define C_PACKET_BUFFERS_SHIMS_H

/// One byte of thread-local storage per thread; its address identifies the calling thread.
/// Initial-exec TLS: the address is computed from the thread pointer in one or two
/// instructions (no call), which is why PacketBuffers uses it instead of pthread_self() on
/// every buffer release. Defined once, in shims.c, so every module sees the same variable.
extern __thread char fastalloc_thread_tag __attribute__((tls_model("initial-exec")));

/// An identity of the calling thread, unique among live threads.
static inline void *fastalloc_current_thread(void) {
    return &fastalloc_thread_tag;
}

#endif
