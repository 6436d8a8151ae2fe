#define _POSIX_C_SOURCE 200809L /* sigaction */
#include "example.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static nook_server *running;

static void on_signal(int sig)
{
    (void)sig;
    nook_server_stop(running, 5000); /* async-signal-safe */
}

static void usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [--tls-cert FILE --tls-key FILE] [--listen ADDR:PORT]... [--threads N] "
            "[--no-h2] [--print-port] [example flags]\n",
            prog);
}

static int listen_on(nook_server *srv, const char *addr, const char *cert, const char *key,
                     nook_tls **tls)
{
    if (cert && key && !*tls) {
        *tls = nook_tls_new();
        int rc = *tls ? nook_tls_add_cert_file(*tls, cert, key, NULL) : NOOK_ENOMEM;
        if (rc != NOOK_OK) {
            fprintf(stderr, "%s / %s: %s\n", cert, key,
                    *tls ? nook_tls_last_error(*tls) : "out of memory");
            return rc;
        }
    }
    int rc = nook_server_listen(srv, addr, cert && key ? *tls : NULL);
    if (rc != NOOK_OK)
        fprintf(stderr, "listen %s: %s\n", addr, nook_strerror(rc));
    return rc;
}

nook_server *example_setup(int argc, char **argv, const char *default_listen,
                           example_arg_fn extra, void *user_data)
{
    nook_server *srv = nook_server_new();
    if (!srv) {
        fprintf(stderr, "out of memory\n");
        return NULL;
    }
    nook_server_set_logger(srv, nook_log_stderr, NOOK_LOG_WARN, NULL);
    const char *cert = NULL, *key = NULL;
    nook_tls *tls = NULL;
    int listeners = 0, rc = NOOK_OK;
    bool print_port = false;
    for (int i = 1; i < argc && rc == NOOK_OK; i++) {
        int used = extra ? extra(argc, argv, i, user_data) : 0;
        if (used < 0) {
            rc = NOOK_EINVAL;
        } else if (used > 0) {
            i += used - 1;
        } else if (strcmp(argv[i], "--tls-cert") == 0 && i + 1 < argc) {
            cert = argv[++i];
        } else if (strcmp(argv[i], "--tls-key") == 0 && i + 1 < argc) {
            key = argv[++i];
        } else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            rc = listen_on(srv, argv[++i], cert, key, &tls);
            listeners++;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            rc = nook_server_set_int(srv, NOOK_OPT_THREADS, atoi(argv[++i]));
        } else if (strcmp(argv[i], "--no-h2") == 0) {
            rc = nook_server_set_int(srv, NOOK_OPT_HTTP2, 0);
        } else if (strcmp(argv[i], "--print-port") == 0) {
            print_port = true;
        } else {
            usage(argv[0]);
            rc = NOOK_EINVAL;
        }
    }
    if (rc == NOOK_OK && listeners == 0)
        rc = listen_on(srv, default_listen, cert, key, &tls);
    nook_tls_free(tls); /* the listeners keep their own reference */
    if (rc != NOOK_OK) {
        nook_server_free(srv);
        return NULL;
    }
    for (size_t i = 0; nook_server_port(srv, i) >= 0; i++) {
        if (print_port)
            printf("port %d\n", nook_server_port(srv, i));
        else
            fprintf(stderr, "%s: listening on port %d\n", argv[0], nook_server_port(srv, i));
    }
    fflush(stdout);
    return srv;
}

int example_serve(nook_server *srv)
{
    running = srv;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int rc = nook_server_run(srv);
    /* A late signal must not reach nook_server_stop() on a server being freed. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    if (rc != NOOK_OK)
        fprintf(stderr, "%s\n", nook_strerror(rc));
    return rc == NOOK_OK ? 0 : 1;
}

int example_run(nook_server *srv)
{
    int status = example_serve(srv);
    nook_server_free(srv);
    return status;
}
