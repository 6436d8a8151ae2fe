/*
 * Reverse proxy internals shared by proxy.c (configuration, the middleware, headers, balancing)
 * and the upstream protocols: lib/h2/proxy_client.c (HTTP/2 over TLS or cleartext, nghttp2
 * client sessions: nghttp2 stays inside lib/h2) and proxy_h1.c (HTTP/1.1).
 *
 * Threads: the configuration (nook_proxy) is read-only once the server runs. Everything else
 * is per worker: each worker loop has its own pool (found with core_worker_local), so upstream
 * connections and proxied requests are touched by one thread only and need no locks.
 *
 * Lifetimes: a px_req is shared by the client side (the nook_req, until its DONE hook) and the
 * upstream side (queued, or a stream on a connection, until that stream closes). It is freed
 * when both have let go (px_release_client / px_release_upstream).
 */
#ifndef NOOK_MW_PROXY_H
#define NOOK_MW_PROXY_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "core/proto.h"
#include "io/ascii.h"
#include "io/buf.h"
#include "io/loop.h"
#include "io/sock.h"
#include "io/stream.h"
#include "nook.h"
#include "tls/client.h"

#define PROXY_UPSTREAMS_MAX 64
#define PROXY_HOST_MAX 256

/* The defaults of a new configuration (nook_proxy_new; documented in nook.h). */
#define PROXY_DEFAULT_CONNECT_MS 5000
#define PROXY_DEFAULT_RESPONSE_MS 60000
#define PROXY_DEFAULT_IDLE_MS 60000
#define PROXY_DEFAULT_KEEPALIVE_MS 4000 /* below common upstream keep-alive timeouts (5 s) */
#define PROXY_DEFAULT_DOWN_MS 5000
#define PROXY_DEFAULT_MAX_CONNS 32
#define PROXY_DEFAULT_MAX_WAITING 1024

/* h2://, h2c://, http://, https:// (HTTP/1.1 over TLS). */
typedef enum px_kind { PX_H2, PX_H2C, PX_H1, PX_H1S } px_kind;

static inline bool px_kind_h1(px_kind k)
{
    return k == PX_H1 || k == PX_H1S;
}
static inline bool px_kind_tls(px_kind k)
{
    return k == PX_H2 || k == PX_H1S;
}

typedef struct px_upstream_conf {
    px_kind kind;
    char host[PROXY_HOST_MAX];          /* as in the URL (SNI and certificate name for h2://) */
    char authority[PROXY_HOST_MAX + 8]; /* host:port, for requests without a Host */
    io_addr addr;                       /* resolved when added */
} px_upstream_conf;

struct nook_proxy {
    px_upstream_conf ups[PROXY_UPSTREAMS_MAX];
    /* For each HTTP/2 upstream, the same server over HTTP/1.1 (TLS for h2://): where a request
     * goes again when the upstream resets it with HTTP_1_1_REQUIRED. Never balanced to. */
    px_upstream_conf fallback[PROXY_UPSTREAMS_MAX];
    size_t nups;
    char *ca_file;
    bool verify;
    tls_client *tls;    /* ALPN h2, built by nook_use_proxy when an upstream uses TLS */
    tls_client *tls_h1; /* ALPN http/1.1, for https:// and the fallback of h2:// */
    char err[256];      /* nook_proxy_last_error */
    nook_proxy_balance balance;
    int64_t connect_ms, response_ms, down_ms;
    int64_t idle_ms;      /* 0: no silence limit, idle HTTP/2 connections kept */
    int64_t keepalive_ms; /* idle HTTP/1.1 connections; 0: not reused */
    size_t max_conns;     /* per upstream per worker */
    size_t max_waiting;   /* requests in one upstream's wait queue, per worker */
    bool strip_prefix;
    unsigned forwarded;
    char *prefix; /* the nook_use_proxy prefix, without a trailing '/' */
    size_t prefix_len;
    bool in_use;
};

typedef struct px_pool px_pool;
typedef struct px_up px_up;
typedef struct px_conn px_conn;
typedef struct px_req px_req;

