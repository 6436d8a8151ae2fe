/*
 * Response compression (nook_use_compress): gzip through zlib, and br through Brotli when the
 * library was built with it (NOOK_HAVE_BROTLI).
 *
 * On the way in the middleware only reads Accept-Encoding and leaves two hooks. NOOK_ON_HEADERS
 * decides per response, once the handler has set status and headers, and adds the body filter
 * only to responses it compresses — the others keep their Content-Length. NOOK_ON_DONE frees
 * the encoder, whether the response completed or the client went away.
 *
 * Every piece the handler writes is compressed and flushed (Z_SYNC_FLUSH,
 * BROTLI_OPERATION_FLUSH) before the filter returns, so nothing waits inside the encoder: a
 * stream's events reach the client when they are written, and memory is the encoder's fixed
 * state (level and window are fixed per server) plus one output buffer, passed on each time it
 * fills. A flush costs a few bytes per piece; static files write 64 KiB pieces, where that is
 * noise.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#ifdef NOOK_HAVE_BROTLI
#include <brotli/encode.h>
#endif

#include "io/ascii.h"
#include "mw/mime.h"
#include "mw/mw_util.h"
#include "nook.h"

#define COMPRESS_DEFAULT_LEVEL 6
#define COMPRESS_DEFAULT_MIN_SIZE 256
/* Encoder output is passed on in pieces of at most this many bytes. */
#define COMPRESS_OUT_CHUNK 16384
/* zlib: 15-bit window (32 KiB) plus 16 for a gzip wrapper; memLevel 8 is zlib's default. With
 * these a deflate stream holds about 256 KiB. */
#define COMPRESS_GZIP_WINDOW_BITS (15 + 16)
#define COMPRESS_GZIP_MEM_LEVEL 8
/* zlib counts input in uInt: larger pieces are fed in slices of this size. */
#define COMPRESS_GZIP_SLICE (1u << 30)
/* Brotli: a 64 KiB window and quality at most 5 keep an encoder near 1.8 MiB (measured with
 * 64 KiB flushed pieces); a 256 KiB window costs 2.7 MiB, and quality 9 over 30 MiB per
 * response, which no per-response budget can carry. */
#define COMPRESS_BR_LGWIN 16
#define COMPRESS_BR_MAX_QUALITY 5

typedef enum { CODING_IDENTITY, CODING_GZIP, CODING_BR } coding;

typedef struct compress_conf {
    mw_conf base;
    int level;
    size_t min_size;
} compress_conf;

/* One request's view: what the client accepts, and the encoder once a response needs it. */
typedef struct compress_state {
    const compress_conf *conf;
    coding coding;
    bool head_req;
    bool active; /* the encoder below is initialised */
    z_stream z;
#ifdef NOOK_HAVE_BROTLI
    BrotliEncoderState *br;
#endif
    unsigned char *out; /* COMPRESS_OUT_CHUNK bytes, request memory */
} compress_state;

/* ---------------------------------------------------------------------------------------------
 * Accept-Encoding
 * ------------------------------------------------------------------------------------------- */

#define Q_ABSENT (-1) /* the coding is not named */
#define Q_MAX 1000    /* q-values in thousandths: "1" is 1000, "0.5" is 500 */

/* The q-values a request gives each coding we care about. */
typedef struct accept_q {
    int gzip, br, star, identity;
} accept_q;

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static nook_str trim(const char *p, size_t n)
{
    while (n > 0 && is_ows(*p))
        p++, n--;
    while (n > 0 && is_ows(p[n - 1]))
        n--;
    return (nook_str){p, n};
}

static bool str_caseeq(nook_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && io_caseeq(s.ptr, lit, n);
}

/* qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ) (RFC 9110 §12.4.2); -1 if not. */
static int parse_qvalue(nook_str v)
{
    if (v.len == 0 || (v.ptr[0] != '0' && v.ptr[0] != '1') || v.len > 5 ||
        (v.len > 1 && v.ptr[1] != '.'))
        return -1;
    int q = (v.ptr[0] - '0') * Q_MAX, scale = 100;
    for (size_t i = 2; i < v.len; i++, scale /= 10) {
        if (v.ptr[i] < '0' || v.ptr[i] > '9')
            return -1;
        q += (v.ptr[i] - '0') * scale;
    }
    return q <= Q_MAX ? q : -1;
}

