/* Per-request memory: bump allocation from chunks, all released at once when the request ends.
 * The first chunk is kept across requests, so a request that fits in it allocates nothing. */
#ifndef NOOK_CORE_ARENA_H
#define NOOK_CORE_ARENA_H

#include <stdalign.h>
#include <stddef.h>
#include <string.h>

#include "io/alloc.h"

typedef struct core_arena_chunk core_arena_chunk;

typedef struct core_arena {
    const io_alloc *alloc;
    core_arena_chunk *chunks; /* newest first; the last one is the kept first chunk */
    unsigned char *cur, *end; /* the free bytes of the newest chunk */
    size_t first_size;
} core_arena;

#define CORE_ARENA_ALIGN (alignof(max_align_t))

void core_arena_init(core_arena *a, const io_alloc *alloc, size_t first_size);

/* core_arena_alloc when the newest chunk lacks room: a new chunk. */
void *core_arena_alloc_slow(core_arena *a, size_t size);

/* size bytes aligned for any type; NULL on ENOMEM. Inline: a request makes dozens of these. */
static inline void *core_arena_alloc(core_arena *a, size_t size)
{
    size_t need = (size + CORE_ARENA_ALIGN - 1) & ~(CORE_ARENA_ALIGN - 1);
    if (need - 1 < (size_t)(a->end - a->cur)) { /* 0 (size 0, or too big): the slow path */
        void *p = a->cur;
        a->cur += need;
        return p;
    }
    return core_arena_alloc_slow(a, size);
}

/* A copy of n bytes (not terminated) / of a string view with a NUL added. */
static inline void *core_arena_dup(core_arena *a, const void *p, size_t n)
{
    void *q = core_arena_alloc(a, n ? n : 1);
    if (q && n)
        memcpy(q, p, n);
    return q;
}

char *core_arena_strndup(core_arena *a, const char *p, size_t n);

/* Releases everything but the first chunk. */
void core_arena_reset(core_arena *a);

/* Releases everything. */
void core_arena_free(core_arena *a);

#endif
