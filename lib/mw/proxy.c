/*
 * Reverse proxy middleware: configuration, the per-worker pools, the client side of each
 * proxied request (body in, response out, hooks), request fields, balancing and passive
 * health. The upstream protocols live in lib/h2/proxy_client.c and proxy_h1.c (see
 * proxy.h).
 */
#include "mw/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/server.h"
#include "io/ascii.h"
#include "mw/mw_util.h"

#define BODY_HIGH 65536 /* request body held for the upstream before the client is paused */
#define RETRIES_MAX 2   /* a request refused before reaching an upstream is tried this often */
/* Bytes of the client's X-Forwarded-For or Forwarded passed on, this hop excluded: past it the
 * oldest entries are dropped (the newest, nearest hops are the ones worth trusting). Upstreams
 * refuse longer fields anyway (nginx and Apache stop at about 8 KiB per field). */
#define FORWARDED_LIST_MAX 8192

/* ---------------------------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------------------------- */

nook_proxy *nook_proxy_new(void)
{
    nook_proxy *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->verify = true;
    p->balance = NOOK_PROXY_ROUND_ROBIN;
    p->connect_ms = PROXY_DEFAULT_CONNECT_MS;
    p->response_ms = PROXY_DEFAULT_RESPONSE_MS;
    p->idle_ms = PROXY_DEFAULT_IDLE_MS;
    p->keepalive_ms = PROXY_DEFAULT_KEEPALIVE_MS;
    p->down_ms = PROXY_DEFAULT_DOWN_MS;
    p->max_conns = PROXY_DEFAULT_MAX_CONNS;
    p->max_waiting = PROXY_DEFAULT_MAX_WAITING;
    p->forwarded = NOOK_PROXY_FORWARDED | NOOK_PROXY_X_FORWARDED;
    return p;
}

void nook_proxy_free(nook_proxy *p)
{
    if (!p)
        return;
    tls_client_free(p->tls);
    tls_client_free(p->tls_h1);
    free(p->ca_file);
    free(p->prefix);
    free(p);
}

static int check_idle(const nook_proxy *p)
{
    if (!p)
        return NOOK_EINVAL;
    return p->in_use ? NOOK_ESTATE : NOOK_OK;
}

/* Resolves a host name once, at configuration time: the first IPv4 answer, else the first. */
static int resolve(const char *host, uint16_t port, io_addr *out)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return NOOK_EADDR;
    const struct addrinfo *pick = res;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next)
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }
    memset(out, 0, sizeof *out);
    memcpy(&out->ss, pick->ai_addr, pick->ai_addrlen);
    out->len = pick->ai_addrlen;
    if (out->ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&out->ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)&out->ss)->sin6_port = htons(port);
    freeaddrinfo(res);
    return NOOK_OK;
}

/* "scheme://host:port" with an optional trailing '/'. */
static int parse_url(const char *url, px_upstream_conf *u)
{
    static const struct {
        const char *scheme;
        px_kind kind;
    } schemes[] = {{"h2://", PX_H2}, {"h2c://", PX_H2C}, {"http://", PX_H1}, {"https://", PX_H1S}};
    const char *rest = NULL;
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (strncmp(url, schemes[i].scheme, strlen(schemes[i].scheme)) == 0) {
            u->kind = schemes[i].kind;
            rest = url + strlen(schemes[i].scheme);
        }
    if (!rest)
        return NOOK_EINVAL;
    const char *host = rest, *host_end, *colon;
    if (*rest == '[') {
        host = rest + 1;
        host_end = strchr(host, ']');
        if (!host_end || host_end[1] != ':')
            return NOOK_EINVAL;
        colon = host_end + 1;
    } else {
        colon = strrchr(rest, ':');
        host_end = colon;
    }
    if (!colon || host_end <= host || (size_t)(host_end - host) >= sizeof u->host)
        return NOOK_EINVAL;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || port < 1 || port > 65535 || (*end && strcmp(end, "/") != 0))
        return NOOK_EINVAL;
    memcpy(u->host, host, (size_t)(host_end - host));
    u->host[host_end - host] = '\0';
    snprintf(u->authority, sizeof u->authority, "%.*s:%ld", (int)(colon - rest), rest, port);
    return resolve(u->host, (uint16_t)port, &u->addr);
}

int nook_proxy_add_upstream(nook_proxy *p, const char *url)
{
    int rc = check_idle(p);
    if (rc != NOOK_OK)
        return rc;
    if (!url)
        return NOOK_EINVAL;
    if (p->nups == PROXY_UPSTREAMS_MAX)
        return NOOK_ELIMIT;
    px_upstream_conf u = {0};
    rc = parse_url(url, &u);
    if (rc != NOOK_OK) {
        snprintf(p->err, sizeof p->err, "%s: %s", url,
                 rc == NOOK_EADDR ? "the host name does not resolve"
                                  : "not scheme://host:port with h2, h2c, http or https");
        return rc;
    }
    p->fallback[p->nups] = u;
    p->fallback[p->nups].kind = u.kind == PX_H2 ? PX_H1S : PX_H1;
    p->ups[p->nups++] = u;
    return NOOK_OK;
}

int nook_proxy_set_tls(nook_proxy *p, const char *ca_file, int verify)
{
    int rc = check_idle(p);
    if (rc != NOOK_OK)
        return rc;
    char *copy = NULL;
    if (ca_file && !(copy = strdup(ca_file)))
        return NOOK_ENOMEM;
    free(p->ca_file);
    p->ca_file = copy;
    p->verify = verify != 0;
    return NOOK_OK;
}

