/*
 * static: a file server — nook_use_static() behind nook_use_compress().
 *
 *   static --root DIR [--listen ADDR:PORT]... [--tls-cert F --tls-key F] [--threads N]
 *          [--no-h2] [--print-port]
 *
 * Serves DIR under "/" (a directory's index.html included; no listings), compressed with gzip
 * or br for clients that accept it, with ETag/Last-Modified revalidation and byte ranges, over
 * HTTP/1.1, h2c, and TLS (h2 or http/1.1 by ALPN) for listeners after --tls-cert/--tls-key.
 * Paths with no file fall through to the routes: GET /version answers the library version
 * unless DIR has a file called "version". Ctrl-C or SIGTERM stops it gracefully.
 */
#include <stdio.h>
#include <string.h>

#include "example.h"

static void version(nook_req *req, void *user_data)
{
    (void)user_data;
    const char *v = nook_version();
    nook_respond(req, 200, "text/plain; charset=utf-8", v, strlen(v));
}

/* --root DIR: the one flag of this example. */
static int root_arg(int argc, char **argv, int i, void *user_data)
{
    const char **root = user_data;
    if (strcmp(argv[i], "--root") != 0)
        return 0;
    if (i + 1 >= argc) {
        fprintf(stderr, "%s: --root needs a directory\n", argv[0]);
        return -1;
    }
    *root = argv[i + 1];
    return 2;
}

int main(int argc, char **argv)
{
    const char *root = NULL;
    nook_server *srv = example_setup(argc, argv, "127.0.0.1:8080", root_arg, &root);
    if (!srv)
        return 1;
    if (!root) {
        fprintf(stderr, "%s: --root DIR is required\n", argv[0]);
        nook_server_free(srv);
        return 2;
    }
    /* Compression first: its hooks must be in place before the file server answers. */
    int rc = nook_use_compress(srv, "/", 0, 0);
    if (rc == NOOK_OK)
        rc = nook_use_static(srv, "/", root, NOOK_STATIC_INDEX);
    if (rc == NOOK_OK)
        rc = nook_route(srv, "GET /version", version, NULL, NULL);
    if (rc != NOOK_OK) {
        fprintf(stderr, "%s: cannot serve %s: %s\n", argv[0], root, nook_strerror(rc));
        nook_server_free(srv);
        return 1;
    }
    return example_run(srv);
}
