/*
 * Access log middleware: one line per request, written when the response has ended so that the
 * status, the body bytes and the duration are final. Request text is untrusted: every string is
 * escaped so that a client can neither end a line nor forge fields.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io/ascii.h"
#include "mw/access_log.h"
#include "mw/mw_util.h"

/* Most lines fit here; longer ones (long targets or user agents) use request memory. */
#define LINE_STACK_SIZE 1024

typedef struct access_log {
    mw_conf base;
    nook_access_format format;
    nook_access_sink_fn sink; /* NULL: stderr */
    void *sink_data;
} access_log;

/* ---------------------------------------------------------------------------------------------
 * Formatting
 * ------------------------------------------------------------------------------------------- */

/* A bounded output that keeps counting past its end, so one pass tells the length needed. */
typedef struct line_out {
    char *buf;
    size_t cap, len;
} line_out;

static void put(line_out *o, const char *p, size_t n)
{
    if (o->len < o->cap) {
        size_t room = o->cap - o->len;
        memcpy(o->buf + o->len, p, n < room ? n : room);
    }
    o->len += n;
}

static void put_str(line_out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void put_char(line_out *o, char c)
{
    put(o, &c, 1);
}

static void put_uint(line_out *o, uint64_t v)
{
    char digits[20];
    size_t n = 0;
    do {
        digits[sizeof digits - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(o, digits + sizeof digits - n, n);
}

static void put_int(line_out *o, int64_t v)
{
    if (v < 0) {
        put_char(o, '-');
        put_uint(o, (uint64_t)0 - (uint64_t)v);
        return;
    }
    put_uint(o, (uint64_t)v);
}

/* Exactly `width` digits, zero-padded (for dates). */
static void put_padded(line_out *o, unsigned v, size_t width)
{
    char digits[8];
    for (size_t i = width; i > 0; i--) {
        digits[i - 1] = (char)('0' + v % 10);
        v /= 10;
    }
    put(o, digits, width);
}

static void put_hex_byte(line_out *o, const char *prefix, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    put_str(o, prefix);
    put_char(o, hex[c >> 4]);
    put_char(o, hex[c & 15]);
}

/* Inside a CLF quoted field: quote and backslash escaped, anything but printable ASCII as \xHH
 * (what Apache does), so the field ends where it seems to. */
static void put_clf_escaped(line_out *o, nook_str s)
{
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c == '"' || c == '\\') {
            put_char(o, '\\');
            put_char(o, (char)c);
        } else if (c < 0x20 || c >= 0x7f) {
            put_hex_byte(o, "\\x", c);
        } else {
            put_char(o, (char)c);
        }
    }
}

/* A quoted CLF field; "-" when absent. */
static void put_clf_quoted(line_out *o, nook_str s)
{
    put_char(o, '"');
    if (s.ptr)
        put_clf_escaped(o, s);
    else
        put_char(o, '-');
    put_char(o, '"');
}

/* The length of the well-formed UTF-8 sequence at p (2..4 bytes), or 0 (RFC 3629 §4: no
 * overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t utf8_sequence(const unsigned char *p, size_t avail)
{
    unsigned char lead = p[0], lo = 0x80, hi = 0xbf;
    size_t len;
    if (lead >= 0xc2 && lead <= 0xdf) {
        len = 2;
    } else if (lead >= 0xe0 && lead <= 0xef) {
        len = 3;
        lo = lead == 0xe0 ? 0xa0 : lo;
        hi = lead == 0xed ? 0x9f : hi;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
        len = 4;
        lo = lead == 0xf0 ? 0x90 : lo;
        hi = lead == 0xf4 ? 0x8f : hi;
    } else {
        return 0;
    }
    if (avail < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return len;
}

/* The inside of a JSON string. Bytes that are not UTF-8 become U+FFFD: a log reader must be able
 * to parse every line, and a JSON text is UTF-8 (RFC 8259 §8.1). */
static void put_json_escaped(line_out *o, nook_str s)
{
    const unsigned char *p = (const unsigned char *)s.ptr;
    for (size_t i = 0; i < s.len; i++) {
        if (p[i] == '"' || p[i] == '\\') {
            put_char(o, '\\');
            put_char(o, (char)p[i]);
        } else if (p[i] < 0x20 || p[i] == 0x7f) {
            put_hex_byte(o, "\\u00", p[i]);
        } else if (p[i] < 0x80) {
            put_char(o, (char)p[i]);
        } else {
            size_t n = utf8_sequence(p + i, s.len - i);
            if (n == 0) {
                put_str(o, "\\ufffd");
                continue;
            }
            put(o, (const char *)p + i, n);
            i += n - 1;
        }
    }
}

/* A JSON string, or null when absent. */
static void put_json_string(line_out *o, nook_str s)
{
    if (!s.ptr) {
        put_str(o, "null");
        return;
    }
    put_char(o, '"');
    put_json_escaped(o, s);
    put_char(o, '"');
}

/* The request target as sent: the path, then '?' and the query when there was one. `escape`
 * is the quoting of the surrounding field. */
static void put_target(line_out *o, const mw_access_entry *e, void (*escape)(line_out *, nook_str))
{
    escape(o, e->path);
    if (e->query.ptr) {
        put_char(o, '?');
        escape(o, e->query);
    }
}

/* "[10/Oct/2024:13:55:36 +0000]"; month names by hand, as strftime would follow the locale. */
static void put_clf_time(line_out *o, time_t t)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    put_char(o, '[');
    put_padded(o, (unsigned)tm.tm_mday, 2);
    put_char(o, '/');
    put_str(o, io_month_names[tm.tm_mon % 12]);
    put_char(o, '/');
    put_padded(o, (unsigned)(tm.tm_year + 1900), 4);
    put_char(o, ':');
    put_padded(o, (unsigned)tm.tm_hour, 2);
    put_char(o, ':');
    put_padded(o, (unsigned)tm.tm_min, 2);
    put_char(o, ':');
    put_padded(o, (unsigned)tm.tm_sec, 2);
    put_str(o, " +0000]");
}

