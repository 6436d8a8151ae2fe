/*
 * The front door: every accepted connection starts here until its protocol is known.
 *   TLS listener:       handshake (with a timeout), then ALPN: "h2" → HTTP/2, else HTTP/1.1.
 *   cleartext listener: the first bytes decide — the HTTP/2 client preface → h2c (prior
 *                       knowledge), anything else → HTTP/1.1 (which then parses those bytes).
 * The stream (socket, buffered input, transport) is then moved to the codec, and this object
 * is freed from a deferred call.
 */
#include "core/accept.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "h1/conn.h"
#include "h2/conn.h"
#include "io/sock.h"
#include "io/stream.h"
#include "tls/tls.h"

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN (sizeof preface - 1)

typedef struct front {
    core_conn link;
    core_worker *w;
    const core_listener *l;
    io_stream s;
    io_timer timer;
    io_defer resume;
    tls_conn *tls;
    bool done; /* handed over or failed: free at the next resume */
    char peer[64];
    size_t peer_len;
} front;

static front *from_watch(io_watch *w) { return (front *)((char *)w - offsetof(front, s)); }
static front *from_timer(io_timer *t) { return (front *)((char *)t - offsetof(front, timer)); }
static front *from_defer(io_defer *d) { return (front *)((char *)d - offsetof(front, resume)); }

static bool http2_on(const front *f)
{
    return core_opt(core_worker_limits(f->w), NOOK_OPT_HTTP2) != 0;
}

static void finish(front *f)
{
    f->done = true;
    io_loop_defer(f->s.loop, &f->resume);
}

static void fail(front *f, const char *why)
{
    core_log(f->w, NOOK_LOG_INFO, "%.*s: %s", (int)f->peer_len, f->peer, why);
    finish(f);
}

static void hand_over(front *f, bool h2)
{
    nook_str peer = {f->peer, f->peer_len};
    io_timer_stop(f->s.loop, &f->timer);
    if (h2) {
        h2_conn_start(f->w, &f->s, peer);
    } else {
        int alt_svc = 0;
        if (f->tls && http2_on(f) && core_opt(core_worker_limits(f->w), NOOK_OPT_ALT_SVC))
            alt_svc = f->l->port;
        h1_conn_start(f->w, &f->s, peer, alt_svc);
    }
    f->tls = NULL; /* owned by the stream's transport now */
    finish(f);
}

/* ---- cleartext: sniff the HTTP/2 preface ---- */

static void sniff(front *f)
{
    int rc = io_stream_read(&f->s, PREFACE_LEN);
    if (rc == NOOK_ECLOSED || rc == NOOK_ESYS) {
        finish(f); /* gone before saying anything */
        return;
    }
    size_t n = io_buf_size(&f->s.in);
    if (n == 0)
        return;
    size_t cmp = n < PREFACE_LEN ? n : PREFACE_LEN;
    if (!http2_on(f) || memcmp(io_buf_head(&f->s.in), preface, cmp) != 0)
        hand_over(f, false);
    else if (n >= PREFACE_LEN)
        hand_over(f, true);
    /* else: a prefix of the preface so far; wait for more */
}

/* ---- TLS ---- */

static void handshake(front *f)
{
    bool want_write = false;
    int rc = tls_conn_handshake(f->tls, &want_write);
    if (rc == NOOK_AGAIN) {
        io_watch_mod(f->s.loop, &f->s.watch, want_write ? EPOLLOUT : EPOLLIN);
        return;
    }
    if (rc != NOOK_OK) {
        fail(f, rc == NOOK_ECLOSED ? "closed during the TLS handshake" : tls_conn_error(f->tls));
        return;
    }
    f->s.tr = &tls_transport;
    f->s.tr_data = f->tls;
    io_watch_mod(f->s.loop, &f->s.watch, EPOLLIN | EPOLLRDHUP);
    const char *alpn = tls_conn_alpn(f->tls);
    bool h2 = alpn && strcmp(alpn, "h2") == 0;
    core_log(f->w, NOOK_LOG_DEBUG, "%.*s: %s %s, ALPN %s", (int)f->peer_len, f->peer,
             tls_conn_version(f->tls), tls_conn_cipher(f->tls), alpn ? alpn : "(none)");
    if (h2 && !tls_conn_h2_allowed(f->tls)) {
        /* RFC 9113 §9.2: an h2 connection on an inadequate TLS setup is a connection error. */
        h2_conn_start_refused(f->w, &f->s, (nook_str){f->peer, f->peer_len});
        f->tls = NULL;
        finish(f);
        return;
    }
    hand_over(f, h2);
}

