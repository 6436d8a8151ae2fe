/*
 * A per-thread cache of small blocks in front of the server's allocator.
 *
 * Objects that live for one request (nghttp2's streams, frames and header copies, HTTP/2 stream
 * state) are freed and allocated again at the same sizes all the time. A pool keeps freed blocks
 * of a few size classes on free lists and hands them out again, so a connection in steady state
 * calls the server's allocator not at all. The cache is bounded (max_cached bytes); past that,
 * and for blocks above the largest class, blocks go straight to the backing allocator.
 *
 * Not thread-safe: one pool per worker loop, used only on that loop's thread. Under
 * AddressSanitizer cached blocks are poisoned, so a use after free is still reported.
 */
#ifndef NOOK_IO_POOL_H
#define NOOK_IO_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "io/alloc.h"

#define IO_POOL_CLASSES 8 /* 32, 64, ..., 4096 bytes */

typedef struct io_pool {
    io_alloc as_alloc; /* allocates through this pool; user_data is the pool */
    const io_alloc *backing;
    void *free[IO_POOL_CLASSES];
    size_t cached_bytes, max_cached;
} io_pool;

/* Sets up an empty pool over `backing` (which must outlive it). */
void io_pool_init(io_pool *p, const io_alloc *backing, size_t max_cached);

/* The pool as an allocator: its malloc/realloc/free, for io_buf and friends. */
static inline const io_alloc *io_pool_alloc(io_pool *p) { return &p->as_alloc; }

/* Returns every cached block to the backing allocator. Blocks still in use stay valid and may
 * be freed into the pool later. */
void io_pool_drain(io_pool *p);

#endif
