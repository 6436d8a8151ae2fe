/* Unit tests for the HTTP/1.1 request parser (lib/h1/parser.c): every rejection rule in parser.h,
 * the fields of accepted heads, the limits, and the body decoder. Each input is fed both whole and
 * one byte at a time, and both ways must agree. */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "h1/parser.h"

#define CAP 16
#define ACCEPT INT_MAX /* expected result for a row whose whole input is one valid head */
#define H "Host: h\r\n"
#define POST "POST / HTTP/1.1\r\n" H
#define CL "Content-Length: "
#define TE "Transfer-Encoding: "

static const h1_limits lim_default = {
    .max_request_line = 200, .max_header_bytes = 1024, .max_headers = 8};

/* One parse: the result, the head, and the field array the head points into. Views point into
 * the buffer passed to parse_whole / parse_bytewise. */
typedef struct parsed {
    int rc;
    size_t fed; /* bytes available on the call that returned non-zero */
    h1_request_head head;
    h1_header fields[CAP];
} parsed;

static void parse_whole(const char *buf, size_t len, const h1_limits *lim, size_t cap, parsed *out)
{
    h1_parser p;
    h1_parser_init(&p);
    out->rc = h1_parse_request(&p, buf, len, lim, out->fields, cap, &out->head);
    out->fed = len;
}

static const char *rebase(const char *ptr, const char *from, const char *to)
{
    return ptr ? to + (ptr - from) : NULL;
}

/* Moves every view of a head parsed from `from` onto the identical bytes at `to`. */
static void rebase_head(parsed *out, const char *from, const char *to)
{
    out->head.method = rebase(out->head.method, from, to);
    out->head.target = rebase(out->head.target, from, to);
    for (size_t i = 0; i < out->head.nheaders; i++) {
        out->fields[i].name = rebase(out->fields[i].name, from, to);
        out->fields[i].value = rebase(out->fields[i].value, from, to);
    }
}

/* Feeds one more byte per call, each from a fresh heap copy of exactly the bytes available, so
 * AddressSanitizer reports any read past them. The field array must stay untouched until the call
 * that completes the head (it is scratch shared between connections). */
static void parse_bytewise(const char *buf, size_t len, const h1_limits *lim, size_t cap,
                           parsed *out)
{
    h1_parser p;
    h1_parser_init(&p);
    h1_header pristine[CAP];
    memset(pristine, 0xa5, sizeof pristine);
    memcpy(out->fields, pristine, sizeof pristine);
    out->rc = 0;
    out->fed = 0;
    for (size_t k = 1; k <= len && out->rc == 0; k++) {
        char *copy = malloc(k);
        memcpy(copy, buf, k);
        out->rc = h1_parse_request(&p, copy, k, lim, out->fields, cap, &out->head);
        out->fed = k;
        if (out->rc == 0)
            CHECK(memcmp(out->fields, pristine, sizeof pristine) == 0);
        if (out->rc > 0)
            rebase_head(out, copy, buf);
        free(copy);
    }
}

static bool same_view(const char *a, size_t alen, const char *b, size_t blen)
{
    return a == b && alen == blen;
}

static bool same_head(const h1_request_head *a, const h1_request_head *b)
{
    if (!same_view(a->method, a->method_len, b->method, b->method_len) ||
        !same_view(a->target, a->target_len, b->target, b->target_len) ||
        a->version_minor != b->version_minor || a->nheaders != b->nheaders ||
        a->content_length != b->content_length || a->chunked != b->chunked ||
        a->keep_alive != b->keep_alive || a->expect_continue != b->expect_continue ||
        a->has_host != b->has_host)
        return false;
    for (size_t i = 0; i < a->nheaders; i++)
        if (!same_view(a->headers[i].name, a->headers[i].name_len, b->headers[i].name,
                       b->headers[i].name_len) ||
            !same_view(a->headers[i].value, a->headers[i].value_len, b->headers[i].value,
                       b->headers[i].value_len))
            return false;
    return true;
}

/* Parses whole and byte by byte, checks that both agree, and leaves the whole-buffer result in
 * `out`. Returns the result. */
static int parse_both(const char *buf, size_t len, const h1_limits *lim, size_t cap, parsed *out)
{
    parsed bytewise;
    parse_whole(buf, len, lim, cap, out);
    parse_bytewise(buf, len, lim, cap, &bytewise);
    CHECK_INT(bytewise.rc, out->rc);
    if (out->rc > 0 && bytewise.rc == out->rc)
        CHECK(same_head(&out->head, &bytewise.head));
    return out->rc;
}

/* ---------------------------------------------------------------------------------------------
 * Rejections (and their accepted neighbours), table-driven
 * ------------------------------------------------------------------------------------------- */

typedef struct row {
    const char *name;
    const char *req;
    size_t len;
    int want; /* a negative status, or ACCEPT */
} row;

/* sizeof, not strlen, so rows may contain NUL bytes. One row per line reads best as a table. */
/* clang-format off */
#define ROW(name, req, want) {name, req, sizeof(req) - 1, want}

