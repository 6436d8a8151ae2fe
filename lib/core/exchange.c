/*
 * The exchange: one request and its response, whatever protocol carried them. This file is the
 * public nook_req_* / nook_res_* API plus the core side of core/proto.h.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/pct.h"
#include "core/proto.h"
#include "core/router.h"
#include "core/server.h"
#include "io/ascii.h"
#include "io/buf.h"

#define ARENA_FIRST_CHUNK 4096
#define HDRS_INITIAL 16
#define REQ_CACHE_MAX 256
#define BODY_KEEP 65536 /* body buffer capacity kept across requests */
#define PEER_MAX 64

enum { RES_NONE, RES_STARTED, RES_ENDED };

/* Hooks and filters live in the request's arena, newest first: that is also the order they run
 * in (the one added last is closest to the handler). */
typedef struct hook {
    struct hook *next;
    nook_handler_fn fn;
    void *user_data;
} hook;

typedef struct filter {
    struct filter *next;
    nook_filter_fn fn;
    void *user_data;
} filter;

struct nook_token {
    atomic_int refs;  /* the application's, the request's while it lives, one per pending post */
    const io_alloc *alloc;
    io_loop *loop;
    nook_req *req;    /* loop thread only; NULL once the request ended */
};

typedef struct hdr_list {
    core_hdr *v;
    size_t n, cap;
} hdr_list;

struct nook_req {
    nook_req *next_free;
    core_worker *w;
    const core_stream_ops *ops;
    void *stream;
    core_arena arena;

    nook_str method, path, query, peer;
    const char *protocol;
    bool tls; /* carried over TLS */
    int64_t start_us;
    uint64_t bytes_sent;
    hdr_list req_hdrs;
    io_buf body;
    size_t nparams;
    core_route_param params[CORE_ROUTE_MAX_PARAMS];

    int status;
    int state;
    hdr_list res_hdrs;
    hdr_list trailers;
    int64_t declared_len; /* Content-Length the handler set, or -1 */
    uint64_t written;
    bool head_req;
    bool sent_end;  /* the handler side ended the body (or none is sent) */
    bool sink_ended; /* the codec has been given the end of the body */
    bool cancelled; /* the peer went away */
    int depth;      /* handler/hook calls on the stack for this request */
    bool release_pending;
    bool in_headers_hook; /* NOOK_ON_HEADERS hooks may still edit the head */
    size_t mw_next;       /* index of the next middleware to consider */
    nook_token *token;    /* set by nook_req_suspend */
    unsigned suspends;    /* nook_req_suspend calls so far: tells whether a step suspended */
    void *route;          /* the matched route's target, or NULL (404/405) */
    char *allow;          /* the Allow value for a 405 */
    bool streaming;       /* the route takes the body in pieces */
    int file_fd;          /* nook_res_sendfile done by the core: -1 when none */
    uint64_t file_off, file_left;
    bool body_paused;     /* its body callback asked to wait */
    nook_body_fn body_fn;
    void *body_ud;
    bool mw_body;          /* streamed because a body-taking middleware covers the path */
    bool body_complete;    /* the codec gave the body's end */
    bool route_after_body; /* a buffering handler waits for that end */
    hook *hooks[NOOK_ON_HEADERS + 1];
    filter *filters;
    filter *filter_at; /* the filter running now (nook_filter_pass continues after it) */
    char peer_buf[PEER_MAX];
};

void core_route_call(void *target, nook_req *req);
bool core_route_streams_body(const void *target);
static void token_unref(nook_token *t);

/* ---------------------------------------------------------------------------------------------
 * Life cycle
 * ------------------------------------------------------------------------------------------- */

nook_req *core_exchange_new(core_worker *w, const core_stream_ops *ops, void *stream,
                            nook_str peer)
{
    core_req_cache *cache = core_worker_req_cache(w);
    nook_req *r = cache->head;
    if (r) {
        cache->head = r->next_free;
        cache->count--;
    } else {
        const io_alloc *a = core_worker_alloc(w);
        r = io_malloc(a, sizeof *r);
        if (!r)
            return NULL;
        memset(r, 0, sizeof *r);
        core_arena_init(&r->arena, a, ARENA_FIRST_CHUNK);
    }
    r->w = w;
    r->ops = ops;
    r->stream = stream;
    r->status = 200;
    r->declared_len = -1;
    r->protocol = "HTTP/1.1";
    r->file_fd = -1;
    size_t n = peer.len < PEER_MAX ? peer.len : PEER_MAX - 1;
    memcpy(r->peer_buf, peer.ptr, n);
    r->peer = (nook_str){r->peer_buf, n};
    return r;
}

