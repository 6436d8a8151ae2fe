/*
 * HTTP/1.1 request parser (RFC 9110 / RFC 9112). Pure: no I/O, no allocation, no globals.
 *
 * Two parts:
 *   h1_parse_request()  the request head (request line + header fields + blank line), and
 *   h1_body_decode()    the body framing (Content-Length or chunked), incrementally.
 *
 * Both are correct when bytes arrive one at a time: the caller keeps appending to its buffer and
 * calls again with the same start and the longer length; the parser remembers how far it has
 * already scanned, so repeated calls cost O(new bytes) for the head scan.
 *
 * Every rejection is a negative HTTP status: the caller answers with that status and closes the
 * connection. The parser never accepts what RFC 9112 says must be rejected, and is strict where the
 * RFC allows leniency that has been used for request smuggling.
 */
#ifndef NOOK_H1_PARSER_H
#define NOOK_H1_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct h1_header {
    const char *name; /* views into the caller's buffer */
    size_t name_len;
    const char *value; /* leading and trailing OWS removed */
    size_t value_len;
} h1_header;

typedef struct h1_limits {
    size_t max_request_line; /* bytes of the request line without CRLF; more → -414 */
    size_t max_header_bytes; /* bytes of the whole head including request line and CRLFs → -431
                              * (counted from the request line: skipped empty lines are not) */
    size_t max_headers;      /* header field count → -431 (also bounded by the caller's array) */
} h1_limits;

typedef struct h1_request_head {
    const char *method; /* views into the caller's buffer */
    size_t method_len;
    const char *target; /* request-target as sent */
    size_t target_len;
    int version_minor;       /* 0 or 1 (HTTP/1.x with x > 1 is reported as 1) */
    h1_header *headers;      /* the caller's array, filled in arrival order */
    size_t nheaders;
    int64_t content_length;  /* -1 when absent */
    bool chunked;            /* Transfer-Encoding: chunked (final coding) */
    bool keep_alive;         /* HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with keep-alive */
    bool expect_continue;    /* "Expect: 100-continue" (HTTP/1.1 only; ignored on 1.0) */
    bool has_host;
} h1_request_head;

/* Head parser state; zero it (or h1_parser_init) before each new request. Holds offsets, never
 * pointers, so the caller's buffer may move between calls as long as its contents do not. */
typedef struct h1_parser {
    size_t scanned;         /* bytes already searched for the end of the head */
    size_t line_start;      /* start of the line being scanned */
    size_t nfields;         /* field lines completed so far (checked against the limits early) */
    size_t head_end;        /* length of the complete head, 0 until its empty line is seen */
    unsigned empty_lines;   /* CRLFs skipped before the request line */
    bool past_request_line; /* the request line's CRLF has been seen */
} h1_parser;

void h1_parser_init(h1_parser *p);

