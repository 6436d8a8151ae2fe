/*
 * An HTTP/1.x connection. One exchange at a time: a request is parsed, its body buffered, the
 * handler runs, and only when its response has been queued does the next (possibly pipelined)
 * request get parsed — which keeps responses in request order by construction.
 *
 * Everything that could free the connection or finish an exchange happens in `resume`, a
 * deferred call, never inside a handler's call into us (see core/proto.h).
 */
#include "h1/conn.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "h1/parser.h"
#include "io/ascii.h"
#include "io/sock.h"
#include "io/stream.h"

#define LINGER_MS 2000
#define LINGER_MAX_BYTES (256 * 1024)
#define BODY_READ_SLACK 65536 /* input beyond the head limit, for body bytes in flight */
#define BODY_RATE_WINDOW_MS 5000 /* NOOK_OPT_MIN_BODY_RATE is checked over windows this long */

enum phase { PH_HEAD, PH_BODY, PH_WAIT, PH_LINGER };
enum timer_kind { T_NONE, T_SLEEP, T_IDLE, T_HEADER, T_BODY, T_WRITE, T_LINGER };

typedef struct h1_conn {
    core_conn link;
    core_worker *w;
    const core_limits *lim;
    io_stream s;
    io_timer timer;
    io_defer resume;
    h1_parser parser;
    h1_request_head head;
    h1_body body;
    nook_req *ex;
    enum phase phase;
    enum timer_kind timer_kind;
    unsigned long nrequests;
    size_t lingered;
    uint64_t rate_since;  /* loop ms when the current body-rate window began */
    uint64_t rate_bytes;  /* request body bytes received in it */
    bool keep_alive;   /* this response allows another request after it */
    bool chunked_out;  /* this response is chunk-framed */
    bool res_ended;    /* the whole response is queued */
    bool close_after;  /* close once the output is flushed */
    bool close_now;    /* tear down at the next resume */
    bool stopping;     /* the server is draining */
    bool peer_eof;     /* the peer will send nothing more */
    bool in_process;
    bool head_sent;       /* this response's head is queued */
    int file_fd;          /* a body sent with sendfile, after the queued head; -1 when none */
    uint64_t file_off, file_left;
    bool body_paused;     /* a streaming handler asked to hold the request body */
    bool want_writable;   /* the handler was told to wait (output above the high-water mark) */
    bool notify_writable; /* output fell below half of it since: tell the handler */
    char peer[64];
    size_t peer_len;
    char alt_svc[24]; /* "h2=\":PORT\"", or empty */
} h1_conn;

static void process(h1_conn *c);
static void begin_close(h1_conn *c);

static h1_conn *from_watch(io_watch *w) { return (h1_conn *)((char *)w - offsetof(h1_conn, s)); }
static h1_conn *from_timer(io_timer *t) { return (h1_conn *)((char *)t - offsetof(h1_conn, timer)); }
static h1_conn *from_defer(io_defer *d) { return (h1_conn *)((char *)d - offsetof(h1_conn, resume)); }

static size_t opt(const h1_conn *c, nook_opt o) { return (size_t)core_opt(c->lim, o); }

static void schedule(h1_conn *c) { io_loop_defer(c->s.loop, &c->resume); }

static void set_timer_ms(h1_conn *c, enum timer_kind kind, uint64_t ms)
{
    c->timer_kind = kind;
    if (ms == 0) {
        io_timer_stop(c->s.loop, &c->timer);
        c->timer_kind = T_NONE;
        return;
    }
    io_timer_set(c->s.loop, &c->timer, ms);
}

static void set_timer(h1_conn *c, enum timer_kind kind, nook_opt o)
{
    set_timer_ms(c, kind, o ? (uint64_t)core_opt(c->lim, o) : LINGER_MS);
}

/* Waiting for a request: the idle timeout, with a stop on the way (NOOK_OPT_IDLE_SLEEP) where
 * the connection gives back its buffers and TLS state. */
static void idle_timer(h1_conn *c)
{
    nook_opt o = c->nrequests ? NOOK_OPT_IDLE_TIMEOUT : NOOK_OPT_HEADER_TIMEOUT;
    uint64_t limit = (uint64_t)core_opt(c->lim, o);
    uint64_t nap = (uint64_t)core_opt(c->lim, NOOK_OPT_IDLE_SLEEP);
    if (nap > 0 && (limit == 0 || nap < limit))
        set_timer_ms(c, T_SLEEP, nap);
    else
        set_timer(c, T_IDLE, o);
}