/* The q of one list element "coding;q=0.5;other=x" (1 when not given); -1 if malformed. */
static int element_q(const char *params, size_t n)
{
    while (n > 0) {
        const char *semi = memchr(params, ';', n);
        size_t len = semi ? (size_t)(semi - params) : n;
        nook_str p = trim(params, len);
        if (p.len >= 2 && io_lower((unsigned char)p.ptr[0]) == 'q' && p.ptr[1] == '=')
            return parse_qvalue(trim(p.ptr + 2, p.len - 2));
        params += semi ? len + 1 : len;
        n -= semi ? len + 1 : len;
    }
    return Q_MAX;
}

/* Records a coding's q; a coding named twice keeps its best. */
static void note_q(int *slot, int q)
{
    if (q > *slot)
        *slot = q;
}

static void parse_accept_encoding(nook_str v, accept_q *a)
{
    const char *p = v.ptr, *end = v.ptr + v.len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        size_t len = (size_t)((comma ? comma : end) - p);
        const char *semi = memchr(p, ';', len);
        nook_str name = trim(p, semi ? (size_t)(semi - p) : len);
        int q = semi ? element_q(semi + 1, len - (size_t)(semi - p) - 1) : Q_MAX;
        if (q >= 0) {
            if (str_caseeq(name, "gzip") || str_caseeq(name, "x-gzip"))
                note_q(&a->gzip, q);
            else if (str_caseeq(name, "br"))
                note_q(&a->br, q);
            else if (str_caseeq(name, "*"))
                note_q(&a->star, q);
            else if (str_caseeq(name, "identity"))
                note_q(&a->identity, q);
        }
        p += len + (comma ? 1 : 0);
    }
}

/* A coding's q: as named, else as "*" says, else not acceptable. */
static int q_of(int named, const accept_q *a)
{
    if (named != Q_ABSENT)
        return named;
    return a->star != Q_ABSENT ? a->star : 0;
}

/* The coding to use for this request, from every Accept-Encoding field line. Without any, the
 * client said nothing and gets identity; with nothing acceptable, identity too (see nook.h). */
static coding negotiate(const nook_req *req)
{
    accept_q a = {Q_ABSENT, Q_ABSENT, Q_ABSENT, Q_ABSENT};
    bool seen = false;
    nook_str name, value;
    for (size_t i = 0; nook_req_header_at(req, i, &name, &value) == NOOK_OK; i++) {
        if (str_caseeq(name, "accept-encoding")) {
            parse_accept_encoding(value, &a);
            seen = true;
        }
    }
    if (!seen)
        return CODING_IDENTITY;
    int gzip = q_of(a.gzip, &a), br = 0;
#ifdef NOOK_HAVE_BROTLI
    br = q_of(a.br, &a);
#endif
    int best = br >= gzip ? br : gzip;
    /* identity wins only when the client ranks it explicitly above the best coding. */
    if (best == 0 || a.identity > best)
        return CODING_IDENTITY;
    return br >= gzip ? CODING_BR : CODING_GZIP;
}

/* ---------------------------------------------------------------------------------------------
 * Encoders
 * ------------------------------------------------------------------------------------------- */

/* zlib and brotli allocate through the server's allocator too. */
static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
    return mw_calloc(opaque, items, size);
}

static void z_free(voidpf opaque, voidpf p) { io_free(opaque, p); }

#ifdef NOOK_HAVE_BROTLI
static void *br_alloc(void *opaque, size_t size) { return io_malloc(opaque, size); }
static void br_free(void *opaque, void *p) { io_free(opaque, p); }
#endif

static int start_encoder(nook_req *req, compress_state *st)
{
    st->out = nook_req_alloc(req, COMPRESS_OUT_CHUNK);
    if (!st->out)
        return NOOK_ENOMEM;
    if (st->coding == CODING_GZIP) {
        memset(&st->z, 0, sizeof st->z);
        st->z.zalloc = z_alloc;
        st->z.zfree = z_free;
        st->z.opaque = (voidpf)st->conf->base.alloc;
        if (deflateInit2(&st->z, st->conf->level, Z_DEFLATED, COMPRESS_GZIP_WINDOW_BITS,
                         COMPRESS_GZIP_MEM_LEVEL, Z_DEFAULT_STRATEGY) != Z_OK)
            return NOOK_ENOMEM;
        st->active = true;
        return NOOK_OK;
    }
#ifdef NOOK_HAVE_BROTLI
    st->br = BrotliEncoderCreateInstance(br_alloc, br_free, (void *)st->conf->base.alloc);
    if (!st->br)
        return NOOK_ENOMEM;
    int q = st->conf->level < COMPRESS_BR_MAX_QUALITY ? st->conf->level : COMPRESS_BR_MAX_QUALITY;
    BrotliEncoderSetParameter(st->br, BROTLI_PARAM_QUALITY, (uint32_t)q);
    BrotliEncoderSetParameter(st->br, BROTLI_PARAM_LGWIN, COMPRESS_BR_LGWIN);
    st->active = true;
    return NOOK_OK;
#else
    return NOOK_EINVAL; /* negotiate() never picks br without Brotli */
#endif
}

