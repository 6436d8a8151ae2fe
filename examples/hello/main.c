/*
 * hello: the smallest useful nook server, and the one the benchmarks run (bench/run.sh).
 *
 *   hello [--tls-cert FILE --tls-key FILE] [--listen ADDR:PORT]... [--threads N] [--no-h2]
 *         [--print-port] [--docroot DIR]
 *
 * GET / answers "Hello, World!" as text/plain, over HTTP/1.1, h2c, and TLS (h2 or http/1.1 by
 * ALPN) for listeners after --tls-cert/--tls-key. With --docroot DIR, the files of DIR are served
 * beside it under /static/ (nook_use_static: /static/a.bin is DIR/a.bin), so one process serves
 * both the tiny answer and large bodies. The files live under a prefix rather than at "/" so
 * that GET / never touches the file system. Ctrl-C or SIGTERM stops it gracefully.
 */
#include <stdio.h>
#include <string.h>

#include "example.h"

static void hello(nook_req *req, void *user_data)
{
    (void)user_data;
    nook_respond(req, 200, "text/plain", "Hello, World!", 13);
}

/* --docroot DIR: the one flag of this example. */
static int docroot_arg(int argc, char **argv, int i, void *user_data)
{
    const char **docroot = user_data;
    if (strcmp(argv[i], "--docroot") != 0)
        return 0;
    if (i + 1 >= argc) {
        fprintf(stderr, "%s: --docroot needs a directory\n", argv[0]);
        return -1;
    }
    *docroot = argv[i + 1];
    return 2;
}

int main(int argc, char **argv)
{
    const char *docroot = NULL;
    nook_server *srv = example_setup(argc, argv, "127.0.0.1:8080", docroot_arg, &docroot);
    if (!srv)
        return 1;
    int rc = docroot ? nook_use_static(srv, "/static", docroot, 0) : NOOK_OK;
    if (rc == NOOK_OK)
        rc = nook_route(srv, "GET /", hello, NULL, NULL);
    if (rc != NOOK_OK) {
        fprintf(stderr, "%s: cannot serve %s: %s\n", argv[0], docroot ? docroot : "/",
                nook_strerror(rc));
        nook_server_free(srv);
        return 1;
    }
    return example_run(srv);
}
