/*
 * nook_server: configuration, listeners, routes, and the worker loops that serve them.
 *
 * Each worker owns an event loop, its own listening sockets (SO_REUSEPORT copies for TCP, a
 * dup for Unix sockets, which cannot share a port) and every connection it accepts, from
 * accept to close. Workers share read-only state (options, routes), the stop flag, and the
 * connection counts (an atomic total, and the per-address table under a lock).
 */
#include "core/server.h"

#include <errno.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "core/accept.h"
#include "core/router.h"
#include "io/ascii.h"
#include "io/pool.h"
#include "io/sock.h"
#include "tls/tls.h"

#define MAX_LISTENERS 32
#define ACCEPTS_PER_EVENT 64
#define ACCEPT_PAUSE_MS 100
#define PEER_BUCKETS 1024 /* chains of the per-address connection counts */
#define WORKER_POOL_BYTES (1u << 20) /* most bytes of freed blocks a worker keeps for reuse */

enum { SRV_IDLE, SRV_RUNNING, SRV_STOPPED };

typedef struct listener_conf {
    io_addr addr; /* with the real port once bound */
    int fd;       /* bound socket until a worker takes it over */
    core_listener info;
} listener_conf;

typedef struct worker_listener {
    io_watch watch;
    core_worker *worker;
    const core_listener *info;
} worker_listener;

struct core_worker {
    nook_server *srv;
    io_loop *loop;
    pthread_t thread;
    bool has_thread;
    worker_listener listeners[MAX_LISTENERS];
    size_t nlisteners;
    core_conn conns; /* sentinel of a circular list */
    size_t nconns;
    bool stopping;
    io_timer drain_timer;
    io_timer accept_pause;
    io_timer trim_timer; /* see core_worker_released */
    time_t date_sec;
    char date[IO_HTTP_DATE_LEN];
    core_req_cache req_cache;
    void *scratch;
    size_t scratch_size;
    struct worker_local *locals;
    io_pool pool; /* small per-request blocks, recycled on this worker's thread */
};

/* One entry of core_worker_local's list. */
typedef struct worker_local {
    struct worker_local *next;
    const void *key;
    void *value;
    void (*free_fn)(void *);
} worker_local;

/* Open connections from one client address (NOOK_OPT_MAX_CONNECTIONS_PER_IP). */
typedef struct peer_count {
    struct peer_count *next;
    nook_server *srv;
    unsigned char addr[16];
    size_t addr_len;
    size_t count;
} peer_count;

typedef struct route_target {
    const io_alloc *alloc;
    nook_handler_fn fn;
    void *user_data;
    nook_free_fn free_ud;
    bool stream_body;
} route_target;

struct nook_server {
    io_alloc alloc;
    bool alloc_locked; /* something was allocated: the allocator can no longer change */
    core_limits limits;
    nook_log_fn log_fn;
    nook_log_level log_max;
    void *log_ud;
    core_router *router;
    core_mw *mws;
    size_t nmws;
    listener_conf listeners[MAX_LISTENERS];
    size_t nlisteners;
    core_worker **workers;
    size_t nworkers;
    atomic_int state;
    atomic_int stop_requested;
    atomic_int drain_ms;
    pthread_mutex_t peers_lock; /* guards peers: every worker accepts */
    peer_count *peers[PEER_BUCKETS];
    uint64_t peer_seed;         /* hash key, so that addresses cannot be picked to collide */
    atomic_llong nsockets;      /* accepted sockets not yet closed, all workers together */
};

/* ---------------------------------------------------------------------------------------------
 * Options
 * ------------------------------------------------------------------------------------------- */