static const row rows[] = {
    /* line structure */
    ROW("bare CR in request line", "GET /\r HTTP/1.1\r\n" H "\r\n", -400),
    ROW("bare CR ends request line", "GET / HTTP/1.1\r" H "\r\n", -400),
    ROW("CR CR LF", "GET / HTTP/1.1\r\r\n" H "\r\n", -400),
    ROW("bare CR in field value", "GET / HTTP/1.1\r\n" H "X: a\rb\r\n\r\n", -400),
    ROW("bare CR as empty line", "GET / HTTP/1.1\r\n" H "\rX\r\n", -400),
    ROW("bare LF ends request line", "GET / HTTP/1.1\n" H "\r\n", -400),
    ROW("bare LF in request line", "GET /\n HTTP/1.1\r\n" H "\r\n", -400),
    ROW("bare LF ends field line", "GET / HTTP/1.1\r\nHost: h\n\r\n", -400),
    ROW("bare LF in field value", "GET / HTTP/1.1\r\n" H "X: a\nb\r\n\r\n", -400),
    ROW("bare LF as empty line", "GET / HTTP/1.1\r\n" H "\n", -400),
    ROW("bare LF before request line", "\nGET / HTTP/1.1\r\n" H "\r\n", -400),
    ROW("obs-fold with SP", "GET / HTTP/1.1\r\n" H "X: a\r\n b\r\n\r\n", -400),
    ROW("obs-fold with HTAB", "GET / HTTP/1.1\r\n" H "X: a\r\n\tb\r\n\r\n", -400),
    ROW("first field line starts with SP", "GET / HTTP/1.1\r\n Host: h\r\n\r\n", -400),
    ROW("4 leading CRLFs", "\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n" H "\r\n", ACCEPT),
    ROW("5 leading CRLFs", "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n" H "\r\n", -400),

    /* field names */
    ROW("SP before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n", -400),
    ROW("HTAB before colon", "GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", -400),
    ROW("empty field name", "GET / HTTP/1.1\r\n" H ": v\r\n\r\n", -400),
    ROW("non-token name char", "GET / HTTP/1.1\r\n" H "X(y): v\r\n\r\n", -400),
    ROW("SP inside name", "GET / HTTP/1.1\r\n" H "X y: v\r\n\r\n", -400),
    ROW("non-ASCII in name", "GET / HTTP/1.1\r\n" H "X\xc3\xa9: v\r\n\r\n", -400),
    ROW("no colon", "GET / HTTP/1.1\r\n" H "Xv\r\n\r\n", -400),
    ROW("token punctuation in name", "GET / HTTP/1.1\r\n" H "!#$%&'*+-.^_`|~: v\r\n\r\n", ACCEPT),

    /* field values */
    ROW("NUL in value", "GET / HTTP/1.1\r\n" H "X: a\0b\r\n\r\n", -400),
    ROW("SOH in value", "GET / HTTP/1.1\r\n" H "X: a\x01" "b\r\n\r\n", -400),
    ROW("VT in value", "GET / HTTP/1.1\r\n" H "X: a\vb\r\n\r\n", -400),
    ROW("US in value", "GET / HTTP/1.1\r\n" H "X: a\x1f\r\n\r\n", -400),
    ROW("DEL in value", "GET / HTTP/1.1\r\n" H "X: a\x7f\r\n\r\n", -400),
    ROW("control byte in trailing OWS", "GET / HTTP/1.1\r\n" H "X: a \x01\r\n\r\n", -400),
    ROW("HTAB in value", "GET / HTTP/1.1\r\n" H "X: a\tb\r\n\r\n", ACCEPT),
    ROW("obs-text in value", "GET / HTTP/1.1\r\n" H "X: caf\xc3\xa9\r\n\r\n", ACCEPT),
    ROW("empty value", "GET / HTTP/1.1\r\n" H "X:\r\n\r\n", ACCEPT),

    /* method */
    ROW("non-token method", "GE:T / HTTP/1.1\r\n" H "\r\n", -400),
    ROW("NUL in method", "G\0T / HTTP/1.1\r\n" H "\r\n", -400),
    ROW("empty method", " / HTTP/1.1\r\n" H "\r\n", -400),
    ROW("extension method", "M-SEARCH * HTTP/1.1\r\n" H "\r\n", ACCEPT),

    /* request-target */
    ROW("SP inside target", "GET /a b HTTP/1.1\r\n" H "\r\n", -400),
    ROW("control byte in target", "GET /a\x01" "b HTTP/1.1\r\n" H "\r\n", -400),
    ROW("NUL in target", "GET /a\0 HTTP/1.1\r\n" H "\r\n", -400),
    ROW("DEL in target", "GET /a\x7f HTTP/1.1\r\n" H "\r\n", -400),
    ROW("HTAB in target", "GET /a\tb HTTP/1.1\r\n" H "\r\n", -400),
    ROW("relative target", "GET a/b HTTP/1.1\r\n" H "\r\n", -400),
    ROW("authority-form target", "CONNECT h:443 HTTP/1.1\r\n" H "\r\n", -400),
    ROW("scheme without //", "GET http:/x HTTP/1.1\r\n" H "\r\n", -400),
    ROW("absolute-form without host", "GET http:///x HTTP/1.1\r\n" H "\r\n", -400),
    ROW("scheme starting with digit", "GET 1http://h/ HTTP/1.1\r\n" H "\r\n", -400),
    ROW("two asterisks", "OPTIONS ** HTTP/1.1\r\n" H "\r\n", -400),
    ROW("origin-form", "GET /a/b?c=d#e HTTP/1.1\r\n" H "\r\n", ACCEPT),
    ROW("absolute-form", "GET http://h/x HTTP/1.1\r\n" H "\r\n", ACCEPT),
    ROW("absolute-form without path", "GET HTTPS://h:8443 HTTP/1.1\r\n" H "\r\n", ACCEPT),
    ROW("asterisk-form", "OPTIONS * HTTP/1.1\r\n" H "\r\n", ACCEPT),

    /* separators */
    ROW("double SP after method", "GET  / HTTP/1.1\r\n" H "\r\n", -400),
    ROW("double SP before version", "GET /  HTTP/1.1\r\n" H "\r\n", -400),
    ROW("leading SP", " GET / HTTP/1.1\r\n" H "\r\n", -400),
    ROW("HTAB as separator", "GET\t/ HTTP/1.1\r\n" H "\r\n", -400),
    ROW("no version", "GET /\r\n" H "\r\n", -400),

    /* version */
    ROW("HTTP/2.0", "GET / HTTP/2.0\r\n" H "\r\n", -505),
    ROW("HTTP/3.1", "GET / HTTP/3.1\r\n" H "\r\n", -505),
    ROW("HTTP/0.9", "GET / HTTP/0.9\r\n\r\n", -505),
    ROW("HTTP/1", "GET / HTTP/1\r\n" H "\r\n", -400),
    ROW("lower-case http/1.1", "GET / http/1.1\r\n" H "\r\n", -400),
    ROW("HTTP/1.1x", "GET / HTTP/1.1x\r\n" H "\r\n", -400),
    ROW("HTTP/1.1 with trailing SP", "GET / HTTP/1.1 \r\n" H "\r\n", -400),
    ROW("HTTP/11.1", "GET / HTTP/11.1\r\n" H "\r\n", -400),
    ROW("HTTP/1.10", "GET / HTTP/1.10\r\n" H "\r\n", -400),
    ROW("HTTP/1,1", "GET / HTTP/1,1\r\n" H "\r\n", -400),
    ROW("HTTP/x.1", "GET / HTTP/x.1\r\n" H "\r\n", -400),
    ROW("HTTP/1.2", "GET / HTTP/1.2\r\n" H "\r\n", ACCEPT),

    /* Content-Length */
    ROW("CL and TE", POST CL "5\r\n" TE "chunked\r\n\r\n", -400),
    ROW("TE and CL", POST TE "chunked\r\n" CL "5\r\n\r\n", -400),
    ROW("CL abc", POST CL "abc\r\n\r\n", -400),
    ROW("CL -1", POST CL "-1\r\n\r\n", -400),
    ROW("CL +5", POST CL "+5\r\n\r\n", -400),
    ROW("CL 1 2", POST CL "1 2\r\n\r\n", -400),
    ROW("CL 0x10", POST CL "0x10\r\n\r\n", -400),
    ROW("CL empty", "POST / HTTP/1.1\r\n" H "Content-Length:\r\n\r\n", -400),
    ROW("CL OWS only", POST CL " \r\n\r\n", -400),
    ROW("CL 20 digits", POST CL "99999999999999999999\r\n\r\n", -400),
    ROW("CL INT64_MAX+1", POST CL "9223372036854775808\r\n\r\n", -400),
    ROW("CL INT64_MAX", POST CL "9223372036854775807\r\n\r\n", ACCEPT),
    ROW("CL 5 then 6", POST CL "5\r\n" CL "6\r\n\r\n", -400),
    ROW("CL list 5, 6", POST CL "5, 6\r\n\r\n", -400),
    ROW("CL list with empty element", POST CL "5,,5\r\n\r\n", -400),
    ROW("CL list trailing comma", POST CL "5,\r\n\r\n", -400),
    ROW("CL list 5, 5", POST CL "5, 5\r\n\r\n", ACCEPT),
    ROW("CL 5 twice", POST CL "5\r\n" CL "5\r\n\r\n", ACCEPT),

    /* Transfer-Encoding */
    ROW("TE gzip alone", POST TE "gzip\r\n\r\n", -400),
    ROW("TE chunked, chunked", POST TE "chunked, chunked\r\n\r\n", -400),
    ROW("TE chunked in two fields", POST TE "chunked\r\n" TE "chunked\r\n\r\n", -400),
    ROW("TE chunked, gzip", POST TE "chunked, gzip\r\n\r\n", -400),
    ROW("TE chunked then gzip field", POST TE "chunked\r\n" TE "gzip\r\n\r\n", -400),
    ROW("TE empty", "POST / HTTP/1.1\r\n" H "Transfer-Encoding:\r\n\r\n", -400),
    ROW("TE trailing comma", POST TE "chunked,\r\n\r\n", -400),
    ROW("TE with parameter", POST TE "chunked;q=1\r\n\r\n", -400),
    ROW("TE foo, chunked", POST TE "foo, chunked\r\n\r\n", -501),
    ROW("TE foo alone", POST TE "foo\r\n\r\n", -400),
    ROW("TE foo, chunked with CL", POST TE "foo, chunked\r\n" CL "1\r\n\r\n", -400),
    ROW("TE gzip, chunked", POST TE "gzip, chunked\r\n\r\n", -501),
    ROW("TE x-gzip then Chunked field", POST TE "x-gzip\r\n" TE "Chunked\r\n\r\n", -501),
    ROW("TE Chunked alone", POST TE "Chunked\r\n\r\n", ACCEPT),
    ROW("TE on HTTP/1.0", "POST / HTTP/1.0\r\n" TE "chunked\r\n\r\n", -400),

    /* Host */
    ROW("HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX: y\r\n\r\n", -400),
    ROW("two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", -400),
    ROW("two Host fields on HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", -400),
    ROW("Host with SP", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", -400),
    ROW("Host with path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", -400),
    ROW("Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", -400),
    ROW("Host IPv6 with port", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", ACCEPT),
    ROW("empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", ACCEPT),
    ROW("HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", ACCEPT),
};
/* clang-format on */

static void test_rejections(void)
{
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const row *r = &rows[i];
        CHECK_CASE("row \"%s\"", r->name);
        parsed out;
        int rc = parse_both(r->req, r->len, &lim_default, CAP, &out);
        CHECK_INT(rc, r->want == ACCEPT ? (int)r->len : r->want);
    }
    CHECK_CASE("%s", "");
}

/* ---------------------------------------------------------------------------------------------
 * Limits, enforced as the bytes arrive
 * ------------------------------------------------------------------------------------------- */

static const h1_limits lim_small = {
    .max_request_line = 20, .max_header_bytes = 60, .max_headers = 3};

static void test_request_line_limit(void)
{
    parsed out;
    CHECK_CASE("request line of exactly the limit");
    const char ok[] = "GET /aaaaaa HTTP/1.1\r\nHost: h\r\n\r\n"; /* line: 20 bytes */
    CHECK_INT(parse_both(ok, sizeof ok - 1, &lim_small, CAP, &out), (int)sizeof ok - 1);

    CHECK_CASE("request line one byte over");
    const char over[] = "GET /aaaaaaa HTTP/1.1\r\nHost: h\r\n\r\n";
    CHECK_INT(parse_both(over, sizeof over - 1, &lim_small, CAP, &out), -414);

    /* No CRLF ever comes: the 21st byte of the line already decides. */
    CHECK_CASE("request line without end");
    char endless[100];
    memset(endless, 'a', sizeof endless);
    memcpy(endless, "GET /", 5);
    parse_bytewise(endless, sizeof endless, &lim_small, CAP, &out);
    CHECK_INT(out.rc, -414);
    CHECK_INT(out.fed, 21);

    CHECK_CASE("leading CRLFs do not count toward the request line");
    const char lead[] = "\r\n\r\nGET /aaaaaa HTTP/1.1\r\nHost: h\r\n\r\n";
    CHECK_INT(parse_both(lead, sizeof lead - 1, &lim_small, CAP, &out), (int)sizeof lead - 1);
    CHECK_CASE("%s", "");
}

static void test_head_size_limit(void)
{
    parsed out;
    /* 16 + 9 + 33 + 2 = 60 bytes, the limit exactly. */
    CHECK_CASE("head of exactly the limit");
    const char ok[] = "GET / HTTP/1.1\r\nHost: h\r\nX: 0123456789012345678901234567\r\n\r\n";
    CHECK_INT((int)sizeof ok - 1, 60);
    CHECK_INT(parse_both(ok, sizeof ok - 1, &lim_small, CAP, &out), 60);

    /* Only the LF of the final empty line is past the limit. */
    CHECK_CASE("head one byte over");
    const char over[] = "GET / HTTP/1.1\r\nHost: h\r\nX: 01234567890123456789012345678\r\n\r\n";
    CHECK_INT(parse_both(over, sizeof over - 1, &lim_small, CAP, &out), -431);

    /* A field line that never ends is refused when byte 61 arrives, not when a CRLF comes. */
    CHECK_CASE("endless field line");
    char endless[200];
    memset(endless, 'x', sizeof endless);
    memcpy(endless, "GET / HTTP/1.1\r\nHost: h\r\nX: ", 28);
    parse_bytewise(endless, sizeof endless, &lim_small, CAP, &out);
    CHECK_INT(out.rc, -431);
    CHECK_INT(out.fed, 61);

    CHECK_CASE("field line over the limit");
    const char field[] =
        "GET / HTTP/1.1\r\nHost: h\r\nX: 0123456789012345678901234567890123\r\n\r\n";
    CHECK_INT(parse_both(field, sizeof field - 1, &lim_small, CAP, &out), -431);
    CHECK_CASE("%s", "");
}

static void test_field_count_limit(void)
{
    parsed out;
    const char three[] = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
    const char four[] = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    CHECK_CASE("max_headers fields");
    CHECK_INT(parse_both(three, sizeof three - 1, &lim_small, CAP, &out), (int)sizeof three - 1);
    CHECK_INT(out.head.nheaders, 3);
    CHECK_CASE("max_headers + 1 fields");
    CHECK_INT(parse_both(four, sizeof four - 1, &lim_small, CAP, &out), -431);
    CHECK_CASE("more fields than the caller's array");
    CHECK_INT(parse_both(three, sizeof three - 1, &lim_small, 2, &out), -431);

    /* Refused when the extra line ends, before the rest of the head arrives. */
    CHECK_CASE("too many fields, head unfinished");
    const char early[] = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\nD";
    parse_bytewise(early, sizeof early - 1, &lim_small, CAP, &out);
    CHECK_INT(out.rc, -431);
    CHECK_INT(out.fed, sizeof early - 2);

    h1_limits many = lim_default;
    many.max_headers = 100;
    CHECK_CASE("16 fields with a 16-entry array");
    char buf[512];
    int n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 1; i < CAP; i++)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "F%d: %d\r\n", i, i);
    n += snprintf(buf + n, sizeof buf - (size_t)n, "\r\n");
    CHECK_INT(parse_both(buf, (size_t)n, &many, CAP, &out), n);
    CHECK_INT(out.head.nheaders, CAP);
    CHECK_CASE("%s", "");
}

