/*
 * Fuzzes the router two ways:
 *  - matching: a fixed router answers a method and path taken from the input; parameters must be
 *    views into the path, the result must agree with the route that matched, and a second match
 *    must give the same answer;
 *  - registration: the whole input is a pattern for a fresh router. An accepted pattern must
 *    refuse a duplicate and must match a path built from it; the same add is then repeated under
 *    an allocator that fails early, which may only add NOOK_ENOMEM and must not leak.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/router.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct route {
    const char *pattern;
    size_t nparams;
} route;

static const route routes[] = {
    {"GET /", 0},
    {"GET /a/b", 0},
    {"GET /{x}/c", 1},
    {"GET /users/new", 0},
    {"GET /users/{id}", 1},
    {"DELETE /users/{uid}", 1},
    {"GET /users/{id}/posts/{post}", 2},
    {"POST /users/{id}/posts/", 1},
    {"GET /files/{path...}", 1},
    {"/static/{rest...}", 1},
    {"PUT /a/{b}/{c}/{d...}", 3},
    {"HEAD /h", 0},
    {"GET /h", 0},
    {"/any/{x}", 1},
    {"POST /any/{x}", 1},
    {"GET /t/", 0},
    {"PATCH /{a}/{b}/c", 2},
};
#define NROUTES (sizeof routes / sizeof routes[0])

static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "BREW"};

static core_router *fixed_router(void)
{
    static core_router *r;
    if (!r) {
        r = core_router_new(&io_alloc_libc);
        if (!r)
            __builtin_trap();
        for (size_t i = 0; i < NROUTES; i++)
            if (core_router_add(r, routes[i].pattern, (void *)&routes[i]) != NOOK_OK)
                __builtin_trap();
    }
    return r;
}

/* Whether the route's method answers `method` (method-less, same, or GET for HEAD). */
static bool route_accepts(const route *rt, const char *method, size_t mlen)
{
    const char *p = rt->pattern;
    if (p[0] == '/')
        return true;
    size_t n = (size_t)(strchr(p, ' ') - p);
    if (n == mlen && memcmp(p, method, n) == 0)
        return true;
    return n == 3 && memcmp(p, "GET", 3) == 0 && mlen == 4 && memcmp(method, "HEAD", 4) == 0;
}

/* Whether the Allow value lists `method` as one of its items. */
static bool allow_lists(const char *allow, const char *method, size_t mlen)
{
    for (const char *p = allow; *p;) {
        const char *comma = strstr(p, ", ");
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == mlen && memcmp(p, method, n) == 0)
            return true;
        p += n + (comma ? 2 : 0);
    }
    return false;
}

static void check_match(const char *method, size_t mlen, const char *path, size_t plen)
{
    const core_router *r = fixed_router();
    core_route_match m1, m2;
    int rc1 = core_router_match(r, method, mlen, path, plen, &m1);
    int rc2 = core_router_match(r, method, mlen, path, plen, &m2);
    if (rc1 != rc2 || m1.target != m2.target || m1.nparams != m2.nparams ||
        strcmp(m1.allow, m2.allow) != 0)
        __builtin_trap();
    if (m1.nparams > CORE_ROUTE_MAX_PARAMS || memchr(m1.allow, '\0', sizeof m1.allow) == NULL)
        __builtin_trap();
    for (size_t i = 0; i < m1.nparams; i++) {
        const core_route_param *a = &m1.params[i], *b = &m2.params[i];
        if (a->value != b->value || a->value_len != b->value_len || a->name != b->name)
            __builtin_trap();
        if (!a->name || !a->name[0] || a->value < path || a->value_len > plen ||
            a->value + a->value_len > path + plen)
            __builtin_trap();
    }
    if (rc1 == NOOK_OK) {
        const route *rt = m1.target;
        if (rt < routes || rt >= routes + NROUTES || m1.nparams != rt->nparams || m1.allow[0] ||
            !route_accepts(rt, method, mlen))
            __builtin_trap();
    } else if (rc1 != NOOK_ENOTFOUND || m1.target || m1.nparams ||
               (m1.allow[0] && allow_lists(m1.allow, method, mlen))) {
        /* A 405 never lists the method it refused. */
        __builtin_trap();
    }
}

/* Counting allocator that fails once its budget (when not negative) is spent. */
static long budget_left = -1, budget_live;