static const struct {
    int64_t def, min, max;
} opt_spec[CORE_OPT_COUNT] = {
    [NOOK_OPT_THREADS] = {0, 1, 256}, /* 0 here means "online CPUs" */
    [NOOK_OPT_MAX_CONNECTIONS] = {10000, 1, 10000000},
    [NOOK_OPT_MAX_REQUEST_LINE] = {8192, 64, 1 << 20},
    [NOOK_OPT_MAX_HEADER_BYTES] = {16384, 256, 1 << 24},
    [NOOK_OPT_MAX_HEADERS] = {100, 1, 10000},
    [NOOK_OPT_MAX_BODY] = {1 << 20, 0, INT64_MAX},
    [NOOK_OPT_MAX_REQUESTS_PER_CONN] = {10000, 1, INT64_MAX},
    [NOOK_OPT_IDLE_TIMEOUT] = {60000, 0, 86400000},
    [NOOK_OPT_IDLE_SLEEP] = {1000, 0, 86400000},
    [NOOK_OPT_HEADER_TIMEOUT] = {10000, 0, 86400000},
    [NOOK_OPT_BODY_TIMEOUT] = {30000, 0, 86400000},
    [NOOK_OPT_WRITE_TIMEOUT] = {30000, 0, 86400000},
    [NOOK_OPT_OUTPUT_HIGH_WATER] = {65536, 1024, 1 << 30},
    [NOOK_OPT_MAX_OUTPUT] = {4 << 20, 4096, (int64_t)1 << 34},
    [NOOK_OPT_LISTEN_BACKLOG] = {511, 1, 65535},
    [NOOK_OPT_HTTP2] = {1, 0, 1},
    [NOOK_OPT_ALT_SVC] = {1, 0, 1},
    [NOOK_OPT_TLS_HANDSHAKE_TIMEOUT] = {10000, 0, 86400000},
    [NOOK_OPT_H2_MAX_CONCURRENT_STREAMS] = {100, 1, 1 << 20},
    [NOOK_OPT_H2_INITIAL_WINDOW_SIZE] = {262144, 0, 0x7fffffff},
    [NOOK_OPT_H2_MAX_FRAME_SIZE] = {16384, 16384, 16777215},
    [NOOK_OPT_H2_MAX_HEADER_LIST_SIZE] = {65536, 1024, 1 << 24},
    [NOOK_OPT_H2_MAX_GLITCHES] = {1000, 0, 1000000},
    [NOOK_OPT_H2_SETTINGS_TIMEOUT] = {10000, 0, 86400000},
    [NOOK_OPT_H2_ZERO_WINDOW_TIMEOUT] = {30000, 0, 86400000},
    [NOOK_OPT_H2_MAX_CONN_OUTPUT] = {16 << 20, 65536, (int64_t)1 << 36},
    [NOOK_OPT_MIN_BODY_RATE] = {512, 0, 1 << 30},
    [NOOK_OPT_MAX_CONNECTIONS_PER_IP] = {0, 0, 10000000},
    [NOOK_OPT_H2_MAX_CONN_INPUT] = {8 << 20, 65536, (int64_t)1 << 36},
    [NOOK_OPT_TLS_SEND_BATCH] = {TLS_SEND_BATCH_DEFAULT, 0, 16 << 20},
};

static bool opt_valid(int opt) { return opt >= NOOK_OPT_THREADS && opt < CORE_OPT_COUNT; }

static int64_t online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? n : 1;
}

nook_server *nook_server_new(void)
{
    nook_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->alloc = io_alloc_libc;
    for (int o = NOOK_OPT_THREADS; o < CORE_OPT_COUNT; o++)
        srv->limits.opt[o] = opt_spec[o].def;
    srv->limits.opt[NOOK_OPT_THREADS] = online_cpus();
    for (size_t i = 0; i < MAX_LISTENERS; i++)
        srv->listeners[i].fd = -1;
    atomic_init(&srv->state, SRV_IDLE);
    pthread_mutex_init(&srv->peers_lock, NULL);
    atomic_init(&srv->nsockets, 0);
    /* A secret key: a client that cannot learn it cannot pick addresses that share a bucket.
     * GRND_NONBLOCK: never wait for the kernel's pool at early boot; then (or on a kernel
     * without getrandom) the clock and an address are a weaker key, still not a fixed one. */
    if (getrandom(&srv->peer_seed, sizeof srv->peer_seed, GRND_NONBLOCK) !=
        (ssize_t)sizeof srv->peer_seed) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        srv->peer_seed =
            ((uint64_t)ts.tv_nsec << 32) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)srv;
    }
    return srv;
}

int nook_server_set_int(nook_server *srv, nook_opt opt, int64_t value)
{
    if (!srv || !opt_valid((int)opt))
        return NOOK_EINVAL;
    if (atomic_load(&srv->state) != SRV_IDLE)
        return NOOK_ESTATE;
    if (value < opt_spec[opt].min || value > opt_spec[opt].max)
        return NOOK_EINVAL;
    srv->limits.opt[opt] = value;
    return NOOK_OK;
}

int64_t nook_server_get_int(const nook_server *srv, nook_opt opt)
{
    if (!srv || !opt_valid((int)opt))
        return NOOK_EINVAL;
    return srv->limits.opt[opt];
}

int nook_server_set_logger(nook_server *srv, nook_log_fn fn, nook_log_level max_level,
                           void *user_data)
{
    if (!srv)
        return NOOK_EINVAL;
    if (atomic_load(&srv->state) != SRV_IDLE)
        return NOOK_ESTATE;
    srv->log_fn = fn;
    srv->log_max = max_level;
    srv->log_ud = user_data;
    return NOOK_OK;
}

void nook_log_stderr(nook_log_level level, const char *msg, void *user_data)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    (void)user_data;
    fprintf(stderr, "nook: %s: %s\n", names[level <= NOOK_LOG_DEBUG ? level : NOOK_LOG_DEBUG], msg);
}