/*
 * Parses a request head that starts at buf[0]. `len` is every byte available so far.
 * Returns:
 *   > 0  the head is complete and `out` is filled; the value is the number of bytes the head
 *        occupied (request line through the empty line), i.e. where the body starts;
 *   0    more bytes are needed (call again with the same buf and a larger len);
 *   < 0  a negative HTTP status: -400 (malformed), -414 (request line too long), -431 (head too
 *        large or too many fields), -501 (a transfer coding this server does not implement),
 *        -505 (HTTP version other than 1.x).
 * `headers` is scratch memory that may be shared between connections: the parser writes it only in
 * the call that returns > 0 and must not rely on its contents across calls.
 * Up to 4 empty lines (CRLF) before the request line are skipped (RFC 9112 §2.2); a 5th is -400.
 * Limits are enforced as bytes arrive: the byte that takes the request line past its limit is
 * -414 at once, the byte that takes the head past max_header_bytes is -431, and so is the end
 * of a field line beyond max_headers or header_cap. A call after a non-zero result, with the same
 * bytes, returns the same result.
 * Rejected as -400 (each has a test): a bare CR or a bare LF anywhere in the head; obs-fold (a line
 * starting with SP/HTAB); whitespace between a field name and the colon; an empty or non-token
 * field name; NUL or other control bytes (except HTAB) in values; a method that is not a token;
 * a request-target with control bytes, spaces or not in origin-form ("/..."), absolute-form
 * ("scheme://authority...", authority not empty) or asterisk-form ("*") — so authority-form
 * (CONNECT) is rejected too; more than one SP between request-line parts; both
 * Content-Length and Transfer-Encoding; Content-Length that is malformed, negative, overflows
 * int64, or appears with different values (in one field as a list, or in several fields);
 * Transfer-Encoding whose final coding is not "chunked", or with "chunked" more than once, or
 * with an empty element or a coding that is not a bare token (parameters included), or any
 * Transfer-Encoding on an HTTP/1.0 request; HTTP/1.1 without Host, several Host fields (any
 * version), or a Host value with bytes outside uri-host[:port] (RFC 9112 §3.2; empty is valid);
 * a malformed HTTP-version ("HTTP/1", "http/1.1", "HTTP/1.1 " with trailing junk).
 * -501: Transfer-Encoding with any coding other than chunked (gzip included: nook decodes
 * none) — checked only after the 400 rules above (so "gzip" alone, whose final coding is not
 * chunked, is 400; "gzip, chunked" and "foo, chunked" are 501).
 * -505: "HTTP/<d>.<d>" whose major is not 1.
 */
int h1_parse_request(h1_parser *p, const char *buf, size_t len, const h1_limits *lim,
                     h1_header *headers, size_t header_cap, h1_request_head *out);

/* Body decoder. */
enum {
    H1_BODY_MORE = 0, /* all input consumed (or none usable): call again with more bytes */
    H1_BODY_DATA = 1, /* *data and *data_len hold body bytes; call again with the rest of the input */
    H1_BODY_DONE = 2  /* body complete (chunked: trailers consumed); *consumed says how far */
};

typedef struct h1_body {
    uint64_t remaining; /* bytes left in the current Content-Length body or chunk */
    uint64_t total;     /* body bytes produced so far */
    size_t trailer_bytes;
    size_t max_trailer_bytes; /* limit for the chunked trailer section (→ -431) */
    int state;                /* internal */
    bool chunked;
    unsigned digits;          /* chunk-size digits seen */
    unsigned ext_len;         /* chunk-extension bytes seen */
} h1_body;

/* Prepares to decode the body that `head` announces (no body when neither Content-Length nor
 * chunked). max_trailer_bytes bounds the chunked trailer section. */
void h1_body_init(h1_body *b, const h1_request_head *head, size_t max_trailer_bytes);

/* True when the body is complete (immediately for a request without a body). */
bool h1_body_done(const h1_body *b);

/*
 * Decodes framing from in[0..len). Sets *consumed to the bytes it used (always, also on error,
 * where it is the offset of the offending byte). Bytes after the end of the body are never used.
 * On H1_BODY_DATA, *data and *data_len is a run of body bytes inside `in` (never empty); the call
 * that delivers the last bytes of a Content-Length body returns H1_BODY_DATA with h1_body_done()
 * now true (a further call returns H1_BODY_DONE and uses nothing). H1_BODY_MORE always means all
 * of `in` was used.
 * Chunked: chunk-size is 1-16 hex digits and at most INT64_MAX (more, or larger → -400); chunk
 * extensions ([BWS] ";name[=value]"...) are skipped but limited to 4096 bytes, counted from the
 * end of the digits to the CR, and may hold no control byte but HTAB (→ -400); CRLF is required
 * after the size line and after the data (bare LF or CR → -400); the trailer section is parsed
 * like header fields and discarded (its field lines with their CRLFs, not the final empty line,
 * count toward max_trailer_bytes → -431; malformed → -400).
 * Returns H1_BODY_MORE, H1_BODY_DATA, H1_BODY_DONE or a negative status (-400, -431).
 */
int h1_body_decode(h1_body *b, const char *in, size_t len, size_t *consumed, const char **data,
                   size_t *data_len);

#endif