/* The sleep stop of idle_timer: free what can be rebuilt, then wait out the rest. */
static void fall_asleep(h1_conn *c)
{
    io_stream_sleep(&c->s);
    core_worker_released(c->w);
    nook_opt o = c->nrequests ? NOOK_OPT_IDLE_TIMEOUT : NOOK_OPT_HEADER_TIMEOUT;
    uint64_t limit = (uint64_t)core_opt(c->lim, o);
    uint64_t nap = (uint64_t)core_opt(c->lim, NOOK_OPT_IDLE_SLEEP);
    set_timer_ms(c, T_IDLE, limit ? limit - nap : 0);
}

/* The timeout that applies to the current phase when no output is waiting. */
static void phase_timer(h1_conn *c)
{
    switch (c->phase) {
    case PH_HEAD:
        if (io_buf_size(&c->s.in) > 0)
            set_timer(c, T_HEADER, NOOK_OPT_HEADER_TIMEOUT);
        else
            idle_timer(c);
        break;
    case PH_BODY:
        set_timer(c, T_BODY, NOOK_OPT_BODY_TIMEOUT);
        break;
    case PH_WAIT:
        /* The handler owns the pace while nothing waits to be written. */
        io_timer_stop(c->s.loop, &c->timer);
        c->timer_kind = T_NONE;
        break;
    case PH_LINGER:
        break;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Writing
 * ------------------------------------------------------------------------------------------- */

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Status";
    }
}

/* Appends bytes to a pre-sized region; the caller computed the total length first. */
static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static bool is_close_token_list(nook_str v)
{
    /* "Connection: close" possibly inside a token list. */
    for (size_t i = 0; i + 5 <= v.len; i++)
        if (io_caseeq(v.ptr + i, "close", 5) && (i == 0 || v.ptr[i - 1] == ' ' || v.ptr[i - 1] == ',') &&
            (i + 5 == v.len || v.ptr[i + 5] == ' ' || v.ptr[i + 5] == ','))
            return true;
    return false;
}

static int queue_head(h1_conn *c, int status, const core_hdr *h, size_t n, int64_t clen, bool end)
{
    bool bodiless = status == 204 || status == 304 || status < 200;
    bool want_close = false;
    for (size_t i = 0; i < n; i++)
        if (h[i].name.len == 10 && io_caseeq(h[i].name.ptr, "connection", 10))
            want_close |= is_close_token_list(h[i].value);

    c->chunked_out = false;
    if (!bodiless && clen < 0 && !end) {
        if (c->head.version_minor >= 1)
            c->chunked_out = true;
        else
            want_close = true; /* HTTP/1.0 with unknown length: the close delimits the body */
    }
    /* An answer before the request body was read: the rest of it will not be, so close. */
    if (c->phase == PH_BODY && !h1_body_done(&c->body))
        want_close = true;
    if (want_close || c->stopping || c->nrequests >= opt(c, NOOK_OPT_MAX_REQUESTS_PER_CONN))
        c->keep_alive = false;

    const char *rs = reason(status);
    char num[32];
    size_t numlen = 0;
    if (!bodiless && clen >= 0)
        numlen = io_fmt_dec(num, (uint64_t)clen);

    size_t total = 13 + strlen(rs) + 2; /* "HTTP/1.1 200 " reason CRLF */
    for (size_t i = 0; i < n; i++)
        if (!(h[i].name.len == 10 && io_caseeq(h[i].name.ptr, "connection", 10)))
            total += h[i].name.len + 2 + h[i].value.len + 2;
    if (numlen)
        total += 16 + numlen + 2;
    if (c->chunked_out)
        total += 28;
    size_t alt_len = strlen(c->alt_svc);
    if (alt_len)
        total += 9 + alt_len + 2;
    total += 24 + 2; /* Connection header, final CRLF */

    int rc = io_buf_reserve(&c->s.out, c->s.alloc, total, SIZE_MAX);
    if (rc != NOOK_OK)
        return rc;
    char *p = io_buf_tail(&c->s.out), *start = p;
    p = put(p, c->head.version_minor >= 1 ? "HTTP/1.1 " : "HTTP/1.0 ", 9);
    io_fmt_status(p, status);
    p[3] = ' ';
    p += 4;
    p = put(p, rs, strlen(rs));
    p = put(p, "\r\n", 2);
    for (size_t i = 0; i < n; i++) {
        if (h[i].name.len == 10 && io_caseeq(h[i].name.ptr, "connection", 10))
            continue;
        p = put(p, h[i].name.ptr, h[i].name.len);
        p = put(p, ": ", 2);
        p = put(p, h[i].value.ptr, h[i].value.len);
        p = put(p, "\r\n", 2);
    }
    if (numlen) {
        p = put(p, "Content-Length: ", 16);
        p = put(p, num, (size_t)numlen);
        p = put(p, "\r\n", 2);
    }
    if (c->chunked_out)
        p = put(p, "Transfer-Encoding: chunked\r\n", 28);
    if (alt_len) {
        p = put(p, "Alt-Svc: ", 9);
        p = put(p, c->alt_svc, alt_len);
        p = put(p, "\r\n", 2);
    }
    if (!c->keep_alive)
        p = put(p, "Connection: close\r\n", 19);
    else if (c->head.version_minor == 0)
        p = put(p, "Connection: keep-alive\r\n", 24);
    p = put(p, "\r\n", 2);
    io_buf_commit(&c->s.out, (size_t)(p - start));
    return NOOK_OK;
}