int nook_server_set_allocator(nook_server *srv, nook_malloc_fn malloc_fn,
                              nook_realloc_fn realloc_fn, nook_release_fn free_fn, void *user_data)
{
    if (!srv || !malloc_fn || !realloc_fn || !free_fn)
        return NOOK_EINVAL;
    if (srv->alloc_locked)
        return NOOK_ESTATE;
    srv->alloc = (io_alloc){malloc_fn, realloc_fn, free_fn, user_data};
    return NOOK_OK;
}

static void log_v(const nook_server *srv, nook_log_level level, const char *fmt, va_list ap)
{
    if (!srv->log_fn || level > srv->log_max)
        return;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    srv->log_fn(level, line, srv->log_ud);
}

static void srv_log(const nook_server *srv, nook_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void srv_log(const nook_server *srv, nook_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_v(srv, level, fmt, ap);
    va_end(ap);
}

void core_log(const core_worker *w, nook_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_v(w->srv, level, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------------------------------------
 * Listeners and routes
 * ------------------------------------------------------------------------------------------- */

int nook_server_listen(nook_server *srv, const char *addr, nook_tls *tls)
{
    if (!srv || !addr || (tls && !tls_has_cert(tls)))
        return NOOK_EINVAL;
    if (atomic_load(&srv->state) != SRV_IDLE)
        return NOOK_ESTATE;
    if (srv->nlisteners == MAX_LISTENERS)
        return NOOK_ELIMIT;
    listener_conf *l = &srv->listeners[srv->nlisteners];
    int rc = io_addr_parse(addr, &l->addr);
    if (rc != NOOK_OK) {
        srv_log(srv, NOOK_LOG_ERROR, "listen %s: cannot parse the address", addr);
        return rc;
    }
    int fd = io_listen_claim(&l->addr, (int)core_opt(&srv->limits, NOOK_OPT_LISTEN_BACKLOG));
    if (fd < 0) {
        srv_log(srv, NOOK_LOG_ERROR, "listen %s: %s", addr, strerror(errno));
        return fd;
    }
    /* Learn the port the kernel chose, so other workers' sockets bind the same one. */
    io_addr bound;
    if (l->addr.ss.ss_family != AF_UNIX && io_sock_name(fd, &bound) == NOOK_OK)
        l->addr = bound;
    l->fd = fd;
    l->info.port = io_addr_port(&l->addr);
    l->info.tls = tls;
    if (tls)
        tls_ref(tls);
    srv->nlisteners++;
    return NOOK_OK;
}

int nook_server_port(const nook_server *srv, size_t index)
{
    if (!srv || index >= srv->nlisteners)
        return NOOK_ENOTFOUND;
    return srv->listeners[index].info.port;
}

static void free_route_target(void *p)
{
    route_target *t = p;
    if (t->free_ud)
        t->free_ud(t->user_data);
    io_free(t->alloc, t);
}

static int add_route(nook_server *srv, const char *pattern, nook_handler_fn fn, void *user_data,
                     nook_free_fn free_ud, bool stream_body)
{
    if (!srv || !pattern || !fn)
        return NOOK_EINVAL;
    if (atomic_load(&srv->state) != SRV_IDLE)
        return NOOK_ESTATE;
    if (!srv->router) {
        srv->alloc_locked = true;
        srv->router = core_router_new(&srv->alloc);
        if (!srv->router)
            return NOOK_ENOMEM;
    }
    route_target *t = io_malloc(&srv->alloc, sizeof *t);
    if (!t)
        return NOOK_ENOMEM;
    *t = (route_target){&srv->alloc, fn, user_data, free_ud, stream_body};
    int rc = core_router_add(srv->router, pattern, t);
    if (rc != NOOK_OK) {
        io_free(&srv->alloc, t);
        srv_log(srv, NOOK_LOG_ERROR, "route \"%s\": %s", pattern, nook_strerror(rc));
    }
    return rc;
}

const io_alloc *core_server_alloc(const nook_server *srv) { return &srv->alloc; }

int nook_use(nook_server *srv, const char *prefix, nook_handler_fn fn, void *user_data,
             nook_free_fn free_ud)
{
    if (!srv || !fn || (prefix && prefix[0] != '/'))
        return NOOK_EINVAL;
    if (atomic_load(&srv->state) != SRV_IDLE)
        return NOOK_ESTATE;
    /* "/" and "/api/" cover the same as "" and "/api": keep prefixes without a trailing '/'. */
    size_t len = prefix ? strlen(prefix) : 0;
    while (len > 0 && prefix[len - 1] == '/')
        len--;
    srv->alloc_locked = true;
    core_mw *v = io_realloc(&srv->alloc, srv->mws, (srv->nmws + 1) * sizeof *v);
    if (!v)
        return NOOK_ENOMEM;
    srv->mws = v;
    char *copy = io_malloc(&srv->alloc, len + 1);
    if (!copy)
        return NOOK_ENOMEM;
    memcpy(copy, prefix ? prefix : "", len);
    copy[len] = '\0';
    srv->mws[srv->nmws++] = (core_mw){copy, len, fn, user_data, free_ud};
    return NOOK_OK;
}

int nook_route_use(nook_server *srv, const char *pattern, nook_handler_fn fn, void *user_data,
                   nook_free_fn free_ud)
{
    if (!srv || !pattern || !fn)
        return NOOK_EINVAL;
    void *target;
    int rc = srv->router ? core_router_find(srv->router, pattern, &target) : NOOK_ENOTFOUND;
    if (rc != NOOK_OK)
        return rc;
    rc = nook_use(srv, NULL, fn, user_data, free_ud);
    if (rc == NOOK_OK)
        srv->mws[srv->nmws - 1].route = target;
    return rc;
}

int core_use_taking_body(nook_server *srv, const char *prefix, nook_handler_fn fn,
                         void *user_data, nook_free_fn free_ud)
{
    int rc = nook_use(srv, prefix, fn, user_data, free_ud);
    if (rc == NOOK_OK)
        srv->mws[srv->nmws - 1].takes_body = true;
    return rc;
}

void *core_worker_local(const core_worker *w, const void *key)
{
    for (const worker_local *l = w->locals; l; l = l->next)
        if (l->key == key)
            return l->value;
    return NULL;
}

int core_worker_set_local(core_worker *w, const void *key, void *value, void (*free_fn)(void *))
{
    worker_local *l = io_malloc(&w->srv->alloc, sizeof *l);
    if (!l)
        return NOOK_ENOMEM;
    *l = (worker_local){w->locals, key, value, free_fn};
    w->locals = l;
    return NOOK_OK;
}

static void free_locals(core_worker *w)
{
    while (w->locals) {
        worker_local *l = w->locals;
        w->locals = l->next;
        if (l->free_fn)
            l->free_fn(l->value);
        io_free(&w->srv->alloc, l);
    }
}

const core_mw *core_worker_middleware(const core_worker *w, size_t *count)
{
    *count = w->srv->nmws;
    return w->srv->mws;
}

int nook_route(nook_server *srv, const char *pattern, nook_handler_fn fn, void *user_data,
               nook_free_fn free_ud)
{
    return add_route(srv, pattern, fn, user_data, free_ud, false);
}

int nook_route_streaming(nook_server *srv, const char *pattern, nook_handler_fn fn,
                         void *user_data, nook_free_fn free_ud)
{
    return add_route(srv, pattern, fn, user_data, free_ud, true);
}

/* The exchange calls handlers through these, so route targets stay private to this file. */
void core_route_call(void *target, nook_req *req);
void core_route_call(void *target, nook_req *req)
{
    route_target *t = target;
    t->fn(req, t->user_data);
}

bool core_route_streams_body(const void *target);
bool core_route_streams_body(const void *target)
{
    return ((const route_target *)target)->stream_body;
}

/* ---------------------------------------------------------------------------------------------
 * Workers
 * ------------------------------------------------------------------------------------------- */

io_loop *core_worker_loop(core_worker *w) { return w->loop; }
const io_alloc *core_worker_alloc(const core_worker *w) { return &w->srv->alloc; }
const io_alloc *core_worker_pool(core_worker *w) { return io_pool_alloc(&w->pool); }

/*
 * Giving idle memory back. A connection that falls asleep frees its TLS record buffers (33 KiB)
 * and input buffers. glibc keeps what is freed inside its heap for reuse, and a heap shared by
 * thousands of connections is a patchwork: the freed buffers sit between live blocks, stay
 * resident, and are only reused by the next handshakes. malloc_trim(0) returns every whole free
 * page inside the heap to the kernel. A worker calls it once, TRIM_DELAY_MS after a connection
 * fell asleep (so that one call covers every connection that fell asleep meanwhile); at most
 * once per TRIM_DELAY_MS then. Only with libc's allocator: a server's own allocator keeps its own
 * books. On 3,000 idle HTTP/2 connections over TLS this took resident memory from 18 to 11 KiB
 * per connection (docs/performance.md).
 */
#define TRIM_DELAY_MS 1000

void core_worker_released(core_worker *w)
{
#if defined(__GLIBC__)
    if (w->stopping || w->srv->alloc.malloc_fn != io_alloc_libc.malloc_fn ||
        io_timer_armed(&w->trim_timer))
        return;
    io_timer_set(w->loop, &w->trim_timer, TRIM_DELAY_MS);
#else
    (void)w;
#endif
}

static void on_trim(io_timer *t)
{
    (void)t;
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
}

const core_limits *core_worker_limits(const core_worker *w) { return &w->srv->limits; }
bool core_worker_stopping(const core_worker *w) { return w->stopping; }
const struct core_router *core_worker_router(const core_worker *w) { return w->srv->router; }
core_req_cache *core_worker_req_cache(core_worker *w) { return &w->req_cache; }

void *core_worker_scratch(core_worker *w, size_t size)
{
    if (size > w->scratch_size) {
        void *p = io_realloc(&w->srv->alloc, w->scratch, size);
        if (!p)
            return NULL;
        w->scratch = p;
        w->scratch_size = size;
    }
    return w->scratch;
}

void core_worker_add_conn(core_worker *w, core_conn *c)
{
    c->next = w->conns.next;
    c->prev = &w->conns;
    w->conns.next->prev = c;
    w->conns.next = c;
    w->nconns++;
}

/* ---- connection counts: all workers together (NOOK_OPT_MAX_CONNECTIONS), per address ----
 * A slot is taken in on_accept, before anything is allocated for the connection; the stream
 * gives it back when its socket closes (io_stream's on_close, which moves with the stream from
 * the front door to the codec). */

/* Takes one of the server's `max` connection slots; false when all are taken. A refused
 * attempt may make a concurrent one fail too (both saw the count over the limit for a moment),
 * never admit one too many. */
static bool slot_take(nook_server *srv, int64_t max)
{
    if (atomic_fetch_add_explicit(&srv->nsockets, 1, memory_order_relaxed) < max)
        return true;
    atomic_fetch_sub_explicit(&srv->nsockets, 1, memory_order_relaxed);
    return false;
}

static void slot_release(void *arg)
{
    nook_server *srv = arg;
    atomic_fetch_sub_explicit(&srv->nsockets, 1, memory_order_relaxed);
}

void core_worker_drop_slot(core_worker *w) { slot_release(w->srv); }

static size_t peer_bucket(const nook_server *srv, const unsigned char *addr, size_t len)
{
    uint64_t h = 1469598103934665603ull ^ srv->peer_seed;
    for (size_t i = 0; i < len; i++)
        h = (h ^ addr[i]) * 1099511628211ull;
    h ^= h >> 29;
    return (size_t)(h % PEER_BUCKETS);
}

static void peer_release(void *arg)
{
    peer_count *p = arg;
    nook_server *srv = p->srv;
    pthread_mutex_lock(&srv->peers_lock);
    if (--p->count == 0) {
        peer_count **pp = &srv->peers[peer_bucket(srv, p->addr, p->addr_len)];
        while (*pp != p)
            pp = &(*pp)->next;
        *pp = p->next;
        io_free(&srv->alloc, p);
    }
    pthread_mutex_unlock(&srv->peers_lock);
    slot_release(srv);
}

bool core_worker_admit(core_worker *w, const struct sockaddr *peer, io_stream *s)
{
    nook_server *srv = w->srv;
    int64_t limit = core_opt(&srv->limits, NOOK_OPT_MAX_CONNECTIONS_PER_IP);
    const unsigned char *addr;
    size_t len;
    s->on_close = slot_release; /* replaced by peer_release below, which releases both */
    s->on_close_arg = srv;
    if (limit <= 0)
        return true;
    if (peer->sa_family == AF_INET) {
        addr = (const unsigned char *)&((const struct sockaddr_in *)(const void *)peer)->sin_addr;
        len = 4;
    } else if (peer->sa_family == AF_INET6) {
        addr = (const unsigned char *)&((const struct sockaddr_in6 *)(const void *)peer)->sin6_addr;
        len = 16;
    } else {
        return true; /* Unix sockets: local processes, no address to tell apart */
    }
    bool ok = true;
    pthread_mutex_lock(&srv->peers_lock);
    peer_count **head = &srv->peers[peer_bucket(srv, addr, len)], *p = *head;
    while (p && !(p->addr_len == len && memcmp(p->addr, addr, len) == 0))
        p = p->next;
    if (!p) {
        p = io_malloc(&srv->alloc, sizeof *p);
        if (p) {
            *p = (peer_count){*head, srv, {0}, len, 0};
            memcpy(p->addr, addr, len);
            *head = p;
        }
    }
    if (!p || p->count >= (size_t)limit) {
        ok = false;
    } else {
        p->count++;
        s->on_close = peer_release;
        s->on_close_arg = p;
    }
    pthread_mutex_unlock(&srv->peers_lock);
    return ok;
}

void core_worker_remove_conn(core_worker *w, core_conn *c)
{
    c->prev->next = c->next;
    c->next->prev = c->prev;
    c->prev = c->next = c;
    w->nconns--;
}

nook_str core_worker_date(core_worker *w)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec != w->date_sec) {
        io_fmt_http_date(w->date, ts.tv_sec);
        w->date_sec = ts.tv_sec;
    }
    return (nook_str){w->date, IO_HTTP_DATE_LEN};
}

/* EPOLLEXCLUSIVE watches cannot be modified, only removed and added again. */
static void set_accepting(core_worker *w, bool on)
{
    for (size_t i = 0; i < w->nlisteners; i++) {
        if (on)
            io_watch_add(w->loop, &w->listeners[i].watch, EPOLLIN | EPOLLEXCLUSIVE);
        else
            io_watch_del(w->loop, &w->listeners[i].watch);
    }
}

static void on_accept_pause_end(io_timer *t)
{
    core_worker *w = (core_worker *)((char *)t - offsetof(core_worker, accept_pause));
    if (!w->stopping)
        set_accepting(w, true);
}

static void on_accept(io_watch *watch, uint32_t events)
{
    (void)events;
    worker_listener *l = (worker_listener *)watch;
    core_worker *w = l->worker;
    int64_t max_conns = core_opt(&w->srv->limits, NOOK_OPT_MAX_CONNECTIONS);
    char peer[64];
    for (int i = 0; i < ACCEPTS_PER_EVENT && !w->stopping; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(watch->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: stop accepting for a moment instead of spinning. */
                core_log(w, NOOK_LOG_WARN, "accept: %s; pausing accepts", strerror(errno));
                set_accepting(w, false);
                io_timer_set(w->loop, &w->accept_pause, ACCEPT_PAUSE_MS);
            }
            return;
        }
        if (!slot_take(w->srv, max_conns)) {
            size_t n = io_addr_format((struct sockaddr *)&ss, len, peer, sizeof peer);
            core_log(w, NOOK_LOG_WARN, "%.*s: connection limit (%lld) reached; closing", (int)n,
                     peer, (long long)max_conns);
            close(fd);
            continue;
        }
        if (ss.ss_family != AF_UNIX) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        core_accept(w, fd, (const struct sockaddr *)&ss, len, l->info);
    }
}