int nook_proxy_set_balance(nook_proxy *p, nook_proxy_balance balance)
{
    int rc = check_idle(p);
    if (rc == NOOK_OK && balance != NOOK_PROXY_ROUND_ROBIN &&
        balance != NOOK_PROXY_LEAST_OUTSTANDING)
        rc = NOOK_EINVAL;
    if (rc == NOOK_OK)
        p->balance = balance;
    return rc;
}

/* The setters below take -1 for "leave this one as it is". */
static bool in_range(int v, int lo, int hi)
{
    return v == -1 || (v >= lo && v <= hi);
}

int nook_proxy_set_timeouts(nook_proxy *p, int connect_ms, int response_ms, int idle_ms)
{
    int rc = check_idle(p);
    if (rc == NOOK_OK && (!in_range(connect_ms, 1, INT32_MAX) ||
                          !in_range(response_ms, 1, INT32_MAX) || !in_range(idle_ms, 0, INT32_MAX)))
        rc = NOOK_EINVAL;
    if (rc != NOOK_OK)
        return rc;
    if (connect_ms != -1)
        p->connect_ms = connect_ms;
    if (response_ms != -1)
        p->response_ms = response_ms;
    if (idle_ms != -1)
        p->idle_ms = idle_ms;
    return NOOK_OK;
}

int nook_proxy_set_keepalive(nook_proxy *p, int keepalive_ms)
{
    int rc = check_idle(p);
    if (rc == NOOK_OK && !in_range(keepalive_ms, 0, INT32_MAX))
        rc = NOOK_EINVAL;
    if (rc == NOOK_OK && keepalive_ms != -1)
        p->keepalive_ms = keepalive_ms;
    return rc;
}

int nook_proxy_set_limits(nook_proxy *p, int max_conns, int down_ms)
{
    int rc = check_idle(p);
    if (rc == NOOK_OK && (!in_range(max_conns, 1, 1024) || !in_range(down_ms, 0, INT32_MAX)))
        rc = NOOK_EINVAL;
    if (rc != NOOK_OK)
        return rc;
    if (max_conns != -1)
        p->max_conns = (size_t)max_conns;
    if (down_ms != -1)
        p->down_ms = down_ms;
    return NOOK_OK;
}

int nook_proxy_set_max_waiting(nook_proxy *p, int max_waiting)
{
    int rc = check_idle(p);
    if (rc == NOOK_OK && !in_range(max_waiting, 1, 1 << 20))
        rc = NOOK_EINVAL;
    if (rc == NOOK_OK && max_waiting != -1)
        p->max_waiting = (size_t)max_waiting;
    return rc;
}

int nook_proxy_set_strip_prefix(nook_proxy *p, int strip)
{
    int rc = check_idle(p);
    if (rc == NOOK_OK)
        p->strip_prefix = strip != 0;
    return rc;
}

