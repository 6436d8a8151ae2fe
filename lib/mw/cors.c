/*
 * CORS middleware (Fetch standard, "CORS protocol"): tells browsers which other origins may read
 * responses, and answers their preflight requests itself so those never reach the application.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/ascii.h"
#include "mw/mw_util.h"
#include "nook.h"

#define DEFAULT_METHODS "GET, HEAD, POST"

typedef struct cors {
    mw_conf base;
    bool any_origin;   /* origins was "*" */
    bool credentials;  /* send Access-Control-Allow-Credentials, never "*" */
    char *origin_text; /* the copied list; `origins` points into it */
    nook_str *origins;
    size_t norigins;
    char *methods;
    char *headers;    /* NULL: no Access-Control-Allow-Headers */
    char max_age[16]; /* "" when not sent */
} cors;

/* What the way-out hook needs to know about one request. */
typedef struct cors_answer {
    const cors *cfg;
    const char *allow_origin; /* the Access-Control-Allow-Origin value; NULL: not allowed */
} cors_answer;

/* ---------------------------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------------------------- */

static void cors_free(void *user_data)
{
    cors *c = user_data;
    if (!c)
        return;
    const io_alloc *a = c->base.alloc;
    io_free(a, c->origin_text);
    io_free(a, c->origins);
    io_free(a, c->methods);
    io_free(a, c->headers);
    mw_conf_free(c);
}

/* Header values must not let configuration text end the field or the head. */
static bool printable(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static nook_str trim(const char *p, const char *end)
{
    while (p < end && is_ows(*p))
        p++;
    while (end > p && is_ows(end[-1]))
        end--;
    return (nook_str){p, (size_t)(end - p)};
}

/* Splits the comma-separated origin list into views of c->origin_text. */
static int parse_origins(cors *c)
{
    size_t count = 1;
    for (const char *p = c->origin_text; *p; p++)
        count += *p == ',';
    c->origins = mw_calloc(c->base.alloc, count, sizeof *c->origins);
    if (!c->origins)
        return NOOK_ENOMEM;
    const char *p = c->origin_text;
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        nook_str item = trim(p, end);
        if (item.len == 0 || (item.len == 1 && item.ptr[0] == '*'))
            return NOOK_EINVAL; /* "*" only stands alone */
        c->origins[c->norigins++] = item;
        if (!comma)
            return NOOK_OK;
        p = comma + 1;
    }
}

static char *copy_or_null(const io_alloc *a, const char *s, int *rc)
{
    if (!s)
        return NULL;
    char *copy = mw_strdup(a, s);
    if (!copy)
        *rc = NOOK_ENOMEM;
    return copy;
}

static int configure(cors *c, const char *origins, const char *methods, const char *headers,
                     int max_age_seconds)
{
    int rc = NOOK_OK;
    c->methods = copy_or_null(c->base.alloc, methods ? methods : DEFAULT_METHODS, &rc);
    c->headers = copy_or_null(c->base.alloc, headers, &rc);
    if (rc != NOOK_OK)
        return rc;
    if (max_age_seconds > 0)
        snprintf(c->max_age, sizeof c->max_age, "%d", max_age_seconds);
    nook_str all = trim(origins, origins + strlen(origins));
    if (all.len == 1 && all.ptr[0] == '*') {
        c->any_origin = true;
        return NOOK_OK;
    }
    c->origin_text = copy_or_null(c->base.alloc, origins, &rc);
    return rc == NOOK_OK ? parse_origins(c) : rc;
}

/* ---------------------------------------------------------------------------------------------
 * Per request
 * ------------------------------------------------------------------------------------------- */

static bool origin_listed(const cors *c, nook_str origin)
{
    for (size_t i = 0; i < c->norigins; i++)
        if (c->origins[i].len == origin.len &&
            memcmp(c->origins[i].ptr, origin.ptr, origin.len) == 0)
            return true;
    return false;
}

/* The Access-Control-Allow-Origin value for this request, or NULL when its origin is not
 * allowed (or it sent none). An echoed origin is copied to request memory to end it with a NUL. */