static void close_listeners(core_worker *w)
{
    for (size_t i = 0; i < w->nlisteners; i++) {
        io_watch_del(w->loop, &w->listeners[i].watch);
        close(w->listeners[i].watch.fd);
    }
    w->nlisteners = 0;
}

static void shutdown_conns(core_worker *w, bool graceful)
{
    /* A shutdown never frees synchronously, so walking the list is safe. */
    for (core_conn *c = w->conns.next; c != &w->conns; c = c->next)
        c->ops->shutdown(c, graceful);
}

static void on_drain_deadline(io_timer *t)
{
    core_worker *w = (core_worker *)((char *)t - offsetof(core_worker, drain_timer));
    shutdown_conns(w, false);
}

static void begin_stop(core_worker *w)
{
    if (w->stopping)
        return;
    w->stopping = true;
    io_timer_stop(w->loop, &w->accept_pause);
    io_timer_stop(w->loop, &w->trim_timer);
    close_listeners(w);
    int drain = atomic_load(&w->srv->drain_ms);
    shutdown_conns(w, drain > 0);
    if (drain > 0)
        io_timer_set(w->loop, &w->drain_timer, (uint64_t)drain);
}

static void on_wake(void *arg)
{
    core_worker *w = arg;
    if (atomic_load(&w->srv->stop_requested))
        begin_stop(w);
}