/* ---------------------------------------------------------------------------------------------
 * Accepted requests
 * ------------------------------------------------------------------------------------------- */

/* Parses a head that must be accepted (both ways) and returns it in `out`. */
static bool accept_head(const char *req, parsed *out)
{
    size_t len = strlen(req);
    int rc = parse_both(req, len, &lim_default, CAP, out);
    CHECK_INT(rc, (int)len);
    return rc == (int)len;
}

static void test_views(void)
{
    parsed out;
    CHECK_CASE("views");
    if (!accept_head("GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\n"
                     "user-AGENT: t/1\r\nX-Empty:\r\n\r\n",
                     &out))
        return;
    const h1_request_head *h = &out.head;
    CHECK_STRN(h->method, h->method_len, "GET");
    CHECK_STRN(h->target, h->target_len, "/index.html?q=1");
    CHECK_INT(h->version_minor, 1);
    CHECK(h->headers == out.fields);
    CHECK_INT(h->nheaders, 3);
    CHECK_STRN(h->headers[0].name, h->headers[0].name_len, "Host");
    CHECK_STRN(h->headers[0].value, h->headers[0].value_len, "example.com");
    CHECK_STRN(h->headers[1].name, h->headers[1].name_len, "user-AGENT"); /* as sent */
    CHECK_STRN(h->headers[1].value, h->headers[1].value_len, "t/1");
    CHECK_STRN(h->headers[2].name, h->headers[2].name_len, "X-Empty");
    CHECK_INT(h->headers[2].value_len, 0);
    CHECK_INT(h->content_length, -1);
    CHECK(!h->chunked);
    CHECK(h->keep_alive);
    CHECK(!h->expect_continue);
    CHECK(h->has_host);

    CHECK_CASE("OWS trimmed");
    if (accept_head("GET / HTTP/1.1\r\nhOsT:h\r\nA: \t a \t b \t \r\nB:\t \t\r\n\r\n", &out)) {
        CHECK(out.head.has_host);
        CHECK_STRN(out.fields[0].name, out.fields[0].name_len, "hOsT");
        CHECK_STRN(out.fields[0].value, out.fields[0].value_len, "h");
        CHECK_STRN(out.fields[1].value, out.fields[1].value_len, "a \t b");
        CHECK_INT(out.fields[2].value_len, 0);
    }

    CHECK_CASE("HTTP/1.0 and HTTP/1.2");
    if (accept_head("GET / HTTP/1.0\r\n\r\n", &out)) {
        CHECK_INT(out.head.version_minor, 0);
        CHECK(!out.head.has_host);
        CHECK_INT(out.head.nheaders, 0);
    }
    if (accept_head("GET / HTTP/1.2\r\n" H "\r\n", &out))
        CHECK_INT(out.head.version_minor, 1);
    CHECK_CASE("%s", "");
}