static void stop_encoder(nook_req *req, void *ud)
{
    (void)req;
    compress_state *st = ud;
    if (!st->active)
        return;
    st->active = false;
    if (st->coding == CODING_GZIP)
        deflateEnd(&st->z);
#ifdef NOOK_HAVE_BROTLI
    else
        BrotliEncoderDestroyInstance(st->br);
#endif
}

/* Passes on what the encoder produced; remembers NOOK_AGAIN in *worst. */
static int pass_out(nook_req *req, compress_state *st, size_t n, int *worst)
{
    if (n == 0)
        return NOOK_OK;
    int rc = nook_filter_pass(req, st->out, n, 0);
    if (rc == NOOK_AGAIN)
        *worst = NOOK_AGAIN;
    return rc < 0 ? rc : NOOK_OK;
}

/* Runs deflate over one slice until it has taken all input and, for a flush, emitted all
 * output (zlib says so by leaving output space unused). */
static int gzip_slice(nook_req *req, compress_state *st, const unsigned char *p, unsigned n,
                      int flush, int *worst)
{
    z_stream *z = &st->z;
    z->next_in = (Bytef *)p; /* zlib reads next_in; it is not const only for old APIs */
    z->avail_in = n;
    for (;;) {
        z->next_out = st->out;
        z->avail_out = COMPRESS_OUT_CHUNK;
        int zr = deflate(z, flush);
        if (zr == Z_STREAM_ERROR)
            return NOOK_EINVAL;
        int rc = pass_out(req, st, COMPRESS_OUT_CHUNK - z->avail_out, worst);
        if (rc < 0)
            return rc;
        if (flush == Z_FINISH ? zr == Z_STREAM_END : z->avail_in == 0 && z->avail_out != 0)
            return NOOK_OK;
    }
}

static int gzip_piece(nook_req *req, compress_state *st, const unsigned char *p, size_t n, bool end,
                      int *worst)
{
    while (n > COMPRESS_GZIP_SLICE) {
        int rc = gzip_slice(req, st, p, COMPRESS_GZIP_SLICE, Z_NO_FLUSH, worst);
        if (rc < 0)
            return rc;
        p += COMPRESS_GZIP_SLICE;
        n -= COMPRESS_GZIP_SLICE;
    }
    return gzip_slice(req, st, p, (unsigned)n, end ? Z_FINISH : Z_SYNC_FLUSH, worst);
}

#ifdef NOOK_HAVE_BROTLI
/* Runs the encoder until it has taken all input and has nothing left to give for this flush
 * (or, at the end, has finished the stream). */
static int br_piece(nook_req *req, compress_state *st, const unsigned char *p, size_t n, bool end,
                    int *worst)
{
    BrotliEncoderOperation op = end ? BROTLI_OPERATION_FINISH : BROTLI_OPERATION_FLUSH;
    for (;;) {
        uint8_t *out = st->out;
        size_t avail_out = COMPRESS_OUT_CHUNK;
        if (!BrotliEncoderCompressStream(st->br, op, &n, &p, &avail_out, &out, NULL))
            return NOOK_ENOMEM;
        int rc = pass_out(req, st, COMPRESS_OUT_CHUNK - avail_out, worst);
        if (rc < 0)
            return rc;
        if (n == 0 && !BrotliEncoderHasMoreOutput(st->br) &&
            (!end || BrotliEncoderIsFinished(st->br)))
            return NOOK_OK;
    }
}
#endif

static int compress_filter(nook_req *req, const void *data, size_t len, int end, void *ud)
{
    compress_state *st = ud;
    if (len == 0 && !end)
        return NOOK_OK;
    int worst = NOOK_OK, rc;
#ifdef NOOK_HAVE_BROTLI
    if (st->coding == CODING_BR)
        rc = br_piece(req, st, data, len, end, &worst);
    else
#endif
        rc = gzip_piece(req, st, data, len, end, &worst);
    if (rc < 0)
        return rc;
    if (end)
        return nook_filter_pass(req, NULL, 0, 1);
    return worst;
}

/* ---------------------------------------------------------------------------------------------
 * The decision, per response
 * ------------------------------------------------------------------------------------------- */

/* Whether a comma-separated header value has `token` as an element name (before any '='). */
static bool has_token(nook_str list, const char *token)
{
    const char *p = list.ptr, *end = list.ptr + list.len;
    while (p && p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        size_t len = (size_t)((comma ? comma : end) - p);
        const char *eq = memchr(p, '=', len);
        if (str_caseeq(trim(p, eq ? (size_t)(eq - p) : len), token))
            return true;
        p += len + 1;
    }
    return false;
}

