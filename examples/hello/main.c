/*
 * hello: the smallest useful nook server, and the one the benchmarks run.
 *
 *   hello [--tls-cert FILE --tls-key FILE] [--listen ADDR:PORT]... [--threads N] [--no-h2]
 *
 * GET / answers "Hello, World!" as text/plain, over HTTP/1.1, h2c, and TLS (h2 or http/1.1 by
 * ALPN) for listeners after --tls-cert/--tls-key. Ctrl-C or SIGTERM stops it gracefully.
 */
#include "example.h"

static void hello(nook_req *req, void *user_data)
{
    (void)user_data;
    nook_respond(req, 200, "text/plain", "Hello, World!", 13);
}

int main(int argc, char **argv)
{
    nook_server *srv = example_setup(argc, argv, "127.0.0.1:8080", NULL, NULL);
    if (!srv)
        return 1;
    nook_route(srv, "GET /", hello, NULL, NULL);
    return example_run(srv);
}
