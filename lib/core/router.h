/*
 * Router: maps (method, path) to a registered target with named path parameters.
 *
 * Patterns: "[METHOD ]PATH". METHOD is a token ("GET"); no method means any method. PATH starts
 * with '/', is split on '/', and each segment is one of:
 *   literal       "users"      matched byte-for-byte against the raw (still percent-encoded) path
 *   parameter     "{id}"       one whole non-empty segment; name is [A-Za-z0-9_]+
 *   wildcard      "{rest...}"  only as the last segment: the rest of the path (may be empty,
 *                              may contain '/')
 * A segment may not mix literal text and braces ("a{id}" is invalid); parameter names are unique
 * within a pattern; at most CORE_ROUTE_MAX_PARAMS parameters (a wildcard counts as one). A
 * trailing '/' is significant ("/a/" and "/a" are different paths); it is the only empty segment
 * allowed ("//" and "/a//b" are invalid). Literals may not hold controls, spaces, '?' or '#' (a
 * raw path never does). METHOD is at most 32 bytes, and a router knows at most 64 distinct
 * methods (one more is NOOK_EINVAL). A wildcard needs the '/' before it: "/files/{p...}" matches
 * "/files/" (p empty) and "/files/a/b", but not "/files".
 *
 * Precedence, segment by segment from the left: literal before parameter before wildcard, with
 * backtracking (so "/a/b" and "/{x}/c" both work: "/a/c" tries literal "a" first, fails on "c",
 * then matches "{x}/c"). The first route in that order that matches the path and accepts the
 * method wins. Among routes of the same shape, one naming the request's method wins over a
 * method-less one. A GET route also answers HEAD (unless a HEAD route of the same shape exists),
 * and is preferred to a method-less route for HEAD. Methods compare case-sensitively.
 *
 * Conflicts (core_router_add → NOOK_EEXIST): a second route with the same method (or both
 * method-less) whose pattern has the same shape — same literals, parameters and wildcard at the
 * same positions — whatever the parameter names are.
 *
 * Matching never allocates and does not recurse: its work is bounded by the registered routes,
 * not by the number of segments in the request. It only reads the router, so once registration
 * is over any number of threads may match at once. Parameter values are views into the path
 * passed to match, still percent-encoded (the caller decodes on demand).
 */
#ifndef NOOK_CORE_ROUTER_H
#define NOOK_CORE_ROUTER_H

#include <stddef.h>

#include "io/alloc.h"

#define CORE_ROUTE_MAX_PARAMS 16

typedef struct core_router core_router;

typedef struct core_route_param {
    const char *name; /* NUL-terminated, owned by the router */
    const char *value; /* view into the matched path */
    size_t value_len;
} core_route_param;

typedef struct core_route_match {
    void *target;  /* what core_router_add was given */
    size_t nparams;
    core_route_param params[CORE_ROUTE_MAX_PARAMS];
    /* On NOOK_ENOTFOUND with 405 semantics (see core_router_match): the Allow header value,
     * NUL-terminated, e.g. "GET, HEAD, POST" — methods in registration order, HEAD after GET
     * when a GET route exists and HEAD is not registered itself. */
    char allow[256];
} core_route_match;

/* NULL when out of memory. */
core_router *core_router_new(const io_alloc *alloc);

/* Frees the router (NULL is fine); calls free_target(target) once per successful
 * core_router_add if free_target != NULL. */
void core_router_free(core_router *r, void (*free_target)(void *target));

/* Registers pattern → target. NOOK_OK, NOOK_EINVAL (malformed pattern), NOOK_EEXIST (conflict,
 * see above), NOOK_ENOMEM. On error nothing is registered. */
int core_router_add(core_router *r, const char *pattern, void *target);

/* The target of the route registered with a pattern of the same method and shape as `pattern`
 * (parameter names aside): NOOK_OK, NOOK_ENOTFOUND, or NOOK_EINVAL for a malformed pattern. */
int core_router_find(const core_router *r, const char *pattern, void **target);

/*
 * Finds the route for a request. `path` is the raw path without the query; one that does not
 * start with '/' ("*") matches nothing. A NULL or empty method is answered by method-less routes.
 * Returns NOOK_OK with m->target and m->params set;
 *         NOOK_ENOTFOUND with m->allow[0] == '\0' when no route matches the path at all (→ 404);
 *         NOOK_ENOTFOUND with m->allow non-empty when routes match the path but none accepts the
 *         method (→ 405, m->allow is the Allow header value).
 */
int core_router_match(const core_router *r, const char *method, size_t method_len,
                      const char *path, size_t path_len, core_route_match *m);

#endif