/* One upstream as one worker sees it. */
struct px_up {
    px_pool *pool;
    const px_upstream_conf *conf;
    px_up *fallback; /* HTTP/2 upstreams: the same server over HTTP/1.1 */
    px_conn *conns;  /* every open connection (each protocol links its own) */
    size_t nconns, nconnecting;
    px_req *wait_head, *wait_tail; /* requests waiting for a stream or a connection */
    size_t nwaiting;
    size_t outstanding;  /* requests assigned here and not yet ended */
    uint64_t down_until; /* loop ms; passive health: no new requests before then */
};

struct px_pool {
    const nook_proxy *cfg;
    core_worker *w;
    io_loop *loop;
    const io_alloc *alloc;
    size_t rr_next;
    bool closing; /* the worker is going away: nothing is retried or dispatched */
    px_up ups[PROXY_UPSTREAMS_MAX];
    px_up fallback_ups[PROXY_UPSTREAMS_MAX];
};

/* One proxied request: the client's nook_req on one side, an upstream stream on the other. */
struct px_req {
    px_req *wait_next;             /* in px_up's wait queue */
    px_req *conn_prev, *conn_next; /* on its connection */
    px_pool *pool;
    px_up *up;         /* the upstream it is assigned to (counted in outstanding) */
    bool fell_back;    /* sent again over HTTP/1.1 after HTTP_1_1_REQUIRED */
    px_conn *conn;     /* while a stream on an upstream connection */
    int32_t stream_id; /* HTTP/2 */
    nook_req *req;     /* NULL once the client side ended */
    io_defer start;
    io_timer timer;     /* before the head: response timeout; after: upstream silence */
    io_buf body;        /* request body from the client not yet sent upstream */
    bool body_end;      /* the client's body is complete */
    bool body_paused;   /* the client is held back (nook_req_resume_body when drained) */
    bool data_deferred; /* nghttp2 waits for body bytes (resume_data) */
    bool body_started;  /* bytes of the body went upstream: not safe to retry */
    bool sent;          /* bytes of the request may have reached the upstream (HTTP/1.1: some
                           were written to the socket; HTTP/2: its HEADERS left nghttp2) */
    uint64_t sent_mark; /* HTTP/2: the connection's output offset at the end of its HEADERS */
    bool fresh_conn;    /* a reused connection failed under it: only a new one will do */
    bool conn_timeout;  /* the connection it waited for was not ready in connect_ms */
    bool queued;        /* in a wait queue */
    bool got_head;      /* the final response head arrived and the client response started */
    bool info_block;    /* the header block being received is a 1xx */
    bool ended;         /* the client response was ended */
    bool timed_out;
    bool write_blocked; /* the client's output is full: upstream credit withheld */
    size_t unconsumed;  /* HTTP/2 bytes received and not yet credited upstream */
    int status;
    int retries;
};

/* ---- proxy.c ---- */

static inline bool px_name_is(const char *name, size_t nlen, const char *want)
{
    return nlen == strlen(want) && io_caseeq(name, want, nlen);
}

/* The options of Connection fields (RFC 9110 §7.6.1: the fields they name are hop-by-hop),
 * collected once per message so that checking each field is cheap. */
#define PX_CONN_TOKENS_MAX 64
typedef struct px_conn_tokens {
    struct {
        const char *p;
        size_t n;
    } tok[PX_CONN_TOKENS_MAX];
    size_t n;
    bool overflow; /* more options than fit: the message is refused */
} px_conn_tokens;

/* Adds the comma-separated options of one Connection field value (not copied: the value must
 * outlive t). */
void px_conn_tokens_add(px_conn_tokens *t, const char *value, size_t vlen);
/* Whether name is one of the options, case-insensitively. */
bool px_conn_tokens_has(const px_conn_tokens *t, const char *name, size_t nlen);