static void mark_ended(h1_conn *c)
{
    c->res_ended = true;
    schedule(c);
}

static void end_file(h1_conn *c)
{
    close(c->file_fd);
    c->file_fd = -1;
    c->s.want_out = false;
}

/* The file body goes out once the queued head has: the kernel copies it. */
static int send_file_part(h1_conn *c)
{
    while (c->file_left > 0) {
        int64_t n = io_stream_sendfile(&c->s, c->file_fd, &c->file_off, c->file_left);
        if (n == 0)
            return NOOK_AGAIN;
        if (n < 0) {
            core_log(c->w, NOOK_LOG_WARN, "%.*s: sendfile failed", (int)c->peer_len, c->peer);
            end_file(c);
            return NOOK_ECLOSED;
        }
        c->file_left -= (uint64_t)n;
    }
    end_file(c);
    mark_ended(c);
    return NOOK_OK;
}

static int flush(h1_conn *c)
{
    size_t before = io_buf_size(&c->s.out) + c->file_left;
    int rc = io_stream_flush(&c->s);
    if (rc == NOOK_OK && c->file_fd >= 0)
        rc = send_file_part(c);
    if (rc == NOOK_ECLOSED || rc == NOOK_ESYS) {
        c->close_now = true;
        schedule(c);
        return NOOK_ECLOSED;
    }
    size_t after = io_buf_size(&c->s.out) + c->file_left;
    if (c->want_writable && after < opt(c, NOOK_OPT_OUTPUT_HIGH_WATER) / 2) {
        /* Any flush can drain the output (not only EPOLLOUT's), so the handler is told from
         * the next top-level step rather than from here, which may be inside its own call. */
        c->want_writable = false;
        c->notify_writable = true;
        schedule(c);
    }
    if (after > 0 && (after < before || c->timer_kind != T_WRITE))
        set_timer(c, T_WRITE, NOOK_OPT_WRITE_TIMEOUT);
    else if (after == 0 && c->close_after && c->phase != PH_LINGER)
        begin_close(c); /* the last response is out: now half-close */
    else if (after == 0 && c->timer_kind == T_WRITE)
        phase_timer(c);
    return rc;
}

static int op_send_head(void *stream, int status, const core_hdr *h, size_t n, int64_t clen,
                        bool end)
{
    h1_conn *c = stream;
    if (c->close_now)
        return NOOK_ECLOSED;
    int rc = queue_head(c, status, h, n, clen, end);
    if (rc != NOOK_OK)
        return rc;
    c->head_sent = true;
    if (end)
        mark_ended(c);
    return NOOK_OK;
}