int nook_proxy_set_forwarded(nook_proxy *p, unsigned flags)
{
    int rc = check_idle(p);
    if (rc == NOOK_OK && (flags & ~(unsigned)(NOOK_PROXY_FORWARDED | NOOK_PROXY_X_FORWARDED)))
        rc = NOOK_EINVAL;
    if (rc == NOOK_OK)
        p->forwarded = flags;
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Per-worker pools
 * ------------------------------------------------------------------------------------------- */

void px_log(const px_pool *pool, nook_log_level level, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    core_log(pool->w, level, "proxy: %s", line);
}

static void pool_free(void *v)
{
    px_pool *pool = v;
    pool->closing = true;
    for (size_t i = 0; i < pool->cfg->nups; i++) {
        px_proto_of(&pool->ups[i])->close_all(&pool->ups[i]);
        px_proto_of(&pool->fallback_ups[i])->close_all(&pool->fallback_ups[i]);
    }
    io_free(pool->alloc, pool);
}

static px_pool *pool_get(const nook_proxy *cfg, core_worker *w)
{
    px_pool *pool = core_worker_local(w, cfg);
    if (pool)
        return pool;
    const io_alloc *a = core_worker_alloc(w);
    pool = io_malloc(a, sizeof *pool);
    if (!pool)
        return NULL;
    memset(pool, 0, sizeof *pool);
    pool->cfg = cfg;
    pool->w = w;
    pool->loop = core_worker_loop(w);
    pool->alloc = a;
    for (size_t i = 0; i < cfg->nups; i++) {
        px_up *up = &pool->ups[i], *fb = &pool->fallback_ups[i];
        up->pool = fb->pool = pool;
        up->conf = &cfg->ups[i];
        fb->conf = &cfg->fallback[i];
        if (!px_kind_h1(up->conf->kind))
            up->fallback = fb;
    }
    if (core_worker_set_local(w, cfg, pool, pool_free) != NOOK_OK) {
        io_free(a, pool);
        return NULL;
    }
    return pool;
}

/* ---------------------------------------------------------------------------------------------
 * Balancing and health
 * ------------------------------------------------------------------------------------------- */

static bool is_up(const px_up *up)
{
    return io_loop_now(up->pool->loop) >= up->down_until;
}

static px_up *pick(px_pool *pool)
{
    size_t n = pool->cfg->nups;
    px_up *best = NULL;
    for (size_t k = 0; k < n; k++) {
        px_up *up = &pool->ups[(pool->rr_next + k) % n];
        if (!is_up(up))
            continue;
        if (pool->cfg->balance == NOOK_PROXY_ROUND_ROBIN) {
            pool->rr_next = (size_t)(up - pool->ups) + 1;
            return up;
        }
        if (!best || up->outstanding < best->outstanding)
            best = up;
    }
    if (best)
        pool->rr_next = (size_t)(best - pool->ups) + 1; /* ties go round */
    return best;
}

static int dial(px_up *up)
{
    const io_addr *a = &up->conf->addr;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        px_log(up->pool, NOOK_LOG_ERROR, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) != 0 && errno != EINPROGRESS) {
        px_log(up->pool, NOOK_LOG_WARN, "upstream %s: connect: %s", up->conf->authority,
               strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* ---------------------------------------------------------------------------------------------
 * Upstream connections: connect and TLS handshake, for both protocols
 * ------------------------------------------------------------------------------------------- */

px_link *px_link_of_timer(io_timer *t)
{
    return (px_link *)(void *)((char *)t - offsetof(px_link, timer));
}

px_link *px_link_of_defer(io_defer *d)
{
    return (px_link *)(void *)((char *)d - offsetof(px_link, resume));
}

void px_link_schedule(px_link *l)
{
    io_loop_defer(l->up->pool->loop, &l->resume);
}

void px_link_fail(px_link *l, const char *why)
{
    if (l->close_now)
        return;
    if (!l->err[0])
        snprintf(l->err, sizeof l->err, "%s", why);
    l->close_now = true;
    l->failed = true;
    px_link_schedule(l);
}

static void link_handshake(px_link *l)
{
    bool want_write = false;
    int rc = tls_conn_handshake(l->tls, &want_write);
    if (rc == NOOK_AGAIN) {
        io_watch_mod(l->s.loop, &l->s.watch, want_write ? EPOLLOUT : EPOLLIN | EPOLLRDHUP);
        return;
    }
    if (rc != NOOK_OK) {
        px_link_fail(l, rc == NOOK_ECLOSED ? "closed during the TLS handshake"
                                           : tls_conn_error(l->tls));
        return;
    }
    const char *why = l->ops->check_tls(l->tls);
    if (why) {
        px_link_fail(l, why);
        return;
    }
    l->s.tr = &tls_transport; /* the stream carries its bytes through TLS, and owns it now */
    l->s.tr_data = l->tls;
    l->tls = NULL;
    l->ops->ready(l);
    /* Bytes that came with the end of the handshake (an HTTP/2 server's SETTINGS) were read
     * ahead by TLS: no socket event will announce them. */
    if (!l->close_now && l->s.tr->pending(&l->s) > 0)
        px_link_schedule(l);
}

static void link_connected(px_link *l)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(l->s.watch.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err) {
        char why[128];
        snprintf(why, sizeof why, "connect: %s", strerror(err));
        px_link_fail(l, why);
        return;
    }
    tls_client *tc = l->ops->tls(l->up);
    if (!tc) {
        l->ops->ready(l);
        return;
    }
    l->tls = tls_client_conn(tc, l->up->pool->alloc, l->s.watch.fd, l->up->conf->host);
    if (!l->tls) {
        px_link_fail(l, "out of memory for TLS");
        return;
    }
    l->state = PX_HANDSHAKE;
    link_handshake(l);
}

static void link_on_io(io_watch *w, uint32_t events)
{
    px_link *l = (px_link *)(void *)((char *)w - offsetof(px_link, s));
    if (l->close_now)
        return;
    if (l->state == PX_CONNECTING)
        link_connected(l);
    else if (l->state == PX_HANDSHAKE)
        link_handshake(l);
    else
        l->ops->io(l, events);
}

px_link *px_link_new(px_up *up, size_t size, const px_link_ops *ops, io_timer_fn on_timer,
                     io_defer_fn on_resume)
{
    px_pool *pool = up->pool;
    px_link *l = io_malloc(pool->alloc, size);
    if (!l)
        return NULL;
    memset(l, 0, size);
    int fd = dial(up);
    if (fd < 0 ||
        io_stream_init(&l->s, pool->loop, pool->alloc, fd, link_on_io, SIZE_MAX) != NOOK_OK) {
        if (fd >= 0)
            close(fd);
        io_free(pool->alloc, l);
        return NULL;
    }
    l->up = up;
    l->ops = ops;
    l->state = PX_CONNECTING;
    l->timer.fn = on_timer;
    l->resume.fn = on_resume;
    io_watch_mod(pool->loop, &l->s.watch, EPOLLOUT);
    up->nconns++;
    up->nconnecting++;
    io_timer_set(pool->loop, &l->timer, (uint64_t)pool->cfg->connect_ms);
    l->next = up->conns;
    if (up->conns)
        ((px_link *)(void *)up->conns)->prev = (px_conn *)(void *)l;
    up->conns = (px_conn *)(void *)l;
    return l;
}

void px_link_unlink(px_link *l, bool connecting)
{
    px_up *up = l->up;
    if (connecting)
        up->nconnecting--;
    if (l->prev)
        ((px_link *)(void *)l->prev)->next = l->next;
    else
        up->conns = l->next;
    if (l->next)
        ((px_link *)(void *)l->next)->prev = l->prev;
    l->prev = l->next = NULL;
    up->nconns--;
}

void px_link_release(px_link *l)
{
    io_loop *loop = l->up->pool->loop;
    io_timer_stop(loop, &l->timer);
    io_loop_undefer(loop, &l->resume);
    io_stream_close(&l->s);
    tls_conn_free(l->tls);
    l->tls = NULL;
}

void px_mark_down(px_up *up)
{
    if (up->pool->cfg->down_ms == 0)
        return;
    if (is_up(up))
        px_log(up->pool, NOOK_LOG_WARN, "upstream %s marked down for %lld ms", up->conf->authority,
               (long long)up->pool->cfg->down_ms);
    up->down_until = io_loop_now(up->pool->loop) + (uint64_t)up->pool->cfg->down_ms;
}

/* ---------------------------------------------------------------------------------------------
 * Request life cycle
 * ------------------------------------------------------------------------------------------- */

static void px_free(px_req *px)
{
    io_loop *loop = px->pool->loop;
    io_timer_stop(loop, &px->timer);
    io_loop_undefer(loop, &px->start);
    io_buf_free(&px->body, px->pool->alloc);
    io_free(px->pool->alloc, px);
}

static void enqueue(px_up *up, px_req *px)
{
    px->up = up;
    up->outstanding++;
    px->queued = true;
    px->wait_next = NULL;
    if (up->wait_tail)
        up->wait_tail->wait_next = px;
    else
        up->wait_head = px;
    up->wait_tail = px;
    up->nwaiting++;
}

static void dequeue(px_req *px)
{
    px_up *up = px->up;
    px_req **link = &up->wait_head, *prev = NULL;
    while (*link && *link != px) {
        prev = *link;
        link = &(*link)->wait_next;
    }
    if (!*link)
        return;
    *link = px->wait_next;
    if (up->wait_tail == px)
        up->wait_tail = prev;
    up->nwaiting--;
    px->queued = false;
    px->wait_next = NULL;
}

/* The upstream side lets go of px: no longer counted; freed if the client is gone too. */
static void unassign(px_req *px)
{
    if (px->up) {
        px->up->outstanding--;
        px->up = NULL;
    }
    px->conn = NULL;
}

void px_release_upstream(px_req *px)
{
    unassign(px);
    io_timer_stop(px->pool->loop, &px->timer);
    if (!px->req)
        px_free(px);
}

static void respond_error(px_req *px, int status, const char *text)
{
    if (!px->req || px->got_head || px->ended)
        return;
    px->ended = true;
    nook_respond(px->req, status, "text/plain; charset=utf-8", text, strlen(text));
}

/* Queues px on up and lets the upstream take it. A request that has to wait when max_waiting
 * already do is answered 503: past that, waiting would only pile up requests bound to time
 * out. (The client side ends a request in a later event, so px outlives px_dispatch.) */
static void send_to(px_up *up, px_req *px)
{
    enqueue(up, px);
    px_dispatch(up);
    if (px->queued && px->up == up && up->nwaiting > up->pool->cfg->max_waiting) {
        dequeue(px);
        respond_error(px, 503, "Service Unavailable: too many requests waiting for the upstream\n");
        px_release_upstream(px);
    }
}

/* Assigns px to an upstream that is up, or answers 502 (504 when the last one it waited for
 * did not connect in time). */
static void route_request(px_req *px)
{
    px_up *up = pick(px->pool);
    if (!up) {
        if (px->conn_timeout)
            respond_error(px, 504, "Gateway Timeout: no upstream could be reached in time\n");
        else
            respond_error(px, 502, "Bad Gateway: no upstream available\n");
        px_release_upstream(px);
        return;
    }
    send_to(up, px);
}

bool px_idempotent(const px_req *px)
{
    static const char *const methods[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
    if (!px->req)
        return false;
    nook_str m = nook_req_method(px->req);
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (m.len == strlen(methods[i]) && memcmp(m.ptr, methods[i], m.len) == 0)
            return true;
    return false;
}

void px_fail(px_req *px, bool retryable)
{
    px->conn = NULL;
    if (px->req && retryable && !px->got_head && !px->body_started && !px->timed_out &&
        px->retries < RETRIES_MAX && !px->pool->closing) {
        px->retries++;
        px_up *fallback = px->fell_back ? px->up : NULL; /* stays on HTTP/1.1 */
        unassign(px);
        if (fallback)
            send_to(fallback, px);
        else
            route_request(px);
        return;
    }
    if (px->req && !px->got_head) {
        if (px->timed_out || px->conn_timeout)
            respond_error(px, 504, "Gateway Timeout\n");
        else
            respond_error(px, 502, "Bad Gateway\n");
    } else if (px->req && !px->ended) {
        px->ended = true;
        core_exchange_abort(px->req);
    }
    px_release_upstream(px);
}

void px_fall_back_to_h1(px_req *px)
{
    px_up *fb = px->up ? px->up->fallback : NULL;
    if (!fb || !px->req || px->got_head || px->body_started || px->fell_back) {
        px_fail(px, false);
        return;
    }
    px_log(px->pool, NOOK_LOG_INFO, "upstream %s asked for HTTP/1.1: sending the request again",
           px->up->conf->authority);
    px->fell_back = true;
    unassign(px);
    send_to(fb, px);
}

static void fail_waiting(px_up *up)
{
    while (up->wait_head) {
        px_req *px = up->wait_head;
        dequeue(px);
        px_fail(px, true);
    }
}

void px_dispatch(px_up *up)
{
    const px_proto *pr = px_proto_of(up);
    size_t per_conn = px_kind_h1(up->conf->kind) ? 1 : 100; /* a guess until SETTINGS arrive */
    while (up->wait_head && !up->pool->closing) {
        px_req *px = up->wait_head;
        bool room = up->nconns < up->pool->cfg->max_conns;
        px_conn *c = pr->ready_conn(up, px->fresh_conn);
        if (!c && px->fresh_conn && !room)
            c = pr->ready_conn(up, false); /* no room for a new one: a reused one after all */
        if (!c) {
            if (room && up->nconnecting * per_conn < up->nwaiting && !pr->open(up)) {
                px_mark_down(up);
                fail_waiting(up);
            }
            return;
        }
        dequeue(px);
        if (pr->submit(c, px) != NOOK_OK)
            px_fail(px, false);
    }
}

void px_up_failed(px_up *up, bool timeout)
{
    px_mark_down(up);
    /* Nothing reached the upstream: another one may serve them (504 if none is up and this
     * one timed out). */
    for (px_req *px = up->wait_head; px; px = px->wait_next)
        px->conn_timeout |= timeout;
    fail_waiting(up);
}

/* After the response head, the timer watches for an exchange that went quiet: idle_ms without
 * a response body byte or a request body byte, while the client keeps up, breaks the response
 * off. idle_ms 0: never. */
static void arm_idle(px_req *px)
{
    if (px->pool->cfg->idle_ms > 0)
        io_timer_set(px->pool->loop, &px->timer, (uint64_t)px->pool->cfg->idle_ms);
}

static void on_timeout(io_timer *t)
{
    px_req *px = (px_req *)((char *)t - offsetof(px_req, timer));
    if (px->got_head)
        px_log(px->pool, NOOK_LOG_WARN,
               "upstream %s: nothing either way for %lld ms: response broken off",
               px->up ? px->up->conf->authority : "?", (long long)px->pool->cfg->idle_ms);
    px->timed_out = true;
    if (px->queued) {
        dequeue(px);
        px_fail(px, false);
    } else if (px->conn) {
        px_proto_of(px->up)->cancel(px); /* its close answers 504 */
    }
}

static void request_conn_tokens(const nook_req *req, px_conn_tokens *t);

static void on_start(io_defer *d)
{
    px_req *px = (px_req *)((char *)d - offsetof(px_req, start));
    if (!px->req) {
        px_free(px);
        return;
    }
    px_conn_tokens t;
    request_conn_tokens(px->req, &t);
    if (t.overflow) {
        respond_error(px, 400, "Bad Request: too many Connection options\n");
        px_release_upstream(px);
        return;
    }
    io_timer_set(px->pool->loop, &px->timer, (uint64_t)px->pool->cfg->response_ms);
    route_request(px);
}

/* ---------------------------------------------------------------------------------------------
 * Client side: hooks and body
 * ------------------------------------------------------------------------------------------- */

static void on_client_done(nook_req *req, void *ud)
{
    (void)req;
    px_req *px = ud;
    px->req = NULL;
    io_timer_stop(px->pool->loop, &px->timer);
    if (px->start.queued) {
        px_free(px); /* never reached an upstream */
    } else if (px->queued) {
        dequeue(px);
        px_release_upstream(px);
    } else if (px->conn) {
        px_proto_of(px->up)->cancel(px); /* freed when the stream closes */
    } else if (!px->up) {
        px_free(px);
    }
}

static void on_client_writable(nook_req *req, void *ud)
{
    (void)req;
    px_req *px = ud;
    if (px->got_head && !px->ended && px->conn)
        arm_idle(px);
    if (px->conn && px->write_blocked)
        px_proto_of(px->up)->writable(px);
}

static int on_client_body(nook_req *req, const void *data, size_t len, int end, void *ud)
{
    (void)req;
    px_req *px = ud;
    bool upstream_gone = !px->start.queued && !px->up;
    if (upstream_gone)
        return NOOK_OK; /* answered already: the rest of the upload is not needed */
    if (len && io_buf_append(&px->body, px->pool->alloc, data, len, SIZE_MAX) != NOOK_OK) {
        px_log(px->pool, NOOK_LOG_ERROR, "out of memory for a request body");
        return NOOK_ENOMEM;
    }
    if (end)
        px->body_end = true;
    /* The response timeout counts from the latest upload progress: a long upload is no
     * upstream that fails to answer. */
    if (!px->got_head && io_timer_armed(&px->timer))
        io_timer_set(px->pool->loop, &px->timer, (uint64_t)px->pool->cfg->response_ms);
    /* After the head the same goes for silence: a long-lived stream whose response side is
     * quiet while its upload moves (a bidirectional stream) is alive. */
    if (px->got_head && !px->ended && !px->write_blocked)
        arm_idle(px);
    if (px->conn)
        px_proto_of(px->up)->body_more(px);
    if (!end && io_buf_size(&px->body) >= BODY_HIGH) {
        px->body_paused = true;
        return NOOK_AGAIN;
    }
    return NOOK_OK;
}

void px_body_drained(px_req *px)
{
    if (px->body_paused && px->req && io_buf_size(&px->body) < BODY_HIGH / 2) {
        px->body_paused = false;
        nook_req_resume_body(px->req);
    }
}

static void proxy_middleware(nook_req *req, void *user_data)
{
    const nook_proxy *cfg = user_data;
    px_pool *pool = pool_get(cfg, core_exchange_worker(req));
    px_req *px = pool ? io_malloc(pool->alloc, sizeof *px) : NULL;
    if (!px) {
        nook_respond(req, 503, "text/plain", "Service Unavailable\n", 20);
        return;
    }
    memset(px, 0, sizeof *px);
    px->pool = pool;
    px->req = req;
    px->start.fn = on_start;
    px->timer.fn = on_timeout;
    if (nook_req_on(req, NOOK_ON_DONE, on_client_done, px) != NOOK_OK) {
        io_free(pool->alloc, px);
        nook_respond(req, 503, "text/plain", "Service Unavailable\n", 20);
        return;
    }
    nook_req_on(req, NOOK_ON_WRITABLE, on_client_writable, px);
    if (nook_req_on_body(req, on_client_body, px) != NOOK_OK)
        px->body_end = true; /* cannot happen for requests under a body-taking middleware */
    /* Routed after this event: a request whose body is already complete (HEADERS with
     * END_STREAM, or no body on HTTP/1.1) then goes up without a body. */
    io_loop_defer(pool->loop, &px->start);
}

static void proxy_conf_free(void *ud)
{
    nook_proxy_free(ud);
}

const char *nook_proxy_last_error(const nook_proxy *p)
{
    return p ? p->err : "";
}

int nook_use_proxy(nook_server *srv, const char *prefix, nook_proxy *p)
{
    if (!srv || !p || p->nups == 0 || (prefix && prefix[0] != '/'))
        return NOOK_EINVAL;
    if (p->in_use)
        return NOOK_ESTATE;
    bool need_tls = false;
    for (size_t i = 0; i < p->nups; i++)
        need_tls |= px_kind_tls(p->ups[i].kind);
    /* Both TLS client configurations live as long as p, outside the server's allocator. */
    if (need_tls && !p->tls)
        p->tls = tls_client_new(&io_alloc_libc, p->ca_file, p->verify, "h2", p->err, sizeof p->err);
    if (need_tls && p->tls && !p->tls_h1)
        p->tls_h1 = tls_client_new(&io_alloc_libc, p->ca_file, p->verify, "http/1.1", p->err,
                                   sizeof p->err);
    if (need_tls && (!p->tls || !p->tls_h1))
        return NOOK_EINVAL;
    size_t len = prefix ? strlen(prefix) : 0;
    while (len > 0 && prefix[len - 1] == '/')
        len--;
    char *copy = malloc(len + 1);
    if (!copy)
        return NOOK_ENOMEM;
    memcpy(copy, prefix ? prefix : "", len);
    copy[len] = '\0';
    free(p->prefix);
    p->prefix = copy;
    p->prefix_len = len;
    int rc = core_use_taking_body(srv, prefix, proxy_middleware, p, proxy_conf_free);
    if (rc == NOOK_OK)
        p->in_use = true;
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Response to the client
 * ------------------------------------------------------------------------------------------- */

/* Fields that describe one connection, never passed on (RFC 9110 §7.6.1), plus the proxy's
 * own business. */
static bool hop_by_hop(const char *name, size_t nlen)
{
    static const char *const names[] = {
        "connection", "keep-alive",         "proxy-connection",    "transfer-encoding", "upgrade",
        "te",         "proxy-authenticate", "proxy-authorization", "http2-settings"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (px_name_is(name, nlen, names[i]))
            return true;
    return false;
}

static bool is_head(const px_req *px)
{
    nook_str m = nook_req_method(px->req);
    return m.len == 4 && memcmp(m.ptr, "HEAD", 4) == 0;
}

static char *req_strndup(nook_req *req, const char *p, size_t n)
{
    char *s = nook_req_alloc(req, n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

void px_response_status(px_req *px, int status)
{
    px->status = status;
}

void px_response_header(px_req *px, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (!px->req || px->got_head || nlen == 0 || name[0] == ':' || hop_by_hop(name, nlen) ||
        px_name_is(name, nlen, "alt-svc"))
        return;
    /* A length for a body that is not sent would make the client response wait for it. */
    if (px_name_is(name, nlen, "content-length") &&
        (is_head(px) || px->status == 204 || px->status == 304))
        return;
    char *n = req_strndup(px->req, name, nlen), *v = req_strndup(px->req, value, vlen);
    if (n && v)
        nook_res_header(px->req, n, v);
}

bool px_response_start(px_req *px)
{
    if (!px->req)
        return false;
    io_timer_stop(px->pool->loop, &px->timer);
    if (nook_res_status(px->req, px->status) != NOOK_OK) {
        respond_error(px, 502, "Bad Gateway: bad status from the upstream\n");
        return false;
    }
    px->got_head = true;
    arm_idle(px);
    return nook_res_start(px->req) == NOOK_OK;
}

int px_response_body(px_req *px, const void *p, size_t n)
{
    if (!px->req || px->ended)
        return NOOK_ECLOSED;
    int rc = nook_res_write(px->req, p, n);
    if (rc == NOOK_OK)
        arm_idle(px);
    else
        io_timer_stop(px->pool->loop, &px->timer); /* the client's pace now, or the end */
    return rc;
}

void px_response_trailer(px_req *px, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (!px->req || px->ended || nlen == 0 || name[0] == ':' || hop_by_hop(name, nlen))
        return;
    char *n = req_strndup(px->req, name, nlen), *v = req_strndup(px->req, value, vlen);
    if (n && v)
        nook_res_trailer(px->req, n, v);
}

void px_response_broken(px_req *px)
{
    io_timer_stop(px->pool->loop, &px->timer);
    if (!px->req || px->ended)
        return;
    px->ended = true;
    core_exchange_abort(px->req);
}

void px_response_end(px_req *px)
{
    io_timer_stop(px->pool->loop, &px->timer);
    if (!px->req || px->ended)
        return;
    px->ended = true;
    nook_res_end(px->req);
}

/* ---------------------------------------------------------------------------------------------
 * Request fields for the upstream
 * ------------------------------------------------------------------------------------------- */

void px_conn_tokens_add(px_conn_tokens *t, const char *value, size_t vlen)
{
    const char *p = value, *end = value + vlen;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *tok = p;
        while (p < end && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        if (p == tok)
            continue;
        if (t->n == PX_CONN_TOKENS_MAX) {
            t->overflow = true;
            return;
        }
        t->tok[t->n].p = tok;
        t->tok[t->n++].n = (size_t)(p - tok);
    }
}

bool px_conn_tokens_has(const px_conn_tokens *t, const char *name, size_t nlen)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->tok[i].n == nlen && io_caseeq(t->tok[i].p, name, nlen))
            return true;
    return false;
}

static void request_conn_tokens(const nook_req *req, px_conn_tokens *t)
{
    t->n = 0;
    t->overflow = false;
    size_t n = nook_req_header_count(req);
    for (size_t i = 0; i < n; i++) {
        nook_str hn, hv;
        nook_req_header_at(req, i, &hn, &hv);
        if (px_name_is(hn.ptr, hn.len, "connection"))
            px_conn_tokens_add(t, hv.ptr, hv.len);
    }
}

/* Fields not sent as they came: hop-by-hop ones, those the proxy sets or extends itself. */
static bool drop_request_field(const px_req *px, const px_conn_tokens *t, nook_str name,
                               nook_str value)
{
    const nook_proxy *cfg = px->pool->cfg;
    if (px_name_is(name.ptr, name.len, "te"))
        return !(value.len == 8 && io_caseeq(value.ptr, "trailers", 8));
    /* Expect: 100-continue was answered by our own side of the client connection. */
    if (hop_by_hop(name.ptr, name.len) || px_name_is(name.ptr, name.len, "host") ||
        px_name_is(name.ptr, name.len, "expect") || px_conn_tokens_has(t, name.ptr, name.len))
        return true;
    /* Fields the proxy sets itself are replaced, never trusted from the client; the lists it
     * extends are sent once, joined, with this hop appended (add_forwarding). */
    if ((cfg->forwarded & NOOK_PROXY_X_FORWARDED) &&
        (px_name_is(name.ptr, name.len, "x-forwarded-host") ||
         px_name_is(name.ptr, name.len, "x-forwarded-proto") ||
         px_name_is(name.ptr, name.len, "x-forwarded-for")))
        return true;
    return (cfg->forwarded & NOOK_PROXY_FORWARDED) && px_name_is(name.ptr, name.len, "forwarded");
}

typedef struct field_builder {
    px_field *v;
    size_t n, cap;
    char *text, *text_end;
} field_builder;

static const char *put_text(field_builder *b, const char *p, size_t n, bool lower)
{
    if ((size_t)(b->text_end - b->text) < n + 1)
        return NULL;
    char *out = b->text;
    for (size_t i = 0; i < n; i++)
        out[i] = lower ? (char)io_lower((unsigned char)p[i]) : p[i];
    out[n] = '\0';
    b->text += n + 1;
    return out;
}

static void add_field(field_builder *b, const char *name, size_t nlen, const char *value,
                      size_t vlen)
{
    if (b->n == b->cap)
        return;
    const char *n = put_text(b, name, nlen, true);
    const char *v = put_text(b, value, vlen, false);
    if (n && v)
        b->v[b->n++] = (px_field){n, v, nlen, vlen};
}

/* The client's address for forwarding fields: "for=" form (RFC 7239 §6) or plain. */
static nook_str client_ip(const px_req *px, char *buf, size_t cap, bool forwarded_form)
{
    nook_str host = mw_peer_host(nook_req_peer(px->req));
    int n;
    if (px_name_is(host.ptr, host.len, "unix"))
        n = snprintf(buf, cap, forwarded_form ? "unknown" : "unix");
    else if (forwarded_form && memchr(host.ptr, ':', host.len))
        n = snprintf(buf, cap, "\"[%.*s]\"", (int)host.len, host.ptr);
    else
        n = snprintf(buf, cap, "%.*s", (int)host.len, host.ptr);
    return (nook_str){buf, n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1};
}

/* Appends this hop to a list field the client may have sent, every instance of it joined in
 * order: "old1, old2, new" or "new". The client's part is kept to its newest
 * FORWARDED_LIST_MAX bytes, cut at an entry boundary. The joined value goes straight into
 * the builder's text (px_request_fields sized it from the client's fields). */
static void add_list_field(field_builder *b, const px_req *px, const char *name, nook_str item)
{
    size_t nlen = strlen(name);
    const char *n = put_text(b, name, nlen, true);
    char *v = b->text, *end = b->text_end;
    size_t len = 0, count = nook_req_header_count(px->req);
    for (size_t i = 0; i < count; i++) {
        nook_str hn, hv;
        nook_req_header_at(px->req, i, &hn, &hv);
        if (!px_name_is(hn.ptr, hn.len, name) || hv.len == 0)
            continue;
        size_t sep = len ? 2 : 0;
        if (!n || (size_t)(end - v) < len + sep + hv.len + 1)
            return;
        memcpy(v + len, ", ", sep);
        memcpy(v + len + sep, hv.ptr, hv.len);
        len += sep + hv.len;
    }
    size_t cut = 0;
    while (len - cut > FORWARDED_LIST_MAX) {
        const char *comma = memchr(v + cut, ',', len - cut);
        cut = comma ? (size_t)(comma - v) + 1 : len;
        while (cut < len && (v[cut] == ' ' || v[cut] == '\t'))
            cut++;
    }
    memmove(v, v + cut, len - cut);
    len -= cut;
    size_t sep = len ? 2 : 0;
    if (!n || (size_t)(end - v) < len + sep + item.len + 1 || b->n == b->cap)
        return;
    memcpy(v + len, ", ", sep);
    memcpy(v + len + sep, item.ptr, item.len);
    len += sep + item.len;
    v[len] = '\0';
    b->text = v + len + 1;
    b->v[b->n++] = (px_field){n, v, nlen, len};
}

/* A Host value that can stand in a quoted-string as it is (RFC 7239 §4). */
static bool quotable(nook_str host)
{
    for (size_t i = 0; i < host.len; i++)
        if (host.ptr[i] == '"' || host.ptr[i] == '\\' || (unsigned char)host.ptr[i] < 0x20)
            return false;
    return host.len < 300;
}

static void add_forwarding(field_builder *b, const px_req *px, nook_str host)
{
    unsigned flags = px->pool->cfg->forwarded;
    char ip[80];
    if (flags & NOOK_PROXY_FORWARDED) {
        nook_str who = client_ip(px, ip, sizeof ip, true);
        char item[400];
        const char *proto = nook_req_is_tls(px->req) ? "https" : "http";
        int n = host.ptr && quotable(host)
                    ? snprintf(item, sizeof item, "for=%.*s;host=\"%.*s\";proto=%s", (int)who.len,
                               who.ptr, (int)host.len, host.ptr, proto)
                    : snprintf(item, sizeof item, "for=%.*s;proto=%s", (int)who.len, who.ptr, proto);
        if (n > 0 && (size_t)n < sizeof item)
            add_list_field(b, px, "forwarded", (nook_str){item, (size_t)n});
    }
    if (flags & NOOK_PROXY_X_FORWARDED) {
        add_list_field(b, px, "x-forwarded-for", client_ip(px, ip, sizeof ip, false));
        if (host.ptr)
            add_field(b, "x-forwarded-host", 16, host.ptr, host.len);
        if (nook_req_is_tls(px->req))
            add_field(b, "x-forwarded-proto", 17, "https", 5);
        else
            add_field(b, "x-forwarded-proto", 17, "http", 4);
    }
}

px_field *px_request_fields(px_req *px, size_t *count)
{
    nook_req *req = px->req;
    const nook_proxy *cfg = px->pool->cfg;
    size_t nh = nook_req_header_count(req);
    size_t text = 0;
    for (size_t i = 0; i < nh; i++) {
        nook_str n, v;
        nook_req_header_at(req, i, &n, &v);
        text += n.len + v.len + 2;
    }
    nook_str method = nook_req_method(req), path = nook_req_path(req), query = nook_req_query(req);
    nook_str host = nook_req_header(req, "host");
    text += method.len + path.len + query.len + 2 * (host.len + 1) + 8192;
    size_t cap = nh + 12;
    char *mem = io_malloc(px->pool->alloc, cap * sizeof(px_field) + text);
    if (!mem)
        return NULL;
    field_builder b = {(px_field *)mem, 0, cap, mem + cap * sizeof(px_field),
                       mem + cap * sizeof(px_field) + text};

    if (cfg->strip_prefix && cfg->prefix_len <= path.len) {
        path.ptr += cfg->prefix_len;
        path.len -= cfg->prefix_len;
    }
    /* ":path" is the path (or "/" when stripping left nothing) and "?query" when there was one. */
    char *target = b.text;
    size_t plen = path.len ? path.len : 1;
    size_t tlen = plen + (query.ptr ? 1 + query.len : 0);
    memcpy(target, path.len ? path.ptr : "/", plen);
    if (query.ptr) {
        target[plen] = '?';
        memcpy(target + plen + 1, query.ptr, query.len);
    }
    target[tlen] = '\0';
    b.text += tlen + 1;
    const char *authority = host.ptr ? NULL : px->up->conf->authority;
    b.v[b.n++] = (px_field){":method", method.ptr, 7, method.len};
    bool tls = px_kind_tls(px->up->conf->kind);
    b.v[b.n++] = (px_field){":scheme", tls ? "https" : "http", 7, tls ? 5u : 4u};
    b.v[b.n++] = (px_field){":authority", host.ptr ? host.ptr : authority, 10,
                            host.ptr ? host.len : strlen(authority)};
    b.v[b.n++] = (px_field){":path", target, 5, tlen};
    px_conn_tokens t;
    request_conn_tokens(req, &t);
    for (size_t i = 0; i < nh; i++) {
        nook_str n, v;
        nook_req_header_at(req, i, &n, &v);
        if (!drop_request_field(px, &t, n, v))
            add_field(&b, n.ptr, n.len, v.ptr, v.len);
    }
    add_forwarding(&b, px, host);
    *count = b.n;
    return b.v;
}