/* Returns the object to the worker's cache with everything per-request reset. */
static void release(nook_req *r)
{
    if (r->depth > 0) {
        r->release_pending = true;
        return;
    }
    core_worker *w = r->w;
    const io_alloc *a = core_worker_alloc(w);
    core_req_cache *cache = core_worker_req_cache(w);
    if (r->token) {
        r->token->req = NULL;
        token_unref(r->token);
    }
    if (r->file_fd >= 0)
        close(r->file_fd);
    core_arena_reset(&r->arena);
    r->body.off = r->body.len = 0;
    io_buf_trim(&r->body, a, BODY_KEEP);
    if (cache->count >= REQ_CACHE_MAX) {
        core_arena_free(&r->arena);
        io_buf_free(&r->body, a);
        io_free(a, r);
        return;
    }
    core_arena arena = r->arena;
    io_buf body = r->body;
    memset(r, 0, sizeof *r);
    r->arena = arena;
    r->body = body;
    r->next_free = cache->head;
    cache->head = r;
    cache->count++;
}

void core_exchange_cache_free(core_req_cache *c, const io_alloc *alloc)
{
    while (c->head) {
        nook_req *r = c->head;
        c->head = r->next_free;
        core_arena_free(&r->arena);
        io_buf_free(&r->body, alloc);
        io_free(alloc, r);
    }
    c->count = 0;
}

static void run_hook(nook_req *r, nook_event ev)
{
    r->depth++;
    for (hook *h = r->hooks[ev]; h; h = h->next)
        h->fn(r, h->user_data);
    r->depth--;
}

void core_exchange_finish(nook_req *r, bool ok)
{
    if (!ok && !r->cancelled) {
        r->cancelled = true;
        if (r->state != RES_ENDED)
            run_hook(r, NOOK_ON_CANCEL);
    }
    r->state = RES_ENDED;
    r->sent_end = true;
    run_hook(r, NOOK_ON_DONE);
    release(r);
}

void core_exchange_cancel(nook_req *r) { core_exchange_finish(r, false); }

bool core_exchange_ended(const nook_req *r) { return r->sent_end; }

core_worker *core_exchange_worker(const nook_req *r) { return r->w; }

void core_exchange_abort(nook_req *r)
{
    if (r->sent_end || r->cancelled)
        return;
    r->state = RES_ENDED;
    r->sent_end = true;
    r->ops->abort(r->stream);
}

/* ---------------------------------------------------------------------------------------------
 * Request side (codec → core)
 * ------------------------------------------------------------------------------------------- */

static int hdr_push(core_arena *arena, hdr_list *l, nook_str name, nook_str value)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : HDRS_INITIAL;
        core_hdr *v = core_arena_alloc(arena, cap * sizeof *v);
        if (!v)
            return NOOK_ENOMEM;
        if (l->n)
            memcpy(v, l->v, l->n * sizeof *v);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (core_hdr){name, value};
    return NOOK_OK;
}