static void worker_free(core_worker *w)
{
    if (!w)
        return;
    close_listeners(w);
    free_locals(w);
    core_exchange_cache_free(&w->req_cache, &w->srv->alloc);
    io_free(&w->srv->alloc, w->scratch);
    io_loop_free(w->loop);
    io_pool_drain(&w->pool);
    io_free(&w->srv->alloc, w);
}

/* Gives worker `index` its listening sockets: worker 0 takes the ones bound by listen(), the
 * others open SO_REUSEPORT twins (TCP) or share the socket through a dup (Unix). */
static int worker_listen(core_worker *w, size_t index)
{
    nook_server *srv = w->srv;
    for (size_t i = 0; i < srv->nlisteners; i++) {
        listener_conf *lc = &srv->listeners[i];
        int fd;
        if (index == 0) {
            fd = lc->fd;
            lc->fd = -1;
        } else if (lc->addr.ss.ss_family == AF_UNIX) {
            fd = dup(srv->workers[0]->listeners[i].watch.fd);
        } else {
            fd = io_listen(&lc->addr, (int)core_opt(&srv->limits, NOOK_OPT_LISTEN_BACKLOG), true);
        }
        if (fd < 0) {
            srv_log(srv, NOOK_LOG_ERROR, "worker %zu: cannot open listener %zu: %s", index, i,
                    strerror(errno));
            return NOOK_ESYS;
        }
        worker_listener *wl = &w->listeners[w->nlisteners++];
        wl->worker = w;
        wl->info = &lc->info;
        wl->watch.fd = fd;
        wl->watch.fn = on_accept;
        /* EPOLLEXCLUSIVE: a Unix socket shared by several workers wakes only one of them. */
        if (io_watch_add(w->loop, &wl->watch, EPOLLIN | EPOLLEXCLUSIVE) != NOOK_OK)
            return NOOK_ESYS;
    }
    return NOOK_OK;
}