static void test_framing_fields(void)
{
    parsed out;
    static const char *const five[] = {
        "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\n\r\n",
        "POST / HTTP/1.1\r\n" H "Content-Length: 5, 5\r\n\r\n",
        "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\ncontent-length:5\r\n\r\n",
        "POST / HTTP/1.1\r\n" H "Content-Length: 005\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof five / sizeof five[0]; i++) {
        CHECK_CASE("content-length 5, form %zu", i);
        if (accept_head(five[i], &out)) {
            CHECK_INT(out.head.content_length, 5);
            CHECK(!out.head.chunked);
        }
    }
    CHECK_CASE("content-length 0");
    if (accept_head("POST / HTTP/1.1\r\n" H "Content-Length: 0\r\n\r\n", &out))
        CHECK_INT(out.head.content_length, 0);
    CHECK_CASE("Chunked (any case)");
    if (accept_head("POST / HTTP/1.1\r\n" H "Transfer-Encoding: Chunked\r\n\r\n", &out)) {
        CHECK(out.head.chunked);
        CHECK_INT(out.head.content_length, -1);
    }
    CHECK_CASE("%s", "");
}

static void test_keep_alive(void)
{
    static const struct {
        const char *req;
        bool keep_alive;
    } cases[] = {
        {"GET / HTTP/1.1\r\n" H "\r\n", true},
        {"GET / HTTP/1.1\r\n" H "Connection: close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\n" H "Connection: CLOSE\r\n\r\n", false},
        {"GET / HTTP/1.1\r\n" H "Connection: keep-alive, close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\n" H "Connection: keep-alive\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\n" H "Connection: upgrade\r\n\r\n", true},
        {"GET / HTTP/1.1\r\n" H "Connection: closed\r\n\r\n", true},
        {"GET / HTTP/1.0\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
        {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true},
        {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false},
    };
    parsed out;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_CASE("keep-alive case %zu", i);
        if (accept_head(cases[i].req, &out))
            CHECK_INT(out.head.keep_alive, cases[i].keep_alive);
    }
    CHECK_CASE("%s", "");
}

