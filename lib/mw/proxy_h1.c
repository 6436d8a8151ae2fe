/*
 * The proxy's HTTP/1.1 upstreams (http://): one request at a time per connection, connections
 * kept alive and reused. The request body goes out as it arrives (chunked unless the client
 * gave a Content-Length); the response head is parsed by proxy_head.c and its body framing
 * (Content-Length, chunked, or until close) decoded with lib/h1's body decoder.
 *
 * Reuse: an idle connection is checked before it takes a request (still_open), and a request
 * that meets a connection the upstream closed anyway goes again when that is safe (destroy).
 *
 * Backpressure: request body bytes move from px->body to the socket buffer only while that
 * holds less than OUT_HIGH; response bytes are read from the socket only while the client's
 * output takes them (reading stops on NOOK_AGAIN, and TCP then holds the upstream back).
 */
#include "mw/proxy.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "h1/parser.h"

#define OUT_HIGH (128 * 1024)
#define HEAD_MAX (64 * 1024)
#define INPUT_MAX (256 * 1024)
#define PIECE_MAX 65536

enum { H_IDLE = PX_LINK_STATES, H_BUSY };
enum { R_HEAD, R_BODY, R_UNTIL_CLOSE, R_DONE };

#define TAIL_MAX 8192 /* trailer sections passed on up to this size (with the size line) */

typedef struct h1up {
    px_link l; /* first: a px_conn * and an h1up * are the same address */
    px_req *px;
    bool reused;      /* served a request before the current one */
    bool req_chunked; /* the request body goes out chunked */
    bool req_sent;    /* the whole request is in the output */
    int phase;        /* R_* for the response */
    bool keep_alive;
    bool got_bytes;  /* some of the response arrived */
    bool paused;     /* the client's output is full: not reading */
    bool write_dead; /* the upstream stopped taking bytes: nothing more is sent */
    h1_body body;
    /* Chunked framing consumed since the last data (the last chunk's size line, the trailer
     * section): its trailer fields are passed on when the body ends. */
    char tail[TAIL_MAX];
    size_t tail_len;
    bool tail_lost; /* more framing than fits: the trailers are dropped */
} h1up;

static h1up *H(px_conn *c)
{
    return (h1up *)(void *)c;
}
static px_conn *P(h1up *c)
{
    return (px_conn *)(void *)c;
}
static h1up *of_link(px_link *l)
{
    return (h1up *)(void *)l;
}
static io_loop *loop_of(const h1up *c)
{
    return c->l.up->pool->loop;
}
static const io_alloc *alloc_of(const h1up *c)
{
    return c->l.up->pool->alloc;
}
static void schedule(h1up *c)
{
    px_link_schedule(&c->l);
}
static void fail_conn(h1up *c, const char *why)
{
    px_link_fail(&c->l, why);
}

/* Closes the connection because of the client, not the upstream (no health mark). */
static void drop_conn(h1up *c)
{
    c->l.close_now = true;
    schedule(c);
}

/* ---------------------------------------------------------------------------------------------
 * Request out
 * ------------------------------------------------------------------------------------------- */

static int queue_str(h1up *c, const char *p, size_t n)
{
    return io_stream_queue(&c->l.s, p, n);
}

static bool is_cookie(const px_field *f)
{
    return f->nlen == 6 && memcmp(f->name, "cookie", 6) == 0;
}

/* HTTP/2 may split Cookie into several fields; HTTP/1.1 wants one, the values joined with "; "
 * (RFC 9113 §8.2.3). */
static int queue_cookies(h1up *c, const px_field *f, size_t n)
{
    int rc = 0;
    bool first = true;
    for (size_t i = 4; i < n; i++) {
        if (!is_cookie(&f[i]))
            continue;
        rc |= first ? queue_str(c, "cookie: ", 8) : queue_str(c, "; ", 2);
        rc |= queue_str(c, f[i].value, f[i].vlen);
        first = false;
    }
    if (!first)
        rc |= queue_str(c, "\r\n", 2);
    return rc;
}