static nook_str arena_str(core_arena *a, const char *p, size_t n)
{
    char *q = core_arena_dup(a, p, n);
    return (nook_str){q, q ? n : 0};
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void core_exchange_set_protocol(nook_req *r, const char *name, bool tls)
{
    r->protocol = name;
    r->tls = tls;
}

const char *nook_req_protocol(const nook_req *r) { return r ? r->protocol : ""; }

int nook_req_is_tls(const nook_req *r) { return r && r->tls; }

int64_t nook_req_elapsed_us(const nook_req *r) { return r ? now_us() - r->start_us : 0; }

uint64_t nook_res_bytes_sent(const nook_req *r) { return r ? r->bytes_sent : 0; }

int core_exchange_set_target(nook_req *r, nook_str method, nook_str target)
{
    r->method = arena_str(&r->arena, method.ptr, method.len);
    nook_str t = arena_str(&r->arena, target.ptr, target.len);
    if (!r->method.ptr || !t.ptr)
        return NOOK_ENOMEM;
    r->head_req = method.len == 4 && memcmp(method.ptr, "HEAD", 4) == 0;
    const char *p = t.ptr, *end = t.ptr + t.len;
    if (t.len > 0 && p[0] != '/' && !(t.len == 1 && p[0] == '*')) {
        /* absolute-form: skip "scheme://authority"; the path starts at the next '/'. */
        const char *sep = memchr(p, ':', t.len);
        if (!sep || end - sep < 3 || sep[1] != '/' || sep[2] != '/')
            return NOOK_EINVAL;
        p = sep + 3;
        while (p < end && *p != '/' && *p != '?')
            p++;
        if (p == end || *p == '?') {
            /* "http://host" or "http://host?q": the path is "/" (RFC 9112 §3.2.2). */
            const char *q = p;
            r->path = (nook_str){"/", 1};
            r->query = q < end ? (nook_str){q + 1, (size_t)(end - q - 1)} : (nook_str){NULL, 0};
            return NOOK_OK;
        }
    }
    const char *q = memchr(p, '?', (size_t)(end - p));
    r->path = (nook_str){p, (size_t)((q ? q : end) - p)};
    r->query = q ? (nook_str){q + 1, (size_t)(end - q - 1)} : (nook_str){NULL, 0};
    if (r->path.len == 0)
        return NOOK_EINVAL;
    return NOOK_OK;
}

/* Copies a field into the arena, name and value in one block (one allocation, not two), and
 * appends it to l. */
static int push_copy(core_arena *a, hdr_list *l, const char *name, size_t nlen, const char *value,
                     size_t vlen)
{
    char *p = core_arena_alloc(a, nlen + vlen + 1);
    if (!p)
        return NOOK_ENOMEM;
    if (nlen)
        memcpy(p, name, nlen);
    if (vlen)
        memcpy(p + nlen, value, vlen);
    return hdr_push(a, l, (nook_str){p, nlen}, (nook_str){p + nlen, vlen});
}

int core_exchange_add_header(nook_req *r, nook_str name, nook_str value)
{
    return push_copy(&r->arena, &r->req_hdrs, name.ptr, name.len, value.ptr, value.len);
}

int core_exchange_body(nook_req *r, const void *p, size_t n)
{
    if (r->streaming && !(r->mw_body && !r->body_fn)) {
        if (!r->body_fn || r->cancelled || n == 0)
            return NOOK_OK;
        r->depth++;
        int rc = r->body_fn(r, p, n, 0, r->body_ud);
        r->depth--;
        if (rc == NOOK_AGAIN) {
            r->body_paused = true;
            return NOOK_AGAIN;
        }
        return NOOK_OK;
    }
    const core_limits *lim = core_worker_limits(r->w);
    return io_buf_append(&r->body, core_worker_alloc(r->w), p, n,
                         (size_t)core_opt(lim, NOOK_OPT_MAX_BODY));
}

static void respond_error(nook_req *r, int status, const char *text)
{
    nook_respond(r, status, "text/plain; charset=utf-8", text, strlen(text));
}

/* A callback that returns without answering, going on, or suspending leaves the client waiting
 * forever: answer 500 for it. Each step (a middleware, the handler) is judged on what it did
 * itself — mw_before and suspends_before are taken just before it ran — so a middleware that
 * suspended earlier does not excuse a handler that, run later from a posted callback, returns
 * without answering. */
static void require_progress(nook_req *r, const char *what, size_t mw_before,
                             unsigned suspends_before)
{
    bool waits_for_body = r->streaming && r->body_fn;
    if (r->state == RES_NONE && !r->cancelled && r->suspends == suspends_before &&
        !waits_for_body && r->mw_next == mw_before) {
        core_log(r->w, NOOK_LOG_ERROR, "%s for %.*s %.*s returned without responding", what,
                 (int)r->method.len, r->method.ptr, (int)r->path.len, r->path.ptr);
        respond_error(r, 500, "Internal Server Error\n");
    }
}

/* Whether a middleware runs for the request: a route's own (nook_route_use) for that route's
 * requests only, the others for the paths under their prefix. */
static bool mw_covers(const core_mw *m, const nook_req *r)
{
    if (m->route)
        return m->route == r->route;
    nook_str path = r->path;
    if (m->prefix_len == 0)
        return true;
    return path.len >= m->prefix_len && memcmp(path.ptr, m->prefix, m->prefix_len) == 0 &&
           (path.len == m->prefix_len || path.ptr[m->prefix_len] == '/');
}

/* Matches the route once, when the head is complete (a streaming route must be known before
 * the body arrives); dispatch uses the stored result. */
static void match_route(nook_req *r)
{
    const core_router *router = core_worker_router(r->w);
    core_route_match m;
    m.allow[0] = '\0';
    if (router &&
        core_router_match(router, r->method.ptr, r->method.len, r->path.ptr, r->path.len, &m) ==
            NOOK_OK) {
        r->route = m.target;
        r->nparams = m.nparams;
        memcpy(r->params, m.params, m.nparams * sizeof m.params[0]);
        r->streaming = core_route_streams_body(m.target);
    } else if (m.allow[0]) {
        r->allow = core_arena_strndup(&r->arena, m.allow, strlen(m.allow));
    }
}

static void route(nook_req *r)
{
    /* Past a body-taking middleware, a handler registered with nook_route still gets its body
     * whole: the rest is buffered and the handler runs at its end. */
    if (r->mw_body && r->route && !core_route_streams_body(r->route)) {
        r->streaming = false;
        if (!r->body_complete) {
            r->route_after_body = true;
            return;
        }
    }
    if (r->route) {
        size_t mark = r->mw_next;
        unsigned suspends = r->suspends;
        r->depth++;
        core_route_call(r->route, r);
        r->depth--;
        require_progress(r, "handler", mark, suspends);
    } else if (r->allow) {
        nook_res_set_header(r, "Allow", r->allow);
        respond_error(r, 405, "Method Not Allowed\n");
    } else {
        respond_error(r, 404, "Not Found\n");
    }
}

/* Runs the next middleware that covers the path, or routes once none is left. */
static void run_chain(nook_req *r)
{
    size_t n;
    const core_mw *mws = core_worker_middleware(r->w, &n);
    while (r->mw_next < n && !mw_covers(&mws[r->mw_next], r))
        r->mw_next++;
    if (r->mw_next == n) {
        r->mw_next = n + 1; /* past the handler: nook_next is no longer valid */
        route(r);
        return;
    }
    const core_mw *m = &mws[r->mw_next++];
    size_t mark = r->mw_next;
    unsigned suspends = r->suspends;
    r->depth++;
    m->fn(r, m->user_data);
    r->depth--;
    require_progress(r, "middleware", mark, suspends);
}

static void dispatch(nook_req *r)
{
    r->depth++;
    run_chain(r);
    r->depth--;
    if (r->release_pending && r->depth == 0)
        release(r);
}

/* Whether a middleware registered with core_use_taking_body covers the path. */
static bool mw_takes_body(const nook_req *r)
{
    size_t n;
    const core_mw *mws = core_worker_middleware(r->w, &n);
    for (size_t i = 0; i < n; i++)
        if (mws[i].takes_body && mw_covers(&mws[i], r))
            return true;
    return false;
}

bool core_exchange_head_done(nook_req *r)
{
    r->start_us = now_us(); /* durations include the upload */
    match_route(r);
    if (!r->streaming && mw_takes_body(r))
        r->streaming = r->mw_body = true;
    if (r->streaming)
        dispatch(r);
    return r->streaming;
}

bool core_exchange_answer_unrouted(nook_req *r)
{
    if (r->route || r->streaming)
        return false;
    size_t n;
    const core_mw *mws = core_worker_middleware(r->w, &n);
    for (size_t i = 0; i < n; i++)
        if (mw_covers(&mws[i], r))
            return false; /* a middleware may answer this path: it needs the request whole */
    dispatch(r);          /* 404, or 405 with Allow */
    return true;
}

void core_exchange_body_end(nook_req *r)
{
    r->body_complete = true;
    if (!r->streaming && r->mw_body) {
        if (r->route_after_body) {
            r->depth++;
            route(r);
            r->depth--;
            if (r->release_pending && r->depth == 0)
                release(r);
        }
        return;
    }
    if (!r->streaming) {
        dispatch(r);
        return;
    }
    if (r->body_fn && !r->cancelled) {
        r->depth++;
        r->body_fn(r, NULL, 0, 1, r->body_ud);
        r->depth--;
    }
}

int nook_req_on_body(nook_req *r, nook_body_fn fn, void *user_data)
{
    if (!r || !fn || !r->streaming)
        return NOOK_EINVAL;
    r->body_fn = fn;
    r->body_ud = user_data;
    return NOOK_OK;
}

int nook_req_resume_body(nook_req *r)
{
    if (!r)
        return NOOK_EINVAL;
    if (!r->body_paused)
        return NOOK_ESTATE;
    r->body_paused = false;
    if (!r->cancelled)
        r->ops->resume_body(r->stream);
    return NOOK_OK;
}

int nook_next(nook_req *r)
{
    size_t n;
    if (!r)
        return NOOK_EINVAL;
    core_worker_middleware(r->w, &n);
    if (r->state != RES_NONE || r->mw_next > n)
        return NOOK_ESTATE;
    if (r->cancelled)
        return NOOK_ECLOSED;
    r->depth++;
    run_chain(r);
    r->depth--;
    return NOOK_OK;
}

static void pump_file(nook_req *r);

void core_exchange_writable(nook_req *r)
{
    if (r->file_fd >= 0 && !r->cancelled) {
        pump_file(r); /* a file the core sends itself continues here */
        return;
    }
    if (r->state == RES_STARTED && !r->cancelled)
        run_hook(r, NOOK_ON_WRITABLE);
}

/* ---------------------------------------------------------------------------------------------
 * Public request accessors
 * ------------------------------------------------------------------------------------------- */

static const nook_str absent = {NULL, 0};

nook_str nook_req_method(const nook_req *r) { return r ? r->method : absent; }
nook_str nook_req_path(const nook_req *r) { return r ? r->path : absent; }
nook_str nook_req_query(const nook_req *r) { return r ? r->query : absent; }
nook_str nook_req_peer(const nook_req *r) { return r ? r->peer : absent; }

nook_str nook_req_body(const nook_req *r)
{
    if (!r)
        return absent;
    return (nook_str){io_buf_size(&r->body) ? io_buf_head(&r->body) : "", io_buf_size(&r->body)};
}

/* Decodes a raw view into request memory; absent on malformed input. */
static nook_str decode(nook_req *r, const char *p, size_t n, bool plus_is_space)
{
    char *out = core_arena_alloc(&r->arena, n + 1);
    size_t len;
    if (!out || core_pct_decode(p, n, out, &len, plus_is_space) != NOOK_OK)
        return absent;
    out[len] = '\0';
    return (nook_str){out, len};
}

nook_str nook_req_param(nook_req *r, const char *name)
{
    if (!r || !name)
        return absent;
    for (size_t i = 0; i < r->nparams; i++)
        if (strcmp(r->params[i].name, name) == 0)
            return decode(r, r->params[i].value, r->params[i].value_len, false);
    return absent;
}

nook_str nook_req_query_param(nook_req *r, const char *name)
{
    const char *v;
    size_t n;
    if (!r || !name || !r->query.ptr || !core_query_find(r->query.ptr, r->query.len, name, &v, &n))
        return absent;
    return decode(r, v, n, true);
}

static const core_hdr *find_hdr(const hdr_list *l, const char *name, size_t nlen)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].name.len == nlen && io_caseeq(l->v[i].name.ptr, name, nlen))
            return &l->v[i];
    return NULL;
}

