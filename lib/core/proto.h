/*
 * The one interface between a protocol codec (HTTP/1.1, HTTP/2) and the protocol-neutral core.
 *
 *   codec → core                            core → codec (core_stream_ops)
 *   core_exchange_new     a request begins  send_head   status + headers (+ length if known)
 *   core_exchange_set_target / add_header   send_body   body bytes, last piece flagged
 *   core_exchange_head_done  route it       queued      bytes not yet on the wire (backpressure)
 *   core_exchange_body    request body      abort       the response is broken: reset/close
 *   core_exchange_body_end  run handler     resume_body a paused streaming upload goes on
 *   core_exchange_writable  output drained
 *   core_exchange_cancel    peer went away
 *   core_exchange_finish    response fully handed to the transport (or failed): release
 *
 * Rules that keep re-entrancy simple:
 * - The core calls ops only while the exchange is live (before finish/cancel returned).
 * - ops never call back into the core synchronously: a codec that learns the response ended
 *   inside send_body records it and calls core_exchange_finish later, from its own context.
 * - core_exchange_cancel and core_exchange_finish end the codec's use of the exchange pointer.
 */
#ifndef NOOK_CORE_PROTO_H
#define NOOK_CORE_PROTO_H

#include <stdbool.h>
#include <stdint.h>

#include "nook.h"

typedef struct core_worker core_worker;

/* A response header: name and value views (valid until send_head returns). */
typedef struct core_hdr {
    nook_str name;
    nook_str value;
} core_hdr;

typedef struct core_stream_ops {
    /* The response head. content_length >= 0 when the body length is known, -1 otherwise.
     * end: no body bytes follow (HEAD, or an empty body). NOOK_OK or an error (the exchange is
     * then treated as broken). */
    int (*send_head)(void *stream, int status, const core_hdr *hdrs, size_t nhdrs,
                     int64_t content_length, bool end);
    /* Body bytes (copied by the codec); end marks the last piece (n may be 0).
     * NOOK_OK, NOOK_EFULL (nothing queued: over the hard cap), NOOK_ECLOSED. */
    int (*send_body)(void *stream, const void *p, size_t n, bool end);
    /* Trailer fields, given once just before the final send_body(end = true). */
    int (*send_trailers)(void *stream, const core_hdr *hdrs, size_t nhdrs);
    /* The whole body is a file range (after send_head with its length): the codec takes fd and
     * sends it itself (zero-copy), then ends the response and closes fd. NOOK_OK when taken;
     * any error: the core sends the file itself (fd still the core's). May be NULL. */
    int (*send_file)(void *stream, int fd, uint64_t offset, uint64_t len);
    /* Bytes of this exchange's output still waiting for the peer. */
    size_t (*queued)(void *stream);
    /* The response cannot be completed (handler broke framing): reset the stream or close. */
    void (*abort)(void *stream);
    /* A streaming handler paused the request body (core_exchange_body said NOOK_AGAIN) and now
     * wants more: deliver what is held, then go on reading. */
    void (*resume_body)(void *stream);
} core_stream_ops;

/* Starts an exchange on a worker; peer is the client's address text (copied). NULL on ENOMEM. */
nook_req *core_exchange_new(core_worker *w, const core_stream_ops *ops, void *stream,
                            nook_str peer);

/* Request line: method and the request-target as sent (origin-form "/p?q", absolute-form
 * "http://h/p?q", or "*"). Copied. NOOK_OK, NOOK_EINVAL (target unusable), NOOK_ENOMEM. */
int core_exchange_set_target(nook_req *req, nook_str method, nook_str target);

/* The protocol name reported by nook_req_protocol (a static string). */
void core_exchange_set_protocol(nook_req *req, const char *name, bool tls);

/* One request header (copied). NOOK_OK or NOOK_ENOMEM. */
int core_exchange_add_header(nook_req *req, nook_str name, nook_str value);

/* The request head is complete: route it. Returns true when the route streams the body: the
 * handler has then run already, and body pieces go to it as they come. */
bool core_exchange_head_done(nook_req *req);

/* After core_exchange_head_done() returned false: when no route and no middleware can serve the
 * path, answers it now (404, or 405 with Allow) and returns true, so that a client waiting for
 * "100 Continue" is not asked for a body nobody will read. */
bool core_exchange_answer_unrouted(nook_req *req);

/* Request body bytes: buffered (NOOK_ELIMIT past NOOK_OPT_MAX_BODY, NOOK_ENOMEM), or for a
 * streaming route handed to the handler — NOOK_AGAIN then means "delivered; hold the rest until
 * ops->resume_body". */
int core_exchange_body(nook_req *req, const void *p, size_t n);

/* The body is complete: a buffered request is dispatched now; a streaming one gets its end. */
void core_exchange_body_end(nook_req *req);

/* The codec's output for this exchange dropped below the low-water mark. */
void core_exchange_writable(nook_req *req);

/* The peer is gone before the response ended: CANCEL then DONE hooks run, the exchange is freed
 * (ops are not called again). */
void core_exchange_cancel(nook_req *req);

/* True once the handler side has ended the response (send_body/send_head with end). */
bool core_exchange_ended(const nook_req *req);

/* The worker whose loop runs this request (middleware that keeps per-worker state). */
core_worker *core_exchange_worker(const nook_req *req);

/* Breaks off a response that cannot be completed (a proxied body cut short): the codec resets
 * the stream (HTTP/2) or closes the connection (HTTP/1.1), and the exchange then ends as
 * cancelled. No-op once the response has ended. */
void core_exchange_abort(nook_req *req);

/* The codec has handed the whole response to the transport (ok) or given up (!ok): DONE runs
 * and the exchange is freed. */
void core_exchange_finish(nook_req *req, bool ok);

/* Server limits a codec needs. */
const struct core_limits *core_worker_limits(const core_worker *w);

#endif
