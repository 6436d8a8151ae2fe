/* The allocator every layer uses: the server's hook, or libc by default. */
#ifndef NOOK_IO_ALLOC_H
#define NOOK_IO_ALLOC_H

#include "nook.h"

typedef struct io_alloc {
    nook_malloc_fn malloc_fn;
    nook_realloc_fn realloc_fn;
    nook_release_fn free_fn;
    void *user_data;
} io_alloc;

/* libc's malloc/realloc/free. */
extern const io_alloc io_alloc_libc;

static inline void *io_malloc(const io_alloc *a, size_t n) { return a->malloc_fn(n, a->user_data); }
static inline void *io_realloc(const io_alloc *a, void *p, size_t n)
{
    return a->realloc_fn(p, n, a->user_data);
}
static inline void io_free(const io_alloc *a, void *p) { a->free_fn(p, a->user_data); }

#endif
