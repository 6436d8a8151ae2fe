/*
 * HTTP/1.1 upstream response heads and the trailer sections of chunked upstream responses,
 * parsed without I/O for proxy_h1.c (and for tests/unit/test_proxy_head.c and
 * tests/fuzz/fuzz_proxy_head.c). What is parsed here goes on to clients, maybe over HTTP/2,
 * so the parser is strict: a head whose framing is ambiguous, or with a field that cannot be
 * passed on as it is, is refused (the client gets 502) rather than guessed at.
 */
#include "mw/proxy.h"

/* The next line of buf[*pos..len) without its CRLF (or bare LF); false when no complete line
 * is left. */
static bool next_line(const char *buf, size_t len, size_t *pos, const char **line, size_t *n)
{
    if (*pos >= len)
        return false;
    const char *p = buf + *pos;
    const char *lf = memchr(p, '\n', len - *pos);
    if (!lf)
        return false;
    size_t l = (size_t)(lf - p);
    if (l > 0 && p[l - 1] == '\r')
        l--;
    *line = p;
    *n = l;
    *pos = (size_t)(lf - buf) + 1;
    return true;
}

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* "name: value": the name a token (no whitespace before the colon, no obs-fold), the value
 * without surrounding whitespace and free of control characters other than HTAB. */
static bool split_field(const char *p, size_t n, const char **name, size_t *nlen,
                        const char **value, size_t *vlen)
{
    const char *colon = memchr(p, ':', n);
    if (!colon || colon == p)
        return false;
    for (const char *q = p; q < colon; q++)
        if (!io_is_tchar((unsigned char)*q))
            return false;
    const char *v = colon + 1, *ve = p + n;
    while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
    for (const char *q = v; q < ve; q++) {
        unsigned char ch = (unsigned char)*q;
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return false;
    }
    *name = p;
    *nlen = (size_t)(colon - p);
    *value = v;
    *vlen = (size_t)(ve - v);
    return true;
}

/* Calls fn(ud, item, n) for each non-empty item of a comma-separated list, trimmed; stops and
 * returns false when fn does. */
static bool each_item(const char *v, size_t vlen, bool (*fn)(void *, const char *, size_t),
                      void *ud)
{
    const char *p = v, *end = v + vlen;
    while (p < end) {
        const char *item = p;
        while (p < end && *p != ',')
            p++;
        const char *ie = p;
        while (item < ie && (*item == ' ' || *item == '\t'))
            item++;
        while (ie > item && (ie[-1] == ' ' || ie[-1] == '\t'))
            ie--;
        if (ie > item && !fn(ud, item, (size_t)(ie - item)))
            return false;
        if (p < end)
            p++; /* the comma */
    }
    return true;
}

/* Content-Length: one value, or a list of the same value ("42, 42", RFC 9110 §8.6); every
 * field carrying it must agree. */
static bool length_item(void *ud, const char *p, size_t n)
{
    int64_t *clen = ud, x = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(p[i]) || x > (INT64_MAX - 9) / 10)
            return false;
        x = x * 10 + (p[i] - '0');
    }
    if (*clen >= 0 && *clen != x)
        return false;
    *clen = x;
    return true;
}

/* Transfer-Encoding: only "chunked", once. Another coding could not be passed on (the proxy
 * decodes the framing and re-frames for the client). */
static bool coding_item(void *ud, const char *p, size_t n)
{
    int *chunked = ud;
    if (n != 7 || !io_caseeq(p, "chunked", 7))
        return false;
    return ++*chunked == 1;
}

static void connection_tokens(const char *buf, size_t len, size_t pos, px_conn_tokens *t)
{
    const char *line, *name, *value;
    size_t n, nlen, vlen;
    t->n = 0;
    t->overflow = false;
    while (next_line(buf, len, &pos, &line, &n) && n > 0)
        if (split_field(line, n, &name, &nlen, &value, &vlen) &&
            px_name_is(name, nlen, "connection"))
            px_conn_tokens_add(t, value, vlen);
}

/* The status line: "HTTP/1.x SP 3DIGIT [SP reason]"; the offset of the fields, or 0. */
static size_t status_line(const char *buf, size_t len, px_h1_head *h, bool *http11)
{
    size_t pos = 0, n;
    const char *line;
    if (!next_line(buf, len, &pos, &line, &n) || n < 12 || memcmp(line, "HTTP/1.", 7) != 0 ||
        (line[7] != '0' && line[7] != '1') || line[8] != ' ' || (n > 12 && line[12] != ' '))
        return 0;
    int status = 0;
    for (int i = 9; i < 12; i++) {
        if (!is_digit(line[i]))
            return 0;
        status = status * 10 + (line[i] - '0');
    }
    if (status < 100)
        return 0;
    h->status = status;
    *http11 = line[7] == '1';
    return pos;
}

int px_h1_parse_head(const char *buf, size_t len, px_h1_head *h)
{
    bool http11 = false;
    memset(h, 0, sizeof *h);
    h->content_length = -1;
    size_t pos = status_line(buf, len, h, &http11);
    if (pos == 0)
        return -1;
    size_t fields = pos, n, nlen, vlen;
    const char *line, *name, *value;
    int chunked = 0;
    bool has_te = false, ended = false;
    while (next_line(buf, len, &pos, &line, &n)) {
        if (n == 0) {
            ended = true;
            break;
        }
        if (!split_field(line, n, &name, &nlen, &value, &vlen))
            return -1;
        if (px_name_is(name, nlen, "content-length")) {
            if (vlen == 0 || !each_item(value, vlen, length_item, &h->content_length))
                return -1;
        } else if (px_name_is(name, nlen, "transfer-encoding")) {
            has_te = true;
            if (!each_item(value, vlen, coding_item, &chunked))
                return -1;
        }
    }
    if (!ended || (has_te && chunked != 1) || (has_te && h->content_length >= 0))
        return -1;
    h->chunked = chunked == 1;
    px_conn_tokens t;
    connection_tokens(buf, len, fields, &t);
    if (t.overflow)
        return -1;
    h->keep_alive =
        !px_conn_tokens_has(&t, "close", 5) && (http11 || px_conn_tokens_has(&t, "keep-alive", 10));
    return 0;
}

void px_h1_head_fields(const char *buf, size_t len, px_field_fn *fn, void *ud)
{
    size_t pos = 0, n, nlen, vlen;
    const char *line, *name, *value;
    if (!next_line(buf, len, &pos, &line, &n))
        return;
    px_conn_tokens t;
    connection_tokens(buf, len, pos, &t);
    while (next_line(buf, len, &pos, &line, &n) && n > 0)
        if (split_field(line, n, &name, &nlen, &value, &vlen) &&
            !px_conn_tokens_has(&t, name, nlen))
            fn(ud, name, nlen, value, vlen);
}

void px_h1_trailer_fields(const char *buf, size_t len, px_field_fn *fn, void *ud)
{
    size_t pos = 0, n, nlen, vlen;
    const char *line, *name, *value;
    bool size_line_seen = false;
    while (next_line(buf, len, &pos, &line, &n)) {
        if (n == 0) {
            if (size_line_seen)
                return; /* the empty line that ends the section */
        } else if (!size_line_seen) {
            size_line_seen = true; /* "0[;ext]" */
        } else if (split_field(line, n, &name, &nlen, &value, &vlen)) {
            fn(ud, name, nlen, value, vlen);
        }
    }
}