static int op_send_body(void *stream, const void *p, size_t n, bool end)
{
    h1_conn *c = stream;
    if (c->close_now)
        return NOOK_ECLOSED;
    int rc = NOOK_OK;
    if (c->chunked_out && n > 0) {
        char size[24];
        size_t sl = io_fmt_hex(size, n);
        size[sl++] = '\r';
        size[sl++] = '\n';
        rc = io_buf_reserve(&c->s.out, c->s.alloc, (size_t)sl + n + 2, SIZE_MAX);
        if (rc == NOOK_OK) {
            char *t = io_buf_tail(&c->s.out);
            t = put(t, size, (size_t)sl);
            t = put(t, p, n);
            put(t, "\r\n", 2);
            io_buf_commit(&c->s.out, (size_t)sl + n + 2);
        }
    } else if (n > 0) {
        rc = io_stream_queue(&c->s, p, n);
    }
    if (rc == NOOK_OK && end && c->chunked_out)
        rc = io_stream_queue(&c->s, "0\r\n\r\n", 5);
    if (rc != NOOK_OK)
        return rc;
    /* The deferred step flushes: writes may come from outside our own event handlers (a
     * posted callback feeding an event stream), where nothing else would. */
    schedule(c);
    if (end) {
        mark_ended(c);
    } else if (io_buf_size(&c->s.out) >= opt(c, NOOK_OPT_OUTPUT_HIGH_WATER)) {
        /* A handler streaming a large body: push bytes out now to keep the buffer bounded. */
        if (flush(c) == NOOK_ECLOSED)
            return NOOK_ECLOSED;
        /* Still above the mark: the core answers NOOK_AGAIN, so WRITABLE is owed later. */
        if (io_buf_size(&c->s.out) >= opt(c, NOOK_OPT_OUTPUT_HIGH_WATER))
            c->want_writable = true;
    }
    return NOOK_OK;
}

/* The last chunk carries the trailer section; without chunking there is nowhere to put it. */
static int op_send_trailers(void *stream, const core_hdr *h, size_t n)
{
    h1_conn *c = stream;
    if (c->close_now)
        return NOOK_ECLOSED;
    if (!c->chunked_out)
        return NOOK_OK;
    int rc = io_stream_queue(&c->s, "0\r\n", 3);
    for (size_t i = 0; rc == NOOK_OK && i < n; i++) {
        rc = io_stream_queue(&c->s, h[i].name.ptr, h[i].name.len);
        if (rc == NOOK_OK)
            rc = io_stream_queue(&c->s, ": ", 2);
        if (rc == NOOK_OK)
            rc = io_stream_queue(&c->s, h[i].value.ptr, h[i].value.len);
        if (rc == NOOK_OK)
            rc = io_stream_queue(&c->s, "\r\n", 2);
    }
    if (rc == NOOK_OK)
        rc = io_stream_queue(&c->s, "\r\n", 2);
    c->chunked_out = false; /* the terminating chunk is written */
    return rc;
}

static size_t op_queued(void *stream)
{
    h1_conn *c = stream;
    return io_buf_size(&c->s.out);
}

static void op_abort(void *stream)
{
    h1_conn *c = stream;
    core_log(c->w, NOOK_LOG_WARN, "%.*s: response aborted by the handler; closing",
             (int)c->peer_len, c->peer);
    /* Send what is queued, then close: the peer sees the response cut short. */
    c->keep_alive = false;
    c->close_after = true;
    schedule(c);
}

static int op_send_file(void *stream, int fd, uint64_t off, uint64_t len)
{
    h1_conn *c = stream;
    /* Only a plain socket can take file bytes from the kernel; TLS must encrypt them. */
    if (c->close_now || c->s.tr != &io_transport_plain || c->chunked_out || c->file_fd >= 0)
        return NOOK_ESTATE;
    c->file_fd = fd;
    c->file_off = off;
    c->file_left = len;
    schedule(c);
    return NOOK_OK;
}

/* Starts a new window for NOOK_OPT_MIN_BODY_RATE (a pause the handler asked for is not the
 * client's slowness). */
static void restart_body_rate(h1_conn *c)
{
    c->rate_since = io_loop_now(c->s.loop);
    c->rate_bytes = 0;
}

/* A body that trickles in (slow POST) keeps a connection and its exchange busy for as long as
 * the client likes, while each byte resets BODY_TIMEOUT: require an average rate instead. */
static bool body_too_slow(h1_conn *c)
{
    uint64_t rate = opt(c, NOOK_OPT_MIN_BODY_RATE);
    uint64_t elapsed = io_loop_now(c->s.loop) - c->rate_since;
    if (rate == 0 || c->body_paused || elapsed < BODY_RATE_WINDOW_MS)
        return false;
    if (c->rate_bytes * 1000 < rate * elapsed)
        return true;
    restart_body_rate(c);
    return false;
}

