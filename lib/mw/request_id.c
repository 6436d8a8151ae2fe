/*
 * Request id middleware: one id per request, shared by the client and the server's logs. A
 * client (or a proxy in front) that already has an id keeps it; everyone else gets a random one.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "io/ascii.h"
#include "mw/mw_util.h"
#include "nook.h"

#define DEFAULT_HEADER "X-Request-Id"
#define ID_MAX_LEN 128     /* longest incoming id that is kept */
#define ID_RANDOM_BYTES 16 /* a new id: 128 bits, 32 hex digits */
/* getrandom(2) returns up to 256 bytes whole and is not interrupted by signals (once the
 * kernel's generator is ready): one call per 16 ids. */
#define RANDOM_POOL_SIZE 256

/* Random bytes kept per thread, so that workers never contend for them. */
static _Thread_local struct {
    unsigned char bytes[RANDOM_POOL_SIZE];
    size_t used;
} random_pool = {.used = RANDOM_POOL_SIZE};

typedef struct id_answer {
    const char *header;
    const char *id;
} id_answer;

static bool id_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

/* Only ids that are safe to copy into logs and headers are kept. */
static bool well_formed(nook_str id)
{
    if (!id.ptr || id.len == 0 || id.len > ID_MAX_LEN)
        return false;
    for (size_t i = 0; i < id.len; i++)
        if (!id_char((unsigned char)id.ptr[i]))
            return false;
    return true;
}

/* ID_RANDOM_BYTES from this thread's pool; false when the kernel cannot give any. */
static bool take_random(unsigned char *out)
{
    if (random_pool.used + ID_RANDOM_BYTES > RANDOM_POOL_SIZE) {
        ssize_t n;
        do {
            n = getrandom(random_pool.bytes, RANDOM_POOL_SIZE, 0);
        } while (n < 0 && errno == EINTR);
        if (n != RANDOM_POOL_SIZE)
            return false;
        random_pool.used = 0;
    }
    memcpy(out, random_pool.bytes + random_pool.used, ID_RANDOM_BYTES);
    random_pool.used += ID_RANDOM_BYTES;
    return true;
}

/* The id as a C string in request memory: the client's own, or a new one; NULL when neither
 * is possible (out of memory or no randomness). */
static const char *request_id(nook_req *req, const char *header)
{
    static const char hex[] = "0123456789abcdef";
    nook_str incoming = nook_req_header(req, header);
    bool reuse = well_formed(incoming);
    size_t len = reuse ? incoming.len : 2 * ID_RANDOM_BYTES;
    char *id = nook_req_alloc(req, len + 1);
    if (!id)
        return NULL;
    if (reuse) {
        memcpy(id, incoming.ptr, len);
    } else {
        unsigned char random[ID_RANDOM_BYTES];
        if (!take_random(random))
            return NULL;
        for (size_t i = 0; i < ID_RANDOM_BYTES; i++) {
            id[2 * i] = hex[random[i] >> 4];
            id[2 * i + 1] = hex[random[i] & 15];
        }
    }
    id[len] = '\0';
    return id;
}

/* NOOK_ON_HEADERS: the id goes back to the client whoever answered. */
static void echo_id(nook_req *req, void *user_data)
{
    const id_answer *a = user_data;
    nook_res_set_header(req, a->header, a->id);
}

typedef struct id_conf {
    mw_conf base;
    char header[]; /* the response header's name */
} id_conf;

static void request_id_middleware(nook_req *req, void *user_data)
{
    const char *header = ((const id_conf *)user_data)->header;
    const char *id = request_id(req, header);
    id_answer *a = id ? nook_req_alloc(req, sizeof *a) : NULL;
    /* Without an id the request is still served: it only cannot be traced. */
    if (a) {
        *a = (id_answer){header, id};
        nook_req_on(req, NOOK_ON_HEADERS, echo_id, a);
    }
    nook_next(req);
}

int nook_use_request_id(nook_server *srv, const char *prefix, const char *header)
{
    if (!header)
        header = DEFAULT_HEADER;
    if (!srv || !header[0])
        return NOOK_EINVAL;
    for (const char *p = header; *p; p++)
        if (!io_is_tchar((unsigned char)*p))
            return NOOK_EINVAL;
    size_t len = strlen(header);
    id_conf *c = mw_conf_new(srv, sizeof *c + len + 1);
    if (!c)
        return NOOK_ENOMEM;
    memcpy(c->header, header, len + 1);
    int rc = nook_use(srv, prefix, request_id_middleware, c, mw_conf_free);
    if (rc != NOOK_OK)
        mw_conf_free(c);
    return rc;
}