/* "2024-10-10T13:55:36Z" (RFC 3339). */
static void put_iso_time(line_out *o, time_t t)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    put_char(o, '"');
    put_padded(o, (unsigned)(tm.tm_year + 1900), 4);
    put_char(o, '-');
    put_padded(o, (unsigned)tm.tm_mon + 1, 2);
    put_char(o, '-');
    put_padded(o, (unsigned)tm.tm_mday, 2);
    put_char(o, 'T');
    put_padded(o, (unsigned)tm.tm_hour, 2);
    put_char(o, ':');
    put_padded(o, (unsigned)tm.tm_min, 2);
    put_char(o, ':');
    put_padded(o, (unsigned)tm.tm_sec, 2);
    put_str(o, "Z\"");
}

static void format_clf(line_out *o, const mw_access_entry *e, bool combined)
{
    put_clf_escaped(o, e->client);
    put_str(o, " - - ");
    put_clf_time(o, e->start);
    put_str(o, " \"");
    put_clf_escaped(o, e->method);
    put_char(o, ' ');
    put_target(o, e, put_clf_escaped);
    put_char(o, ' ');
    put_str(o, e->protocol);
    put_str(o, "\" ");
    put_int(o, e->status);
    put_char(o, ' ');
    put_uint(o, e->bytes);
    if (combined) {
        put_char(o, ' ');
        put_clf_quoted(o, e->referer);
        put_char(o, ' ');
        put_clf_quoted(o, e->user_agent);
    }
}

