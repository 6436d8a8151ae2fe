/* Per-request memory: bump allocation from chunks, all released at once when the request ends.
 * The first chunk is kept across requests, so a request that fits in it allocates nothing. */
#ifndef NOOK_CORE_ARENA_H
#define NOOK_CORE_ARENA_H

#include <stddef.h>

#include "io/alloc.h"

typedef struct core_arena_chunk core_arena_chunk;

typedef struct core_arena {
    const io_alloc *alloc;
    core_arena_chunk *chunks; /* newest first; the last one is the kept first chunk */
    size_t used;              /* bytes used in the newest chunk */
    size_t first_size;
} core_arena;

void core_arena_init(core_arena *a, const io_alloc *alloc, size_t first_size);

/* size bytes aligned for any type; NULL on ENOMEM. */
void *core_arena_alloc(core_arena *a, size_t size);

/* A copy of n bytes (not terminated) / of a string view with a NUL added. */
void *core_arena_dup(core_arena *a, const void *p, size_t n);
char *core_arena_strndup(core_arena *a, const char *p, size_t n);

/* Releases everything but the first chunk. */
void core_arena_reset(core_arena *a);

/* Releases everything. */
void core_arena_free(core_arena *a);

#endif
