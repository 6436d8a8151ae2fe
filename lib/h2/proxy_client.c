/*
 * The proxy's HTTP/2 upstreams (h2:// over TLS, h2c:// by prior knowledge): one nghttp2 client
 * session per connection, many proxied requests multiplexed on it, never more at once than the
 * upstream's SETTINGS_MAX_CONCURRENT_STREAMS (a connection takes requests only once that
 * SETTINGS frame has arrived).
 *
 * Memory stays bounded both ways. Request bodies: nghttp2 pulls from px->body through a data
 * provider as the upstream's window allows; the client is paused while px->body is full.
 * Response bodies: automatic WINDOW_UPDATE is off; bytes received are credited back
 * (nghttp2_session_consume) only once the client's output took them, so a slow client holds
 * the upstream back by at most one stream window.
 *
 * nghttp2 callbacks run only inside mem_recv/mem_send, called from this file's own events.
 */
#include "mw/proxy.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define STREAM_WINDOW (256 * 1024)     /* per-stream receive window we grant */
#define CONN_WINDOW (32 * 1024 * 1024) /* connection receive window we grant */
#define OUTPUT_CHUNK_MAX (256 * 1024)  /* frames moved to the socket buffer per round */
#define INPUT_MAX (256 * 1024)         /* bytes read from the socket per event */

enum { C_SETTINGS = PX_LINK_STATES, C_READY };

struct px_conn {
    px_link l; /* first: connect, TLS handshake, place in up->conns */
    nghttp2_session *ng;
    nghttp2_mem mem;
    px_req *reqs; /* streams in flight (conn_prev / conn_next) */
    size_t nstreams;
    size_t unconsumed_conn; /* bytes of closed or unknown streams to credit */
    uint64_t queued;        /* bytes nghttp2 has handed out for this connection, in all */
    bool served;            /* reached C_READY */
    bool goaway;            /* no new streams */
    bool dispatch_needed;   /* a stream closed or SETTINGS came: waiting requests may go */
};

static px_conn *of_link(px_link *l)
{
    return (px_conn *)(void *)l;
}
static const io_alloc *alloc_of(const px_conn *c)
{
    return c->l.up->pool->alloc;
}
static io_loop *loop_of(const px_conn *c)
{
    return c->l.up->pool->loop;
}
static void schedule(px_conn *c)
{
    px_link_schedule(&c->l);
}
static void fail_conn(px_conn *c, const char *why)
{
    px_link_fail(&c->l, why);
}

/* nghttp2 allocates through the server's allocator. */
static void *mem_malloc(size_t n, void *ud)
{
    return io_malloc(ud, n);
}
static void mem_free(void *p, void *ud)
{
    io_free(ud, p);
}
static void *mem_calloc(size_t nmemb, size_t size, void *ud)
{
    if (size && nmemb > SIZE_MAX / size)
        return NULL;
    void *p = io_malloc(ud, nmemb * size);
    if (p)
        memset(p, 0, nmemb * size);
    return p;
}
static void *mem_realloc(void *p, size_t n, void *ud)
{
    return io_realloc(ud, p, n);
}

/* ---------------------------------------------------------------------------------------------
 * Streams
 * ------------------------------------------------------------------------------------------- */

static void link_req(px_conn *c, px_req *px)
{
    px->conn = c;
    px->conn_prev = NULL;
    px->conn_next = c->reqs;
    if (c->reqs)
        c->reqs->conn_prev = px;
    c->reqs = px;
    c->nstreams++;
}

static void unlink_req(px_conn *c, px_req *px)
{
    if (px->conn_prev)
        px->conn_prev->conn_next = px->conn_next;
    else
        c->reqs = px->conn_next;
    if (px->conn_next)
        px->conn_next->conn_prev = px->conn_prev;
    px->conn_prev = px->conn_next = NULL;
    c->nstreams--;
    c->unconsumed_conn += px->unconsumed;
    px->unconsumed = 0;
    c->dispatch_needed = true;
}

