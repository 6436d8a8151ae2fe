/* Unit tests for the router: precedence and backtracking, parameters, 404 vs 405 and Allow,
 * HEAD, pattern validation, conflicts, deep paths, ownership of targets and allocation failure. */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "core/router.h"

/* Targets are the pattern strings themselves, so a failure prints which route matched. */
static void *target_of(const char *pattern)
{
    return (void *)(uintptr_t)pattern;
}

static int freed_targets;
static void count_free(void *target)
{
    (void)target;
    freed_targets++;
}

/* Builds a router from a NULL-terminated pattern list, checking that every add succeeds. */
static core_router *build(const char *const *patterns)
{
    core_router *r = core_router_new(&io_alloc_libc);
    CHECK(r != NULL);
    for (size_t i = 0; r && patterns[i]; i++) {
        CHECK_CASE("add \"%s\"", patterns[i]);
        CHECK_INT(core_router_add(r, patterns[i], target_of(patterns[i])), NOOK_OK);
    }
    CHECK_CASE("%s", "");
    return r;
}

/* Parameters as "name=value name=value", for comparing with a table. */
static void format_params(const core_route_match *m, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < m->nparams && len < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%s=%.*s", i ? " " : "", m->params[i].name,
                                (int)m->params[i].value_len, m->params[i].value);
}

typedef struct match_case {
    const char *method, *path;
    const char *target; /* the pattern that should match; NULL: not found */
    const char *detail; /* found: params as format_params prints them; not found: Allow */
} match_case;

static void run_matches(const core_router *r, const match_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const match_case *c = &cases[i];
        core_route_match m;
        char params[512];
        CHECK_CASE("%s %s", c->method, c->path);
        int rc = core_router_match(r, c->method, strlen(c->method), c->path, strlen(c->path), &m);
        if (c->target) {
            CHECK_INT(rc, NOOK_OK);
            CHECK_STRN((const char *)m.target, m.target ? strlen(m.target) : 0, c->target);
            format_params(&m, params, sizeof params);
            CHECK_STRN(params, strlen(params), c->detail);
        } else {
            CHECK_INT(rc, NOOK_ENOTFOUND);
            CHECK(m.target == NULL);
            CHECK_STRN(m.allow, strlen(m.allow), c->detail);
        }
    }
    CHECK_CASE("%s", "");
}

#define RUN(r, cases) run_matches((r), (cases), sizeof(cases) / sizeof(cases)[0])

static void test_precedence(void)
{
    static const char *const patterns[] = {"GET /a/b",
                                           "GET /{x}/c",
                                           "GET /users/new",
                                           "GET /users/{id}",
                                           "GET /users/{id}/posts/{post}",
                                           "GET /files/{path...}",
                                           "GET /",
                                           "GET /t",
                                           "GET /t2/",
                                           "GET /deep/{a}/{b}/{c}",
                                           NULL};
    static const match_case cases[] = {
        /* A literal beats a parameter at the same position... */
        {"GET", "/users/new", "GET /users/new", ""},
        {"GET", "/users/42", "GET /users/{id}", "id=42"},
        /* ...but a dead end below the literal backtracks into the parameter. */
        {"GET", "/users/new/posts/7", "GET /users/{id}/posts/{post}", "id=new post=7"},
        /* The header's example: "/a/c" tries literal "a", fails on "c", then takes "{x}/c". */
        {"GET", "/a/b", "GET /a/b", ""},
        {"GET", "/a/c", "GET /{x}/c", "x=a"},
        {"GET", "/zz/c", "GET /{x}/c", "x=zz"},
        {"GET", "/a/d", NULL, ""},
        /* Values stay percent-encoded. */
        {"GET", "/users/a%20b", "GET /users/{id}", "id=a%20b"},
        {"GET", "/deep/1/2/3", "GET /deep/{a}/{b}/{c}", "a=1 b=2 c=3"},
        /* A parameter never matches an empty segment. */
        {"GET", "/users/", NULL, ""},
        {"GET", "/deep/1//3", NULL, ""},
        /* Wildcards: empty, one segment, several, empty segments and %2F kept as they are. */
        {"GET", "/files/", "GET /files/{path...}", "path="},
        {"GET", "/files/x", "GET /files/{path...}", "path=x"},
        {"GET", "/files/a/b/c.txt", "GET /files/{path...}", "path=a/b/c.txt"},
        {"GET", "/files/a%2Fb/", "GET /files/{path...}", "path=a%2Fb/"},
        {"GET", "/files//x", "GET /files/{path...}", "path=/x"},
        /* Documented choice: the wildcard needs its slash, "/files" is another path. */
        {"GET", "/files", NULL, ""},
        /* Trailing slashes are significant. */
        {"GET", "/", "GET /", ""},
        {"GET", "/t", "GET /t", ""},
        {"GET", "/t/", NULL, ""},
        {"GET", "/t2/", "GET /t2/", ""},
        {"GET", "/t2", NULL, ""},
        /* Not a path at all. */
        {"GET", "*", NULL, ""},
        {"GET", "", NULL, ""},
        {"GET", "users/new", NULL, ""},
    };
    core_router *r = build(patterns);
    RUN(r, cases);
    core_router_free(r, NULL);
}

