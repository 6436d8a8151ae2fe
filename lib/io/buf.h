/* A growable byte buffer with a hard maximum: bytes are appended at the end and consumed from the
 * front. Consumed space is reclaimed by compaction before growing, so a buffer that is drained as
 * fast as it fills never grows. */
#ifndef NOOK_IO_BUF_H
#define NOOK_IO_BUF_H

#include <stddef.h>

#include "io/alloc.h"

typedef struct io_buf {
    char *data;
    size_t off; /* first unconsumed byte */
    size_t len; /* end of the bytes held */
    size_t cap;
} io_buf;

/* Bytes held and not yet consumed. */
static inline size_t io_buf_size(const io_buf *b) { return b->len - b->off; }
static inline char *io_buf_head(const io_buf *b) { return b->data + b->off; }
static inline char *io_buf_tail(const io_buf *b) { return b->data + b->len; }
static inline size_t io_buf_room(const io_buf *b) { return b->cap - b->len; }

/* Makes room for at least `extra` more bytes at the tail, keeping the held bytes at most `max`
 * in total. NOOK_OK, NOOK_ELIMIT (would exceed max), NOOK_ENOMEM. */
int io_buf_reserve(io_buf *b, const io_alloc *a, size_t extra, size_t max);

/* Appends n bytes (reserve + copy). */
int io_buf_append(io_buf *b, const io_alloc *a, const void *p, size_t n, size_t max);

/* Marks n bytes at the tail as filled (after writing into io_buf_tail). */
static inline void io_buf_commit(io_buf *b, size_t n) { b->len += n; }

/* Drops n bytes from the front; an emptied buffer starts again at offset 0. */
void io_buf_consume(io_buf *b, size_t n);

/* Releases the storage when it is empty and larger than keep (to bound idle memory). */
void io_buf_trim(io_buf *b, const io_alloc *a, size_t keep);

void io_buf_free(io_buf *b, const io_alloc *a);

#endif