static void test_expect(void)
{
    static const struct {
        const char *req;
        bool expect;
    } cases[] = {
        {"POST / HTTP/1.1\r\n" H "Expect: 100-continue\r\nContent-Length: 1\r\n\r\n", true},
        {"POST / HTTP/1.1\r\n" H "Expect: 100-Continue\r\nContent-Length: 1\r\n\r\n", true},
        {"POST / HTTP/1.1\r\n" H "expect:100-CONTINUE \r\nContent-Length: 1\r\n\r\n", true},
        {"POST / HTTP/1.1\r\n" H "Content-Length: 1\r\n\r\n", false},
        {"POST / HTTP/1.1\r\n" H "Expect: 200-ok\r\nContent-Length: 1\r\n\r\n", false},
        {"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", false},
    };
    parsed out;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_CASE("expect case %zu", i);
        if (accept_head(cases[i].req, &out))
            CHECK_INT(out.head.expect_continue, cases[i].expect);
    }
    CHECK_CASE("%s", "");
}

static void test_leading_crlf_and_pipelining(void)
{
    parsed out;
    CHECK_CASE("leading CRLFs");
    const char lead[] = "\r\n\r\nGET / HTTP/1.1\r\n" H "\r\n";
    if (accept_head(lead, &out))
        CHECK(out.head.method == lead + 4);

    CHECK_CASE("pipelined");
    const char two[] = "POST /a HTTP/1.1\r\n" H "Content-Length: 3\r\n\r\nabc"
                       "GET /b HTTP/1.1\r\n" H "\r\n";
    size_t first_len = strlen("POST /a HTTP/1.1\r\n" H "Content-Length: 3\r\n\r\n");
    int rc = parse_both(two, sizeof two - 1, &lim_default, CAP, &out);
    CHECK_INT(rc, first_len);
    CHECK_STRN(out.head.method, out.head.method_len, "POST");
    CHECK_INT(out.head.content_length, 3);
    if (rc <= 0)
        return;
    /* The body is 3 bytes; the next head starts right after it. */
    const char *next = two + rc + 3;
    size_t rest = sizeof two - 1 - (size_t)rc - 3;
    rc = parse_both(next, rest, &lim_default, CAP, &out);
    CHECK_INT(rc, rest);
    CHECK_STRN(out.head.method, out.head.method_len, "GET");
    CHECK_STRN(out.head.target, out.head.target_len, "/b");

    /* Once complete, calling again with more bytes gives the same head. */
    CHECK_CASE("repeat call after completion");
    h1_parser p;
    h1_parser_init(&p);
    h1_request_head head;
    h1_header fields[CAP];
    CHECK_INT(h1_parse_request(&p, two, first_len, &lim_default, fields, CAP, &head), first_len);
    CHECK_INT(h1_parse_request(&p, two, sizeof two - 1, &lim_default, fields, CAP, &head),
              first_len);
    CHECK_INT(head.content_length, 3);

    CHECK_CASE("need more");
    CHECK_INT(h1_parse_request(&p, two, 0, &lim_default, fields, CAP, &head), first_len);
    h1_parser_init(&p);
    CHECK_INT(h1_parse_request(&p, two, 0, &lim_default, fields, CAP, &head), 0);
    CHECK_INT(h1_parse_request(&p, two, first_len - 1, &lim_default, fields, CAP, &head), 0);
    CHECK_CASE("%s", "");
}

