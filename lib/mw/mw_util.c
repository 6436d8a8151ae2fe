/* Helpers shared by the built-in middleware. */
#include <string.h>

#include "mw/mw_util.h"

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