static void test_methods(void)
{
    /* Method registration order, which is Allow's order: GET POST DELETE PUT HEAD PATCH. */
    static const char *const patterns[] = {
        "GET /res",        "POST /res", "GET /only", "DELETE /dp", "PUT /dp",   "GET /u/{name}",
        "DELETE /u/{uid}", "HEAD /h",   "GET /h",    "PATCH /hp",  "HEAD /hp",  "GET /m/a",
        "POST /m/{x}",     "/mix",      "POST /mix", "/mix2",      "GET /mix2", NULL};
    static const match_case cases[] = {
        {"GET", "/res", "GET /res", ""},
        {"POST", "/res", "POST /res", ""},
        /* 405 with Allow: registration order, HEAD implied after GET. */
        {"DELETE", "/res", NULL, "GET, HEAD, POST"},
        {"PUT", "/only", NULL, "GET, HEAD"},
        {"GET", "/dp", NULL, "DELETE, PUT"},
        {"HEAD", "/dp", NULL, "DELETE, PUT"},
        /* Unknown and differently-cased methods: methods are case-sensitive. */
        {"BREW", "/only", NULL, "GET, HEAD"},
        {"get", "/only", NULL, "GET, HEAD"},
        /* 404 when nothing matches the path, whatever the method. */
        {"GET", "/nothing", NULL, ""},
        {"DELETE", "/only/", NULL, ""},
        /* Same shape, different methods, each with its own parameter names. */
        {"GET", "/u/x", "GET /u/{name}", "name=x"},
        {"DELETE", "/u/x", "DELETE /u/{uid}", "uid=x"},
        {"HEAD", "/u/x", "GET /u/{name}", "name=x"},
        {"PUT", "/u/x", NULL, "GET, HEAD, DELETE"},
        /* HEAD falls back to GET, unless HEAD has its own route; never listed twice. */
        {"HEAD", "/only", "GET /only", ""},
        {"HEAD", "/h", "HEAD /h", ""},
        {"GET", "/h", "GET /h", ""},
        {"POST", "/h", NULL, "GET, HEAD"},
        {"POST", "/hp", NULL, "HEAD, PATCH"},
        {"GET", "/hp", NULL, "HEAD, PATCH"},
        /* Allow is the union over every route matching the path; a literal whose methods do not
         * fit backtracks into the parameter. */
        {"GET", "/m/a", "GET /m/a", ""},
        {"POST", "/m/a", "POST /m/{x}", "x=a"},
        {"PUT", "/m/a", NULL, "GET, HEAD, POST"},
        {"PUT", "/m/b", NULL, "POST"},
        /* A method route beats a method-less one for its method; the method-less one takes the
         * rest and so there is never a 405. */
        {"POST", "/mix", "POST /mix", ""},
        {"GET", "/mix", "/mix", ""},
        {"BREW", "/mix", "/mix", ""},
        {"HEAD", "/mix", "/mix", ""},
        /* Documented choice: HEAD prefers a GET route over a method-less one. */
        {"HEAD", "/mix2", "GET /mix2", ""},
        {"POST", "/mix2", "/mix2", ""},
    };
    core_router *r = build(patterns);
    RUN(r, cases);
    core_router_free(r, NULL);
}