static ssize_t read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)ng;
    (void)id;
    (void)ud;
    px_req *px = src->ptr;
    size_t n = io_buf_size(&px->body);
    if (n > length)
        n = length;
    if (n) {
        memcpy(buf, io_buf_head(&px->body), n);
        io_buf_consume(&px->body, n);
        px->body_started = true;
    }
    if (io_buf_size(&px->body) == 0) {
        if (px->body_end) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        } else if (n == 0) {
            px->data_deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    px_body_drained(px);
    return (ssize_t)n;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    px_req *px = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!px)
        return 0;
    const char *n = (const char *)name, *v = (const char *)value;
    if (px->got_head) {
        px_response_trailer(px, n, namelen, v, valuelen);
        return 0;
    }
    if (namelen == 7 && memcmp(n, ":status", 7) == 0) {
        int status = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++)
            status = status * 10 + (v[i] - '0');
        px->info_block = status < 200;
        if (!px->info_block)
            px_response_status(px, status);
        return 0;
    }
    if (!px->info_block)
        px_response_header(px, n, namelen, v, valuelen);
    return 0;
}

static void reset(px_conn *c, px_req *px, uint32_t code)
{
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, px->stream_id, code);
    schedule(c);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    px_conn *c = ud;
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK)) {
        if (c->l.state == C_SETTINGS) {
            c->l.state = C_READY;
            c->served = true;
            c->l.up->nconnecting--;
            io_timer_stop(loop_of(c), &c->l.timer);
        }
        c->dispatch_needed = true;
        return 0;
    }
    if (f->hd.type == NGHTTP2_GOAWAY) {
        c->goaway = true;
        return 0;
    }
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    px_req *px = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!px)
        return 0;
    bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (f->hd.type == NGHTTP2_HEADERS) {
        if (px->info_block) {
            px->info_block = false; /* 1xx: the final head is still to come */
            return 0;
        }
        if (!px->got_head && !px_response_start(px)) {
            reset(c, px, NGHTTP2_CANCEL);
            return 0;
        }
    }
    if (end)
        px_response_end(px);
    return 0;
}

/* A request whose HEADERS never left nghttp2 (still queued when the stream or the connection
 * ended) cannot have reached the upstream: it may go again elsewhere. nghttp2 reports a frame
 * as sent once it has handed out all its bytes, so the connection's output count is then the
 * offset where the HEADERS end: until the socket has taken that much, they are still in the
 * proxy's own buffer. */