/* A Content-Length value, or -1 when absent or not a plain number. */
static int64_t content_length(nook_str v)
{
    if (!v.ptr || v.len == 0 || v.len > 18)
        return -1;
    int64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.ptr[i] < '0' || v.ptr[i] > '9')
            return -1;
        n = n * 10 + (v.ptr[i] - '0');
    }
    return n;
}

/* Caches must key this response on Accept-Encoding. Vary may be spread over several field
 * lines and only the first is visible here, so an extra line is added rather than the first
 * rewritten (which would drop the others). */
static int add_vary(nook_req *req)
{
    nook_str vary = nook_res_get_header(req, "Vary");
    if (has_token(vary, "*") || has_token(vary, "accept-encoding"))
        return NOOK_OK;
    return nook_res_header(req, "Vary", "Accept-Encoding");
}

/* Whether the response may be compressed at all (RFC 9110 §8.4, RFC 9111 §5.2.2.6). */
static bool transformable(const nook_req *req)
{
    int status = nook_res_get_status(req);
    if (status < 200 || status == 204 || status == 206 || status == 304)
        return false;
    return !nook_res_get_header(req, "Content-Encoding").ptr &&
           !has_token(nook_res_get_header(req, "Cache-Control"), "no-transform") &&
           mw_mime_compressible(nook_res_get_header(req, "Content-Type"));
}

/* The compressed body is another representation: a strong tag would promise byte equality
 * with the identity one, so it becomes weak (If-None-Match still matches it). */
static void weaken_etag(nook_req *req)
{
    nook_str etag = nook_res_get_header(req, "ETag");
    if (!etag.ptr || etag.len == 0 || etag.ptr[0] != '"')
        return;
    char *weak = nook_req_alloc(req, etag.len + 3);
    if (!weak)
        return;
    memcpy(weak, "W/", 2);
    memcpy(weak + 2, etag.ptr, etag.len);
    weak[etag.len + 2] = '\0';
    nook_res_set_header(req, "ETag", weak);
}

static void decide(nook_req *req, void *ud)
{
    compress_state *st = ud;
    if (!transformable(req) || add_vary(req) != NOOK_OK)
        return;
    if (st->head_req || st->coding == CODING_IDENTITY)
        return;
    int64_t len = content_length(nook_res_get_header(req, "Content-Length"));
    if (len >= 0 && (uint64_t)len < st->conf->min_size)
        return;
    if (start_encoder(req, st) != NOOK_OK)
        return; /* the response still goes out, uncompressed */
    const char *name = st->coding == CODING_BR ? "br" : "gzip";
    if (nook_res_set_header(req, "Content-Encoding", name) != NOOK_OK)
        return;
    if (nook_req_filter(req, compress_filter, st) != NOOK_OK) {
        nook_res_set_header(req, "Content-Encoding", NULL);
        return;
    }
    /* Lengths and byte ranges described the identity body. */
    nook_res_set_header(req, "Content-Length", NULL);
    nook_res_set_header(req, "Accept-Ranges", NULL);
    weaken_etag(req);
}

static void compress_mw(nook_req *req, void *ud)
{
    compress_state *st = nook_req_alloc(req, sizeof *st);
    /* Compression is an optimisation: without memory for it, the request goes on without. */
    if (st) {
        memset(st, 0, sizeof *st);
        st->conf = ud;
        st->coding = negotiate(req);
        nook_str m = nook_req_method(req);
        st->head_req = m.len == 4 && memcmp(m.ptr, "HEAD", 4) == 0;
        /* DONE first: HEADERS may create the encoder only if DONE will free it. */
        if (nook_req_on(req, NOOK_ON_DONE, stop_encoder, st) == NOOK_OK)
            nook_req_on(req, NOOK_ON_HEADERS, decide, st);
    }
    nook_next(req);
}

int nook_use_compress(nook_server *srv, const char *prefix, int level, size_t min_size)
{
    if (!srv || level < 0 || level > 9 || (prefix && prefix[0] != '/'))
        return NOOK_EINVAL;
    compress_conf *c = mw_conf_new(srv, sizeof *c);
    if (!c)
        return NOOK_ENOMEM;
    c->level = level ? level : COMPRESS_DEFAULT_LEVEL;
    c->min_size = min_size ? min_size : COMPRESS_DEFAULT_MIN_SIZE;
    int rc = nook_use(srv, prefix, compress_mw, c, mw_conf_free);
    if (rc != NOOK_OK)
        mw_conf_free(c);
    return rc;
}