static void test_root_wildcard(void)
{
    static const char *const patterns[] = {"GET /x", "/{all...}", NULL};
    static const match_case cases[] = {
        {"GET", "/x", "GET /x", ""},
        /* The literal does not accept POST: the walk goes on to the wildcard, which does. */
        {"POST", "/x", "/{all...}", "all=x"},
        {"GET", "/", "/{all...}", "all="},
        {"GET", "/x/", "/{all...}", "all=x/"},
        {"GET", "/y/z", "/{all...}", "all=y/z"},
        {"GET", "no-slash", NULL, ""},
    };
    core_router *r = build(patterns);
    RUN(r, cases);
    core_router_free(r, NULL);
}

static void test_invalid_patterns(void)
{
    static const char *const invalid[] = {
        "",        "GET",      " /a",         "GET  /a",  "GET /a b",    "GET /a ",   "GET\t/a",
        "G(T /a",  "G:T /a",   "a/b",         "GET a",    "GET ",        "/a/{}",     "/a/{a",
        "/a/a}",   "/a/a{b}",  "/a/{a}b",     "/{a}}",    "/{{a}}",      "/{a-b}",    "/{a.b}",
        "/{ a}",   "/{...}",   "/{a..}",      "/{a}/{a}", "/{a}/{a...}", "/{p...}/x", "/{p...}/",
        "//",      "/a//b",    "//a",         "/a?b",     "/a#b",        "/a\x7f",    "/a\x01",
        "/{a}}/b", "/{id}...", "/{\xc3\xa9}",
    };
    core_router *r = core_router_new(&io_alloc_libc);
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        CHECK_CASE("pattern \"%s\"", invalid[i]);
        CHECK_INT(core_router_add(r, invalid[i], NULL), NOOK_EINVAL);
    }
    CHECK_CASE("NULL pattern");
    CHECK_INT(core_router_add(r, NULL, NULL), NOOK_EINVAL);
    CHECK_INT(core_router_add(NULL, "/a", NULL), NOOK_EINVAL);

    /* Exactly CORE_ROUTE_MAX_PARAMS parameters (the wildcard counts) is fine; one more is not. */
    char pat[256];
    size_t len = 0;
    for (int i = 0; i < CORE_ROUTE_MAX_PARAMS; i++)
        len += (size_t)snprintf(pat + len, sizeof pat - len, "/{p%d}", i);
    CHECK_CASE("%d params", CORE_ROUTE_MAX_PARAMS);
    CHECK_INT(core_router_add(r, pat, NULL), NOOK_OK);
    snprintf(pat + len, sizeof pat - len, "/{rest...}");
    CHECK_CASE("%d params", CORE_ROUTE_MAX_PARAMS + 1);
    CHECK_INT(core_router_add(r, pat, NULL), NOOK_EINVAL);

    /* Methods: up to 32 bytes of token characters. */
    memset(pat, 'M', 32);
    strcpy(pat + 32, " /m");
    CHECK_CASE("32-byte method");
    CHECK_INT(core_router_add(r, pat, NULL), NOOK_OK);
    memset(pat, 'M', 33);
    strcpy(pat + 33, " /m");
    CHECK_CASE("33-byte method");
    CHECK_INT(core_router_add(r, pat, NULL), NOOK_EINVAL);

    /* Valid odd-looking patterns. */
    static const char *const valid[] = {
        "/", "GET /a/", "/{id}/", "/x/{a_B9}", "M-SEARCH /%41", "/a.b/~c/!$&'()*+,;=:@", "/{p...}"};
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        CHECK_CASE("pattern \"%s\"", valid[i]);
        CHECK_INT(core_router_add(r, valid[i], NULL), NOOK_OK);
    }
    CHECK_CASE("%s", "");
    core_router_free(r, NULL);
}