nook_str nook_req_header(const nook_req *r, const char *name)
{
    if (!r || !name)
        return absent;
    const core_hdr *h = find_hdr(&r->req_hdrs, name, strlen(name));
    return h ? h->value : absent;
}

size_t nook_req_header_count(const nook_req *r) { return r ? r->req_hdrs.n : 0; }

int nook_req_header_at(const nook_req *r, size_t index, nook_str *name, nook_str *value)
{
    if (!r || index >= r->req_hdrs.n)
        return NOOK_ENOTFOUND;
    if (name)
        *name = r->req_hdrs.v[index].name;
    if (value)
        *value = r->req_hdrs.v[index].value;
    return NOOK_OK;
}

void *nook_req_alloc(nook_req *r, size_t size) { return r ? core_arena_alloc(&r->arena, size) : NULL; }

int nook_req_on(nook_req *r, nook_event ev, nook_handler_fn fn, void *user_data)
{
    if (!r || !fn || ev < NOOK_ON_WRITABLE || ev > NOOK_ON_HEADERS)
        return NOOK_EINVAL;
    hook *h = core_arena_alloc(&r->arena, sizeof *h);
    if (!h)
        return NOOK_ENOMEM;
    *h = (hook){r->hooks[ev], fn, user_data};
    r->hooks[ev] = h;
    return NOOK_OK;
}

