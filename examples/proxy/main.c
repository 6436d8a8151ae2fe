/*
 * proxy: a reverse proxy — nook_use_proxy() forwarding everything to one or more upstreams.
 *
 *   proxy --upstream URL [--upstream URL]... [--prefix /P] [--strip-prefix]
 *         [--ca-file F | --insecure] [--balance rr|least] [--max-conns N] [--max-waiting N]
 *         [--connect-timeout MS] [--response-timeout MS] [--idle-timeout MS] [--keepalive MS]
 *         [--down-time MS] [--no-forwarded] [--listen ADDR:PORT]... [--tls-cert F --tls-key F]
 *         [--threads N] [--no-h2] [--print-port]
 *
 * URL is h2://host:port (HTTP/2 over TLS, the certificate checked against --ca-file or the
 * system CAs), h2c://host:port (cleartext HTTP/2), http://host:port (HTTP/1.1) or
 * https://host:port (HTTP/1.1 over TLS). Clients reach
 * it over HTTP/1.1, h2c, or TLS (h2 or http/1.1 by ALPN) for listeners after --tls-cert and
 * --tls-key. Ctrl-C or SIGTERM stops it gracefully. Settings not given keep the library's
 * defaults (nook_proxy_new).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "example.h"

typedef struct options {
    nook_proxy *proxy;
    const char *prefix;
    const char *ca_file;
    int insecure;
    int connect_ms, response_ms, idle_ms, keepalive_ms; /* -1: the library's default */
    int max_conns, max_waiting, down_ms;
    int failed;
} options;

static int fail(options *o, const char *prog, const char *what, const char *arg, int rc)
{
    fprintf(stderr, "%s: %s%s%s%s%s\n", prog, what, arg ? " " : "", arg ? arg : "", rc ? ": " : "",
            rc ? nook_strerror(rc) : "");
    o->failed = 1;
    return -1;
}

static int int_flag(const char *name, int argc, char **argv, int i, int *out)
{
    if (strcmp(argv[i], name) != 0)
        return 0;
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    char *end = NULL;
    long n = v ? strtol(v, &end, 10) : -1;
    if (!v || end == v || *end || n < 0 || n > INT_MAX) {
        fprintf(stderr, "%s: %s needs a whole number, 0 or more, not %s\n", argv[0], name,
                v ? v : "nothing");
        return -1;
    }
    *out = (int)n;
    return 2;
}

static int proxy_arg(int argc, char **argv, int i, void *user_data)
{
    options *o = user_data;
    const char *a = argv[i];
    if (strcmp(a, "--strip-prefix") == 0)
        return nook_proxy_set_strip_prefix(o->proxy, 1) == NOOK_OK ? 1 : -1;
    if (strcmp(a, "--insecure") == 0) {
        o->insecure = 1;
        return 1;
    }
    if (strcmp(a, "--no-forwarded") == 0)
        return nook_proxy_set_forwarded(o->proxy, 0) == NOOK_OK ? 1 : -1;
    static const char *const ints[] = {"--connect-timeout", "--response-timeout", "--idle-timeout",
                                       "--keepalive",       "--max-conns",        "--max-waiting",
                                       "--down-time"};
    int *targets[] = {&o->connect_ms, &o->response_ms, &o->idle_ms, &o->keepalive_ms,
                      &o->max_conns,  &o->max_waiting, &o->down_ms};
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++) {
        int used = int_flag(ints[k], argc, argv, i, targets[k]);
        if (used)
            return used;
    }
    if (strcmp(a, "--upstream") != 0 && strcmp(a, "--prefix") != 0 && strcmp(a, "--ca-file") != 0 &&
        strcmp(a, "--balance") != 0)
        return 0;
    if (i + 1 >= argc) {
        fprintf(stderr, "%s: %s needs a value\n", argv[0], a);
        return -1;
    }
    const char *v = argv[i + 1];
    if (strcmp(a, "--upstream") == 0) {
        int rc = nook_proxy_add_upstream(o->proxy, v);
        if (rc != NOOK_OK)
            return fail(o, argv[0], "bad --upstream", nook_proxy_last_error(o->proxy), rc);
    } else if (strcmp(a, "--prefix") == 0) {
        o->prefix = v;
    } else if (strcmp(a, "--ca-file") == 0) {
        o->ca_file = v;
    } else {
        nook_proxy_balance b =
            strcmp(v, "least") == 0 ? NOOK_PROXY_LEAST_OUTSTANDING : NOOK_PROXY_ROUND_ROBIN;
        if ((strcmp(v, "rr") != 0 && strcmp(v, "least") != 0) ||
            nook_proxy_set_balance(o->proxy, b) != NOOK_OK)
            return fail(o, argv[0], "--balance must be rr or least, not", v, 0);
    }
    return 2;
}

/* The numeric settings; each failure names the flags at fault. */
static int configure(options *o, const char *prog)
{
    nook_proxy *p = o->proxy;
    if (nook_proxy_set_tls(p, o->ca_file, !o->insecure) != NOOK_OK)
        return fail(o, prog, "--ca-file", o->ca_file, NOOK_ENOMEM);
    if (nook_proxy_set_timeouts(p, o->connect_ms, o->response_ms, o->idle_ms) != NOOK_OK)
        return fail(o, prog, "--connect-timeout and --response-timeout must be 1 or more", NULL, 0);
    if (nook_proxy_set_keepalive(p, o->keepalive_ms) != NOOK_OK)
        return fail(o, prog, "--keepalive out of range", NULL, 0);
    if (nook_proxy_set_limits(p, o->max_conns, o->down_ms) != NOOK_OK)
        return fail(o, prog, "--max-conns must be 1 to 1024", NULL, 0);
    if (nook_proxy_set_max_waiting(p, o->max_waiting) != NOOK_OK)
        return fail(o, prog, "--max-waiting must be 1 to 1048576", NULL, 0);
    return 0;
}

int main(int argc, char **argv)
{
    options o = {.prefix = "/",
                 .connect_ms = -1,
                 .response_ms = -1,
                 .idle_ms = -1,
                 .keepalive_ms = -1,
                 .max_conns = -1,
                 .max_waiting = -1,
                 .down_ms = -1};
    o.proxy = nook_proxy_new();
    if (!o.proxy) {
        fprintf(stderr, "%s: out of memory\n", argv[0]);
        return 1;
    }
    nook_server *srv = example_setup(argc, argv, "127.0.0.1:8080", proxy_arg, &o);
    if (!srv || o.failed) {
        nook_proxy_free(o.proxy);
        nook_server_free(srv);
        return 1;
    }
    if (configure(&o, argv[0]) != 0) {
        nook_proxy_free(o.proxy);
        nook_server_free(srv);
        return 1;
    }
    int rc = nook_use_proxy(srv, o.prefix, o.proxy);
    if (rc != NOOK_OK) {
        const char *why = nook_proxy_last_error(o.proxy);
        fprintf(stderr, "%s: cannot proxy: %s (%s)\n", argv[0], nook_strerror(rc),
                *why ? why : "at least one --upstream is needed");
        nook_proxy_free(o.proxy);
        nook_server_free(srv);
        return 1;
    }
    return example_run(srv);
}