static void test_conflicts(void)
{
    static const struct {
        const char *pattern;
        int rc;
    } adds[] = {
        {"GET /c/{a}", NOOK_OK},
        {"GET /c/{b}", NOOK_EEXIST}, /* same shape: parameter names do not matter */
        {"POST /c/{b}", NOOK_OK},
        {"/c/{z}", NOOK_OK},
        {"/c/{y}", NOOK_EEXIST},  /* both method-less */
        {"GET /c/{a}/", NOOK_OK}, /* the trailing slash makes another shape */
        {"GET /c/lit", NOOK_OK},  /* a literal is another shape than a parameter */
        {"GET /c/lit", NOOK_EEXIST},
        {"get /c/lit", NOOK_OK}, /* methods are case-sensitive */
        {"GET /w/{p...}", NOOK_OK},
        {"GET /w/{q...}", NOOK_EEXIST},
        {"GET /w/{p}", NOOK_OK},
        {"HEAD /c/{a}", NOOK_OK}, /* an explicit HEAD is no conflict with GET */
    };
    core_router *r = core_router_new(&io_alloc_libc);
    int ok = 0;
    for (size_t i = 0; i < sizeof adds / sizeof adds[0]; i++) {
        CHECK_CASE("add \"%s\"", adds[i].pattern);
        int rc = core_router_add(r, adds[i].pattern, target_of(adds[i].pattern));
        CHECK_INT(rc, adds[i].rc);
        ok += rc == NOOK_OK;
    }
    /* A refused route left nothing behind: the first registration still answers, with its names. */
    static const match_case cases[] = {
        {"GET", "/c/1", "GET /c/{a}", "a=1"}, {"POST", "/c/1", "POST /c/{b}", "b=1"},
        {"PUT", "/c/1", "/c/{z}", "z=1"},     {"GET", "/w/x/y", "GET /w/{p...}", "p=x/y"},
        {"GET", "/w/x", "GET /w/{p}", "p=x"},
    };
    RUN(r, cases);
    freed_targets = 0;
    core_router_free(r, count_free);
    CHECK_CASE("free_target calls");
    CHECK_INT(freed_targets, ok);
    CHECK_CASE("%s", "");
}

static char *repeat(const char *unit, size_t times, const char *tail)
{
    size_t ulen = strlen(unit), tlen = strlen(tail);
    char *s = malloc(ulen * times + tlen + 1);
    for (size_t i = 0; i < times; i++)
        memcpy(s + i * ulen, unit, ulen);
    memcpy(s + ulen * times, tail, tlen + 1);
    return s;
}

static void test_deep(void)
{
    /* A request with 10,000 segments: bounded by the tree, not by the path. */
    static const char *const patterns[] = {"/a/a/a", "/{x}/a", "/a/{y}/b", "/a/{x}/{y}/{z}", NULL};
    core_router *r = build(patterns);
    char *path = repeat("/a", 10000, "");
    core_route_match m;
    CHECK_CASE("10,000 segments");
    CHECK_INT(core_router_match(r, "GET", 3, path, strlen(path), &m), NOOK_ENOTFOUND);
    CHECK_INT(m.allow[0], '\0');
    CHECK_INT(core_router_add(r, "/a/{rest...}", NULL), NOOK_OK);
    CHECK_INT(core_router_match(r, "GET", 3, path, strlen(path), &m), NOOK_OK);
    CHECK_INT(m.nparams, 1);
    CHECK(m.params[0].value == path + 3);
    CHECK_INT(m.params[0].value_len, strlen(path) - 3);
    core_router_free(r, NULL);

    /* A pattern with 5,000 segments: registration, matching and freeing do not recurse. */
    char *pattern = repeat("/s", 5000, "/{last}");
    char *req = repeat("/s", 5000, "/v");
    r = core_router_new(&io_alloc_libc);
    CHECK_CASE("5,000-segment pattern");
    CHECK_INT(core_router_add(r, pattern, pattern), NOOK_OK);
    CHECK_INT(core_router_match(r, "GET", 3, req, strlen(req), &m), NOOK_OK);
    CHECK(m.target == pattern);
    CHECK_STRN(m.params[0].value, m.params[0].value_len, "v");
    req[strlen(req) - 4] = 'x'; /* the last literal no longer matches: backtrack all the way */
    CHECK_INT(core_router_match(r, "GET", 3, req, strlen(req), &m), NOOK_ENOTFOUND);
    freed_targets = 0;
    core_router_free(r, count_free);
    CHECK_INT(freed_targets, 1);
    CHECK_CASE("%s", "");
    free(pattern);
    free(req);
    free(path);
}

