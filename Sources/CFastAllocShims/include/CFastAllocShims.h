#ifndef C_FAST_ALLOC_SHIMS_H
#define C_FAST_ALLOC_SHIMS_H

#include <stdint.h>

/// The calling thread's magazine lookup for ThreadSafePool (FastAlloc's _Magazines.swift):
/// the depot used last and this thread's magazine of it, and the thread's rack (its table of
/// all its magazines). Touched by its own thread only.
///
/// Depot ids are never reused, so a stale entry (its pool gone) never matches again and needs
/// no invalidation from other threads. The thread-exit destructor clears it.
typedef struct fastalloc_magazine_cache {
    uint64_t depot;
    void *magazine;
    void *rack;
} fastalloc_magazine_cache;

/// Initial-exec TLS: its address is the thread pointer plus a constant (no call, unlike
/// pthread_getspecific). Defined once, in shims.c.
extern __thread fastalloc_magazine_cache fastalloc_magazine_tls __attribute__((tls_model("initial-exec")));

static inline fastalloc_magazine_cache *fastalloc_magazine_cache_get(void) {
    return &fastalloc_magazine_tls;
}

#endif
