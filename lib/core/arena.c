#include "core/arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <string.h>

struct core_arena_chunk {
    core_arena_chunk *next;
    size_t size;
    alignas(max_align_t) unsigned char data[];
};

#define ALIGN CORE_ARENA_ALIGN

void core_arena_init(core_arena *a, const io_alloc *alloc, size_t first_size)
{
    *a = (core_arena){.alloc = alloc, .first_size = first_size};
}

static core_arena_chunk *new_chunk(core_arena *a, size_t size)
{
    core_arena_chunk *c = io_malloc(a->alloc, sizeof *c + size);
    if (!c)
        return NULL;
    c->size = size;
    c->next = a->chunks;
    a->chunks = c;
    a->cur = c->data;
    a->end = c->data + size;
    return c;
}

void *core_arena_alloc_slow(core_arena *a, size_t size)
{
    if (size > SIZE_MAX / 2)
        return NULL;
    size_t need = (size + ALIGN - 1) & ~(ALIGN - 1);
    if (!a->chunks || (size_t)(a->end - a->cur) < need) {
        size_t csize = a->chunks ? a->chunks->size * 2 : a->first_size;
        if (csize < need)
            csize = need;
        if (!new_chunk(a, csize))
            return NULL;
    }
    void *p = a->cur;
    a->cur += need;
    return p;
}

char *core_arena_strndup(core_arena *a, const char *p, size_t n)
{
    char *q = core_arena_alloc(a, n + 1);
    if (!q)
        return NULL;
    if (n)
        memcpy(q, p, n);
    q[n] = '\0';
    return q;
}

void core_arena_reset(core_arena *a)
{
    while (a->chunks && a->chunks->next) {
        core_arena_chunk *c = a->chunks;
        a->chunks = c->next;
        io_free(a->alloc, c);
    }
    if (a->chunks) {
        a->cur = a->chunks->data;
        a->end = a->chunks->data + a->chunks->size;
    }
}

void core_arena_free(core_arena *a)
{
    while (a->chunks) {
        core_arena_chunk *c = a->chunks;
        a->chunks = c->next;
        io_free(a->alloc, c);
    }
    a->cur = a->end = NULL;
}