static core_worker *worker_new(nook_server *srv)
{
    core_worker *w = io_malloc(&srv->alloc, sizeof *w);
    if (!w)
        return NULL;
    memset(w, 0, sizeof *w);
    w->srv = srv;
    w->conns.next = w->conns.prev = &w->conns;
    w->drain_timer.fn = on_drain_deadline;
    w->accept_pause.fn = on_accept_pause_end;
    w->trim_timer.fn = on_trim;
    io_pool_init(&w->pool, &srv->alloc, WORKER_POOL_BYTES);
    w->loop = io_loop_new(&srv->alloc);
    if (!w->loop) {
        io_free(&srv->alloc, w);
        return NULL;
    }
    io_loop_on_wake(w->loop, on_wake, w);
    return w;
}

static bool worker_done(const core_worker *w) { return w->stopping && w->nconns == 0; }

static void worker_run(core_worker *w)
{
    while (!worker_done(w)) {
        if (io_loop_run_once(w->loop, -1) != NOOK_OK) {
            core_log(w, NOOK_LOG_ERROR, "event loop failed: %s", strerror(errno));
            break;
        }
    }
}

static void *worker_thread(void *arg)
{
    io_thread_block_sigpipe();
    worker_run(arg);
    return NULL;
}

static void free_workers(nook_server *srv)
{
    for (size_t i = 0; i < srv->nworkers; i++)
        worker_free(srv->workers[i]);
    io_free(&srv->alloc, srv->workers);
    srv->workers = NULL;
    srv->nworkers = 0;
}

