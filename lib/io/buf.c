#include "io/buf.h"

#include <string.h>

int io_buf_reserve(io_buf *b, const io_alloc *a, size_t extra, size_t max)
{
    size_t held = io_buf_size(b);
    if (extra > max || held > max - extra)
        return NOOK_ELIMIT;
    if (io_buf_room(b) >= extra)
        return NOOK_OK;
    if (b->off > 0) {
        /* Reuse the consumed front before asking for memory. */
        memmove(b->data, b->data + b->off, held);
        b->off = 0;
        b->len = held;
        if (io_buf_room(b) >= extra)
            return NOOK_OK;
    }
    size_t need = held + extra;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < need)
        cap *= 2;
    if (cap > max && need <= max)
        cap = max > 1024 ? max : 1024;
    char *p = io_realloc(a, b->data, cap);
    if (!p)
        return NOOK_ENOMEM;
    b->data = p;
    b->cap = cap;
    return NOOK_OK;
}

int io_buf_append(io_buf *b, const io_alloc *a, const void *p, size_t n, size_t max)
{
    int rc = io_buf_reserve(b, a, n, max);
    if (rc != NOOK_OK)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return NOOK_OK;
}

void io_buf_consume(io_buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

void io_buf_trim(io_buf *b, const io_alloc *a, size_t keep)
{
    if (io_buf_size(b) == 0 && b->cap > keep)
        io_buf_free(b, a);
}

void io_buf_free(io_buf *b, const io_alloc *a)
{
    io_free(a, b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}