/* Called by the protocols. */
void px_release_upstream(px_req *px);
/* The client response: head fields, body and end; each a no-op once the client is gone. */
void px_response_status(px_req *px, int status);
void px_response_header(px_req *px, const char *name, size_t nlen, const char *value, size_t vlen);
bool px_response_start(px_req *px); /* false when the client is gone */
/* NOOK_OK, NOOK_AGAIN (credit must wait for WRITABLE), or an error: stop the upstream. */
int px_response_body(px_req *px, const void *p, size_t n);
void px_response_trailer(px_req *px, const char *name, size_t nlen, const char *value, size_t vlen);
void px_response_end(px_req *px);
/* The client response cannot go on (a write failed): break it off (reset or close). */
void px_response_broken(px_req *px);
/* The upstream failed this request: 502/504 if nothing was answered yet, otherwise the
 * client's stream is reset (or its connection closed). retryable: nothing reached the
 * upstream's application (refused stream, connection that never became ready): try another
 * upstream if one is up. */
void px_fail(px_req *px, bool retryable);
/* The HTTP/2 upstream reset px with HTTP_1_1_REQUIRED: send it again over HTTP/1.1 if nothing
 * of it went out yet (otherwise as px_fail). */
void px_fall_back_to_h1(px_req *px);
/* The request body left for the upstream is at most `room`: a paused client goes on. */
void px_body_drained(px_req *px);
/* Whether px's method is idempotent (RFC 9110 §9.2.2): a request that may have reached an
 * upstream over a connection that then failed may be sent again only then. */
bool px_idempotent(const px_req *px);
/* Marks an upstream down for the configured back-off. */
void px_mark_down(px_up *up);

/* ---- proxy.c: the start of every upstream connection, whatever its protocol ----
 *
 * Both protocols' connection structs (px_conn in h2/proxy_client.c, h1up in proxy_h1.c) begin
 * with a px_link: their place in up->conns, the socket, the TLS handshake, the timer and the
 * deferred call. The link takes a new connection through the TCP connect and the TLS handshake,
 * then hands it to its protocol (ops->ready) and passes it every later socket event (ops->io). */

/* The first states of every upstream connection; each protocol numbers its own after them. */
enum { PX_CONNECTING, PX_HANDSHAKE, PX_LINK_STATES };

typedef struct px_link px_link;

typedef struct px_link_ops {
    /* The TLS client for this upstream, or NULL when it is cleartext. */
    tls_client *(*tls)(const px_up *up);
    /* After the handshake: NULL, or why this session will not do (ALPN, version, cipher). */
    const char *(*check_tls)(tls_conn *tls);
    /* Connected, TLS done: the protocol takes over (and sets its own state). */
    void (*ready)(px_link *l);
    /* Each socket event after that, unless the connection is closing. */
    void (*io)(px_link *l, uint32_t events);
} px_link_ops;

struct px_link {
    px_conn *prev, *next; /* in up->conns */
    px_up *up;
    const px_link_ops *ops;
    io_stream s;
    tls_conn *tls; /* during the handshake; the stream's transport owns it after */
    int state;     /* PX_CONNECTING, PX_HANDSHAKE, then the protocol's own */
    io_timer timer;
    io_defer resume;
    bool close_now;
    bool failed;    /* closing because something went wrong (vs. idle) */
    bool timed_out; /* the connect (or handshake) took too long */
    char err[160];  /* the first failure, for the log */
};

/* A new connection to up, for a protocol whose connection struct is size bytes and begins with
 * a px_link: the struct zeroed, a non-blocking TCP connect (TCP_NODELAY) watched for its end,
 * the connect timeout armed on l->timer (whose callback is on_timer; l->resume's is on_resume),
 * counted in up (nconns, nconnecting) and linked first in up->conns. NULL when the memory or the
 * socket could not be had (a socket failure is logged), with nothing open or counted. */
px_link *px_link_new(px_up *up, size_t size, const px_link_ops *ops, io_timer_fn on_timer,
                     io_defer_fn on_resume);
/* Takes l out of up->conns and its counts; connecting: it never became ready (so it is still
 * counted in nconnecting). */