static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    px_conn *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    px_req *px = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (px) {
        px->sent = true;
        px->sent_mark = c->queued;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    px_conn *c = ud;
    px_req *px = nghttp2_session_get_stream_user_data(ng, id);
    if (!px) {
        c->unconsumed_conn += len;
        return 0;
    }
    px->unconsumed += len;
    if (!px->got_head || px->ended || !px->req)
        return 0; /* nobody to give it to: credited after the batch */
    int rc = px_response_body(px, data, len);
    if (rc == NOOK_AGAIN) {
        px->write_blocked = true;
    } else if (rc != NOOK_OK) {
        px_response_broken(px); /* the client cannot take it: stop both sides */
        reset(c, px, NGHTTP2_CANCEL);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud)
{
    px_conn *c = ud;
    px_req *px = nghttp2_session_get_stream_user_data(ng, id);
    if (!px)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    unlink_req(c, px);
    px->conn = NULL;
    if (error_code == NGHTTP2_NO_ERROR && px->ended) {
        px_release_upstream(px);
        return 0;
    }
    if (error_code == NGHTTP2_HTTP_1_1_REQUIRED) {
        px_fall_back_to_h1(px);
        return 0;
    }
    if (error_code != NGHTTP2_NO_ERROR && error_code != NGHTTP2_CANCEL)
        px_log(c->l.up->pool, NOOK_LOG_INFO, "upstream %s reset stream %d: %s",
               c->l.up->conf->authority, id, nghttp2_http2_strerror(error_code));
    px_fail(px, error_code == NGHTTP2_REFUSED_STREAM || !px->sent);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * px_proto operations
 * ------------------------------------------------------------------------------------------- */

static size_t max_streams(const px_conn *c)
{
    return nghttp2_session_get_remote_settings(c->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

static px_conn *h2_ready_conn(px_up *up, bool fresh)
{
    (void)fresh; /* a stream is refused or answered: no stale-connection race to avoid */
    for (px_conn *c = up->conns; c; c = c->l.next)
        if (c->l.state == C_READY && !c->goaway && !c->l.close_now &&
            c->nstreams < max_streams(c) && nghttp2_session_check_request_allowed(c->ng))
            return c;
    return NULL;
}

static int h2_submit(px_conn *c, px_req *px)
{
    if (!px->req)
        return NOOK_ECLOSED;
    size_t n;
    px_field *f = px_request_fields(px, &n);
    if (!f)
        return NOOK_ENOMEM;
    nghttp2_nv *nv = io_malloc(alloc_of(c), n * sizeof *nv);
    if (!nv) {
        io_free(alloc_of(c), f);
        return NOOK_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        nv[i] = (nghttp2_nv){(uint8_t *)f[i].name, (uint8_t *)f[i].value, f[i].nlen, f[i].vlen,
                             NGHTTP2_NV_FLAG_NONE};
    bool has_body = !(px->body_end && io_buf_size(&px->body) == 0);
    nghttp2_data_provider prd = {.source.ptr = px, .read_callback = read_body};
    int32_t id = nghttp2_submit_request(c->ng, NULL, nv, n, has_body ? &prd : NULL, px);
    io_free(alloc_of(c), nv);
    io_free(alloc_of(c), f);
    if (id < 0) {
        px_log(c->l.up->pool, NOOK_LOG_WARN, "cannot submit a request: %s", nghttp2_strerror(id));
        return NOOK_ENOMEM;
    }
    px->stream_id = id;
    px->sent = false;
    link_req(c, px);
    schedule(c);
    return NOOK_OK;
}

static void h2_body_more(px_req *px)
{
    px_conn *c = px->conn;
    if (px->data_deferred) {
        px->data_deferred = false;
        nghttp2_session_resume_data(c->ng, px->stream_id);
    }
    schedule(c);
}

static void h2_writable(px_req *px)
{
    px_conn *c = px->conn;
    px->write_blocked = false;
    if (px->unconsumed) {
        nghttp2_session_consume(c->ng, px->stream_id, px->unconsumed);
        px->unconsumed = 0;
    }
    schedule(c);
}

static void h2_cancel(px_req *px)
{
    reset(px->conn, px, NGHTTP2_CANCEL);
}

/* ---------------------------------------------------------------------------------------------
 * Connection I/O
 * ------------------------------------------------------------------------------------------- */

static void credit_received(px_conn *c)
{
    for (px_req *px = c->reqs; px; px = px->conn_next)
        if (px->unconsumed && !px->write_blocked) {
            nghttp2_session_consume(c->ng, px->stream_id, px->unconsumed);
            px->unconsumed = 0;
        }
    if (c->unconsumed_conn) {
        nghttp2_session_consume_connection(c->ng, c->unconsumed_conn);
        c->unconsumed_conn = 0;
    }
}

static void pump_output(px_conn *c)
{
    for (;;) {
        bool produced = false;
        while (io_buf_size(&c->l.s.out) < OUTPUT_CHUNK_MAX) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->ng, &data);
            if (n < 0) {
                fail_conn(c, nghttp2_strerror((int)n));
                return;
            }
            if (n == 0)
                break;
            if (io_stream_queue(&c->l.s, data, (size_t)n) != NOOK_OK) {
                fail_conn(c, "output buffer full");
                return;
            }
            c->queued += (uint64_t)n;
            produced = true;
        }
        if (!produced && io_buf_size(&c->l.s.out) == 0)
            return;
        int rc = io_stream_flush(&c->l.s);
        if (rc == NOOK_ECLOSED || rc == NOOK_ESYS) {
            fail_conn(c, "connection lost while writing");
            return;
        }
        if (rc == NOOK_AGAIN || !nghttp2_session_want_write(c->ng))
            return;
    }
}

static void feed_input(px_conn *c)
{
    size_t n = io_buf_size(&c->l.s.in);
    if (n == 0)
        return;
    ssize_t used = nghttp2_session_mem_recv(c->ng, (const uint8_t *)io_buf_head(&c->l.s.in), n);
    io_buf_consume(&c->l.s.in, n);
    if (used < 0)
        fail_conn(c, nghttp2_strerror((int)used));
}

static void set_timer(px_conn *c)
{
    if (c->l.state != C_READY)
        return; /* the connect timer runs */
    int64_t idle_ms = c->l.up->pool->cfg->idle_ms;
    if (c->nstreams == 0 && idle_ms > 0)
        io_timer_set(loop_of(c), &c->l.timer, (uint64_t)idle_ms);
    else
        io_timer_stop(loop_of(c), &c->l.timer); /* each request has its own timeout */
}

static void service(px_conn *c)
{
    if (c->l.close_now || c->l.state < C_SETTINGS)
        return;
    feed_input(c);
    if (c->l.close_now)
        return;
    credit_received(c);
    if (c->dispatch_needed) {
        c->dispatch_needed = false;
        px_dispatch(c->l.up);
    }
    pump_output(c);
    if (c->l.close_now)
        return;
    if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng))
        fail_conn(c, "session ended");
    else if (c->goaway && c->nstreams == 0)
        fail_conn(c, "upstream said GOAWAY");
    else
        set_timer(c);
}

static int session_new(px_conn *c)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return NOOK_ENOMEM;
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_option *o;
    if (nghttp2_option_new(&o) != 0) {
        nghttp2_session_callbacks_del(cbs);
        return NOOK_ENOMEM;
    }
    nghttp2_option_set_no_auto_window_update(o, 1);
    nghttp2_option_set_max_settings(o, 32);
    c->mem = (nghttp2_mem){(void *)alloc_of(c), mem_malloc, mem_free, mem_calloc, mem_realloc};
    int rv = nghttp2_session_client_new3(&c->ng, cbs, c, o, &c->mem);
    nghttp2_option_del(o);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0)
        return NOOK_ENOMEM;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
    };
    rv = nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    if (rv == 0)
        rv = nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
    return rv == 0 ? NOOK_OK : NOOK_ENOMEM;
}

