/* LD_PRELOAD=./libmalloc-count.so PROGRAM ...: counts calls to malloc, calloc, realloc and
 * posix_memalign/aligned_alloc in the whole process and prints the totals to stderr at exit.
 * Run a program twice for different lengths: the difference over the difference in work is
 * the allocations per unit of work (0 for a path that does not allocate). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

static atomic_long count;
static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);

/* dlsym may call calloc before real_calloc is known: serve it from a small static arena. */
static char bootstrap[4096];
static size_t bootstrap_used;

static void (*real_free)(void *);

static void init(void) {
    real_free = dlsym(RTLD_NEXT, "free");
    real_malloc = dlsym(RTLD_NEXT, "malloc");
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
    real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
}

void *malloc(size_t n) {
    if (!real_malloc) init();
    atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
    return real_malloc(n);
}
void *calloc(size_t a, size_t b) {
    if (!real_calloc) {
        size_t n = (a * b + 15) & ~(size_t)15;
        if (bootstrap_used + n > sizeof(bootstrap)) return NULL;
        void *p = bootstrap + bootstrap_used;
        bootstrap_used += n;
        return p;
    }
    atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
    return real_calloc(a, b);
}
void *realloc(void *p, size_t n) {
    if (!real_realloc) init();
    atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
    if ((char *)p >= bootstrap && (char *)p < bootstrap + sizeof(bootstrap)) {
        /* Not the real allocator's: move it (its size is unknown, but it lies in the arena). */
        void *moved = real_malloc(n);
        size_t available = (size_t)(bootstrap + sizeof(bootstrap) - (char *)p);
        if (moved) memcpy(moved, p, n < available ? n : available);
        return moved;
    }
    return real_realloc(p, n);
}
int posix_memalign(void **p, size_t a, size_t n) {
    if (!real_posix_memalign) init();
    atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
    return real_posix_memalign(p, a, n);
}
void *aligned_alloc(size_t a, size_t n) {
    if (!real_aligned_alloc) init();
    atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
    return real_aligned_alloc(a, n);
}
void free(void *p) {
    if ((char *)p >= bootstrap && (char *)p < bootstrap + sizeof(bootstrap)) return;
    /* While init() is still inside dlsym (which may free its own error strings), leak. */
    if (!real_free) return;
    real_free(p);
}

/* Writes "malloc-count: N\n" to stderr with async-signal-safe calls only. */
static void write_count(void) {
    char line[48] = "malloc-count: ";
    char digits[24];
    long value = atomic_load(&count);
    int n = 0, len = 14;
    do { digits[n++] = (char)('0' + value % 10); value /= 10; } while (value > 0 && n < (int)sizeof digits);
    while (n > 0) line[len++] = digits[--n];
    line[len++] = '\n';
    (void)!write(2, line, (size_t)len);
}

__attribute__((destructor)) static void report(void) { write_count(); }

/* A program that leaves SIGTERM at its default (the C and NIO echo peers) would die without
 * running destructors: report first, then die of the signal as it would have. A program that
 * installs its own handler (fastalloc-server, haproxy, nginx) replaces this one and exits normally. */
static void on_sigterm(int signal_number) {
    write_count();
    struct sigaction fallback = {0};
    fallback.sa_handler = SIG_DFL;
    sigaction(signal_number, &fallback, NULL);
    raise(signal_number);
}

__attribute__((constructor)) static void install(void) {
    if (!real_malloc) init();  /* before the program runs: no dlsym later, from inside free */
    struct sigaction action = {0};
    action.sa_handler = on_sigterm;
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
}