static void op_resume_body(void *stream)
{
    h1_conn *c = stream;
    c->body_paused = false;
    restart_body_rate(c);
    if (c->phase == PH_BODY)
        set_timer(c, T_BODY, NOOK_OPT_BODY_TIMEOUT);
    if (!c->peer_eof)
        io_stream_want_read(&c->s, true);
    schedule(c);
}

static const core_stream_ops h1_ops = {.send_head = op_send_head,
                                       .send_body = op_send_body,
                                       .send_trailers = op_send_trailers,
                                       .send_file = op_send_file,
                                       .queued = op_queued,
                                       .abort = op_abort,
                                       .resume_body = op_resume_body};

/* ---------------------------------------------------------------------------------------------
 * Errors and closing
 * ------------------------------------------------------------------------------------------- */

/* Flushes what is queued, then half-closes and drains input for a while, so the peer reads our
 * last response instead of a reset caused by its unread bytes. */
static void begin_close(h1_conn *c)
{
    c->close_after = true;
    if (io_buf_size(&c->s.out) > 0)
        return; /* continues when the output has drained */
    shutdown(c->s.watch.fd, SHUT_WR);
    c->phase = PH_LINGER;
    io_stream_want_read(&c->s, true);
    set_timer(c, T_LINGER, 0);
}

/* Answers a request that cannot be served with a short response and closes. */
static void send_error(h1_conn *c, int status)
{
    core_log(c->w, NOOK_LOG_INFO, "%.*s: rejecting request: %d %s", (int)c->peer_len, c->peer,
             status, reason(status));
    if (c->ex) {
        core_exchange_cancel(c->ex);
        c->ex = NULL;
    }
    c->keep_alive = false;
    char buf[256];
    const char *rs = reason(status);
    nook_str date = core_worker_date(c->w);
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nDate: %.*s\r\nConnection: close\r\n\r\n%s\n",
                     status, rs, strlen(rs) + 1, (int)date.len, date.ptr, rs);
    io_stream_queue(&c->s, buf, (size_t)n);
    begin_close(c);
}

static void destroy(h1_conn *c)
{
    if (c->file_fd >= 0)
        end_file(c);
    if (c->ex) {
        core_exchange_cancel(c->ex);
        c->ex = NULL;
    }
    io_timer_stop(c->s.loop, &c->timer);
    io_loop_undefer(c->s.loop, &c->resume);
    io_stream_close(&c->s);
    core_worker_remove_conn(c->w, &c->link);
    io_free(core_worker_alloc(c->w), c);
}

/* ---------------------------------------------------------------------------------------------
 * Reading requests
 * ------------------------------------------------------------------------------------------- */

static void wait_for_request(h1_conn *c)
{
    c->phase = PH_HEAD;
    h1_parser_init(&c->parser);
    c->res_ended = false;
    c->head_sent = false;
    c->body_paused = false;
    if ((c->stopping || c->peer_eof) && io_buf_size(&c->s.in) == 0) {
        begin_close(c);
        return;
    }
    phase_timer(c);
    if (!c->peer_eof)
        io_stream_want_read(&c->s, true);
}

static bool copy_request(h1_conn *c)
{
    const h1_request_head *h = &c->head;
    nook_req *ex = c->ex;
    core_exchange_set_protocol(ex, h->version_minor >= 1 ? "HTTP/1.1" : "HTTP/1.0",
                               c->s.tr != &io_transport_plain);
    if (core_exchange_set_target(ex, (nook_str){h->method, h->method_len},
                                 (nook_str){h->target, h->target_len}) != NOOK_OK)
        return false;
    for (size_t i = 0; i < h->nheaders; i++) {
        const h1_header *f = &h->headers[i];
        if (core_exchange_add_header(ex, (nook_str){f->name, f->name_len},
                                     (nook_str){f->value, f->value_len}) != NOOK_OK)
            return false;
    }
    return true;
}