static int queue_head(h1up *c, px_req *px)
{
    size_t n;
    px_field *f = px_request_fields(px, &n);
    if (!f)
        return NOOK_ENOMEM;
    /* f[0..3]: :method, :scheme, :authority, :path. */
    int rc = queue_str(c, f[0].value, f[0].vlen);
    rc |= queue_str(c, " ", 1);
    rc |= queue_str(c, f[3].value, f[3].vlen);
    rc |= queue_str(c, " HTTP/1.1\r\nhost: ", 17);
    rc |= queue_str(c, f[2].value, f[2].vlen);
    rc |= queue_str(c, "\r\n", 2);
    bool has_length = false;
    for (size_t i = 4; i < n; i++) {
        if ((f[i].nlen == 2 && memcmp(f[i].name, "te", 2) == 0) || is_cookie(&f[i]))
            continue; /* "TE: trailers" is an HTTP/2 matter; cookies follow */
        has_length |= f[i].nlen == 14 && memcmp(f[i].name, "content-length", 14) == 0;
        rc |= queue_str(c, f[i].name, f[i].nlen);
        rc |= queue_str(c, ": ", 2);
        rc |= queue_str(c, f[i].value, f[i].vlen);
        rc |= queue_str(c, "\r\n", 2);
    }
    rc |= queue_cookies(c, f, n);
    bool has_body = !(px->body_end && io_buf_size(&px->body) == 0);
    c->req_chunked = has_body && !has_length;
    if (c->req_chunked)
        rc |= queue_str(c, "transfer-encoding: chunked\r\n", 28);
    rc |= queue_str(c, "\r\n", 2);
    io_free(alloc_of(c), f);
    return rc == 0 ? NOOK_OK : NOOK_ENOMEM;
}

/* Moves request body bytes to the output, framed, up to OUT_HIGH queued. */
static void move_body(h1up *c)
{
    px_req *px = c->px;
    if (!px || c->req_sent)
        return;
    while (io_buf_size(&c->l.s.out) < OUT_HIGH && io_buf_size(&px->body) > 0) {
        size_t n = io_buf_size(&px->body);
        if (n > PIECE_MAX)
            n = PIECE_MAX;
        int rc = NOOK_OK;
        if (c->req_chunked) {
            char size[24];
            int l = snprintf(size, sizeof size, "%zx\r\n", n);
            rc = queue_str(c, size, (size_t)l);
        }
        if (rc == NOOK_OK)
            rc = queue_str(c, io_buf_head(&px->body), n);
        if (rc == NOOK_OK && c->req_chunked)
            rc = queue_str(c, "\r\n", 2);
        if (rc != NOOK_OK) {
            fail_conn(c, "out of memory for a request body");
            return;
        }
        io_buf_consume(&px->body, n);
        px->body_started = true;
    }
    if (px->body_end && io_buf_size(&px->body) == 0) {
        if (c->req_chunked && queue_str(c, "0\r\n\r\n", 5) != NOOK_OK) {
            fail_conn(c, "out of memory");
            return;
        }
        c->req_sent = true;
    }
    px_body_drained(px);
}

/* ---------------------------------------------------------------------------------------------
 * Response in
 * ------------------------------------------------------------------------------------------- */

static void head_field(void *ud, const char *name, size_t nlen, const char *value, size_t vlen)
{
    px_response_header(ud, name, nlen, value, vlen);
}

static void trailer_field(void *ud, const char *name, size_t nlen, const char *value, size_t vlen)
{
    px_response_trailer(ud, name, nlen, value, vlen);
}

static bool bodiless(const h1up *c, int status)
{
    nook_str m = c->px->req ? nook_req_method(c->px->req) : (nook_str){"", 0};
    return (m.len == 4 && memcmp(m.ptr, "HEAD", 4) == 0) || status == 204 || status == 304;
}

/* One request is over on this connection: reuse it or close it. */
static void exchange_done(h1up *c)
{
    px_req *px = c->px;
    c->px = NULL;
    c->l.state = H_IDLE;
    c->reused = true;
    px->conn = NULL;
    px_release_upstream(px);
    int64_t keepalive_ms = c->l.up->pool->cfg->keepalive_ms;
    if (!c->keep_alive || !c->req_sent || io_buf_size(&c->l.s.in) > 0 ||
        io_buf_size(&c->l.s.out) > 0 || keepalive_ms == 0) {
        /* The upstream said close, answered before taking the whole request, or sent more
         * than one response (or reuse is off): not reusable. */
        c->l.close_now = true;
        schedule(c);
        return;
    }
    io_timer_set(loop_of(c), &c->l.timer, (uint64_t)keepalive_ms);
    px_dispatch(c->l.up);
}

