/*
 * libFuzzer harness for the HTTP/1.1 parser: the request head, then the body that head announces.
 *
 * The first input byte only chooses where to split the rest; the rest is the request stream. The
 * stream is parsed three ways, whole, in two pieces split at that point, and one byte at a time,
 * and all three must agree on every result, every view and every body byte. All views must lie
 * inside the input. Any violation traps.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "h1/parser.h"

/* Small limits, so that inputs of a few hundred bytes reach every limit check. */
#define FIELD_CAP 12
#define MAX_TRAILER 256
static const h1_limits limits = {
    .max_request_line = 128, .max_header_bytes = 1024, .max_headers = 14};

/* Everything one way of feeding the input produced, as a flat record that must be identical
 * across the ways: per request the head result, the head's views as offsets, and the body result
 * with where it stopped; the body bytes separately. */
typedef struct outcome {
    size_t *log;
    size_t nlog, log_cap;
    uint8_t *body;
    size_t body_len;
} outcome;

static void require(int ok)
{
    if (!ok)
        __builtin_trap();
}

static void record(outcome *o, size_t v)
{
    require(o->nlog < o->log_cap);
    o->log[o->nlog++] = v;
}

/* Checks that [p, p+n) lies inside [lo, hi) and records it as an offset from lo. */
static void record_view(outcome *o, const void *p, size_t n, const uint8_t *lo, const uint8_t *hi)
{
    const uint8_t *q = p;
    require(q != NULL && q >= lo && q <= hi && n <= (size_t)(hi - q));
    record(o, (size_t)(q - lo));
    record(o, n);
}

static void record_head(outcome *o, const h1_request_head *h, const h1_header *fields,
                        const uint8_t *buf, size_t len)
{
    require(h->method_len > 0 && h->target_len > 0);
    require(h->headers == fields && h->nheaders <= FIELD_CAP);
    require(h->version_minor == 0 || h->version_minor == 1);
    require(h->content_length >= -1 && !(h->chunked && h->content_length >= 0));
    record_view(o, h->method, h->method_len, buf, buf + len);
    record_view(o, h->target, h->target_len, buf, buf + len);
    for (size_t i = 0; i < h->nheaders; i++) {
        require(h->headers[i].name_len > 0);
        record_view(o, h->headers[i].name, h->headers[i].name_len, buf, buf + len);
        record_view(o, h->headers[i].value, h->headers[i].value_len, buf, buf + len);
    }
    record(o, (size_t)h->version_minor);
    record(o, h->nheaders);
    record(o, (size_t)h->content_length);
    record(o, (size_t)h->chunked << 3 | (size_t)h->keep_alive << 2 |
                  (size_t)h->expect_continue << 1 | (size_t)h->has_host);
}

/* How input arrives: `*cut` bytes are available; the next step makes `step` more available. */
static size_t next_cut(size_t cut, size_t step, size_t len)
{
    return len - cut > step ? cut + step : len;
}

/* Decodes the body from *off. Returns the decoder's last result (DONE, MORE or an error). */
static int decode_body(outcome *o, const h1_request_head *head, const uint8_t *buf, size_t len,
                       size_t *off, size_t *cut, size_t step)
{
    h1_body b;
    h1_body_init(&b, head, MAX_TRAILER);
    for (;;) {
        size_t used, n;
        const char *p;
        size_t avail = *cut - *off;
        int rc = h1_body_decode(&b, (const char *)buf + *off, avail, &used, &p, &n);
        require(used <= avail);
        if (rc == H1_BODY_DATA) {
            require(n > 0 && (const uint8_t *)p >= buf + *off &&
                    (const uint8_t *)p + n <= buf + *off + used);
            memcpy(o->body + o->body_len, p, n);
            o->body_len += n;
        } else if (rc == H1_BODY_MORE) {
            require(used == avail && !h1_body_done(&b));
        } else if (rc == H1_BODY_DONE) {
            require(h1_body_done(&b));
        } else {
            require(rc == -400 || rc == -431);
        }
        *off += used;
        if (rc == H1_BODY_MORE && *cut < len)
            *cut = next_cut(*cut, step, len);
        else if (rc != H1_BODY_DATA)
            return rc;
    }
}

/* Parses one request head at off, growing the available bytes as needed. */
static int parse_head(outcome *o, const uint8_t *buf, size_t len, size_t off, size_t *cut,
                      size_t step, h1_request_head *head, h1_header *fields)
{
    h1_parser p;
    h1_parser_init(&p);
    int rc;
    for (;;) {
        rc = h1_parse_request(&p, (const char *)buf + off, *cut - off, &limits, fields, FIELD_CAP,
                              head);
        if (rc != 0 || *cut == len)
            break;
        *cut = next_cut(*cut, step, len);
    }
    require(rc >= 0 || rc == -400 || rc == -414 || rc == -431 || rc == -501 || rc == -505);
    require(rc <= (int)(len - off));
    record(o, (size_t)rc);
    if (rc > 0)
        record_head(o, head, fields, buf, len);
    return rc;
}

/* Runs every pipelined request in buf, with bytes arriving at `first` and then every `step`. */
static void run(const uint8_t *buf, size_t len, size_t first, size_t step, outcome *o)
{
    size_t off = 0, cut = first < len ? first : len;
    for (;;) {
        h1_header fields[FIELD_CAP];
        h1_request_head head;
        int rc = parse_head(o, buf, len, off, &cut, step, &head, fields);
        if (rc <= 0)
            return;
        off += (size_t)rc;
        rc = decode_body(o, &head, buf, len, &off, &cut, step);
        record(o, (size_t)rc);
        record(o, off);
        if (rc != H1_BODY_DONE)
            return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *buf = data + 1; /* ends where libFuzzer's copy ends, so overreads are caught */
    size_t len = size - 1;
    size_t split = (size_t)data[0] * len / 255;

    /* A request takes at least 16 bytes ("X * HTTP/1.0" CRLF CRLF) and logs at most
     * 1 + 4 + 4 * FIELD_CAP + 4 + 2 entries. */
    size_t cap = (len / 16 + 2) * (16 + 4 * FIELD_CAP);
    outcome o[3];
    for (int i = 0; i < 3; i++) {
        o[i] =
            (outcome){.log = malloc(cap * sizeof(size_t)), .log_cap = cap, .body = malloc(len + 1)};
        require(o[i].log != NULL && o[i].body != NULL);
    }
    run(buf, len, len, len, &o[0]);   /* whole */
    run(buf, len, split, len, &o[1]); /* two pieces */
    run(buf, len, 1, 1, &o[2]);       /* one byte at a time */
    for (int i = 1; i < 3; i++) {
        require(o[i].nlog == o[0].nlog &&
                memcmp(o[i].log, o[0].log, o[0].nlog * sizeof(size_t)) == 0);
        require(o[i].body_len == o[0].body_len && memcmp(o[i].body, o[0].body, o[0].body_len) == 0);
    }
    for (int i = 0; i < 3; i++) {
        free(o[i].log);
        free(o[i].body);
    }
    return 0;
}
