#include "io/alloc.h"

#include <stdlib.h>

static void *libc_malloc(size_t n, void *ud)
{
    (void)ud;
    return malloc(n ? n : 1);
}

static void *libc_realloc(void *p, size_t n, void *ud)
{
    (void)ud;
    return realloc(p, n ? n : 1);
}

static void libc_free(void *p, void *ud)
{
    (void)ud;
    free(p);
}

const io_alloc io_alloc_libc = {libc_malloc, libc_realloc, libc_free, NULL};
