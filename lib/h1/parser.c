/*
 * HTTP/1.1 request head parser and body framing decoder (see parser.h for the contract).
 *
 * The head is handled in two steps. A scan, resumable byte by byte, looks only at line structure:
 * it finds the CRLF that ends each line, rejects bare CR/LF, and enforces the size and count limits
 * the moment they are crossed. Once the empty line is found, one linear pass parses the complete
 * head; keeping the grammar out of the scan means it needs no per-token state across calls.
 *
 * The body decoder is a per-byte state machine for chunked framing, so it never has to look ahead
 * and consumes every byte it is given (except after the end of the body).
 */
#include "h1/parser.h"

#include <limits.h>
#include <string.h>

#include "io/ascii.h"

/* RFC 9112 §2.2: a server should skip at least one empty line before a request line, because
 * some clients send an extra CRLF after a body. A few cover that; a stream of them is junk. */
#define MAX_LEADING_EMPTY_LINES 4u
#define MAX_CHUNK_DIGITS 16u
#define MAX_CHUNK_EXT 4096u

/* ---------------------------------------------------------------------------------------------
 * Character classes
 * ------------------------------------------------------------------------------------------- */

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(unsigned char c)
{
    return io_lower(c) >= 'a' && io_lower(c) <= 'z';
}

