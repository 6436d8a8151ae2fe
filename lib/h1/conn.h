/* HTTP/1.1 connections: the codec that turns a socket's bytes into exchanges and responses back
 * into bytes. Talks to the core only through core/proto.h. */
#ifndef NOOK_H1_CONN_H
#define NOOK_H1_CONN_H

#include "core/server.h"
#include "io/stream.h"

/* Takes over an open stream (socket, transport, input already buffered) and serves HTTP/1.x on
 * it; `from` is left without a socket. alt_svc_port > 0 adds Alt-Svc: h2=":PORT" to every
 * response (HTTP/1.1 over TLS with HTTP/2 available). On failure the stream is closed and the
 * error logged. */
void h1_conn_start(core_worker *w, io_stream *from, nook_str peer, int alt_svc_port);

#endif