static void on_io(io_watch *w, uint32_t events)
{
    (void)events;
    front *f = from_watch(w);
    if (f->done)
        return;
    if (f->tls && f->s.tr != &tls_transport)
        handshake(f);
    else
        sniff(f);
}

static void on_timer(io_timer *t)
{
    front *f = from_timer(t);
    fail(f, f->tls ? "TLS handshake timed out" : "no request in time");
}

static void on_resume(io_defer *d)
{
    front *f = from_defer(d);
    if (!f->done)
        return;
    io_timer_stop(f->s.loop, &f->timer);
    /* The transport owns the tls_conn only after the handshake; before, it is still ours. */
    if (f->tls && f->s.tr_data != f->tls)
        tls_conn_free(f->tls);
    io_stream_close(&f->s); /* no-op once the stream moved to a codec */
    core_worker_remove_conn(f->w, &f->link);
    io_free(core_worker_alloc(f->w), f);
}

static void on_shutdown(core_conn *link, bool graceful)
{
    (void)graceful; /* nothing is in flight before the protocol is known */
    front *f = (front *)link;
    finish(f);
}

static const core_conn_ops front_ops = {on_shutdown};

void core_accept(core_worker *w, int fd, const struct sockaddr *peer, socklen_t peer_len,
                 const core_listener *l)
{
    const io_alloc *a = core_worker_alloc(w);
    front *f = io_malloc(a, sizeof *f);
    if (!f) {
        core_log(w, NOOK_LOG_ERROR, "out of memory for a new connection");
        close(fd);
        core_worker_drop_slot(w);
        return;
    }
    memset(f, 0, sizeof *f);
    f->w = w;
    f->l = l;
    f->link.ops = &front_ops;
    f->timer.fn = on_timer;
    f->resume.fn = on_resume;
    f->peer_len = io_addr_format(peer, peer_len, f->peer, sizeof f->peer);
    const core_limits *lim = core_worker_limits(w);
    if (io_stream_init(&f->s, core_worker_loop(w), a, fd, on_io, SIZE_MAX) != NOOK_OK) {
        core_log(w, NOOK_LOG_ERROR, "cannot watch a new connection: %s", strerror(errno));
        close(fd);
        core_worker_drop_slot(w);
        io_free(a, f);
        return;
    }
    core_worker_add_conn(w, &f->link);
    if (!core_worker_admit(w, peer, &f->s)) {
        core_log(w, NOOK_LOG_WARN, "%.*s: per-address connection limit (%lld) reached; closing",
                 (int)f->peer_len, f->peer,
                 (long long)core_opt(core_worker_limits(w), NOOK_OPT_MAX_CONNECTIONS_PER_IP));
        finish(f);
        return;
    }
    nook_opt timeout = NOOK_OPT_HEADER_TIMEOUT;
    if (l->tls) {
        timeout = NOOK_OPT_TLS_HANDSHAKE_TIMEOUT;
        f->tls = tls_conn_new(l->tls, a, fd);
        if (!f->tls) {
            fail(f, "cannot start a TLS session");
            return;
        }
        tls_conn_set_send_batch(f->tls, (size_t)core_opt(lim, NOOK_OPT_TLS_SEND_BATCH));
    }
    if (core_opt(lim, timeout) > 0)
        io_timer_set(f->s.loop, &f->timer, (uint64_t)core_opt(lim, timeout));
}