static void response_done(h1up *c)
{
    c->phase = R_DONE;
    px_response_end(c->px);
    exchange_done(c);
}

static bool read_head(h1up *c)
{
    size_t n = io_buf_size(&c->l.s.in);
    const char *buf = io_buf_head(&c->l.s.in);
    const char *blank = NULL;
    for (size_t i = 0; i + 3 < n; i++)
        if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n') {
            blank = buf + i + 4;
            break;
        }
    if (!blank) {
        if (n >= HEAD_MAX)
            fail_conn(c, "response head too large");
        return false;
    }
    size_t head_len = (size_t)(blank - buf);
    px_h1_head h;
    if (px_h1_parse_head(buf, head_len, &h) != 0) {
        io_buf_consume(&c->l.s.in, head_len);
        fail_conn(c, "malformed response head");
        return false;
    }
    int status = h.status;
    int64_t clen = h.content_length;
    bool chunked = h.chunked;
    c->keep_alive = h.keep_alive;
    if (status >= 200) {
        px_response_status(c->px, status);
        px_h1_head_fields(buf, head_len, head_field, c->px);
    }
    io_buf_consume(&c->l.s.in, head_len);
    if (status < 200)
        return true; /* 1xx: the final head follows */
    if (!px_response_start(c->px)) {
        drop_conn(c); /* the client is gone */
        return false;
    }
    if (bodiless(c, status)) {
        response_done(c);
        return c->l.state == H_BUSY;
    }
    if (!chunked && clen < 0) {
        c->phase = R_UNTIL_CLOSE;
        c->keep_alive = false;
        return true;
    }
    h1_request_head framing = {.content_length = clen, .chunked = chunked};
    h1_body_init(&c->body, &framing, HEAD_MAX);
    c->tail_len = 0;
    c->tail_lost = false;
    c->phase = R_BODY;
    if (h1_body_done(&c->body)) {
        response_done(c);
        return c->l.state == H_BUSY;
    }
    return true;
}

/* Passes body bytes to the client; false when reading must stop (paused or failed). */
static bool deliver(h1up *c, const char *p, size_t n)
{
    int rc = px_response_body(c->px, p, n);
    if (rc == NOOK_AGAIN) {
        c->paused = true;
        io_stream_want_read(&c->l.s, false);
        c->px->write_blocked = true;
        return false;
    }
    if (rc != NOOK_OK) {
        drop_conn(c); /* the client cannot take the response */
        return false;
    }
    return true;
}

static void read_body(h1up *c)
{
    while (c->phase == R_BODY && !c->paused && !c->l.close_now && io_buf_size(&c->l.s.in) > 0) {
        size_t used;
        const char *data;
        size_t dlen;
        int rc = h1_body_decode(&c->body, io_buf_head(&c->l.s.in), io_buf_size(&c->l.s.in), &used,
                                &data, &dlen);
        if (rc < 0) {
            fail_conn(c, "malformed response body framing");
            return;
        }
        if (rc == H1_BODY_DATA) {
            c->tail_len = 0; /* framing before data is no trailer */
        } else if (c->tail_len + used <= TAIL_MAX) {
            memcpy(c->tail + c->tail_len, io_buf_head(&c->l.s.in), used);
            c->tail_len += used;
        } else {
            c->tail_lost = true;
        }
        bool go_on = rc != H1_BODY_DATA || deliver(c, data, dlen);
        io_buf_consume(&c->l.s.in, used);
        if (rc == H1_BODY_DONE || h1_body_done(&c->body)) {
            if (c->body.chunked && !c->tail_lost)
                px_h1_trailer_fields(c->tail, c->tail_len, trailer_field, c->px);
            response_done(c);
            return;
        }
        if (!go_on || rc == H1_BODY_MORE)
            return;
    }
    if (c->phase == R_UNTIL_CLOSE && !c->paused && io_buf_size(&c->l.s.in) > 0) {
        size_t n = io_buf_size(&c->l.s.in);
        const char *p = io_buf_head(&c->l.s.in);
        io_buf_consume(&c->l.s.in, n);
        deliver(c, p, n);
    }
}

