/*
 * middleware: the built-in middleware together, plus one written by hand.
 *
 *   middleware [--listen ADDR:PORT]... [--tls-cert F --tls-key F] [--threads N] [--no-h2]
 *              [--print-port] [--rate PER_SECOND] [--burst N] [--max-clients N]
 *              [--log json|common|combined]
 *
 *   GET /          "public"
 *   GET /private   "secret" with "Authorization: Bearer letmein", 401 without
 *   GET /about     a page of text (about 1.5 KiB): large enough to be compressed
 *
 * Every request is logged to stderr (JSON lines unless --log says otherwise), gets an
 * X-Request-Id, CORS headers for https://app.example, gzip/br compression when the client
 * accepts it and the body is at least 256 bytes (so /about is compressed, the short answers
 * are not), and counts against its client's rate limit (20 per second, bursts of 40, 65536
 * clients remembered, unless --rate, --burst and --max-clients say otherwise).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "example.h"

typedef struct options {
    double rate, burst;
    size_t max_clients;
    nook_access_format log_format;
} options;

static void public_page(nook_req *req, void *user_data)
{
    (void)user_data;
    nook_respond(req, 200, "text/plain", "public", 6);
}

static void private_page(nook_req *req, void *user_data)
{
    (void)user_data;
    nook_respond(req, 200, "text/plain", "secret", 6);
}

static const char about[] =
    "About this server\n"
    "=================\n"
    "\n"
    "Every request that reaches this page has passed through five pieces of middleware, in the\n"
    "order they were registered: the access log, which adds a hook that writes one line once\n"
    "the response has ended; the request id, which tags the response with X-Request-Id; CORS,\n"
    "which answers preflights itself and adds Access-Control-Allow-Origin on the way out; the\n"
    "rate limit, which answers 429 when a client has spent its tokens; and compression, which\n"
    "decides just before the head goes out whether this body is worth compressing.\n"
    "\n"
    "None of them wraps the response writer. Each one adds hooks to the request and calls\n"
    "nook_next(): the hooks run on the way out in the reverse order of adding, so the one added\n"
    "closest to the handler runs first. That is why the same middleware works for a whole\n"
    "response, a streamed one, and one answered later from another thread with a token.\n"
    "\n"
    "This page is longer than the compression threshold (256 bytes by default), so a client\n"
    "that sends Accept-Encoding: gzip receives it gzip-encoded, with Vary: Accept-Encoding so\n"
    "that caches keep one copy per coding. The answers of / and /private are shorter than the\n"
    "threshold: they go out as they are, with their Content-Length.\n"
    "\n"
    "Try: curl -v --compressed http://127.0.0.1:8080/about\n";

static void about_page(nook_req *req, void *user_data)
{
    (void)user_data;
    nook_respond(req, 200, "text/plain; charset=utf-8", about, sizeof about - 1);
}

/* A hand-written middleware: answers 401 itself unless the request carries the token, so the
 * route behind it never sees such a request. */
static void require_token(nook_req *req, void *user_data)
{
    static const char expected[] = "Bearer letmein";
    (void)user_data;
    nook_str auth = nook_req_header(req, "Authorization");
    if (auth.len != sizeof expected - 1 || memcmp(auth.ptr, expected, auth.len) != 0) {
        nook_res_header(req, "WWW-Authenticate", "Bearer");
        nook_respond(req, 401, "text/plain", "unauthorized\n", 13);
        return;
    }
    nook_next(req);
}

static int parse_log_format(const char *name, nook_access_format *format)
{
    if (strcmp(name, "json") == 0)
        *format = NOOK_ACCESS_JSON;
    else if (strcmp(name, "common") == 0)
        *format = NOOK_ACCESS_COMMON;
    else if (strcmp(name, "combined") == 0)
        *format = NOOK_ACCESS_COMBINED;
    else
        return NOOK_EINVAL;
    return NOOK_OK;
}

/* This example's own flags (see example_arg_fn). */
static int parse_flag(int argc, char **argv, int i, void *user_data)
{
    options *opt = user_data;
    if (i + 1 >= argc)
        return 0;
    if (strcmp(argv[i], "--rate") == 0) {
        opt->rate = atof(argv[i + 1]);
        return 2;
    }
    if (strcmp(argv[i], "--burst") == 0) {
        opt->burst = atof(argv[i + 1]);
        return 2;
    }
    if (strcmp(argv[i], "--max-clients") == 0) {
        opt->max_clients = (size_t)strtoull(argv[i + 1], NULL, 10);
        return 2;
    }
    if (strcmp(argv[i], "--log") == 0) {
        if (parse_log_format(argv[i + 1], &opt->log_format) != NOOK_OK) {
            fprintf(stderr, "--log: expected json, common or combined, got %s\n", argv[i + 1]);
            return -1;
        }
        return 2;
    }
    return 0;
}

/* Middleware meets requests in registration order: the log first, so that it sees every
 * answer; CORS before the limit, so that a browser can read a 429; the token check last, and
 * only for /private. */
static int set_up(nook_server *srv, const options *opt)
{
    int rc;
    if ((rc = nook_use_access_log(srv, "/", opt->log_format, NULL, NULL)) != NOOK_OK ||
        (rc = nook_use_request_id(srv, "/", NULL)) != NOOK_OK ||
        (rc = nook_use_cors(srv, "/", "https://app.example", "GET, POST",
                            "Authorization, Content-Type", 600, 0)) != NOOK_OK ||
        (rc = nook_use_rate_limit(srv, "/", opt->rate, opt->burst, opt->max_clients)) != NOOK_OK ||
        (rc = nook_use_compress(srv, "/", 0, 0)) != NOOK_OK ||
        (rc = nook_use(srv, "/private", require_token, NULL, NULL)) != NOOK_OK ||
        (rc = nook_route(srv, "GET /", public_page, NULL, NULL)) != NOOK_OK ||
        (rc = nook_route(srv, "GET /private", private_page, NULL, NULL)) != NOOK_OK ||
        (rc = nook_route(srv, "GET /about", about_page, NULL, NULL)) != NOOK_OK)
        fprintf(stderr, "setting up the middleware: %s\n", nook_strerror(rc));
    return rc;
}

int main(int argc, char **argv)
{
    options opt = {.rate = 20, .burst = 40, .log_format = NOOK_ACCESS_JSON};
    nook_server *srv = example_setup(argc, argv, "127.0.0.1:8080", parse_flag, &opt);
    if (!srv)
        return 1;
    if (set_up(srv, &opt) != NOOK_OK) {
        nook_server_free(srv);
        return 1;
    }
    return example_run(srv);
}