/* A whole head is at the front of the input: start an exchange for it. */
static void start_request(h1_conn *c, size_t head_len)
{
    c->ex = core_exchange_new(c->w, &h1_ops, c, (nook_str){c->peer, c->peer_len});
    if (!c->ex || !copy_request(c)) {
        core_log(c->w, NOOK_LOG_ERROR, "%.*s: out of memory for a request", (int)c->peer_len,
                 c->peer);
        send_error(c, c->ex ? 400 : 503);
        return;
    }
    io_buf_consume(&c->s.in, head_len);
    c->keep_alive = c->head.keep_alive;
    h1_body_init(&c->body, &c->head, opt(c, NOOK_OPT_MAX_HEADER_BYTES));
    c->phase = PH_BODY;
    restart_body_rate(c);
    set_timer(c, T_BODY, NOOK_OPT_BODY_TIMEOUT);
    /* A streaming route's handler runs now, before the body (and may already answer). */
    bool streaming = core_exchange_head_done(c->ex);
    bool waits_for_continue = !h1_body_done(&c->body) && c->head.expect_continue &&
                              c->head.version_minor >= 1;
    if (!streaming && waits_for_continue && core_exchange_answer_unrouted(c->ex))
        return; /* 404/405 instead of 100 Continue; the unread body ends the connection */
    if (!streaming && c->head.content_length > (int64_t)opt(c, NOOK_OPT_MAX_BODY)) {
        send_error(c, 413);
        return;
    }
    if (waits_for_continue && !c->head_sent)
        io_stream_queue(&c->s, "HTTP/1.1 100 Continue\r\n\r\n", 25);
}

static void parse_head(h1_conn *c)
{
    h1_limits lim = {opt(c, NOOK_OPT_MAX_REQUEST_LINE), opt(c, NOOK_OPT_MAX_HEADER_BYTES),
                     opt(c, NOOK_OPT_MAX_HEADERS)};
    h1_header *scratch = core_worker_scratch(c->w, (lim.max_headers + 1) * sizeof(h1_header));
    if (!scratch) {
        send_error(c, 503);
        return;
    }
    int rc = h1_parse_request(&c->parser, io_buf_head(&c->s.in), io_buf_size(&c->s.in), &lim,
                              scratch, lim.max_headers + 1, &c->head);
    if (rc < 0) {
        send_error(c, -rc);
    } else if (rc > 0) {
        start_request(c, (size_t)rc);
    } else if (c->timer_kind == T_IDLE || c->timer_kind == T_SLEEP) {
        /* The first bytes of a request: the whole head must now arrive in time. */
        set_timer(c, T_HEADER, NOOK_OPT_HEADER_TIMEOUT);
    }
}

static void read_body(h1_conn *c)
{
    while (!h1_body_done(&c->body) && io_buf_size(&c->s.in) > 0 && !c->body_paused) {
        size_t used;
        const char *data;
        size_t dlen;
        int rc = h1_body_decode(&c->body, io_buf_head(&c->s.in), io_buf_size(&c->s.in), &used,
                                &data, &dlen);
        if (rc < 0) {
            send_error(c, -rc);
            return;
        }
        if (rc == H1_BODY_DATA) {
            int brc = core_exchange_body(c->ex, data, dlen);
            if (brc == NOOK_AGAIN) {
                /* Held back: the input buffer fills, then TCP stops the client. */
                c->body_paused = true;
                io_timer_stop(c->s.loop, &c->timer);
                c->timer_kind = T_NONE;
            } else if (brc != NOOK_OK) {
                send_error(c, brc == NOOK_ELIMIT ? 413 : 503);
                return;
            }
        }
        io_buf_consume(&c->s.in, used);
        c->rate_bytes += used;
        if (rc == H1_BODY_MORE)
            break;
    }
    if (!h1_body_done(&c->body))
        return;
    c->phase = PH_WAIT;
    c->nrequests++;
    io_timer_stop(c->s.loop, &c->timer);
    c->timer_kind = T_NONE;
    core_exchange_body_end(c->ex);
}

/* The response has been queued: release the exchange and move to the next request. */
static void finish_response(h1_conn *c)
{
    nook_req *ex = c->ex;
    c->ex = NULL;
    core_exchange_finish(ex, true);
    if (!c->keep_alive) {
        begin_close(c);
        return;
    }
    wait_for_request(c);
}