/* ---------------------------------------------------------------------------------------------
 * Body decoder
 * ------------------------------------------------------------------------------------------- */

typedef struct decoded {
    int rc;          /* the last result: DONE, MORE or a negative status */
    size_t used;     /* bytes consumed in total */
    char data[8192]; /* the DATA runs, concatenated */
    size_t data_len;
} decoded;

/* Appends a DATA run, checking it lies inside the window it came from. */
static void take_data(decoded *d, const char *win, size_t used, const char *p, size_t n)
{
    CHECK(n > 0 && p >= win && p + n <= win + used);
    if (d->data_len + n <= sizeof d->data) {
        memcpy(d->data + d->data_len, p, n);
        d->data_len += n;
    }
}

/* Decodes in[0..len) with as many calls as it takes, the whole rest offered each time. */
static void decode_whole(h1_body *b, const char *in, size_t len, decoded *d)
{
    d->used = d->data_len = 0;
    for (;;) {
        size_t used;
        const char *p;
        size_t n;
        d->rc = h1_body_decode(b, in + d->used, len - d->used, &used, &p, &n);
        CHECK(used <= len - d->used);
        if (d->rc == H1_BODY_DATA)
            take_data(d, in + d->used, used, p, n);
        d->used += used;
        if (d->rc != H1_BODY_DATA)
            return;
    }
}