int nook_req_filter(nook_req *r, nook_filter_fn fn, void *user_data)
{
    if (!r || !fn)
        return NOOK_EINVAL;
    if (r->state != RES_NONE && !r->in_headers_hook)
        return NOOK_ESTATE;
    filter *f = core_arena_alloc(&r->arena, sizeof *f);
    if (!f)
        return NOOK_ENOMEM;
    *f = (filter){r->filters, fn, user_data};
    r->filters = f;
    return NOOK_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Public response API
 * ------------------------------------------------------------------------------------------- */

static bool valid_name(const char *name)
{
    if (!name || !*name)
        return false;
    for (const char *p = name; *p; p++)
        if (!io_is_tchar((unsigned char)*p))
            return false;
    return true;
}

static bool valid_value(const char *v)
{
    for (const char *p = v; *p; p++)
        if (*p == '\r' || *p == '\n')
            return false;
    return true;
}

static int check_header_args(const nook_req *r, const char *name, const char *value)
{
    if (!r || !valid_name(name) || (value && !valid_value(value)))
        return NOOK_EINVAL;
    if (r->state != RES_NONE && !r->in_headers_hook)
        return NOOK_ESTATE;
    return NOOK_OK;
}

static void remove_headers(hdr_list *l, const char *name)
{
    size_t nlen = strlen(name), keep = 0;
    for (size_t i = 0; i < l->n; i++)
        if (!(l->v[i].name.len == nlen && io_caseeq(l->v[i].name.ptr, name, nlen)))
            l->v[keep++] = l->v[i];
    l->n = keep;
}

static int add_field(nook_req *r, hdr_list *l, const char *name, const char *value)
{
    const core_limits *lim = core_worker_limits(r->w);
    if (l->n >= (size_t)core_opt(lim, NOOK_OPT_MAX_HEADERS))
        return NOOK_ELIMIT;
    return push_copy(&r->arena, l, name, strlen(name), value, strlen(value));
}

static int add_res_header(nook_req *r, const char *name, const char *value)
{
    return add_field(r, &r->res_hdrs, name, value);
}

/* Fields that describe framing or routing never belong in a trailer section (RFC 9110 §6.5.1). */
static bool forbidden_trailer(const char *name)
{
    static const char *const names[] = {"content-length", "transfer-encoding", "host",
                                        "content-type", "connection", "te", "trailer"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(name) == strlen(names[i]) && io_caseeq(name, names[i], strlen(name)))
            return true;
    return false;
}

int nook_res_trailer(nook_req *r, const char *name, const char *value)
{
    if (!r || !valid_name(name) || !value || !valid_value(value) || forbidden_trailer(name))
        return NOOK_EINVAL;
    if (r->state == RES_ENDED)
        return NOOK_ESTATE;
    return add_field(r, &r->trailers, name, value);
}

int nook_res_header(nook_req *r, const char *name, const char *value)
{
    int rc = check_header_args(r, name, value);
    if (rc != NOOK_OK)
        return rc;
    if (!value)
        return NOOK_EINVAL;
    return add_res_header(r, name, value);
}

/* nook_respond's Content-Type, as nook_res_set_header would set it: the name is ours (valid,
 * and static, so not copied), and the state was checked. Every whole response comes here. */
static int set_content_type(nook_req *r, const char *value)
{
    if (!valid_value(value))
        return NOOK_EINVAL;
    hdr_list *l = &r->res_hdrs;
    if (l->n) {
        remove_headers(l, "content-type");
        if (l->n >= (size_t)core_opt(core_worker_limits(r->w), NOOK_OPT_MAX_HEADERS))
            return NOOK_ELIMIT;
    }
    nook_str v = arena_str(&r->arena, value, strlen(value));
    return v.ptr ? hdr_push(&r->arena, l, (nook_str){"Content-Type", 12}, v) : NOOK_ENOMEM;
}

int nook_res_set_header(nook_req *r, const char *name, const char *value)
{
    int rc = check_header_args(r, name, value);
    if (rc != NOOK_OK)
        return rc;
    remove_headers(&r->res_hdrs, name);
    return value ? add_res_header(r, name, value) : NOOK_OK;
}

int nook_res_status(nook_req *r, int status)
{
    if (!r || status < 200 || status > 999)
        return NOOK_EINVAL;
    if (r->state != RES_NONE && !r->in_headers_hook)
        return NOOK_ESTATE;
    r->status = status;
    return NOOK_OK;
}

/* Parses a Content-Length the handler set; -1 when absent, -2 when malformed. */
static int64_t declared_length(const hdr_list *l)
{
    const core_hdr *h = find_hdr(l, "content-length", 14);
    if (!h)
        return -1;
    int64_t v = 0;
    if (h->value.len == 0 || h->value.len > 18)
        return -2;
    for (size_t i = 0; i < h->value.len; i++) {
        char c = h->value.ptr[i];
        if (c < '0' || c > '9')
            return -2;
        v = v * 10 + (c - '0');
    }
    return v;
}

/* Where the filtered body goes: the codec, with the trailers just before the last piece. */
static int sink(nook_req *r, const void *p, size_t n, bool end)
{
    if (r->sink_ended)
        return NOOK_ESTATE;
    if (end) {
        r->sink_ended = true;
        if (r->trailers.n) {
            int rc = r->ops->send_trailers(r->stream, r->trailers.v, r->trailers.n);
            if (rc != NOOK_OK)
                return rc;
        }
    }
    r->bytes_sent += n;
    return r->ops->send_body(r->stream, p, n, end);
}

static int pass_from(nook_req *r, filter *f, const void *p, size_t n, bool end)
{
    if (!f)
        return sink(r, p, n, end);
    filter *saved = r->filter_at;
    r->filter_at = f;
    r->depth++;
    int rc = f->fn(r, p, n, end ? 1 : 0, f->user_data);
    r->depth--;
    r->filter_at = saved;
    return rc;
}

/* A body piece from the handler: through the filters, then to the codec. */
static int body_out(nook_req *r, const void *p, size_t n, bool end)
{
    return pass_from(r, r->filters, p, n, end);
}

int nook_filter_pass(nook_req *r, const void *data, size_t len, int end)
{
    if (!r || (len && !data))
        return NOOK_EINVAL;
    if (!r->filter_at)
        return NOOK_ESTATE;
    return pass_from(r, r->filter_at->next, data, len, end != 0);
}

/* 1xx, 204 and 304 responses never carry a body (RFC 9110 §6.4.1). */
static bool status_bodiless(int status)
{
    return status < 200 || status == 204 || status == 304;
}

/* Sends the head: the handler's headers minus framing (the codec owns framing), plus Date.
 * content_length is the body's length when the caller knows it (else -1) and end says the caller
 * has no body bytes to send. Whether the response has a body at all is decided here, after the
 * NOOK_ON_HEADERS hooks, from the status they leave: one that became bodiless (a hook turned a
 * 200 into a 304) goes out as a head alone and its body is dropped — the caller sees sent_end and
 * writes are counted and discarded — while one that stopped being bodiless (204 turned into 200)
 * is framed like any other. HEAD keeps the length a GET would announce, without the body. */
static int send_head(nook_req *r, int64_t content_length, bool end)
{
    r->state = RES_STARTED;
    if (r->hooks[NOOK_ON_HEADERS]) {
        r->in_headers_hook = true;
        run_hook(r, NOOK_ON_HEADERS);
        r->in_headers_hook = false;
    }
    if (r->filters && !end)
        content_length = -1; /* filters change the size */
    if (status_bodiless(r->status))
        content_length = -1; /* no framing at all: the codec must not announce a length */
    end = end || r->head_req || status_bodiless(r->status);
    remove_headers(&r->res_hdrs, "content-length");
    remove_headers(&r->res_hdrs, "transfer-encoding");
    if (!find_hdr(&r->res_hdrs, "date", 4)) {
        int rc = hdr_push(&r->arena, &r->res_hdrs, (nook_str){"Date", 4}, core_worker_date(r->w));
        if (rc != NOOK_OK)
            return rc;
    }
    if (end)
        r->sent_end = true;
    int rc = r->ops->send_head(r->stream, r->status, r->res_hdrs.v, r->res_hdrs.n,
                               content_length, end);
    if (rc != NOOK_OK) {
        r->sent_end = true;
        r->ops->abort(r->stream);
    }
    return rc;
}

int nook_respond(nook_req *r, int status, const char *content_type, const void *body, size_t len)
{
    if (!r || status < 200 || status > 999 || (len && !body))
        return NOOK_EINVAL;
    if (r->state != RES_NONE)
        return NOOK_ESTATE;
    if (r->cancelled)
        return NOOK_ECLOSED;
    int rc;
    if (content_type && (rc = set_content_type(r, content_type)) != NOOK_OK)
        return rc;
    r->status = status;
    if (r->hooks[NOOK_ON_HEADERS]) {
        /* Visible to NOOK_ON_HEADERS hooks (compression skips small bodies), whatever the
         * status, as a hook may still change it; the codec writes the real framing from the
         * length passed to send_head, so without hooks this work is skipped. */
        char clen[24];
        clen[io_fmt_dec(clen, len)] = '\0';
        if ((rc = nook_res_set_header(r, "Content-Length", clen)) != NOOK_OK)
            return rc;
    }
    /* send_head drops the body if the final status allows none (204, 304, HEAD). */
    rc = send_head(r, (int64_t)len, len == 0);
    if (rc == NOOK_OK && !r->sent_end) {
        r->sent_end = true;
        rc = body_out(r, body, len, true);
    }
    r->state = RES_ENDED;
    return rc;
}

int nook_res_start(nook_req *r)
{
    if (!r)
        return NOOK_EINVAL;
    if (r->state != RES_NONE)
        return NOOK_ESTATE;
    if (r->cancelled)
        return NOOK_ECLOSED;
    int64_t len = declared_length(&r->res_hdrs);
    if (len == -2)
        return NOOK_EINVAL;
    r->declared_len = len;
    return send_head(r, len, false);
}

/* The response can still be written to: not ended, and the client is still there. */
static int check_open(const nook_req *r)
{
    if (!r)
        return NOOK_EINVAL;
    if (r->state == RES_ENDED)
        return NOOK_ESTATE;
    return r->cancelled ? NOOK_ECLOSED : NOOK_OK;
}

int nook_res_write(nook_req *r, const void *data, size_t len)
{
    if (len && !data)
        return NOOK_EINVAL;
    int open = check_open(r);
    if (open != NOOK_OK)
        return open;
    if (r->state == RES_NONE) {
        int rc = nook_res_start(r);
        if (rc != NOOK_OK)
            return rc;
    }
    if (r->declared_len >= 0 && r->written + len > (uint64_t)r->declared_len)
        return NOOK_EINVAL;
    if (r->sent_end) { /* no body (HEAD, 204, 304): discarded, but counted */
        r->written += len;
        return NOOK_OK;
    }
    const core_limits *lim = core_worker_limits(r->w);
    size_t queued = r->ops->queued(r->stream);
    if (queued + len > (size_t)core_opt(lim, NOOK_OPT_MAX_OUTPUT))
        return NOOK_EFULL;
    int rc = body_out(r, data, len, false);
    if (rc < 0)
        return rc;
    r->written += len;
    return r->ops->queued(r->stream) >= (size_t)core_opt(lim, NOOK_OPT_OUTPUT_HIGH_WATER)
               ? NOOK_AGAIN
               : NOOK_OK;
}

int nook_res_end(nook_req *r)
{
    int open = check_open(r);
    if (open != NOOK_OK)
        return open;
    if (r->state == RES_NONE) {
        /* No body was written: only a response without one may have declared a length (a
         * HEAD answer announces it; a 304 may describe the selected representation). */
        int64_t declared = declared_length(&r->res_hdrs);
        if (declared > 0 && !r->head_req && !status_bodiless(r->status))
            return NOOK_EINVAL;
        int rc = send_head(r, r->head_req && declared > 0 ? declared : 0, true);
        r->state = RES_ENDED;
        return rc;
    }
    r->state = RES_ENDED;
    /* A body that is discarded (HEAD, 204, 304, also when a hook chose the status) cannot be
     * short on the wire: the response ended with its head. */
    if (r->sent_end)
        return NOOK_OK;
    if (r->declared_len >= 0 && r->written < (uint64_t)r->declared_len) {
        r->sent_end = true;
        r->ops->abort(r->stream);
        return NOOK_EINVAL;
    }
    r->sent_end = true;
    return body_out(r, NULL, 0, true);
}

#define FILE_PIECE 65536

/* Sends the next pieces of a file body until the output passes the high-water mark (then
 * WRITABLE brings us back) or the file is done. */
static void pump_file(nook_req *r)
{
    const core_limits *lim = core_worker_limits(r->w);
    size_t high = (size_t)core_opt(lim, NOOK_OPT_OUTPUT_HIGH_WATER);
    char *buf = core_worker_scratch(r->w, FILE_PIECE);
    while (buf && r->file_left > 0 && r->ops->queued(r->stream) < high) {
        size_t want = r->file_left < FILE_PIECE ? (size_t)r->file_left : FILE_PIECE;
        ssize_t n = pread(r->file_fd, buf, want, (off_t)r->file_off);
        if (n <= 0) {
            core_log(r->w, NOOK_LOG_ERROR, "sendfile: the file ended early or failed to read");
            r->ops->abort(r->stream);
            r->file_left = 0;
            break;
        }
        r->file_off += (uint64_t)n;
        r->file_left -= (uint64_t)n;
        if (body_out(r, buf, (size_t)n, r->file_left == 0) < 0)
            r->file_left = 0;
    }
    if (r->file_left == 0 || !buf) {
        close(r->file_fd);
        r->file_fd = -1;
        r->sent_end = true;
    }
}

int nook_res_sendfile(nook_req *r, int fd, uint64_t offset, uint64_t len)
{
    int rc = !r || fd < 0 ? NOOK_EINVAL : r->state != RES_NONE ? NOOK_ESTATE
                                        : r->cancelled          ? NOOK_ECLOSED
                                                                : NOOK_OK;
    if (rc != NOOK_OK) {
        if (fd >= 0)
            close(fd);
        return rc;
    }
    /* Visible to NOOK_ON_HEADERS hooks; the codec frames from the length given to send_head. */
    char clen[24];
    clen[io_fmt_dec(clen, len)] = '\0';
    rc = nook_res_set_header(r, "Content-Length", clen);
    if (rc == NOOK_OK)
        rc = send_head(r, (int64_t)len, len == 0);
    if (rc != NOOK_OK || r->sent_end) {
        close(fd);
        r->state = RES_ENDED;
        return rc;
    }
    /* The handler is done with this response either way. */
    r->state = RES_ENDED;
    /* Zero-copy when the codec can and nothing needs to see the bytes. */
    if (!r->filters && !r->trailers.n && r->ops->send_file &&
        r->ops->send_file(r->stream, fd, offset, len) == NOOK_OK) {
        r->sent_end = true;
        r->bytes_sent += len;
        return NOOK_OK;
    }
    /* Otherwise the core pumps it; the body counts as ended only when the pump is done, so
     * the codec keeps reporting WRITABLE until then. */
    r->file_fd = fd;
    r->file_off = offset;
    r->file_left = len;
    pump_file(r);
    return NOOK_OK;
}

int nook_res_get_status(const nook_req *r) { return r ? r->status : NOOK_EINVAL; }

nook_str nook_res_get_header(const nook_req *r, const char *name)
{
    if (!r || !name)
        return absent;
    const core_hdr *h = find_hdr(&r->res_hdrs, name, strlen(name));
    return h ? h->value : absent;
}

/* ---------------------------------------------------------------------------------------------
 * Late responses: tokens
 * ------------------------------------------------------------------------------------------- */

typedef struct token_post {
    nook_token *t;
    nook_handler_fn fn;
    void *user_data;
} token_post;

static void token_unref(nook_token *t)
{
    if (atomic_fetch_sub(&t->refs, 1) == 1)
        io_free(t->alloc, t);
}

nook_token *nook_req_suspend(nook_req *r)
{
    if (!r)
        return NULL;
    if (r->token) {
        /* Suspending twice hands out the same token with one more reference. */
        atomic_fetch_add(&r->token->refs, 1);
        r->suspends++;
        return r->token;
    }
    const io_alloc *a = core_worker_alloc(r->w);
    nook_token *t = io_malloc(a, sizeof *t);
    /* Without a token the request is not suspended: the step that asked still owes an answer. */
    if (!t)
        return NULL;
    atomic_init(&t->refs, 2); /* the caller's and the request's */
    t->alloc = a;
    t->loop = core_worker_loop(r->w);
    t->req = r;
    r->token = t;
    r->suspends++;
    return t;
}

static void token_run(void *arg)
{
    token_post *p = arg;
    nook_token *t = p->t;
    nook_req *r = t->req;
    if (r) {
        r->depth++;
        p->fn(r, p->user_data);
        r->depth--;
        if (r->release_pending && r->depth == 0)
            release(r);
    } else {
        p->fn(NULL, p->user_data);
    }
    io_free(t->alloc, p);
    token_unref(t);
}

int nook_token_post(nook_token *t, nook_handler_fn fn, void *user_data)
{
    if (!t || !fn)
        return NOOK_EINVAL;
    token_post *p = io_malloc(t->alloc, sizeof *p);
    if (!p)
        return NOOK_ENOMEM;
    *p = (token_post){t, fn, user_data};
    atomic_fetch_add(&t->refs, 1);
    if (io_loop_post(t->loop, token_run, p) != NOOK_OK) {
        atomic_fetch_sub(&t->refs, 1);
        io_free(t->alloc, p);
        return NOOK_ENOMEM;
    }
    return NOOK_OK;
}

void nook_token_release(nook_token *t)
{
    if (t)
        token_unref(t);
}
