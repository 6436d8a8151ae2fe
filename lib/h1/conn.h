/* HTTP/1.1 connections: the codec that turns a socket's bytes into exchanges and responses back
 * into bytes. Talks to the core only through core/proto.h. */
#ifndef NOOK_H1_CONN_H
#define NOOK_H1_CONN_H

#include <sys/socket.h>

#include "core/server.h"

/* Takes ownership of an accepted, non-blocking socket and serves HTTP/1.x on it. On failure the
 * socket is closed and the error logged. */
void h1_conn_start(core_worker *w, int fd, const struct sockaddr *peer, socklen_t peer_len);

#endif