static int create_workers(nook_server *srv, size_t n)
{
    if (atomic_load(&srv->state) != SRV_IDLE)
        return NOOK_ESTATE;
    if (srv->nlisteners == 0)
        return NOOK_EINVAL;
    /* A hard output cap below the high-water mark would fail writes before any WRITABLE. */
    int64_t *max_out = &srv->limits.opt[NOOK_OPT_MAX_OUTPUT];
    int64_t high = srv->limits.opt[NOOK_OPT_OUTPUT_HIGH_WATER];
    if (*max_out < 2 * high) {
        srv_log(srv, NOOK_LOG_WARN, "NOOK_OPT_MAX_OUTPUT raised to twice the high-water mark");
        *max_out = 2 * high;
    }
    bool h2 = core_opt(&srv->limits, NOOK_OPT_HTTP2) != 0;
    for (size_t i = 0; i < srv->nlisteners; i++) {
        nook_tls *tls = srv->listeners[i].info.tls;
        int rc = tls ? tls_prepare(tls, h2) : NOOK_OK;
        if (rc != NOOK_OK) {
            srv_log(srv, NOOK_LOG_ERROR, "listener %zu: TLS setup failed: %s", i, nook_strerror(rc));
            return rc;
        }
    }
    srv->alloc_locked = true;
    srv->workers = io_malloc(&srv->alloc, n * sizeof *srv->workers);
    if (!srv->workers)
        return NOOK_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        srv->workers[i] = worker_new(srv);
        srv->nworkers = i + 1;
        int rc = srv->workers[i] ? worker_listen(srv->workers[i], i) : NOOK_ENOMEM;
        if (rc != NOOK_OK) {
            free_workers(srv);
            return rc;
        }
    }
    atomic_store(&srv->state, SRV_RUNNING);
    /* A stop that came before the workers existed is honoured now. */
    if (atomic_load(&srv->stop_requested))
        nook_server_stop(srv, atomic_load(&srv->drain_ms));
    return NOOK_OK;
}

static int start_threads(nook_server *srv, size_t first)
{
    for (size_t i = first; i < srv->nworkers; i++) {
        core_worker *w = srv->workers[i];
        if (pthread_create(&w->thread, NULL, worker_thread, w) != 0) {
            srv_log(srv, NOOK_LOG_ERROR, "cannot start worker thread: %s", strerror(errno));
            nook_server_stop(srv, 0);
            return NOOK_ESYS;
        }
        w->has_thread = true;
    }
    return NOOK_OK;
}