static void test_many_literals(void)
{
    /* Enough siblings to exercise the sorted child array's growth and binary search. */
    core_router *r = core_router_new(&io_alloc_libc);
    char pat[32], path[32];
    for (int i = 0; i < 300; i++) {
        snprintf(pat, sizeof pat, "GET /n/%d", (i * 7919) % 300);
        CHECK_INT(core_router_add(r, pat, (void *)(uintptr_t)((i * 7919) % 300 + 1)), NOOK_OK);
    }
    int wrong = 0;
    for (int i = 0; i < 300; i++) {
        core_route_match m;
        snprintf(path, sizeof path, "/n/%d", i);
        if (core_router_match(r, "GET", 3, path, strlen(path), &m) != NOOK_OK ||
            m.target != (void *)(uintptr_t)(i + 1))
            wrong++;
    }
    CHECK_INT(wrong, 0);
    freed_targets = 0;
    core_router_free(r, count_free);
    CHECK_INT(freed_targets, 300);
}

/* An allocator that fails once its budget is spent and counts live blocks. */
typedef struct budget {
    long left; /* allocations still allowed; negative: unlimited */
    long live;
} budget;

static void *budget_malloc(size_t n, void *ud)
{
    budget *b = ud;
    if (b->left == 0)
        return NULL;
    if (b->left > 0)
        b->left--;
    void *p = malloc(n ? n : 1);
    b->live += p != NULL;
    return p;
}

static void *budget_realloc(void *p, size_t n, void *ud)
{
    budget *b = ud;
    if (!p)
        return budget_malloc(n, ud);
    if (b->left == 0)
        return NULL;
    if (b->left > 0)
        b->left--;
    return realloc(p, n ? n : 1);
}

static void budget_free(void *p, void *ud)
{
    budget *b = ud;
    b->live -= p != NULL;
    free(p);
}

static void test_alloc_failure(void)
{
    budget b = {-1, 0};
    const io_alloc a = {budget_malloc, budget_realloc, budget_free, &b};
    for (long k = 0; k < 3; k++) {
        b.left = k;
        core_router *r = core_router_new(&a);
        if (r) {
            core_router_free(r, NULL);
            break;
        }
        CHECK_INT(b.live, 0);
    }

    /* Each add is retried with budgets 0, 1, 2...: every failure is ENOMEM and leaves the router
     * as it was (no new node or entry, the route absent), until one budget is enough. */
    static const char *const patterns[] = {"GET /a/{x}",     "POST /a/{x}/b/{y...}", "/q/r/s",
                                           "PATCH /a/{x}/b", "GET /a/lit/c",         NULL};
    b.left = -1;
    core_router *r = core_router_new(&a);
    int added = 0;
    for (size_t i = 0; patterns[i]; i++) {
        CHECK_CASE("add \"%s\" under allocation failure", patterns[i]);
        int rc = NOOK_ENOMEM;
        for (long k = 0; rc == NOOK_ENOMEM && k < 64; k++) {
            long before = b.live;
            b.left = k;
            rc = core_router_add(r, patterns[i], target_of(patterns[i]));
            b.left = -1;
            /* The one existing node that got a child may keep its grown child array. */
            if (rc == NOOK_ENOMEM)
                CHECK(b.live == before || b.live == before + 1);
        }
        CHECK_INT(rc, NOOK_OK);
        added += rc == NOOK_OK;
    }
    static const match_case cases[] = {
        {"GET", "/a/1", "GET /a/{x}", "x=1"},
        {"POST", "/a/1/b/2/3", "POST /a/{x}/b/{y...}", "x=1 y=2/3"},
        {"PATCH", "/a/1/b", "PATCH /a/{x}/b", "x=1"},
        {"GET", "/a/lit/c", "GET /a/lit/c", ""},
        {"DELETE", "/q/r/s", "/q/r/s", ""},
        {"DELETE", "/a/1", NULL, "GET, HEAD"},
    };
    RUN(r, cases);
    freed_targets = 0;
    core_router_free(r, count_free);
    CHECK_INT(freed_targets, added);
    CHECK_INT(b.live, 0);
    CHECK_CASE("%s", "");
}

