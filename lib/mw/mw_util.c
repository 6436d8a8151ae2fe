/* Helpers shared by the built-in middleware. */
#include "mw/mw_util.h"

#include <stdint.h>
#include <string.h>

#include "core/server.h"

nook_str mw_peer_host(nook_str peer)
{
    if (!peer.ptr || peer.len == 0)
        return (nook_str){"", 0};
    if (peer.ptr[0] == '[') {
        const char *close = memchr(peer.ptr, ']', peer.len);
        if (close)
            return (nook_str){peer.ptr + 1, (size_t)(close - peer.ptr - 1)};
        return peer;
    }
    /* An IPv4 "host:port" has exactly one colon; anything else (a Unix socket) has none. */
    const char *colon = memchr(peer.ptr, ':', peer.len);
    if (colon && !memchr(colon + 1, ':', peer.len - (size_t)(colon + 1 - peer.ptr)))
        return (nook_str){peer.ptr, (size_t)(colon - peer.ptr)};
    return peer;
}

void *mw_calloc(const io_alloc *a, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = io_malloc(a, n * size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

char *mw_strdup(const io_alloc *a, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *p = io_malloc(a, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

void *mw_conf_new(nook_server *srv, size_t size)
{
    const io_alloc *a = core_server_alloc(srv);
    mw_conf *c = mw_calloc(a, 1, size);
    if (c)
        c->alloc = a;
    return c;
}

void mw_conf_free(void *conf)
{
    if (conf)
        io_free(((mw_conf *)conf)->alloc, conf);
}