static void join_threads(nook_server *srv)
{
    for (size_t i = 0; i < srv->nworkers; i++) {
        core_worker *w = srv->workers[i];
        if (w->has_thread) {
            pthread_join(w->thread, NULL);
            w->has_thread = false;
        }
    }
}

int nook_server_run(nook_server *srv)
{
    if (!srv)
        return NOOK_EINVAL;
    int rc = create_workers(srv, (size_t)core_opt(&srv->limits, NOOK_OPT_THREADS));
    if (rc != NOOK_OK)
        return rc;
    rc = start_threads(srv, 1);
    worker_run(srv->workers[0]);
    join_threads(srv);
    atomic_store(&srv->state, SRV_STOPPED);
    return rc;
}

int nook_server_start(nook_server *srv)
{
    if (!srv)
        return NOOK_EINVAL;
    int rc = create_workers(srv, (size_t)core_opt(&srv->limits, NOOK_OPT_THREADS));
    if (rc != NOOK_OK)
        return rc;
    return start_threads(srv, 0);
}

void nook_server_stop(nook_server *srv, int drain_ms)
{
    if (!srv)
        return;
    atomic_store(&srv->drain_ms, drain_ms > 0 ? drain_ms : 0);
    atomic_store(&srv->stop_requested, 1);
    if (atomic_load(&srv->state) != SRV_RUNNING)
        return;
    for (size_t i = 0; i < srv->nworkers; i++)
        io_loop_wake(srv->workers[i]->loop);
}

static bool on_worker_thread(const nook_server *srv)
{
    pthread_t self = pthread_self();
    for (size_t i = 0; i < srv->nworkers; i++)
        if (srv->workers[i]->has_thread && pthread_equal(srv->workers[i]->thread, self))
            return true;
    return false;
}

int nook_server_wait(nook_server *srv)
{
    if (!srv)
        return NOOK_EINVAL;
    if (on_worker_thread(srv))
        return NOOK_ETHREAD;
    join_threads(srv);
    if (atomic_load(&srv->state) == SRV_RUNNING && srv->nworkers > 0 &&
        worker_done(srv->workers[0]))
        atomic_store(&srv->state, SRV_STOPPED);
    return NOOK_OK;
}

/* ---- host-loop mode: one worker, driven by the host's own poll ---- */

int nook_server_fd(nook_server *srv)
{
    if (!srv)
        return NOOK_EINVAL;
    if (atomic_load(&srv->state) == SRV_IDLE) {
        int rc = create_workers(srv, 1);
        if (rc != NOOK_OK)
            return rc;
    }
    if (srv->nworkers != 1 || srv->workers[0]->has_thread)
        return NOOK_ESTATE;
    return io_loop_fd(srv->workers[0]->loop);
}

int nook_server_timeout(nook_server *srv)
{
    if (!srv || srv->nworkers != 1)
        return -1;
    return io_loop_timeout(srv->workers[0]->loop);
}

int nook_server_poll(nook_server *srv)
{
    int fd = nook_server_fd(srv);
    if (fd < 0)
        return atomic_load(&srv->state) == SRV_STOPPED ? 1 : fd;
    core_worker *w = srv->workers[0];
    if (io_loop_run_once(w->loop, 0) != NOOK_OK)
        return NOOK_ESYS;
    if (worker_done(w)) {
        atomic_store(&srv->state, SRV_STOPPED);
        return 1;
    }
    return 0;
}

void nook_server_free(nook_server *srv)
{
    if (!srv)
        return;
    if (atomic_load(&srv->state) == SRV_RUNNING) {
        nook_server_stop(srv, 0);
        join_threads(srv);
        /* Workers without threads (host-loop mode) finish their shutdown here. */
        for (size_t i = 0; i < srv->nworkers; i++)
            while (!worker_done(srv->workers[i]) &&
                   io_loop_run_once(srv->workers[i]->loop, 10) == NOOK_OK) {
            }
    }
    free_workers(srv);
    for (size_t i = 0; i < srv->nlisteners; i++) {
        if (srv->listeners[i].fd >= 0)
            close(srv->listeners[i].fd);
        tls_unref(srv->listeners[i].info.tls);
    }
    if (srv->router)
        core_router_free(srv->router, free_route_target);
    for (size_t i = 0; i < srv->nmws; i++) {
        if (srv->mws[i].free_ud)
            srv->mws[i].free_ud(srv->mws[i].user_data);
        io_free(&srv->alloc, srv->mws[i].prefix);
    }
    io_free(&srv->alloc, srv->mws);
    pthread_mutex_destroy(&srv->peers_lock);
    free(srv);
}