static void test_match_edges(void)
{
    core_router *r = core_router_new(&io_alloc_libc);
    core_route_match m;
    /* An empty router: 404 with an empty Allow, even on a struct full of garbage. */
    memset(&m, 0x5a, sizeof m);
    CHECK_INT(core_router_match(r, "GET", 3, "/", 1, &m), NOOK_ENOTFOUND);
    CHECK_INT(m.allow[0], '\0');
    CHECK(m.target == NULL);
    CHECK_INT(m.nparams, 0);
    CHECK_INT(core_router_add(r, "/any", NULL), NOOK_OK);
    CHECK_INT(core_router_add(r, "GET /get", NULL), NOOK_OK);
    /* A NULL or empty method is answered by method-less routes only. */
    CHECK_INT(core_router_match(r, NULL, 0, "/any", 4, &m), NOOK_OK);
    CHECK_INT(core_router_match(r, "", 0, "/get", 4, &m), NOOK_ENOTFOUND);
    CHECK_STRN(m.allow, strlen(m.allow), "GET, HEAD");
    /* The path is a view: bytes past path_len are not looked at. */
    CHECK_INT(core_router_match(r, "GET", 3, "/get/more", 4, &m), NOOK_OK);
    CHECK_INT(core_router_match(r, "GETX", 3, "/get", 4, &m), NOOK_OK);
    core_router_free(r, NULL);
    core_router_free(NULL, NULL);
    CHECK(core_router_new(NULL) == NULL);
}

static void test_method_limits(void)
{
    /* 64 distinct methods of 32 bytes on one path: the 65th is refused, and Allow stops at the
     * last method that fits rather than cutting one in half. */
    core_router *r = core_router_new(&io_alloc_libc);
    char pat[64];
    for (int i = 0; i < 65; i++) {
        snprintf(pat, sizeof pat, "METHOD_%025d /p", i);
        CHECK_CASE("method %d", i);
        CHECK_INT(core_router_add(r, pat, NULL), i < 64 ? NOOK_OK : NOOK_EINVAL);
    }
    CHECK_CASE("%s", "");
    core_route_match m;
    CHECK_INT(core_router_match(r, "GET", 3, "/p", 2, &m), NOOK_ENOTFOUND);
    /* 7 methods of 32 bytes with ", " between them: 236 bytes; an 8th would not fit in 255. */
    CHECK_INT(strlen(m.allow), 7 * 32 + 6 * 2);
    CHECK(strncmp(m.allow, "METHOD_0000000000000000000000000, METHOD_", 41) == 0);
    core_router_free(r, NULL);
}

/* core_router_find: the route registered with a pattern of the same method and shape. */
static void test_find(void)
{
    core_router *r = core_router_new(&io_alloc_libc);
    int a, b, c;
    CHECK_INT(core_router_add(r, "GET /users/{id}", &a), NOOK_OK);
    CHECK_INT(core_router_add(r, "POST /users/{id}", &b), NOOK_OK);
    CHECK_INT(core_router_add(r, "/files/{rest...}", &c), NOOK_OK);
    void *t = NULL;
    CHECK_INT(core_router_find(r, "GET /users/{id}", &t), NOOK_OK);
    CHECK(t == &a);
    CHECK_INT(core_router_find(r, "GET /users/{other}", &t), NOOK_OK); /* names do not matter */
    CHECK(t == &a);
    CHECK_INT(core_router_find(r, "POST /users/{id}", &t), NOOK_OK);
    CHECK(t == &b);
    CHECK_INT(core_router_find(r, "/files/{p...}", &t), NOOK_OK);
    CHECK(t == &c);
    CHECK_INT(core_router_find(r, "PUT /users/{id}", &t), NOOK_ENOTFOUND);   /* unknown method */
    CHECK_INT(core_router_find(r, "/users/{id}", &t), NOOK_ENOTFOUND);       /* no method-less */
    CHECK_INT(core_router_find(r, "GET /users/x", &t), NOOK_ENOTFOUND);      /* another shape */
    CHECK_INT(core_router_find(r, "GET /users/{id}/x", &t), NOOK_ENOTFOUND); /* deeper */
    CHECK_INT(core_router_find(r, "GET users", &t), NOOK_EINVAL);
    core_router_free(r, NULL);
}

int main(void)
{
    test_precedence();
    test_methods();
    test_root_wildcard();
    test_invalid_patterns();
    test_conflicts();
    test_deep();
    test_many_literals();
    test_alloc_failure();
    test_match_edges();
    test_method_limits();
    test_find();
    return check_main("router");
}
