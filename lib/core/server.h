/* Server internals shared by the core and the codecs: options, logging, workers and the list of
 * connections each worker owns (for graceful stop). */
#ifndef NOOK_CORE_SERVER_H
#define NOOK_CORE_SERVER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/proto.h"
#include "io/alloc.h"
#include "io/loop.h"
#include "io/stream.h"

struct sockaddr;

#define CORE_OPT_COUNT (NOOK_OPT_TLS_SEND_BATCH + 1)

/* Read-only after start: every worker reads them without locks. */
typedef struct core_limits {
    int64_t opt[CORE_OPT_COUNT];
} core_limits;

static inline int64_t core_opt(const core_limits *l, nook_opt o) { return l->opt[o]; }

/* A connection as the worker sees it, embedded in the codec's connection object. */
typedef struct core_conn core_conn;
typedef struct core_conn_ops {
    /* The server is stopping. graceful: finish what is in flight, then close (idle ones close
     * now); !graceful: close now. Must not free the connection synchronously (defer it). */
    void (*shutdown)(core_conn *c, bool graceful);
} core_conn_ops;

struct core_conn {
    core_conn *prev, *next;
    const core_conn_ops *ops;
};

io_loop *core_worker_loop(core_worker *w);
const io_alloc *core_worker_alloc(const core_worker *w);
const core_limits *core_worker_limits(const core_worker *w);
bool core_worker_stopping(const core_worker *w);

void core_worker_add_conn(core_worker *w, core_conn *c);

/* Called once per accepted connection, as soon as its stream exists: hands the server-wide
 * connection slot (NOOK_OPT_MAX_CONNECTIONS, taken when the socket was accepted) to the stream,
 * which gives it back when its socket closes, and applies NOOK_OPT_MAX_CONNECTIONS_PER_IP:
 * counts the connection for `peer` (TCP only) until then. false: that address already has its
 * limit (the caller closes the stream). Any worker thread. */
bool core_worker_admit(core_worker *w, const struct sockaddr *peer, io_stream *s);
/* Gives back the connection slot of a socket closed before core_worker_admit() (setup failed). */
void core_worker_drop_slot(core_worker *w);
void core_worker_remove_conn(core_worker *w, core_conn *c);

/* The current HTTP date ("Sun, 06 Nov 1994 08:49:37 GMT", 29 bytes), cached per second. */
nook_str core_worker_date(core_worker *w);

/* Worker-owned scratch memory of at least `size` bytes, valid until the next call on this worker
 * (for data used within one synchronous step, such as a parse). NULL on ENOMEM. */
void *core_worker_scratch(core_worker *w, size_t size);

/* The worker's block pool (io/pool.h) as an allocator: for per-request objects allocated and
 * freed on the worker's thread only (HTTP/2 streams, nghttp2's memory). */
const io_alloc *core_worker_pool(core_worker *w);

/* A connection on this worker fell asleep and freed its buffers (NOOK_OPT_IDLE_SLEEP): memory
 * that the C library may keep. The worker hands it back to the kernel a little later. */
void core_worker_released(core_worker *w);

/* The server's allocator (nook_server_set_allocator): built-in middleware allocates with it. */
const io_alloc *core_server_alloc(const nook_server *srv);

/* Logs one line through the server's logger (printf-style). */
void core_log(const core_worker *w, nook_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Registered middleware, in order (read-only once the server runs). */
typedef struct core_mw {
    char *prefix; /* "" covers every path */
    size_t prefix_len;
    nook_handler_fn fn;
    void *user_data;
    nook_free_fn free_ud;
    bool takes_body; /* registered with core_use_taking_body */
    const void *route; /* nook_route_use: only for requests this route target matched */
} core_mw;

const core_mw *core_worker_middleware(const core_worker *w, size_t *count);

/* nook_use() for middleware that reads request bodies itself (the proxy): every request under
 * prefix is routed as soon as its head is complete, as for nook_route_streaming, so the
 * middleware can nook_req_on_body() from its call. If it passes a request on with nook_next()
 * instead, a handler registered with nook_route still gets the body whole (buffered up to
 * NOOK_OPT_MAX_BODY, the handler running at its end). Errors as for nook_use(). */
int core_use_taking_body(nook_server *srv, const char *prefix, nook_handler_fn fn,
                         void *user_data, nook_free_fn free_ud);

/* State a built-in middleware keeps per worker (the proxy's upstream connections), found by a
 * key (its configuration). core_worker_local returns NULL until set. core_worker_set_local
 * stores it; free_fn(value) runs when the worker is freed, after its loop stopped and before
 * the loop is freed (so watches and timers may still be removed). Loop thread only.
 * NOOK_OK or NOOK_ENOMEM. */
void *core_worker_local(const core_worker *w, const void *key);
int core_worker_set_local(core_worker *w, const void *key, void *value, void (*free_fn)(void *));

/* The route table (for the exchange's dispatch). */
const struct core_router *core_worker_router(const core_worker *w);

/* Finished exchange objects kept for reuse, so steady-state requests allocate nothing. The
 * exchange module owns the contents; the worker frees them with core_exchange_cache_free. */
typedef struct core_req_cache {
    struct nook_req *head;
    size_t count;
} core_req_cache;

core_req_cache *core_worker_req_cache(core_worker *w);
void core_exchange_cache_free(core_req_cache *c, const io_alloc *alloc);

#endif