static void process_input(h1up *c)
{
    while (c->l.state == H_BUSY && !c->l.close_now && !c->paused) {
        if (c->phase == R_HEAD) {
            if (!read_head(c))
                return;
            continue;
        }
        if (c->phase == R_BODY || c->phase == R_UNTIL_CLOSE)
            read_body(c);
        return;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Connection
 * ------------------------------------------------------------------------------------------- */

/* The upstream closed its side while we were still writing. It may have answered first (an
 * early 401 or 413 to an upload, then close): read and use what it sent before giving up. */
static void write_failed(h1up *c)
{
    c->write_dead = true;
    io_buf_consume(&c->l.s.out, io_buf_size(&c->l.s.out));
    while (io_stream_read(&c->l.s, INPUT_MAX) > 0)
        c->got_bytes = true;
    process_input(c);
    if (c->l.state == H_BUSY)
        fail_conn(c, "connection lost while writing");
}

static void flush_out(h1up *c)
{
    if (c->write_dead)
        return;
    move_body(c);
    size_t queued = io_buf_size(&c->l.s.out);
    int rc = io_stream_flush(&c->l.s);
    if (c->px && io_buf_size(&c->l.s.out) < queued)
        c->px->sent = true; /* some of it may have reached the upstream */
    if (rc == NOOK_ECLOSED || rc == NOOK_ESYS) {
        write_failed(c);
        return;
    }
    if (c->px)
        move_body(c); /* more fits now */
    if (!c->l.close_now && io_buf_size(&c->l.s.out) > 0 && rc == NOOK_OK)
        schedule(c);
}

static void service(h1up *c)
{
    if (c->l.close_now)
        return;
    if (c->l.state == H_BUSY) {
        flush_out(c);
        process_input(c);
    }
}

/* Connected (TLS done for https): idle until a request comes. */
static void link_ready(px_link *l)
{
    h1up *c = of_link(l);
    c->l.state = H_IDLE;
    c->l.up->nconnecting--;
    io_timer_stop(loop_of(c), &c->l.timer);
    io_watch_mod(loop_of(c), &c->l.s.watch, EPOLLIN | EPOLLRDHUP);
    px_dispatch(c->l.up);
}

static tls_client *link_tls(const px_up *up)
{
    return up->conf->kind == PX_H1S ? up->pool->cfg->tls_h1 : NULL;
}

static const char *link_check_tls(tls_conn *tls)
{
    const char *alpn = tls_conn_alpn(tls);
    if (alpn && strcmp(alpn, "http/1.1") != 0)
        return "the upstream selected another protocol than http/1.1 by ALPN";
    return NULL;
}

static void link_io(px_link *l, uint32_t events)
{
    h1up *c = of_link(l);
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && !c->paused) {
        int rc = io_stream_read(&c->l.s, INPUT_MAX);
        if (rc > 0)
            c->got_bytes = c->l.state == H_BUSY;
        if (rc == NOOK_ECLOSED || rc == NOOK_ESYS) {
            process_input(c);
            if (c->l.state == H_BUSY && c->phase == R_UNTIL_CLOSE && !c->paused) {
                c->phase = R_DONE;
                px_response_end(c->px);
                c->keep_alive = false;
                c->req_sent = true;
                exchange_done(c);
                return;
            }
            if (c->l.state == H_BUSY)
                fail_conn(c, "the upstream closed the connection");
            else {
                c->l.close_now = true; /* an idle connection the upstream let go */
                schedule(c);
            }
            return;
        }
        if (rc > 0 && c->l.state == H_IDLE) {
            fail_conn(c, "unexpected bytes on an idle connection");
            return;
        }
    }
    service(c);
    if (!c->l.close_now && !c->paused && c->l.s.tr->pending(&c->l.s) > 0)
        schedule(c); /* TLS records already read: the socket will not signal them again */
}

static const px_link_ops h1_link_ops = {
    .tls = link_tls, .check_tls = link_check_tls, .ready = link_ready, .io = link_io};

static void destroy(h1up *c)
{
    px_up *up = c->l.up;
    bool served = c->l.state >= PX_LINK_STATES, timed_out = c->l.timed_out;
    px_req *px = c->px;
    if (c->l.failed && (px || !served))
        px_log(up->pool, NOOK_LOG_WARN, "upstream %s: %s", up->conf->authority, c->l.err);
    px_link_unlink(&c->l, !served);
    px_link_release(&c->l);
    /* A reused connection that failed before any byte of the response: most likely the
     * upstream closed it (its keep-alive timeout) as the request went out. That says nothing
     * about the upstream's health. The request goes again, on a new connection, if that is
     * safe: nothing of it was written, or it is idempotent and none of its body was consumed
     * (RFC 9110 §9.2.2). Otherwise it may have been processed: 502. */
    bool stale = px && c->reused && !c->got_bytes;
    bool retry = stale && !px->body_started && (!px->sent || px_idempotent(px));
    bool failed = c->l.failed;
    io_free(up->pool->alloc, c);
    if (px) {
        bool answered = px->ended;
        px->conn = NULL;
        px->fresh_conn |= retry;
        px_fail(px, retry);
        if (!stale && failed && !answered)
            px_mark_down(up);
    }
    if (!served)
        px_up_failed(up, timed_out);
    else
        px_dispatch(up);
}

static void on_resume(io_defer *d)
{
    h1up *c = of_link(px_link_of_defer(d));
    if (!c->l.close_now && c->l.state == H_BUSY && !c->paused && c->l.s.tr->pending(&c->l.s) > 0 &&
        io_stream_read(&c->l.s, INPUT_MAX) > 0)
        c->got_bytes = true;
    service(c);
    /* One read takes at most a chunk: what TLS still holds is read on the next round. */
    if (!c->l.close_now && c->l.state == H_BUSY && !c->paused && c->l.s.tr->pending(&c->l.s) > 0)
        schedule(c);
    if (c->l.close_now)
        destroy(c);
}

static void on_timer(io_timer *t)
{
    h1up *c = of_link(px_link_of_timer(t));
    if (c->l.state < PX_LINK_STATES) {
        c->l.timed_out = true;
        fail_conn(c, "connect timed out");
        return;
    }
    c->l.close_now = true; /* idle */
    schedule(c);
}

static px_conn *h1_open(px_up *up)
{
    return (px_conn *)(void *)px_link_new(up, sizeof(h1up), &h1_link_ops, on_timer, on_resume);
}

/* An idle connection must have nothing to read: data or the end of the stream there (an
 * upstream that closed it, its FIN not yet seen by the event loop) makes it unusable. Checked
 * before each reuse, it closes most of the window in which a request would go out on a
 * connection the upstream already let go. */
static bool still_open(h1up *c)
{
    if (c->l.s.tr->pending(&c->l.s) == 0) { /* TLS may have read bytes ahead */
        char b;
        ssize_t n = recv(c->l.s.watch.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
    }
    c->l.close_now = true; /* not a failure: closed without a health mark */
    schedule(c);
    return false;
}

static px_conn *h1_ready_conn(px_up *up, bool fresh)
{
    for (h1up *c = H(up->conns); c; c = H(c->l.next))
        if (c->l.state == H_IDLE && !c->l.close_now && !(fresh && c->reused) &&
            (!c->reused || still_open(c)))
            return P(c);
    return NULL;
}

static int h1_submit(px_conn *pc, px_req *px)
{
    h1up *c = H(pc);
    if (!px->req)
        return NOOK_ECLOSED;
    c->px = px;
    c->l.state = H_BUSY;
    c->phase = R_HEAD;
    c->req_sent = false;
    c->got_bytes = false;
    px->sent = false;
    c->paused = false;
    io_timer_stop(loop_of(c), &c->l.timer);
    int rc = queue_head(c, px);
    if (rc != NOOK_OK) {
        c->px = NULL;
        c->l.state = H_IDLE;
        io_buf_consume(&c->l.s.out, io_buf_size(&c->l.s.out));
        return rc;
    }
    px->conn = pc;
    schedule(c);
    return NOOK_OK;
}

static void h1_body_more(px_req *px)
{
    schedule(H(px->conn));
}

static void h1_writable(px_req *px)
{
    h1up *c = H(px->conn);
    px->write_blocked = false;
    if (!c->paused)
        return;
    c->paused = false;
    io_stream_want_read(&c->l.s, true);
    schedule(c);
}

static void h1_cancel(px_req *px)
{
    drop_conn(H(px->conn)); /* HTTP/1.1 cannot stop one request but by closing */
}

static void h1_close_all(px_up *up)
{
    while (up->conns)
        destroy(H(up->conns));
}

const px_proto px_h1_proto = {.open = h1_open,
                              .ready_conn = h1_ready_conn,
                              .submit = h1_submit,
                              .body_more = h1_body_more,
                              .writable = h1_writable,
                              .cancel = h1_cancel,
                              .close_all = h1_close_all};