/* Connected (TLS done for h2://): the preface and our SETTINGS go out. */
static void link_ready(px_link *l)
{
    px_conn *c = of_link(l);
    if (session_new(c) != NOOK_OK) {
        fail_conn(c, "out of memory for an HTTP/2 session");
        return;
    }
    c->l.state = C_SETTINGS;
    io_watch_mod(loop_of(c), &c->l.s.watch, EPOLLIN | EPOLLRDHUP);
    pump_output(c);
}

static tls_client *link_tls(const px_up *up)
{
    return up->conf->kind == PX_H2 ? up->pool->cfg->tls : NULL;
}

static const char *link_check_tls(tls_conn *tls)
{
    const char *alpn = tls_conn_alpn(tls);
    if (!alpn || strcmp(alpn, "h2") != 0)
        return "the upstream did not select h2 by ALPN";
    if (!tls_conn_h2_allowed(tls))
        return "the upstream's TLS version or cipher is not allowed for HTTP/2";
    return NULL;
}

static void link_io(px_link *l, uint32_t events)
{
    px_conn *c = of_link(l);
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        int rc = io_stream_read(&c->l.s, INPUT_MAX);
        if (rc == NOOK_ECLOSED || rc == NOOK_ESYS) {
            feed_input(c); /* what came before the end still counts */
            fail_conn(c, "the upstream closed the connection");
            return;
        }
    }
    service(c);
    if (!c->l.close_now && c->l.s.tr->pending(&c->l.s) > 0)
        schedule(c);
}

