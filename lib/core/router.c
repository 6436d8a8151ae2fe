/*
 * Router: a segment tree. Every node stands for one pattern segment at a given depth; routes that
 * end at a node are its entries (one per method, or one method-less). Patterns with the same
 * shape share their nodes, which is what makes conflict detection a lookup.
 *
 * Matching walks the tree depth-first without recursion: nodes know their parent and their kind,
 * and a node at depth d always matches the request's segment d, so the walk can recover every
 * position it needs from the path itself. No stack, no allocation, and the work is bounded by
 * the tree, not by how many segments the request has.
 */
#include "core/router.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "io/ascii.h"

/* Node kinds in matching precedence: backtracking out of a child of kind k, the parent goes on
 * with the kinds after k. K_ROOT doubles as "no child tried yet". */
enum { K_ROOT, K_LIT, K_PARAM, K_WILD };

#define ANY_METHOD (-1)
#define NO_METHOD (-2) /* a request method no route names: equal to no entry's method */
/* The 405 walk gathers methods in a 64-bit mask, and one method must always fit in
 * core_route_match.allow, so the method table is bounded on both counts. */
#define MAX_METHODS 64
#define MAX_METHOD_LEN 32

typedef struct route_entry {
    int method; /* index into core_router.methods, or ANY_METHOD */
    void *target;
    size_t nparams;
    char **names; /* nparams names in pattern order; one allocation holds pointers and text */
} route_entry;

typedef struct rnode {
    struct rnode *parent; /* NULL for the root */
    int kind;
    struct rnode **lits; /* literal children, sorted by (length, bytes) */
    size_t nlits, caplits;
    struct rnode *param, *wild;
    route_entry *entries;
    size_t nentries, capentries;
    size_t lit_len;
    char lit[]; /* K_LIT: the segment's bytes (not NUL-terminated) */
} rnode;

struct core_router {
    io_alloc alloc; /* a copy, so the router does not depend on the caller's struct lifetime */
    rnode *root;
    char *methods[MAX_METHODS]; /* distinct methods in order of first registration: Allow's order */
    size_t method_len[MAX_METHODS];
    size_t nmethods;
    int get_index, head_index; /* -1 until registered */
};

/* One segment of a pattern. */
typedef struct pseg {
    int kind;         /* K_LIT, K_PARAM or K_WILD */
    const char *text; /* K_LIT: the literal; otherwise the parameter name */
    size_t len;
} pseg;

/* A validated pattern: views into the caller's string. */
typedef struct pattern {
    const char *method;
    size_t method_len; /* 0: method-less */
    const char *path, *end;
    size_t nparams;
    pseg params[CORE_ROUTE_MAX_PARAMS];
} pattern;

/* ---------------------------------------------------------------------------------------------
 * Pattern parsing
 * ------------------------------------------------------------------------------------------- */

static bool is_name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Bytes a literal may hold. A raw request path never contains controls, spaces, '?' or '#', so a
 * literal with one could never match: rejecting it catches mistakes like "GET /find?q" early. */
static bool is_literal_char(unsigned char c)
{
    return c > 0x20 && c != 0x7f && c != '?' && c != '#' && c != '{' && c != '}';
}

/* Classifies the segment b[0..n); false if it is malformed. */
static bool classify(const char *b, size_t n, pseg *s)
{
    if (n == 0 || b[0] != '{') {
        for (size_t i = 0; i < n; i++)
            if (!is_literal_char((unsigned char)b[i]))
                return false;
        *s = (pseg){K_LIT, b, n};
        return true;
    }
    /* Braces take the whole segment: "{name}" or "{name...}". */
    if (n < 3 || b[n - 1] != '}')
        return false;
    const char *name = b + 1;
    size_t len = n - 2;
    int kind = K_PARAM;
    if (len > 3 && memcmp(name + len - 3, "...", 3) == 0) {
        kind = K_WILD;
        len -= 3;
    }
    for (size_t i = 0; i < len; i++)
        if (!is_name_char((unsigned char)name[i]))
            return false;
    *s = (pseg){kind, name, len};
    return true;
}

/* Reads the segment after the '/' at *pos and leaves *pos on the next '/' or at the end. */
static bool next_seg(const char **pos, const char *end, pseg *s)
{
    const char *b = *pos + 1;
    const char *e = memchr(b, '/', (size_t)(end - b));
    if (!e)
        e = end;
    *pos = e;
    return classify(b, (size_t)(e - b), s);
}

static bool same_name(const pseg *a, const pseg *b)
{
    return a->len == b->len && memcmp(a->text, b->text, a->len) == 0;
}