void px_link_unlink(px_link *l, bool connecting);
/* Stops l's timer and deferred call, closes its socket and any TLS it holds. */
void px_link_release(px_link *l);
/* Runs l->resume's callback from the loop soon. */
void px_link_schedule(px_link *l);
/* Closes l soon because of a failure (the first one's reason is kept for the log). */
void px_link_fail(px_link *l, const char *why);
/* The link whose timer or deferred call this is. */
px_link *px_link_of_timer(io_timer *t);
px_link *px_link_of_defer(io_defer *d);

/* A connection to up failed before it served anything: mark it down; requests waiting for it
 * go to another upstream that is up; with none, they get 502, or 504 when it was a connect
 * timeout. */
void px_up_failed(px_up *up, bool timeout);
/* Hands queued requests on this upstream to connections with room, opening more as needed. */
void px_dispatch(px_up *up);
/* The request head for an upstream: :method, :scheme, :authority, :path, then the fields to
 * send, names lower-case, hop-by-hop ones removed, forwarding ones added. The array and its
 * NUL-terminated strings are one allocation (io_free). NULL on ENOMEM. px->req must be live. */
typedef struct px_field {
    const char *name, *value;
    size_t nlen, vlen;
} px_field;
px_field *px_request_fields(px_req *px, size_t *count);

/* ---- h2/proxy_client.c / proxy_h1.c: one interface per protocol ---- */

typedef struct px_proto {
    /* Opens a connection to up (counted in nconns/nconnecting); NULL when it failed at once. */
    px_conn *(*open)(px_up *up);
    /* A connection that may take one more request now, or NULL. fresh: only one that has not
     * carried a request before (HTTP/1.1; HTTP/2 ignores it). */
    px_conn *(*ready_conn)(px_up *up, bool fresh);
    /* Sends px on c; NOOK_OK or an error (px untouched). */
    int (*submit)(px_conn *c, px_req *px);
    /* More request body for px (bytes appended to px->body, or its end). */
    void (*body_more)(px_req *px);
    /* The client has taken what was written: give the upstream credit again. */
    void (*writable)(px_req *px);
    /* The client went away: reset the upstream stream (px stays until it closes). */
    void (*cancel)(px_req *px);
    /* Frees every connection of the pool's upstream (worker teardown), failing its requests. */
    void (*close_all)(px_up *up);
} px_proto;

extern const px_proto px_h2_proto;
extern const px_proto px_h1_proto;

static inline const px_proto *px_proto_of(const px_up *up)
{
    return px_kind_h1(up->conf->kind) ? &px_h1_proto : &px_h2_proto;
}

/* ---- proxy_head.c: HTTP/1.1 upstream response heads and trailer sections (no I/O) ---- */

typedef struct px_h1_head {
    int status;             /* 100..999 */
    bool keep_alive;        /* the connection may carry another request after this response */
    bool chunked;           /* Transfer-Encoding: chunked */
    int64_t content_length; /* -1 when absent */
} px_h1_head;

typedef void px_field_fn(void *ud, const char *name, size_t nlen, const char *value, size_t vlen);

/* Parses a complete response head buf[0..len) (status line, fields, the empty line; CRLF or bare
 * LF line ends). 0 and *h filled, or -1 when it is malformed or must not be passed on: a bad
 * status line, field name or value (obs-fold included), Content-Length with Transfer-Encoding
 * (RFC 9112 §6.3), differing Content-Length values, a transfer coding other than chunked, too
 * many Connection options. */
int px_h1_parse_head(const char *buf, size_t len, px_h1_head *h);
/* Calls fn for each field of a head px_h1_parse_head accepted, in order, except the fields its
 * Connection options name; the strings point into buf. */
void px_h1_head_fields(const char *buf, size_t len, px_field_fn *fn, void *ud);
/* Calls fn for each field of a chunked body's end as the body decoder consumed it (the CRLF
 * ending the last data, the last-chunk line "0[;ext]", trailer field lines, the empty line).
 * Lines that are no valid field are skipped. */
void px_h1_trailer_fields(const char *buf, size_t len, px_field_fn *fn, void *ud);

/* Logging through the worker's logger. */
void px_log(const px_pool *pool, nook_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
