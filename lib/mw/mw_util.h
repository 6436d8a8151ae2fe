/* Helpers shared by the built-in middleware (lib/mw/). */
#ifndef NOOK_MW_UTIL_H
#define NOOK_MW_UTIL_H

#include "io/alloc.h"
#include "nook.h"

/* The client's address without the port, as a view into `peer` (nook_req_peer's text):
 * "127.0.0.1:51234" → "127.0.0.1", "[::1]:4000" → "::1", "unix" → "unix". Text of any other
 * shape is returned whole. */
nook_str mw_peer_host(nook_str peer);

/* Middleware memory comes from the server's allocator (nook_server_set_allocator). Every
 * configuration starts with an mw_conf recording it, so free functions — which receive only
 * the pointer — release through it too. */
typedef struct mw_conf {
    const io_alloc *alloc;
} mw_conf;

/* A zeroed configuration of `size` bytes (starting with an mw_conf); NULL on ENOMEM. */
void *mw_conf_new(nook_server *srv, size_t size);

/* Releases a configuration made by mw_conf_new (a nook_free_fn). NULL-safe. */
void mw_conf_free(void *conf);

/* Zeroed memory / a string copy from the allocator; NULL on ENOMEM (or s NULL). */
void *mw_calloc(const io_alloc *a, size_t n, size_t size);
char *mw_strdup(const io_alloc *a, const char *s);

#endif