/* Offers one new byte at a time (from an exact-size heap copy of the unconsumed bytes). */
static void decode_bytewise(h1_body *b, const char *in, size_t len, decoded *d)
{
    d->used = d->data_len = 0;
    d->rc = H1_BODY_MORE;
    for (size_t avail = 1; avail <= len && d->rc == H1_BODY_MORE; avail++) {
        do {
            size_t n = avail - d->used, used, dn;
            char *win = malloc(n ? n : 1);
            memcpy(win, in + d->used, n);
            const char *p;
            d->rc = h1_body_decode(b, win, n, &used, &p, &dn);
            CHECK(used <= n);
            if (d->rc == H1_BODY_DATA)
                take_data(d, win, used, p, dn);
            free(win);
            d->used += used;
        } while (d->rc == H1_BODY_DATA);
    }
}

/* The head a body test decodes for. */
static h1_request_head head_for(int64_t content_length, bool chunked)
{
    return (h1_request_head){.content_length = content_length, .chunked = chunked};
}

/* Decodes `in` both ways and checks result, bytes used and data. */
static void check_body(const char *name, h1_request_head head, size_t max_trailer, const char *in,
                       size_t len, int want, size_t want_used, const char *want_data)
{
    decoded whole, bytewise;
    h1_body b;
    CHECK_CASE("body \"%s\", whole", name);
    h1_body_init(&b, &head, max_trailer);
    decode_whole(&b, in, len, &whole);
    CHECK_INT(whole.rc, want);
    CHECK_INT(whole.used, want_used);
    if (want_data)
        CHECK_STRN(whole.data, whole.data_len, want_data);
    CHECK_INT(h1_body_done(&b), want == H1_BODY_DONE);

    CHECK_CASE("body \"%s\", byte by byte", name);
    h1_body_init(&b, &head, max_trailer);
    decode_bytewise(&b, in, len, &bytewise);
    CHECK_INT(bytewise.rc, want);
    CHECK_INT(bytewise.used, want_used);
    if (want_data)
        CHECK_STRN(bytewise.data, bytewise.data_len, want_data);
    CHECK_CASE("%s", "");
}

#define BODY(name, head, req, want, want_used, want_data)                                          \
    check_body(name, head, 64, req, sizeof(req) - 1, want, want_used, want_data)

static void test_body_length(void)
{
    h1_body b;
    const char *p;
    size_t n, used;
    CHECK_CASE("content-length split across calls");
    h1_request_head head = head_for(10, false);
    h1_body_init(&b, &head, 64);
    CHECK(!h1_body_done(&b));
    const char in[] = "0123456789GET";
    CHECK_INT(h1_body_decode(&b, in, 0, &used, &p, &n), H1_BODY_MORE);
    CHECK_INT(used, 0);
    CHECK_INT(h1_body_decode(&b, in, 4, &used, &p, &n), H1_BODY_DATA);
    CHECK_INT(used, 4);
    CHECK_STRN(p, n, "0123");
    CHECK_INT(h1_body_decode(&b, in + 4, sizeof in - 5, &used, &p, &n), H1_BODY_DATA);
    CHECK_INT(used, 6); /* stops at the end of the body: "GET" belongs to the next request */
    CHECK_STRN(p, n, "456789");
    CHECK(h1_body_done(&b));
    CHECK_INT(b.total, 10);
    CHECK_INT(h1_body_decode(&b, in + 10, 3, &used, &p, &n), H1_BODY_DONE);
    CHECK_INT(used, 0);

    CHECK_CASE("content-length 0");
    head = head_for(0, false);
    h1_body_init(&b, &head, 64);
    CHECK(h1_body_done(&b));
    CHECK_INT(h1_body_decode(&b, in, 3, &used, &p, &n), H1_BODY_DONE);
    CHECK_INT(used, 0);

    CHECK_CASE("no body");
    head = head_for(-1, false);
    h1_body_init(&b, &head, 64);
    CHECK(h1_body_done(&b));
    CHECK_CASE("%s", "");

    BODY("length, pipelined", head_for(3, false), "abcGET / HTTP/1.1\r\n", H1_BODY_DONE, 3, "abc");
    BODY("length, short", head_for(5, false), "abc", H1_BODY_MORE, 3, "abc");
}

