#include "io/pool.h"

#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define POOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_ASAN 1
#endif
#endif
#ifdef POOL_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define MIN_SHIFT 5 /* the smallest class holds 32 bytes */
#define LARGE ((size_t)1 << (MIN_SHIFT + IO_POOL_CLASSES - 1))

/* Every block starts with this header; the caller's bytes follow, 16-byte aligned. The free-list
 * link lives here rather than in the caller's bytes: those are poisoned while cached, and
 * LeakSanitizer does not follow pointers through poisoned memory. */
typedef union block_head {
    struct {
        size_t cap;                 /* bytes the caller may use: a class size, or a large size */
        union block_head *next;     /* next cached block of the class */
    } h;
    max_align_t align;
} block_head;

/* The smallest class whose size (1 << (MIN_SHIFT + k)) holds cap bytes: from the position of
 * the highest bit of cap - 1, without a loop (every allocation asks this). */
static int class_of(size_t cap)
{
    if (cap <= ((size_t)1 << MIN_SHIFT))
        return 0;
    return (int)(sizeof(unsigned long long) * 8) - __builtin_clzll((unsigned long long)cap - 1) -
           MIN_SHIFT;
}

static void *pool_malloc(size_t n, void *ud)
{
    io_pool *p = ud;
    size_t cap = n;
    if (n <= LARGE) {
        int k = class_of(n ? n : 1);
        cap = (size_t)1 << (MIN_SHIFT + k);
        block_head *b = p->free[k];
        if (b) {
            UNPOISON(b + 1, cap);
            p->free[k] = b->h.next;
            p->cached_bytes -= cap;
            return b + 1;
        }
    }
    block_head *b = io_malloc(p->backing, sizeof *b + cap);
    if (!b)
        return NULL;
    b->h.cap = cap;
    return b + 1;
}

static void pool_free(void *ptr, void *ud)
{
    io_pool *p = ud;
    if (!ptr)
        return;
    block_head *b = (block_head *)ptr - 1;
    size_t cap = b->h.cap;
    if (cap <= LARGE && p->cached_bytes + cap <= p->max_cached) {
        int k = class_of(cap);
        b->h.next = p->free[k];
        p->free[k] = b;
        p->cached_bytes += cap;
        POISON(b + 1, cap);
        return;
    }
    io_free(p->backing, b);
}

static void *pool_realloc(void *ptr, size_t n, void *ud)
{
    io_pool *p = ud;
    if (!ptr)
        return pool_malloc(n, ud);
    block_head *b = (block_head *)ptr - 1;
    if (n <= b->h.cap)
        return ptr;
    if (b->h.cap > LARGE) { /* large stays large: let the backing allocator move it */
        block_head *nb = io_realloc(p->backing, b, sizeof *nb + n);
        if (!nb)
            return NULL;
        nb->h.cap = n;
        return nb + 1;
    }
    void *q = pool_malloc(n, ud);
    if (!q)
        return NULL;
    memcpy(q, ptr, b->h.cap);
    pool_free(ptr, ud);
    return q;
}

void io_pool_init(io_pool *p, const io_alloc *backing, size_t max_cached)
{
    memset(p, 0, sizeof *p);
    p->as_alloc = (io_alloc){pool_malloc, pool_realloc, pool_free, p};
    p->backing = backing;
    p->max_cached = max_cached;
}

void io_pool_drain(io_pool *p)
{
    for (int k = 0; k < IO_POOL_CLASSES; k++) {
        while (p->free[k]) {
            block_head *b = p->free[k];
            p->free[k] = b->h.next;
            UNPOISON(b + 1, b->h.cap);
            io_free(p->backing, b);
        }
    }
    p->cached_bytes = 0;
}