static void process(h1_conn *c)
{
    if (c->in_process)
        return;
    c->in_process = true;
    size_t high = opt(c, NOOK_OPT_OUTPUT_HIGH_WATER);
    while (!c->close_now && !c->close_after && c->phase != PH_LINGER) {
        if (c->phase == PH_WAIT) {
            if (!c->res_ended)
                break;
            finish_response(c);
            continue;
        }
        if (c->phase == PH_BODY && c->res_ended) {
            /* Answered before the body was read: the rest is not wanted; close after it. */
            c->keep_alive = false;
            c->nrequests++;
            c->phase = PH_WAIT;
            continue;
        }
        if (c->body_paused)
            break;
        /* A client pipelining requests without reading answers is paused here. */
        if (io_buf_size(&c->s.out) >= high)
            break;
        enum phase before = c->phase;
        size_t in_before = io_buf_size(&c->s.in);
        if (in_before > 0 && c->phase == PH_HEAD)
            parse_head(c);
        if (c->phase == PH_BODY && c->ex && !c->close_after)
            read_body(c); /* not after a rejection (send_error drops the exchange) */
        if (c->phase == before && io_buf_size(&c->s.in) == in_before) {
            /* Needs more input; after EOF none will come. */
            if (c->peer_eof) {
                if (c->phase == PH_HEAD && in_before == 0)
                    begin_close(c);
                else
                    c->close_now = true;
            }
            break;
        }
    }
    c->in_process = false;
}

/* ---------------------------------------------------------------------------------------------
 * Events
 * ------------------------------------------------------------------------------------------- */

static void on_linger_input(h1_conn *c)
{
    char sink[4096];
    for (;;) {
        ssize_t n = recv(c->s.watch.fd, sink, sizeof sink, 0);
        if (n > 0) {
            c->lingered += (size_t)n;
            if (c->lingered < LINGER_MAX_BYTES)
                continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        }
        c->close_now = true;
        schedule(c);
        return;
    }
}

/* Most input held at once: a whole head, plus body bytes in flight. */
static size_t input_limit(const h1_conn *c)
{
    return opt(c, NOOK_OPT_MAX_HEADER_BYTES) + BODY_READ_SLACK;
}

/* Input the transport holds (TLS records already read) that no socket event will announce. */
static bool tls_input_waiting(h1_conn *c)
{
    return !c->peer_eof && c->phase != PH_LINGER && c->s.tr->pending(&c->s) > 0;
}

static void on_input(h1_conn *c)
{
    size_t max_in = input_limit(c);
    int rc = io_stream_read(&c->s, max_in);
    if (rc > 0) {
        /* Body bytes restart the body timeout, but not while the handler holds the body (the
         * pause is its choice, and resuming restarts the timeout) nor while output waits (the
         * write timeout, which only write progress restarts, is the one that applies). */
        if (c->phase == PH_BODY && !c->body_paused && c->timer_kind != T_WRITE)
            set_timer(c, T_BODY, NOOK_OPT_BODY_TIMEOUT);
        process(c);
        if (c->phase == PH_BODY && c->ex && !c->close_after && !c->close_now &&
            body_too_slow(c)) {
            core_log(c->w, NOOK_LOG_INFO, "%.*s: request body below the minimum rate",
                     (int)c->peer_len, c->peer);
            send_error(c, 408);
            schedule(c);
        }
        return;
    }
    if (rc == 0)
        return;
    if (rc == NOOK_ELIMIT) {
        /* Input waits behind a response in progress: stop reading until it is done. */
        io_stream_want_read(&c->s, false);
        return;
    }
    /* EOF (or a reset): stop watching input, which would otherwise report EOF forever.
     * A client that half-closes after its requests still gets the answers to complete ones;
     * a response still being produced is for a client that left: cancel it. */
    c->peer_eof = true;
    io_stream_want_read(&c->s, false);
    if (rc != NOOK_ECLOSED || (c->phase == PH_WAIT && !c->res_ended))
        c->close_now = true;
    schedule(c);
}

static void on_output(h1_conn *c)
{
    if (flush(c) == NOOK_ECLOSED)
        return;
    size_t left = io_buf_size(&c->s.out);
    if (left == 0 && c->close_after && c->phase != PH_LINGER) {
        begin_close(c);
        return;
    }
    if (c->phase == PH_LINGER)
        return;
    schedule(c); /* WRITABLE may be owed, and a paused pipeline may continue */
}