static void test_body_chunked(void)
{
    const h1_request_head ch = head_for(-1, true);
    BODY("simple", ch, "5\r\nhello\r\n0\r\n\r\n", H1_BODY_DONE, 15, "hello");
    BODY("extensions", ch, "5;a=b;c\r\nhello\r\n6;x=\"q;\"\r\n world\r\n0;end\r\n\r\nGET",
         H1_BODY_DONE, 43, "hello world");
    BODY("BWS before extension", ch, "5 \t;a\r\nhello\r\n0\r\n\r\n", H1_BODY_DONE, 19, "hello");
    BODY("trailers", ch,
         "3\r\nabc\r\nA\r\n0123456789\r\n0\r\nExpires: never\r\nX-T:\t1\r\n\r\nNEXT", H1_BODY_DONE,
         52, "abc0123456789");
    BODY("upper and lower hex", ch, "a\r\n0123456789\r\nB\r\n0123456789a\r\n0\r\n\r\n",
         H1_BODY_DONE, 36, "01234567890123456789a");
    BODY("leading zeros, 16 digits", ch, "0000000000000003\r\nabc\r\n0\r\n\r\n", H1_BODY_DONE, 28,
         "abc");
    BODY("several zeros as last chunk", ch, "000\r\n\r\n", H1_BODY_DONE, 7, "");
    BODY("unfinished", ch, "5\r\nhel", H1_BODY_MORE, 6, "hel");
    BODY("largest size", ch, "7fffffffffffffff\r\nab", H1_BODY_MORE, 20, "ab");

    /* Each error stops at the offending byte; data before it has been delivered. */
    BODY("17 digits", ch, "00000000000000001\r\n", -400, 16, "");
    BODY("size 2^63", ch, "8000000000000000\r\n", -400, 15, "");
    BODY("size 2^64-1", ch, "ffffffffffffffff\r\n", -400, 15, "");
    BODY("bad hex", ch, "g\r\n", -400, 0, "");
    BODY("hex then junk", ch, "5g\r\n", -400, 1, "");
    BODY("0x prefix", ch, "0x5\r\n", -400, 1, "");
    BODY("negative size", ch, "-1\r\n", -400, 0, "");
    BODY("empty size line", ch, "\r\n", -400, 0, "");
    BODY("extension without size", ch, ";a\r\n", -400, 0, "");
    BODY("BWS without extension", ch, "5 \r\nhello\r\n", -400, 2, "");
    BODY("control byte in extension", ch, "5;a\x01\r\n", -400, 3, "");
    BODY("bare LF in extension", ch, "5;a\nhello\r\n0\r\n\r\n", -400, 3, "");
    BODY("bare LF after size", ch, "3\nabc\r\n0\r\n\r\n", -400, 1, "");
    BODY("bare CR after size", ch, "3\rabc\r\n0\r\n\r\n", -400, 2, "");
    BODY("missing CRLF after data", ch, "3\r\nabcd\r\n0\r\n\r\n", -400, 6, "abc");
    BODY("bare LF after data", ch, "3\r\nabc\n0\r\n\r\n", -400, 6, "abc");
    BODY("CR without LF after data", ch, "3\r\nabc\r0\r\n\r\n", -400, 7, "abc");
    BODY("bare LF ending body", ch, "0\r\n\n", -400, 3, "");
    BODY("SP before trailer colon", ch, "0\r\nX : y\r\n\r\n", -400, 4, "");
    BODY("trailer obs-fold", ch, "0\r\nX: y\r\n z\r\n\r\n", -400, 9, "");
    BODY("trailer empty name", ch, "0\r\n: y\r\n\r\n", -400, 3, "");
    BODY("trailer without colon", ch, "0\r\nXy\r\n\r\n", -400, 5, "");
    BODY("trailer NUL in value", ch, "0\r\nX: a\0b\r\n\r\n", -400, 7, "");
    BODY("trailer bare LF", ch, "0\r\nX: y\n\r\n", -400, 7, "");
}

static void test_body_limits(void)
{
    const h1_request_head ch = head_for(-1, true);
    char ext[4200];
    size_t n = 0;
    /* ext_len counts every byte after the digits: ";" plus 4095 bytes is exactly 4096. */
    n += (size_t)sprintf(ext, "1;");
    memset(ext + n, 'e', 4095);
    n += 4095;
    n += (size_t)sprintf(ext + n, "\r\nx\r\n0\r\n\r\n");
    check_body("extension of 4096 bytes", ch, 64, ext, n, H1_BODY_DONE, n, "x");
    n = (size_t)sprintf(ext, "1;");
    memset(ext + n, 'e', 4096);
    n += 4096;
    n += (size_t)sprintf(ext + n, "\r\nx\r\n0\r\n\r\n");
    check_body("extension of 4097 bytes", ch, 64, ext, n, -400, 4097, "");

    /* The trailer limit counts field lines with their CRLFs, not the final empty line. */
    const char at_limit[] = "0\r\nX: 0123456789\r\nY: 01\r\n\r\n"; /* 15 + 7 = 22 */
    check_body("trailers at the limit", ch, 22, at_limit, sizeof at_limit - 1, H1_BODY_DONE,
               sizeof at_limit - 1, "");
    check_body("trailers over the limit", ch, 21, at_limit, sizeof at_limit - 1, -431, 24, "");
    const char endless[] = "0\r\nX: 01234567890123456789012345678901234567890123456789";
    check_body("endless trailer", ch, 32, endless, sizeof endless - 1, -431, 35, "");
}

int main(void)
{
    test_rejections();
    test_request_line_limit();
    test_head_size_limit();
    test_field_count_limit();
    test_views();
    test_framing_fields();
    test_keep_alive();
    test_expect();
    test_leading_crlf_and_pipelining();
    test_body_length();
    test_body_chunked();
    test_body_limits();
    return check_main("h1_parser");
}