/* Splits off the method, then checks every segment; the later passes can then trust it. */
static int parse_pattern(const char *text, pattern *p)
{
    p->method = NULL;
    p->method_len = 0;
    p->path = text;
    if (text[0] != '/') {
        const char *sp = strchr(text, ' ');
        if (!sp || sp == text || (size_t)(sp - text) > MAX_METHOD_LEN)
            return NOOK_EINVAL;
        for (const char *c = text; c < sp; c++)
            if (!io_is_tchar((unsigned char)*c))
                return NOOK_EINVAL;
        p->method = text;
        p->method_len = (size_t)(sp - text);
        p->path = sp + 1;
    }
    if (p->path[0] != '/')
        return NOOK_EINVAL;
    p->end = p->path + strlen(p->path);
    p->nparams = 0;
    for (const char *pos = p->path; pos < p->end;) {
        pseg s;
        if (!next_seg(&pos, p->end, &s))
            return NOOK_EINVAL;
        bool last = pos == p->end;
        /* An empty segment is only allowed last: that is the significant trailing slash. */
        if ((s.kind == K_LIT && s.len == 0 && !last) || (s.kind == K_WILD && !last))
            return NOOK_EINVAL;
        if (s.kind == K_LIT)
            continue;
        if (p->nparams == CORE_ROUTE_MAX_PARAMS)
            return NOOK_EINVAL;
        for (size_t i = 0; i < p->nparams; i++)
            if (same_name(&p->params[i], &s))
                return NOOK_EINVAL;
        p->params[p->nparams++] = s;
    }
    return NOOK_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Tree
 * ------------------------------------------------------------------------------------------- */

static int lit_cmp(const rnode *c, const char *s, size_t n)
{
    if (c->lit_len != n)
        return c->lit_len < n ? -1 : 1;
    return memcmp(c->lit, s, n);
}

/* Index of the first literal child not ordered before (s, n). */
static size_t lit_lower_bound(const rnode *p, const char *s, size_t n)
{
    size_t lo = 0, hi = p->nlits;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (lit_cmp(p->lits[mid], s, n) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static rnode *find_lit(const rnode *p, const char *s, size_t n)
{
    size_t i = lit_lower_bound(p, s, n);
    return i < p->nlits && lit_cmp(p->lits[i], s, n) == 0 ? p->lits[i] : NULL;
}

/* The existing child of p for segment s, or NULL. */
static rnode *child_for(const rnode *p, const pseg *s)
{
    switch (s->kind) {
    case K_LIT: return find_lit(p, s->text, s->len);
    case K_PARAM: return p->param;
    default: return p->wild;
    }
}

static rnode *new_node(core_router *r, rnode *parent, int kind, const char *lit, size_t lit_len)
{
    rnode *n = io_malloc(&r->alloc, sizeof *n + lit_len);
    if (!n)
        return NULL;
    memset(n, 0, sizeof *n);
    n->parent = parent;
    n->kind = kind;
    n->lit_len = lit_len;
    if (lit_len)
        memcpy(n->lit, lit, lit_len);
    return n;
}

/* Creates the child of p for segment s (which p does not have yet). */
static rnode *add_child(core_router *r, rnode *p, const pseg *s)
{
    if (s->kind == K_LIT && p->nlits == p->caplits) {
        size_t cap = p->caplits ? p->caplits * 2 : 4;
        rnode **v = io_realloc(&r->alloc, p->lits, cap * sizeof *v);
        if (!v)
            return NULL;
        p->lits = v;
        p->caplits = cap;
    }
    rnode *c = new_node(r, p, s->kind, s->text, s->kind == K_LIT ? s->len : 0);
    if (!c)
        return NULL;
    if (s->kind == K_PARAM) {
        p->param = c;
    } else if (s->kind == K_WILD) {
        p->wild = c;
    } else {
        size_t i = lit_lower_bound(p, s->text, s->len);
        memmove(p->lits + i + 1, p->lits + i, (p->nlits - i) * sizeof *p->lits);
        p->lits[i] = c;
        p->nlits++;
    }
    return c;
}

static void free_node(core_router *r, rnode *n, void (*free_target)(void *target))
{
    for (size_t i = 0; i < n->nentries; i++) {
        if (free_target)
            free_target(n->entries[i].target);
        io_free(&r->alloc, n->entries[i].names);
    }
    io_free(&r->alloc, n->entries);
    io_free(&r->alloc, n->lits);
    io_free(&r->alloc, n);
}

/* Frees top and everything below it, iteratively (patterns may be arbitrarily deep): children
 * are unlinked as they are visited, so a node with none left is done. */
static void free_subtree(core_router *r, rnode *top, void (*free_target)(void *target))
{
    rnode *n = top;
    for (;;) {
        rnode *c = NULL;
        if (n->nlits) {
            c = n->lits[--n->nlits];
        } else if (n->param) {
            c = n->param;
            n->param = NULL;
        } else if (n->wild) {
            c = n->wild;
            n->wild = NULL;
        }
        if (c) {
            n = c;
            continue;
        }
        rnode *up = n == top ? NULL : n->parent;
        free_node(r, n, free_target);
        if (!up)
            return;
        n = up;
    }
}

/* Undoes a failed add: unlinks the first node it created (the rest hang below it) and frees them.
 */
static void unlink_subtree(core_router *r, rnode *c)
{
    rnode *p = c->parent;
    if (c->kind == K_PARAM) {
        p->param = NULL;
    } else if (c->kind == K_WILD) {
        p->wild = NULL;
    } else {
        size_t i = lit_lower_bound(p, c->lit, c->lit_len);
        memmove(p->lits + i, p->lits + i + 1, (p->nlits - i - 1) * sizeof *p->lits);
        p->nlits--;
    }
    free_subtree(r, c, NULL);
}

/* The node for the pattern's shape, or NULL when the tree does not have it. */
static rnode *find_shape(const core_router *r, const pattern *p)
{
    rnode *n = r->root;
    for (const char *pos = p->path; n && pos < p->end;) {
        pseg s;
        next_seg(&pos, p->end, &s);
        n = child_for(n, &s);
    }
    return n;
}

/* Finds or creates the pattern's node; *created is the first node made (for the rollback). */
static rnode *make_shape(core_router *r, const pattern *p, rnode **created)
{
    rnode *n = r->root;
    *created = NULL;
    for (const char *pos = p->path; pos < p->end;) {
        pseg s;
        next_seg(&pos, p->end, &s);
        rnode *c = child_for(n, &s);
        if (!c) {
            c = add_child(r, n, &s);
            if (!c)
                return NULL;
            if (!*created)
                *created = c;
        }
        n = c;
    }
    return n;
}

/* ---------------------------------------------------------------------------------------------
 * Registration
 * ------------------------------------------------------------------------------------------- */

core_router *core_router_new(const io_alloc *alloc)
{
    if (!alloc)
        return NULL;
    core_router *r = io_malloc(alloc, sizeof *r);
    if (!r)
        return NULL;
    memset(r, 0, sizeof *r);
    r->alloc = *alloc;
    r->get_index = r->head_index = -1;
    r->root = new_node(r, NULL, K_ROOT, NULL, 0);
    if (!r->root) {
        io_free(alloc, r);
        return NULL;
    }
    return r;
}

void core_router_free(core_router *r, void (*free_target)(void *target))
{
    if (!r)
        return;
    free_subtree(r, r->root, free_target);
    for (size_t i = 0; i < r->nmethods; i++)
        io_free(&r->alloc, r->methods[i]);
    io_alloc a = r->alloc;
    io_free(&a, r);
}

static int find_method(const core_router *r, const char *m, size_t len)
{
    for (size_t i = 0; i < r->nmethods; i++)
        if (r->method_len[i] == len && memcmp(r->methods[i], m, len) == 0)
            return (int)i;
    return -1;
}

static bool has_method(const rnode *n, int method)
{
    for (size_t i = 0; i < n->nentries; i++)
        if (n->entries[i].method == method)
            return true;
    return false;
}

/* Copies the parameter names into one block: the pointer array, then the NUL-terminated text. */
static char **copy_names(core_router *r, const pattern *p)
{
    if (p->nparams == 0)
        return NULL;
    size_t size = p->nparams * sizeof(char *);
    for (size_t i = 0; i < p->nparams; i++)
        size += p->params[i].len + 1;
    char **names = io_malloc(&r->alloc, size);
    if (!names)
        return NULL;
    char *text = (char *)(names + p->nparams);
    for (size_t i = 0; i < p->nparams; i++) {
        names[i] = text;
        memcpy(text, p->params[i].text, p->params[i].len);
        text[p->params[i].len] = '\0';
        text += p->params[i].len + 1;
    }
    return names;
}

static char *copy_method(core_router *r, const pattern *p)
{
    char *m = io_malloc(&r->alloc, p->method_len + 1);
    if (m) {
        memcpy(m, p->method, p->method_len);
        m[p->method_len] = '\0';
    }
    return m;
}

static bool reserve_entry(core_router *r, rnode *n)
{
    if (n->nentries < n->capentries)
        return true;
    size_t cap = n->capentries ? n->capentries * 2 : 2;
    route_entry *v = io_realloc(&r->alloc, n->entries, cap * sizeof *v);
    if (!v)
        return false;
    n->entries = v;
    n->capentries = cap;
    return true;
}

static void commit_method(core_router *r, char *m, size_t len)
{
    int i = (int)r->nmethods;
    r->methods[i] = m;
    r->method_len[i] = len;
    r->nmethods++;
    if (len == 3 && memcmp(m, "GET", 3) == 0)
        r->get_index = i;
    else if (len == 4 && memcmp(m, "HEAD", 4) == 0)
        r->head_index = i;
}

/* Nothing is committed until every allocation has succeeded; nodes made for a route that then
 * fails are unlinked again, so an error leaves the router answering exactly as before. */
int core_router_add(core_router *r, const char *text, void *target)
{
    pattern p;
    if (!r || !text || parse_pattern(text, &p) != NOOK_OK)
        return NOOK_EINVAL;
    int method = ANY_METHOD;
    bool new_method = false;
    if (p.method_len) {
        method = find_method(r, p.method, p.method_len);
        if (method < 0) {
            if (r->nmethods == MAX_METHODS)
                return NOOK_EINVAL;
            method = (int)r->nmethods;
            new_method = true;
        }
    }
    rnode *existing = find_shape(r, &p);
    if (existing && has_method(existing, method))
        return NOOK_EEXIST;

    char **names = copy_names(r, &p);
    char *mcopy = new_method ? copy_method(r, &p) : NULL;
    rnode *created = NULL;
    rnode *n = NULL;
    if ((p.nparams == 0 || names) && (!new_method || mcopy))
        n = make_shape(r, &p, &created);
    if (!n || !reserve_entry(r, n)) {
        if (created)
            unlink_subtree(r, created);
        io_free(&r->alloc, names);
        io_free(&r->alloc, mcopy);
        return NOOK_ENOMEM;
    }
    if (new_method)
        commit_method(r, mcopy, p.method_len);
    n->entries[n->nentries++] = (route_entry){method, target, p.nparams, names};
    return NOOK_OK;
}

int core_router_find(const core_router *r, const char *text, void **target)
{
    pattern p;
    if (!r || !text || parse_pattern(text, &p) != NOOK_OK)
        return NOOK_EINVAL;
    int method = ANY_METHOD;
    if (p.method_len && (method = find_method(r, p.method, p.method_len)) < 0)
        return NOOK_ENOTFOUND;
    const rnode *n = find_shape(r, &p);
    for (size_t i = 0; n && i < n->nentries; i++) {
        if (n->entries[i].method == method) {
            *target = n->entries[i].target;
            return NOOK_OK;
        }
    }
    return NOOK_ENOTFOUND;
}

/* ---------------------------------------------------------------------------------------------
 * Matching
 * ------------------------------------------------------------------------------------------- */

/* The entry at n answering the request, or NULL. The exact method wins, then GET for a HEAD
 * request (a HEAD entry would have been exact), then a method-less route. */
static const route_entry *pick_entry(const core_router *r, const rnode *n, int method, bool is_head)
{
    const route_entry *get = NULL, *any = NULL;
    for (size_t i = 0; i < n->nentries; i++) {
        const route_entry *e = &n->entries[i];
        if (e->method == ANY_METHOD)
            any = e;
        else if (e->method == method)
            return e;
        else if (is_head && e->method == r->get_index)
            get = e;
    }
    return get ? get : any;
}

static uint64_t methods_of(const rnode *n)
{
    uint64_t mask = 0;
    for (size_t i = 0; i < n->nentries; i++)
        if (n->entries[i].method != ANY_METHOD)
            mask |= UINT64_C(1) << n->entries[i].method;
    return mask;
}

/*
 * The next child of p to try for the request segment starting at s, after children of kind
 * `after` have failed. Sets *end to where the child's match ends: the segment's end, or the
 * path's end for a wildcard. A parameter needs a non-empty segment.
 */
static const rnode *next_child(const rnode *p, int after, const char *path, size_t s,
                               size_t path_len, size_t *end)
{
    const char *slash = memchr(path + s, '/', path_len - s);
    size_t t = slash ? (size_t)(slash - path) : path_len;
    const rnode *c;
    if (after < K_LIT && (c = find_lit(p, path + s, t - s)) != NULL) {
        *end = t;
        return c;
    }
    if (after < K_PARAM && p->param && t > s) {
        *end = t;
        return p->param;
    }
    if (after < K_WILD && p->wild) {
        *end = path_len;
        return p->wild;
    }
    return NULL;
}

/* Start of the segment that ends at e (path[e] is its '/' or the end); 0 stands for the root. */
static size_t seg_start(const char *path, size_t e)
{
    if (e == 0)
        return 0;
    while (e > 0 && path[e - 1] != '/')
        e--;
    return e;
}

/* A match position: node n matched path[a..e). */
typedef struct walk {
    const rnode *n;
    size_t a, e;
} walk;

/* Moves w to the next alternative after its node failed: a later sibling kind, or further up.
 * False when the whole tree has been tried. */
static bool backtrack(const char *path, size_t path_len, walk *w)
{
    const rnode *n = w->n;
    size_t s = w->a;
    while (n->parent) {
        size_t end;
        const rnode *c = next_child(n->parent, n->kind, path, s, path_len, &end);
        if (c) {
            *w = (walk){c, s, end};
            return true;
        }
        n = n->parent;
        s = seg_start(path, s - 1);
    }
    return false;
}

/* Fills the parameters from the matched node upwards: names come from the entry, values are the
 * segments its parameter nodes matched. */
static void collect_params(const route_entry *hit, const char *path, walk w, core_route_match *m)
{
    size_t k = hit->nparams;
    m->target = hit->target;
    m->nparams = k;
    while (w.n->parent && k > 0) {
        if (w.n->kind == K_PARAM || w.n->kind == K_WILD) {
            k--;
            m->params[k] = (core_route_param){hit->names[k], path + w.a, w.e - w.a};
        }
        w.e = w.a - 1;
        w.a = seg_start(path, w.e);
        w.n = w.n->parent;
    }
}

static void append_allow(char *out, size_t cap, size_t *len, bool *full, const char *m, size_t mlen)
{
    size_t sep = *len ? 2 : 0;
    if (*full || *len + sep + mlen >= cap) {
        *full = true; /* stop rather than skip, so the order stays registration order */
        return;
    }
    memcpy(out + *len, ", ", sep);
    memcpy(out + *len + sep, m, mlen);
    *len += sep + mlen;
    out[*len] = '\0';
}

/* Allow in registration order; MAX_METHOD_LEN < cap, so it is never empty when mask is not. */
static void build_allow(const core_router *r, uint64_t mask, char *out, size_t cap)
{
    size_t len = 0;
    bool full = false;
    bool implicit_head = r->get_index >= 0 && (mask & (UINT64_C(1) << r->get_index)) &&
                         !(r->head_index >= 0 && (mask & (UINT64_C(1) << r->head_index)));
    out[0] = '\0';
    for (size_t i = 0; i < r->nmethods; i++) {
        if (!(mask & (UINT64_C(1) << i)))
            continue;
        append_allow(out, cap, &len, &full, r->methods[i], r->method_len[i]);
        if ((int)i == r->get_index && implicit_head)
            append_allow(out, cap, &len, &full, "HEAD", 4);
    }
}

int core_router_match(const core_router *r, const char *method, size_t method_len, const char *path,
                      size_t path_len, core_route_match *m)
{
    m->target = NULL;
    m->nparams = 0;
    m->allow[0] = '\0';
    if (!r || !path || path_len == 0 || path[0] != '/')
        return NOOK_ENOTFOUND;
    if (!method)
        method_len = 0;
    int mi = method_len ? find_method(r, method, method_len) : -1;
    if (mi < 0)
        mi = NO_METHOD;
    bool is_head = method_len == 4 && memcmp(method, "HEAD", 4) == 0;
    uint64_t mask = 0;
    walk w = {r->root, 0, 0};
    for (;;) {
        if (w.e == path_len) {
            const route_entry *hit = pick_entry(r, w.n, mi, is_head);
            if (hit) {
                collect_params(hit, path, w, m);
                return NOOK_OK;
            }
            mask |= methods_of(w.n);
        } else {
            size_t end;
            const rnode *c = next_child(w.n, K_ROOT, path, w.e + 1, path_len, &end);
            if (c) {
                w = (walk){c, w.e + 1, end};
                continue;
            }
        }
        if (!backtrack(path, path_len, &w))
            break;
    }
    if (mask)
        build_allow(r, mask, m->allow, sizeof m->allow);
    return NOOK_ENOTFOUND;
}