static void on_io(io_watch *w, uint32_t events)
{
    h1_conn *c = from_watch(w);
    if (c->close_now)
        return;
    if (events & EPOLLERR) {
        c->close_now = true;
        schedule(c);
        return;
    }
    if (events & EPOLLOUT)
        on_output(c);
    if (c->close_now)
        return;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) {
        if (c->phase == PH_LINGER)
            on_linger_input(c);
        else
            on_input(c);
        if (!c->close_now && c->s.tr->pending(&c->s) > 0)
            schedule(c);
    }
    if (!c->close_now && (io_buf_size(&c->s.out) > 0 || c->file_fd >= 0))
        flush(c);
}

static void on_timer(io_timer *t)
{
    h1_conn *c = from_timer(t);
    switch (c->timer_kind) {
    case T_SLEEP:
        fall_asleep(c);
        return;
    case T_HEADER:
    case T_BODY:
        core_log(c->w, NOOK_LOG_INFO, "%.*s: request timed out", (int)c->peer_len, c->peer);
        c->timer_kind = T_NONE;
        send_error(c, 408);
        break;
    case T_WRITE:
        core_log(c->w, NOOK_LOG_INFO, "%.*s: write timed out", (int)c->peer_len, c->peer);
        c->close_now = true;
        break;
    default:
        c->close_now = true;
        break;
    }
    schedule(c);
}

static void on_resume(io_defer *d)
{
    h1_conn *c = from_defer(d);
    if (c->close_now) {
        destroy(c);
        return;
    }
    if (c->notify_writable) {
        c->notify_writable = false;
        if (c->phase == PH_WAIT && c->ex && !c->res_ended)
            core_exchange_writable(c->ex);
    }
    /* What is buffered first: reading more into a full buffer would stop input (ELIMIT) with
     * room about to be made. */
    if (c->phase != PH_LINGER)
        process(c);
    if (c->close_now) {
        destroy(c);
        return;
    }
    if (tls_input_waiting(c))
        on_input(c); /* TLS records already read: the socket will not signal them */
    if (c->close_now) {
        destroy(c);
        return;
    }
    if (io_buf_size(&c->s.out) > 0 || c->file_fd >= 0)
        flush(c);
    else if (c->close_after && c->phase != PH_LINGER)
        begin_close(c);
    if (c->close_now) {
        destroy(c);
        return;
    }
    /* Decrypted input that did not fit this time: come back for it, the socket will not. */
    if (tls_input_waiting(c) && io_buf_size(&c->s.in) < input_limit(c))
        schedule(c);
}

static void on_shutdown(core_conn *link, bool graceful)
{
    h1_conn *c = (h1_conn *)link;
    c->stopping = true;
    c->keep_alive = false;
    bool idle = c->phase == PH_HEAD && io_buf_size(&c->s.in) == 0 && io_buf_size(&c->s.out) == 0;
    if (!graceful || idle)
        c->close_now = true;
    schedule(c);
}

static const core_conn_ops h1_conn_ops = {on_shutdown};

void h1_conn_start(core_worker *w, io_stream *from, nook_str peer, int alt_svc_port)
{
    const io_alloc *a = core_worker_alloc(w);
    h1_conn *c = io_malloc(a, sizeof *c);
    if (!c) {
        core_log(w, NOOK_LOG_ERROR, "out of memory for a new connection");
        io_stream_close(from);
        return;
    }
    memset(c, 0, sizeof *c);
    c->w = w;
    c->lim = core_worker_limits(w);
    c->link.ops = &h1_conn_ops;
    c->file_fd = -1;
    c->timer.fn = on_timer;
    c->resume.fn = on_resume;
    c->peer_len = peer.len < sizeof c->peer ? peer.len : sizeof c->peer - 1;
    memcpy(c->peer, peer.ptr, c->peer_len);
    if (alt_svc_port > 0)
        snprintf(c->alt_svc, sizeof c->alt_svc, "h2=\":%d\"", alt_svc_port);
    if (io_stream_move(&c->s, from, on_io) != NOOK_OK) {
        core_log(w, NOOK_LOG_ERROR, "cannot watch a new connection: %s", strerror(errno));
        io_stream_close(&c->s);
        io_free(a, c);
        return;
    }
    core_worker_add_conn(w, &c->link);
    wait_for_request(c);
    if (io_buf_size(&c->s.in) > 0 || c->s.tr->pending(&c->s) > 0)
        schedule(c); /* the front door (or the TLS handshake) already read the first bytes */
}