static void format_json(line_out *o, const mw_access_entry *e)
{
    put_str(o, "{\"time\":");
    put_iso_time(o, e->start);
    put_str(o, ",\"ip\":");
    put_json_string(o, e->client);
    put_str(o, ",\"method\":");
    put_json_string(o, e->method);
    put_str(o, ",\"target\":");
    put_char(o, '"');
    put_target(o, e, put_json_escaped);
    put_char(o, '"');
    put_str(o, ",\"protocol\":");
    put_json_string(o, (nook_str){e->protocol, strlen(e->protocol)});
    put_str(o, ",\"status\":");
    put_int(o, e->status);
    put_str(o, ",\"bytes\":");
    put_uint(o, e->bytes);
    put_str(o, ",\"duration_us\":");
    put_int(o, e->duration_us);
    put_str(o, ",\"referer\":");
    put_json_string(o, e->referer);
    put_str(o, ",\"user_agent\":");
    put_json_string(o, e->user_agent);
    put_char(o, '}');
}

size_t mw_access_format(nook_access_format format, const mw_access_entry *entry, char *out,
                        size_t cap)
{
    line_out o = {out, cap, 0};
    if (format == NOOK_ACCESS_JSON)
        format_json(&o, entry);
    else
        format_clf(&o, entry, format == NOOK_ACCESS_COMBINED);
    return o.len;
}

/* ---------------------------------------------------------------------------------------------
 * The middleware
 * ------------------------------------------------------------------------------------------- */

/* The default sink: the whole line, newline included, in one write so that lines from several
 * threads do not interleave. A failing stderr has nowhere to report to: the line is dropped. */
static void write_stderr_line(const char *line, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, line, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        line += n;
        len -= (size_t)n;
    }
}

static mw_access_entry describe(nook_req *req)
{
    mw_access_entry e;
    e.duration_us = nook_req_elapsed_us(req);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    e.start = now.tv_sec - (time_t)(e.duration_us / 1000000);
    e.client = mw_peer_host(nook_req_peer(req));
    e.method = nook_req_method(req);
    e.path = nook_req_path(req);
    e.query = nook_req_query(req);
    e.protocol = nook_req_protocol(req);
    e.status = nook_res_get_status(req);
    e.bytes = nook_res_bytes_sent(req);
    e.referer = nook_req_header(req, "Referer");
    e.user_agent = nook_req_header(req, "User-Agent");
    return e;
}

/* NOOK_ON_DONE: the response is over, its numbers are final. */
static void log_request(nook_req *req, void *user_data)
{
    const access_log *log = user_data;
    mw_access_entry e = describe(req);
    char stack[LINE_STACK_SIZE];
    char *line = stack;
    /* One byte more than the line, for the newline the stderr sink adds. */
    size_t len = mw_access_format(log->format, &e, stack, sizeof stack - 1);
    if (len >= sizeof stack) {
        line = nook_req_alloc(req, len + 1);
        if (!line)
            return; /* out of memory: this line is lost, the server goes on */
        mw_access_format(log->format, &e, line, len);
    }
    if (log->sink) {
        log->sink(line, len, log->sink_data);
        return;
    }
    line[len] = '\n';
    write_stderr_line(line, len + 1);
}

static void access_log_middleware(nook_req *req, void *user_data)
{
    /* Without its hook the request goes unlogged, but still served: failing it would not log it
     * either. */
    nook_req_on(req, NOOK_ON_DONE, log_request, user_data);
    nook_next(req);
}

int nook_use_access_log(nook_server *srv, const char *prefix, nook_access_format format,
                        nook_access_sink_fn sink, void *user_data)
{
    if (!srv || (format != NOOK_ACCESS_COMMON && format != NOOK_ACCESS_COMBINED &&
                 format != NOOK_ACCESS_JSON))
        return NOOK_EINVAL;
    access_log *log = mw_conf_new(srv, sizeof *log);
    if (!log)
        return NOOK_ENOMEM;
    log->format = format;
    log->sink = sink;
    log->sink_data = user_data;
    int rc = nook_use(srv, prefix, access_log_middleware, log, mw_conf_free);
    if (rc != NOOK_OK)
        mw_conf_free(log);
    return rc;
}
