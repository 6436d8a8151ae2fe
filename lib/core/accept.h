/* The front door: picks each new connection's protocol (TLS + ALPN, or the h2c preface) and
 * hands it to the HTTP/1.1 or HTTP/2 codec. */
#ifndef NOOK_CORE_ACCEPT_H
#define NOOK_CORE_ACCEPT_H

#include <sys/socket.h>

#include "core/server.h"

/* What a connection needs to know about the listener that accepted it (lives as long as the
 * server). */
typedef struct core_listener {
    nook_tls *tls; /* NULL: cleartext */
    int port;      /* for Alt-Svc */
} core_listener;

/* Takes ownership of an accepted non-blocking socket and of the connection slot taken for it
 * (core/server.c). */
void core_accept(core_worker *w, int fd, const struct sockaddr *peer, socklen_t peer_len,
                 const core_listener *l);

#endif