static const char *allowed_origin(nook_req *req, const cors *c)
{
    nook_str origin = nook_req_header(req, "Origin");
    if (!origin.ptr)
        return NULL;
    if (c->any_origin && !c->credentials)
        return "*"; /* with credentials, browsers refuse "*": echo the origin instead */
    if (!c->any_origin && !origin_listed(c, origin))
        return NULL;
    char *copy = nook_req_alloc(req, origin.len + 1);
    if (!copy)
        return NULL;
    memcpy(copy, origin.ptr, origin.len);
    copy[origin.len] = '\0';
    return copy;
}

/* Whether a comma-separated header value lists `token` (case-insensitive). */
static bool lists_token(nook_str value, const char *token)
{
    size_t tlen = strlen(token);
    const char *p = value.ptr, *end = value.ptr + value.len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        nook_str item = trim(p, comma ? comma : end);
        if ((item.len == tlen && io_caseeq(item.ptr, token, tlen)) ||
            (item.len == 1 && item.ptr[0] == '*'))
            return true;
        p = comma ? comma + 1 : end;
    }
    return false;
}

/* Adds Origin to Vary, keeping what the handler put there: a second Vary field line means the
 * same as one comma-joined value (RFC 9110 §5.3). */
static void vary_on_origin(nook_req *req)
{
    nook_str vary = nook_res_get_header(req, "Vary");
    if (!vary.ptr || !lists_token(vary, "Origin"))
        nook_res_header(req, "Vary", "Origin");
}

/* Whether caches must keep one answer per Origin: the answer is the same for every origin only
 * when it is a plain "*". */
static bool depends_on_origin(const cors *c)
{
    return !(c->any_origin && !c->credentials);
}

static void add_cors_headers(nook_req *req, const cors *c, const char *allow_origin)
{
    if (allow_origin || depends_on_origin(c))
        vary_on_origin(req);
    if (!allow_origin)
        return;
    nook_res_set_header(req, "Access-Control-Allow-Origin", allow_origin);
    if (c->credentials)
        nook_res_set_header(req, "Access-Control-Allow-Credentials", "true");
}

/* NOOK_ON_HEADERS: on the way out, whoever answered. */
static void cors_headers_hook(nook_req *req, void *user_data)
{
    const cors_answer *a = user_data;
    add_cors_headers(req, a->cfg, a->allow_origin);
}

static bool is_preflight(const nook_req *req)
{
    nook_str method = nook_req_method(req);
    return method.len == 7 && memcmp(method.ptr, "OPTIONS", 7) == 0 &&
           nook_req_header(req, "Access-Control-Request-Method").ptr != NULL;
}

static void answer_preflight(nook_req *req, const cors *c, const char *allow_origin)
{
    add_cors_headers(req, c, allow_origin);
    nook_res_set_header(req, "Access-Control-Allow-Methods", c->methods);
    if (c->headers)
        nook_res_set_header(req, "Access-Control-Allow-Headers", c->headers);
    if (c->max_age[0])
        nook_res_set_header(req, "Access-Control-Max-Age", c->max_age);
    nook_respond(req, 204, NULL, NULL, 0);
}

static void cors_middleware(nook_req *req, void *user_data)
{
    const cors *c = user_data;
    const char *allow_origin = allowed_origin(req, c);
    if (allow_origin && is_preflight(req)) {
        answer_preflight(req, c, allow_origin);
        return;
    }
    if (allow_origin || depends_on_origin(c)) {
        cors_answer *a = nook_req_alloc(req, sizeof *a);
        if (a) {
            *a = (cors_answer){c, allow_origin};
            nook_req_on(req, NOOK_ON_HEADERS, cors_headers_hook, a);
        }
    }
    nook_next(req);
}

int nook_use_cors(nook_server *srv, const char *prefix, const char *origins, const char *methods,
                  const char *headers, int max_age_seconds, int allow_credentials)
{
    if (!srv || !origins || max_age_seconds < 0 || !printable(origins) ||
        (methods && !printable(methods)) || (headers && !printable(headers)))
        return NOOK_EINVAL;
    cors *c = mw_conf_new(srv, sizeof *c);
    if (!c)
        return NOOK_ENOMEM;
    c->credentials = allow_credentials != 0;
    int rc = configure(c, origins, methods, headers, max_age_seconds);
    if (rc == NOOK_OK)
        rc = nook_use(srv, prefix, cors_middleware, c, cors_free);
    if (rc != NOOK_OK)
        cors_free(c);
    return rc;
}