static bool is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* Control bytes that may not appear in a field value: all CTLs except HTAB (RFC 9110 §5.5). */
static bool is_bad_value_byte(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

/* ---------------------------------------------------------------------------------------------
 * Head scan: line structure and limits, resumable
 * ------------------------------------------------------------------------------------------- */

void h1_parser_init(h1_parser *p)
{
    memset(p, 0, sizeof *p);
}

/* The request line starts after the skipped empty lines, which are exactly one CRLF each. */
static size_t request_line_start(const h1_parser *p)
{
    return 2 * (size_t)p->empty_lines;
}

/* max_header_bytes, lowered if need be so that the head length fits the int return value. */
static size_t head_limit(const h1_limits *lim)
{
    size_t cap = (size_t)INT_MAX - 2 * MAX_LEADING_EMPTY_LINES;
    return lim->max_header_bytes < cap ? lim->max_header_bytes : cap;
}

/* The line that began at p->line_start ends with a CRLF at `cr`. Returns 1 when it is the empty
 * line that closes the head, 0 to go on, or a negative status. On error nothing is changed, so a
 * repeated call gives the same answer. */
static int end_line(h1_parser *p, size_t cr, const h1_limits *lim, size_t header_cap)
{
    bool empty = cr == p->line_start;
    if (!p->past_request_line) {
        if (!empty) {
            p->past_request_line = true;
        } else if (p->empty_lines == MAX_LEADING_EMPTY_LINES) {
            return -400;
        } else {
            p->empty_lines++;
        }
        return 0;
    }
    if (empty)
        return 1;
    if (p->nfields >= lim->max_headers || p->nfields >= header_cap)
        return -431;
    p->nfields++;
    return 0;
}

/* Scans from p->scanned up to len. Returns 1 when the head is complete (p->head_end set), 0 when
 * more bytes are needed, or a negative status. p->scanned stops on a CR that is the last byte
 * available, because only the next byte tells a CRLF from a bare CR. */
static int scan_head(h1_parser *p, const char *buf, size_t len, const h1_limits *lim,
                     size_t header_cap)
{
    size_t max_head = head_limit(lim);
    while (p->scanned < len) {
        size_t i = p->scanned;
        /* The line's ordinary bytes run up to the next CR or LF (memchr is vectorised). */
        const char *cr = memchr(buf + i, '\r', len - i);
        size_t e = cr ? (size_t)(cr - buf) : len;
        const char *lf = memchr(buf + i, '\n', e - i);
        if (lf)
            e = (size_t)(lf - buf);
        /* The first ordinary byte past a limit decides, the request line's limit first. */
        size_t over_line = p->past_request_line ? SIZE_MAX : p->line_start + lim->max_request_line;
        size_t over_head = request_line_start(p) + max_head;
        if (over_line < e || over_head < e)
            return over_line <= over_head ? -414 : -431;
        p->scanned = e;
        if (e == len)
            return 0;
        if (buf[e] == '\n')
            return -400; /* every LF that belongs to a CRLF is consumed with its CR below */
        i = e; /* a CR */
        if (i + 1 - request_line_start(p) > max_head)
            return -431;
        if (i + 1 == len)
            return 0;
        if (buf[i + 1] != '\n')
            return -400;
        if (i + 2 - request_line_start(p) > max_head)
            return -431;
        int rc = end_line(p, i, lim, header_cap);
        if (rc < 0)
            return rc;
        p->scanned = p->line_start = i + 2;
        if (rc > 0) {
            p->head_end = i + 2;
            return 1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Request line
 * ------------------------------------------------------------------------------------------- */

/* absolute-form: scheme ":" "//" authority ..., the scheme as in RFC 3986 §3.1. The authority
 * must not be empty: "http:///x" names no host. */
static bool is_absolute_form(const char *t, size_t n)
{
    size_t i = 0;
    if (!is_alpha((unsigned char)t[0]))
        return false;
    while (i < n && (is_alpha((unsigned char)t[i]) || is_digit((unsigned char)t[i]) ||
                     t[i] == '+' || t[i] == '-' || t[i] == '.'))
        i++;
    if (n - i <= 3 || memcmp(t + i, "://", 3) != 0)
        return false;
    char first = t[i + 3];
    return first != '/' && first != '?' && first != '#';
}

/* origin-form, absolute-form or asterisk-form; no CTL or SP anywhere. authority-form is only for
 * CONNECT, which this server does not implement, so it is rejected like any other shape. */
static bool is_valid_target(const char *t, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)t[i] <= ' ' || t[i] == 0x7f)
            return false;
    if (t[0] == '/')
        return true;
    if (n == 1 && t[0] == '*')
        return true;
    return is_absolute_form(t, n);
}

/* Exactly "HTTP/" DIGIT "." DIGIT (RFC 9112 §2.3), case-sensitive, with nothing after it. */
static int parse_version(const char *v, size_t n, int *minor)
{
    if (n != 8 || memcmp(v, "HTTP/", 5) != 0 || !is_digit((unsigned char)v[5]) || v[6] != '.' ||
        !is_digit((unsigned char)v[7]))
        return -400;
    if (v[5] != '1')
        return -505;
    *minor = v[7] == '0' ? 0 : 1; /* a later 1.x speaks at least 1.1 (RFC 9110 §6.2) */
    return 0;
}

/* method SP request-target SP HTTP-version, with exactly one SP between the parts. The scan has
 * already made sure the line holds no CR or LF. */
static int parse_request_line(const char *s, size_t n, h1_request_head *out)
{
    size_t i = 0;
    while (i < n && io_is_tchar((unsigned char)s[i]))
        i++;
    if (i == 0 || i == n || s[i] != ' ')
        return -400;
    out->method = s;
    out->method_len = i;

    size_t t = ++i;
    while (i < n && s[i] != ' ')
        i++;
    if (i == n || !is_valid_target(s + t, i - t))
        return -400;
    out->target = s + t;
    out->target_len = i - t;

    i++;
    return parse_version(s + i, n - i, &out->version_minor);
}

/* ---------------------------------------------------------------------------------------------
 * Field lines
 * ------------------------------------------------------------------------------------------- */

/* field-name ":" OWS field-value OWS (RFC 9112 §5). A line starting with whitespace is obs-fold,
 * and whitespace before the colon has been used to smuggle names past proxies: both are 400. */
static int parse_field_line(const char *s, size_t n, h1_header *h)
{
    size_t i = 0;
    while (i < n && io_is_tchar((unsigned char)s[i]))
        i++;
    if (i == 0 || i == n || s[i] != ':')
        return -400;
    /* Control bytes other than HTAB, looked up and or-ed together: one test per line. */
    static const unsigned char bad[256] = {
        1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        [0x7f] = 1,
    };
    unsigned char any_bad = 0;
    for (size_t j = i + 1; j < n; j++)
        any_bad |= bad[(unsigned char)s[j]];
    if (any_bad)
        return -400;
    size_t start = i + 1, end = n;
    while (start < end && is_ows((unsigned char)s[start]))
        start++;
    while (end > start && is_ows((unsigned char)s[end - 1]))
        end--;
    *h = (h1_header){.name = s, .name_len = i, .value = s + start, .value_len = end - start};
    return 0;
}

/* Steps through a comma-separated list (RFC 9110 §5.6.1). Yields each element with OWS trimmed,
 * including empty ones, so callers decide whether "a,,b" is acceptable. *pos starts at 0. */
static bool next_element(const char *v, size_t n, size_t *pos, const char **el, size_t *el_len)
{
    if (*pos > n)
        return false;
    const char *comma = memchr(v + *pos, ',', n - *pos);
    size_t end = comma ? (size_t)(comma - v) : n;
    size_t start = *pos;
    while (start < end && is_ows((unsigned char)v[start]))
        start++;
    size_t stop = end;
    while (stop > start && is_ows((unsigned char)v[stop - 1]))
        stop--;
    *el = v + start;
    *el_len = stop - start;
    *pos = end + 1;
    return true;
}

/* Case-insensitive comparison of (s, n) with a string literal; the length is compared first. */
#define token_is(s, n, lit) ((n) == sizeof(lit) - 1 && io_caseeq((s), (lit), sizeof(lit) - 1))

static bool all_tchar(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!io_is_tchar((unsigned char)s[i]))
            return false;
    return n > 0;
}

/* 1*DIGIT that fits int64. No sign, no hex, no inner space. */
static bool parse_decimal(const char *s, size_t n, int64_t *out)
{
    if (n == 0)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit((unsigned char)s[i]))
            return false;
        int d = s[i] - '0';
        if (v > (INT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* What the fields say about framing and the connection. Decisions that depend on several fields
 * (CL with TE, 400 before 501) are taken only once every field has been seen. */
typedef struct head_facts {
    int64_t content_length; /* -1 until a Content-Length field is seen */
    unsigned hosts;
    unsigned te_chunked; /* how many times "chunked" appears across all Transfer-Encoding fields */
    bool te_seen;
    bool te_last_chunked; /* the last coding listed so far is chunked */
    bool te_unknown;      /* some coding other than chunked (none is decoded here) */
    bool conn_close;
    bool conn_keep_alive;
    bool expect_continue;
} head_facts;

/* Every element must be the same number: "5, 5" is a harmless duplicate, "5, 6" is an attack or a
 * broken intermediary, and either way the body length cannot be trusted (RFC 9112 §6.3). */
static int note_content_length(const h1_header *h, head_facts *f)
{
    size_t pos = 0, n;
    const char *el;
    while (next_element(h->value, h->value_len, &pos, &el, &n)) {
        int64_t v;
        if (!parse_decimal(el, n, &v))
            return -400;
        if (f->content_length >= 0 && f->content_length != v)
            return -400;
        f->content_length = v;
    }
    return 0;
}

/* Records the codings in order across fields (several fields form one list, RFC 9110 §5.3).
 * Codings must be bare tokens: parameters are not defined for any coding a request may use. */
static int note_transfer_encoding(const h1_header *h, head_facts *f)
{
    size_t pos = 0, n;
    const char *el;
    while (next_element(h->value, h->value_len, &pos, &el, &n)) {
        if (!all_tchar(el, n))
            return -400;
        bool chunked = token_is(el, n, "chunked");
        f->te_seen = true;
        f->te_chunked += chunked;
        f->te_last_chunked = chunked;
        /* nook decodes no coding but chunked: any other one (gzip included) is one it does not
         * understand, answered 501 (RFC 9112 §6.1) rather than handed on still coded. */
        if (!chunked)
            f->te_unknown = true;
    }
    return 0;
}

/* uri-host [":" port] characters (RFC 3986: unreserved, pct-encoded, sub-delims, IP-literal
 * brackets). Enough to refuse a Host that carries a path, userinfo or whitespace, which
 * RFC 9112 §3.2 requires to be answered with 400. An empty Host is valid. */
static bool is_valid_host(const char *s, size_t n)
{
    /* Letters, digits and "-._~%!$&'()*+,;=:[]", indexed by byte; bytes >= 0x80 are out. */
    static const unsigned char ok[128] = {
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0,
        0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1,
        0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0,
    };
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 128 || !ok[c])
            return false;
    }
    return true;
}

/* Connection and Expect are lists of tokens; unknown or malformed members are ignored. */
static void note_connection(const h1_header *h, head_facts *f)
{
    size_t pos = 0, n;
    const char *el;
    while (next_element(h->value, h->value_len, &pos, &el, &n)) {
        if (token_is(el, n, "close"))
            f->conn_close = true;
        else if (token_is(el, n, "keep-alive"))
            f->conn_keep_alive = true;
    }
}

static void note_expect(const h1_header *h, head_facts *f)
{
    size_t pos = 0, n;
    const char *el;
    while (next_element(h->value, h->value_len, &pos, &el, &n))
        if (token_is(el, n, "100-continue"))
            f->expect_continue = true;
}

static int note_field(const h1_header *h, head_facts *f)
{
    const char *name = h->name;
    size_t n = h->name_len;
    if (token_is(name, n, "content-length"))
        return note_content_length(h, f);
    if (token_is(name, n, "transfer-encoding"))
        return note_transfer_encoding(h, f);
    if (token_is(name, n, "host")) {
        f->hosts++;
        return is_valid_host(h->value, h->value_len) ? 0 : -400;
    }
    if (token_is(name, n, "connection"))
        note_connection(h, f);
    else if (token_is(name, n, "expect"))
        note_expect(h, f);
    return 0;
}

/* Applies the rules that need the whole head. Every 400 is decided before the 501, so an
 * unknown coding never hides a framing error. */
static int judge_head(const head_facts *f, h1_request_head *out)
{
    bool http11 = out->version_minor == 1;
    if (f->hosts > 1 || (http11 && f->hosts == 0))
        return -400;
    if (f->te_seen) {
        /* HTTP/1.0 has no Transfer-Encoding, so a 1.0 hop may have framed this message some
         * other way (RFC 9112 §6.1); CL beside TE is the classic smuggling pair. */
        if (f->content_length >= 0 || !http11 || f->te_chunked != 1 || !f->te_last_chunked)
            return -400;
        if (f->te_unknown)
            return -501;
    }
    out->content_length = f->content_length;
    out->chunked = f->te_seen;
    out->has_host = f->hosts > 0;
    out->keep_alive = http11 ? !f->conn_close : f->conn_keep_alive && !f->conn_close;
    /* RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored. */
    out->expect_continue = http11 && f->expect_continue;
    return 0;
}

/* One linear pass over a complete head in buf[0..end): the scan guarantees that every line ends
 * in CRLF, holds no other CR or LF, and that there are at most header_cap field lines. */
static int parse_head(const h1_parser *p, const char *buf, size_t end, h1_header *headers,
                      h1_request_head *out)
{
    *out = (h1_request_head){.headers = headers};
    size_t at = request_line_start(p);
    const char *cr = memchr(buf + at, '\r', end - at);
    int rc = parse_request_line(buf + at, (size_t)(cr - (buf + at)), out);
    if (rc < 0)
        return rc;

    head_facts f = {.content_length = -1};
    for (at = (size_t)(cr - buf) + 2; at < end - 2; at = (size_t)(cr - buf) + 2) {
        cr = memchr(buf + at, '\r', end - at);
        h1_header *h = &headers[out->nheaders];
        rc = parse_field_line(buf + at, (size_t)(cr - (buf + at)), h);
        if (rc == 0)
            rc = note_field(h, &f);
        if (rc < 0)
            return rc;
        out->nheaders++;
    }
    return judge_head(&f, out);
}

int h1_parse_request(h1_parser *p, const char *buf, size_t len, const h1_limits *lim,
                     h1_header *headers, size_t header_cap, h1_request_head *out)
{
    if (p->head_end == 0) {
        int rc = scan_head(p, buf, len, lim, header_cap);
        if (rc <= 0)
            return rc;
    }
    int rc = parse_head(p, buf, p->head_end, headers, out);
    return rc < 0 ? rc : (int)p->head_end;
}

/* ---------------------------------------------------------------------------------------------
 * Body framing
 * ------------------------------------------------------------------------------------------- */

/* Zero is "done", so a zeroed h1_body is a request without a body. */
enum body_state {
    B_DONE = 0,
    B_LENGTH,  /* Content-Length data */
    B_SIZE,    /* chunk-size hex digits */
    B_SIZE_WS, /* BWS after the size, before ";" */
    B_EXT,     /* chunk extensions, skipped */
    B_SIZE_LF, /* the LF ending the size line */
    B_DATA,    /* chunk data */
    B_DATA_CR, /* the CRLF after chunk data */
    B_DATA_LF,
    B_TR_LINE, /* start of a trailer line, or of the final empty line */
    B_TR_NAME,
    B_TR_VALUE,
    B_TR_LF,     /* the LF ending a trailer line */
    B_TR_END_LF, /* the LF of the empty line ending the body */
};

void h1_body_init(h1_body *b, const h1_request_head *head, size_t max_trailer_bytes)
{
    memset(b, 0, sizeof *b);
    b->max_trailer_bytes = max_trailer_bytes;
    if (head->chunked) {
        b->chunked = true;
        b->state = B_SIZE;
    } else if (head->content_length > 0) {
        b->remaining = (uint64_t)head->content_length;
        b->state = B_LENGTH;
    }
}

bool h1_body_done(const h1_body *b)
{
    return b->state == B_DONE;
}

static int chunk_size_digit(h1_body *b, int v)
{
    if (b->digits == MAX_CHUNK_DIGITS)
        return -400;
    /* Up to 15 digits the value is below 2^60, so the shift cannot lose bits. */
    b->remaining = (b->remaining << 4) | (uint64_t)v;
    b->digits++;
    return b->remaining > (uint64_t)INT64_MAX ? -400 : 0;
}

/* chunk-size [ BWS ";" chunk-ext ] CRLF. Extensions are skipped, but only printable bytes are
 * allowed in them (a stray LF there is a known desync between parsers) and only so many. */
static int size_line_byte(h1_body *b, unsigned char c)
{
    if (b->state == B_SIZE) {
        int v = io_hexval(c);
        if (v >= 0)
            return chunk_size_digit(b, v);
        if (b->digits == 0)
            return -400;
    }
    if (c == '\r' && b->state != B_SIZE_WS) {
        b->state = B_SIZE_LF;
        return 0;
    }
    if (c == ';')
        b->state = B_EXT;
    else if (b->state == B_EXT ? is_bad_value_byte(c) : !is_ows(c))
        return -400;
    else if (b->state == B_SIZE)
        b->state = B_SIZE_WS;
    return ++b->ext_len > MAX_CHUNK_EXT ? -400 : 0;
}

/* Trailer field lines: the same shape as header fields (name ":" value CRLF, no obs-fold, no
 * whitespace before the colon), checked as they stream by and then dropped. */
static int trailer_byte(h1_body *b, unsigned char c)
{
    if (b->state == B_TR_LINE && c == '\r') {
        b->state = B_TR_END_LF;
        return 0;
    }
    if (b->state == B_TR_END_LF) {
        if (c != '\n')
            return -400;
        b->state = B_DONE;
        return 0;
    }
    if (++b->trailer_bytes > b->max_trailer_bytes)
        return -431;
    switch (b->state) {
    case B_TR_LINE:
    case B_TR_NAME:
        if (io_is_tchar(c))
            b->state = B_TR_NAME;
        else if (c == ':' && b->state == B_TR_NAME)
            b->state = B_TR_VALUE;
        else
            return -400;
        return 0;
    case B_TR_VALUE:
        if (c == '\r')
            b->state = B_TR_LF;
        else if (is_bad_value_byte(c))
            return -400;
        return 0;
    default: /* B_TR_LF */
        if (c != '\n')
            return -400;
        b->state = B_TR_LINE;
        return 0;
    }
}

/* One byte of chunked framing (anything but chunk data). */
static int framing_byte(h1_body *b, unsigned char c)
{
    switch (b->state) {
    case B_SIZE:
    case B_SIZE_WS:
    case B_EXT: return size_line_byte(b, c);
    case B_SIZE_LF:
        if (c != '\n')
            return -400;
        b->state = b->remaining == 0 ? B_TR_LINE : B_DATA; /* size 0 is the last chunk */
        return 0;
    case B_DATA_CR:
        if (c != '\r')
            return -400;
        b->state = B_DATA_LF;
        return 0;
    case B_DATA_LF:
        if (c != '\n')
            return -400;
        b->state = B_SIZE;
        b->digits = 0;
        b->ext_len = 0;
        return 0;
    default: return trailer_byte(b, c);
    }
}

int h1_body_decode(h1_body *b, const char *in, size_t len, size_t *consumed, const char **data,
                   size_t *data_len)
{
    *data = NULL;
    *data_len = 0;
    size_t i = 0;
    while (i < len && b->state != B_DONE) {
        if (b->state == B_LENGTH || b->state == B_DATA) {
            size_t run = len - i;
            if (b->remaining < run)
                run = (size_t)b->remaining;
            b->remaining -= run;
            b->total += run;
            if (b->remaining == 0)
                b->state = b->state == B_LENGTH ? B_DONE : B_DATA_CR;
            *data = in + i;
            *data_len = run;
            *consumed = i + run;
            return H1_BODY_DATA;
        }
        int rc = framing_byte(b, (unsigned char)in[i]);
        if (rc < 0) {
            *consumed = i;
            return rc;
        }
        i++;
    }
    *consumed = i;
    return b->state == B_DONE ? H1_BODY_DONE : H1_BODY_MORE;
}
