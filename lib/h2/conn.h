/* HTTP/2 server connections (nghttp2): the only code in nook that includes nghttp2 headers.
 * Talks to the core only through core/proto.h. */
#ifndef NOOK_H2_CONN_H
#define NOOK_H2_CONN_H

#include "core/server.h"
#include "io/stream.h"

/* Takes over an open stream (socket, transport, and any input already buffered — for h2c that
 * starts with the client preface) and serves HTTP/2 on it. `from` is moved: its memory may be
 * reused by the caller afterwards, but its socket and buffers now belong to the connection. On
 * failure the stream is closed and the error logged. */
void h2_conn_start(core_worker *w, io_stream *from, nook_str peer);

/* The same for a TLS connection that negotiated h2 with inadequate security (RFC 9113 §9.2):
 * answers the preface with GOAWAY(INADEQUATE_SECURITY) and closes. */
void h2_conn_start_refused(core_worker *w, io_stream *from, nook_str peer);

#endif
