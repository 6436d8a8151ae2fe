/*
 * libFuzzer harness for the proxy's parser of HTTP/1.1 upstream response heads and trailer
 * sections (lib/mw/proxy_head.c): the bytes an upstream sends, which the proxy passes on.
 *
 * The input is parsed as a head and as the end of a chunked body. Whatever comes in, every
 * field handed on must lie inside the input, have a token name and a value free of CR, LF and
 * NUL without surrounding whitespace; an accepted head must have a status of 100..999 and
 * unambiguous framing (never both a length and chunked), and its fields must never include
 * one its Connection options name. Any violation traps.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/ascii.h"
#include "mw/proxy.h"

static void require(int ok)
{
    if (!ok)
        __builtin_trap();
}

typedef struct bounds {
    const char *buf;
    size_t len;
    px_conn_tokens conn; /* the head's Connection options, gathered from its fields */
    bool head;
} bounds;

static void check_field(void *ud, const char *name, size_t nlen, const char *value, size_t vlen)
{
    bounds *b = ud;
    require(name >= b->buf && name + nlen <= b->buf + b->len);
    require(value >= b->buf && value + vlen <= b->buf + b->len);
    require(nlen > 0);
    for (size_t i = 0; i < nlen; i++)
        require(io_is_tchar((unsigned char)name[i]));
    for (size_t i = 0; i < vlen; i++)
        require(value[i] != '\r' && value[i] != '\n' && value[i] != '\0');
    require(vlen == 0 || (value[0] != ' ' && value[vlen - 1] != ' '));
    if (b->head)
        require(!px_conn_tokens_has(&b->conn, name, nlen));
}

static void gather_connection(void *ud, const char *name, size_t nlen, const char *value,
                              size_t vlen)
{
    bounds *b = ud;
    if (nlen == 10 && io_caseeq(name, "connection", 10))
        px_conn_tokens_add(&b->conn, value, vlen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly `size` bytes, so that ASan sees any read past the end. */
    char *buf = malloc(size ? size : 1);
    require(buf != NULL);
    memcpy(buf, data, size);
    bounds b = {.buf = buf, .len = size};

    px_h1_head h;
    if (px_h1_parse_head(buf, size, &h) == 0) {
        require(h.status >= 100 && h.status <= 999);
        require(!(h.chunked && h.content_length >= 0));
        require(h.content_length >= -1);
        /* Connection itself is passed to the callback (the proxy drops it as hop-by-hop
         * later), so the options can be gathered on a first pass. */
        px_h1_head_fields(buf, size, gather_connection, &b);
        require(!b.conn.overflow);
        b.head = true;
        px_h1_head_fields(buf, size, check_field, &b);
    }
    b.head = false;
    px_h1_trailer_fields(buf, size, check_field, &b);
    free(buf);
    return 0;
}