static const px_link_ops h2_link_ops = {
    .tls = link_tls, .check_tls = link_check_tls, .ready = link_ready, .io = link_io};

/* Fails what is left on a connection that is going away, then frees it. The connection leaves
 * its upstream's list first, so that requests sent again never land on it. */
static void destroy(px_conn *c)
{
    px_up *up = c->l.up;
    px_link_unlink(&c->l, c->l.state != C_READY);
    px_req *left = NULL; /* the requests in flight, relinked through conn_next */
    bool reached = false;
    uint64_t written = c->queued - io_buf_size(&c->l.s.out); /* what the socket (or TLS) took */
    while (c->reqs) {
        px_req *px = c->reqs;
        if (c->ng)
            nghttp2_session_set_stream_user_data(c->ng, px->stream_id, NULL);
        unlink_req(c, px);
        px->conn = NULL;
        px->conn_next = left;
        left = px;
        if (px->sent && written < px->sent_mark)
            px->sent = false; /* its HEADERS were still in our buffer: never on the wire */
        reached |= px->sent;
    }
    if (c->l.err[0] && (reached || !c->served))
        px_log(up->pool, NOOK_LOG_WARN, "upstream %s: %s", up->conf->authority, c->l.err);
    if (c->ng)
        nghttp2_session_del(c->ng);
    px_link_release(&c->l);
    bool served = c->served, timed_out = c->l.timed_out;
    io_free(up->pool->alloc, c);
    if (!served)
        px_up_failed(up, timed_out);
    else if (reached)
        px_mark_down(up); /* it died with requests it had taken */
    /* Those still queued inside nghttp2 or in our output buffer never reached it: they go
     * again (another upstream if this one is now down). */
    while (left) {
        px_req *px = left;
        left = px->conn_next;
        px->conn_next = NULL;
        px_fail(px, !px->sent);
    }
    px_dispatch(up);
}

static void on_resume(io_defer *d)
{
    px_conn *c = of_link(px_link_of_defer(d));
    if (!c->l.close_now && c->l.state >= C_SETTINGS) {
        if (c->l.s.tr->pending(&c->l.s) > 0)
            io_stream_read(&c->l.s, INPUT_MAX);
        service(c);
        /* One read takes at most a chunk: what TLS still holds is read on the next round, as
         * no socket event will announce it. */
        if (!c->l.close_now && c->l.s.tr->pending(&c->l.s) > 0)
            schedule(c);
    }
    if (c->l.close_now)
        destroy(c);
}

static void on_timer(io_timer *t)
{
    px_conn *c = of_link(px_link_of_timer(t));
    if (c->l.state != C_READY) {
        c->l.timed_out = true;
        fail_conn(c, "connect timed out");
        return;
    }
    if (c->nstreams == 0) {
        nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR);
        pump_output(c);
        fail_conn(c, "idle");
        c->l.err[0] = '\0';
    }
}

static px_conn *h2_open(px_up *up)
{
    return of_link(px_link_new(up, sizeof(px_conn), &h2_link_ops, on_timer, on_resume));
}

static void h2_close_all(px_up *up)
{
    while (up->conns) {
        px_conn *c = up->conns;
        c->l.close_now = true;
        c->l.err[0] = '\0';
        destroy(c);
    }
}

const px_proto px_h2_proto = {.open = h2_open,
                              .ready_conn = h2_ready_conn,
                              .submit = h2_submit,
                              .body_more = h2_body_more,
                              .writable = h2_writable,
                              .cancel = h2_cancel,
                              .close_all = h2_close_all};