static void *budget_malloc(size_t n, void *ud)
{
    (void)ud;
    if (budget_left == 0)
        return NULL;
    if (budget_left > 0)
        budget_left--;
    void *p = malloc(n ? n : 1);
    budget_live += p != NULL;
    return p;
}

static void *budget_realloc(void *p, size_t n, void *ud)
{
    if (!p)
        return budget_malloc(n, ud);
    if (budget_left == 0)
        return NULL;
    if (budget_left > 0)
        budget_left--;
    return realloc(p, n ? n : 1);
}

static void budget_free(void *p, void *ud)
{
    (void)ud;
    budget_live -= p != NULL;
    free(p);
}

static const io_alloc budget_alloc = {budget_malloc, budget_realloc, budget_free, NULL};

static int freed;
static void count_free(void *target)
{
    (void)target;
    freed++;
}

/* Builds a path the accepted pattern must match: "{x}" becomes "v", "{x...}" becomes "w/z".
 * Returns the number of parameters. */
static size_t concrete_path(const char *path, char *out)
{
    size_t n = 0, params = 0;
    for (const char *p = path; *p;) {
        if (*p != '{') {
            out[n++] = *p++;
            continue;
        }
        const char *close = strchr(p, '}');
        bool wild = close - p > 4 && memcmp(close - 3, "...", 3) == 0;
        memcpy(out + n, wild ? "w/z" : "v", wild ? 3 : 1);
        n += wild ? 3 : 1;
        params++;
        p = close + 1;
    }
    out[n] = '\0';
    return params;
}

static void check_pattern(const char *pattern, size_t len, unsigned budget)
{
    int target;
    budget_left = -1;
    core_router *r = core_router_new(&budget_alloc);
    if (!r)
        __builtin_trap();
    int rc = core_router_add(r, pattern, &target);
    if (rc != NOOK_OK && rc != NOOK_EINVAL)
        __builtin_trap();
    if (rc == NOOK_OK) {
        if (core_router_add(r, pattern, &target) != NOOK_EEXIST)
            __builtin_trap();
        const char *path = pattern[0] == '/' ? pattern : strchr(pattern, ' ') + 1;
        const char *method = pattern[0] == '/' ? "GET" : pattern;
        size_t mlen = pattern[0] == '/' ? 3 : (size_t)(path - 1 - pattern);
        char *concrete = malloc(len * 3 + 1);
        size_t nparams = concrete_path(path, concrete);
        core_route_match m;
        if (core_router_match(r, method, mlen, concrete, strlen(concrete), &m) != NOOK_OK ||
            m.target != &target || m.nparams != nparams)
            __builtin_trap();
        free(concrete);
    }
    freed = 0;
    core_router_free(r, count_free);
    if (freed != (rc == NOOK_OK) || budget_live != 0)
        __builtin_trap();

    /* The same add with few allocations allowed: only ENOMEM may differ, and nothing leaks. */
    r = core_router_new(&budget_alloc);
    if (!r)
        __builtin_trap();
    budget_left = budget;
    int rc2 = core_router_add(r, pattern, &target);
    budget_left = -1;
    if (rc2 != rc && !(rc == NOOK_OK && rc2 == NOOK_ENOMEM))
        __builtin_trap();
    freed = 0;
    core_router_free(r, count_free);
    if (freed != (rc2 == NOOK_OK) || budget_live != 0)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    /* Matching: "METHOD path" when a space comes early, else a method picked by the first byte.
     * Both are copied to buffers of their exact size so overreads are caught. */
    const uint8_t *sp = memchr(data, ' ', size < 12 ? size : 12);
    const char *method;
    size_t mlen;
    const uint8_t *path;
    if (sp) {
        method = (const char *)data;
        mlen = (size_t)(sp - data);
        path = sp + 1;
    } else {
        method = methods[data[0] % (sizeof methods / sizeof methods[0])];
        mlen = strlen(method);
        path = data + 1;
    }
    size_t plen = size - (size_t)(path - data);
    char *mcopy = malloc(mlen ? mlen : 1);
    char *pcopy = malloc(plen ? plen : 1);
    memcpy(mcopy, method, mlen);
    memcpy(pcopy, path, plen);
    check_match(mcopy, mlen, pcopy, plen);
    free(mcopy);
    free(pcopy);

    /* Registration: the whole input as a pattern (up to its first NUL). */
    char *pattern = malloc(size + 1);
    memcpy(pattern, data, size);
    pattern[size] = '\0';
    check_pattern(pattern, strlen(pattern), (unsigned)(size % 8));
    free(pattern);
    return 0;
}
