/*
 * hello: the smallest useful nook server, and the one the benchmarks run.
 *
 *   hello [--tls-cert FILE --tls-key FILE] [--listen ADDR:PORT]... [--threads N] [--no-h2]
 *
 * GET / answers "Hello, World!" as text/plain. Listeners that follow --tls-cert/--tls-key serve
 * TLS (HTTP/2 or HTTP/1.1 by ALPN); the others serve cleartext HTTP/1.1 and h2c. --no-h2 turns
 * HTTP/2 off everywhere. Ctrl-C (SIGINT) or SIGTERM stops it gracefully.
 */
#define _POSIX_C_SOURCE 200809L /* sigaction */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nook.h"

static nook_server *server;

static void hello(nook_req *req, void *user_data)
{
    (void)user_data;
    nook_respond(req, 200, "text/plain", "Hello, World!", 13);
}

static void on_signal(int sig)
{
    (void)sig;
    nook_server_stop(server, 5000); /* async-signal-safe */
}

static int usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [--tls-cert FILE --tls-key FILE] [--listen ADDR:PORT]... [--threads N] "
            "[--no-h2]\n",
            prog);
    return 2;
}

int main(int argc, char **argv)
{
    server = nook_server_new();
    if (!server) {
        fprintf(stderr, "hello: out of memory\n");
        return 1;
    }
    nook_server_set_logger(server, nook_log_stderr, NOOK_LOG_WARN, NULL);

    int listeners = 0;
    const char *cert = NULL, *key = NULL;
    nook_tls *tls = NULL;
    for (int i = 1; i < argc; i++) {
        int rc = NOOK_OK;
        if (strcmp(argv[i], "--tls-cert") == 0 && i + 1 < argc) {
            cert = argv[++i];
        } else if (strcmp(argv[i], "--tls-key") == 0 && i + 1 < argc) {
            key = argv[++i];
        } else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            if (cert && key && !tls) {
                tls = nook_tls_new();
                rc = tls ? nook_tls_add_cert_file(tls, cert, key, NULL) : NOOK_ENOMEM;
                if (rc != NOOK_OK) {
                    fprintf(stderr, "hello: %s / %s: %s\n", cert, key,
                            tls ? nook_tls_last_error(tls) : "out of memory");
                    nook_tls_free(tls);
                    nook_server_free(server);
                    return 1;
                }
            }
            rc = nook_server_listen(server, argv[++i], tls);
            listeners++;
        } else if (strcmp(argv[i], "--no-h2") == 0) {
            rc = nook_server_set_int(server, NOOK_OPT_HTTP2, 0);
            continue;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            rc = nook_server_set_int(server, NOOK_OPT_THREADS, atoi(argv[++i]));
        } else {
            nook_tls_free(tls);
            nook_server_free(server);
            return usage(argv[0]);
        }
        if (rc != NOOK_OK) {
            fprintf(stderr, "hello: %s %s: %s\n", argv[i - 1], argv[i], nook_strerror(rc));
            nook_tls_free(tls);
            nook_server_free(server);
            return 1;
        }
    }
    if (listeners == 0 && nook_server_listen(server, "127.0.0.1:8080", NULL) != NOOK_OK) {
        fprintf(stderr, "hello: cannot listen on 127.0.0.1:8080\n");
        nook_server_free(server);
        return 1;
    }
    nook_tls_free(tls); /* the listeners keep their own reference */
    nook_route(server, "GET /", hello, NULL, NULL);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    for (int i = 0; nook_server_port(server, (size_t)i) >= 0; i++)
        fprintf(stderr, "hello: listening on port %d\n", nook_server_port(server, (size_t)i));
    int rc = nook_server_run(server);
    /* A late signal must not reach nook_server_stop() on a server being freed. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    nook_server_free(server);
    if (rc != NOOK_OK) {
        fprintf(stderr, "hello: %s\n", nook_strerror(rc));
        return 1;
    }
    return 0;
}
