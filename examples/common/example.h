/*
 * What every example shares: the command line, the listeners, and running until Ctrl-C.
 *
 *   --listen ADDR:PORT   repeatable; listeners after --tls-cert/--tls-key serve TLS
 *   --tls-cert FILE --tls-key FILE
 *   --threads N          worker threads
 *   --no-h2              HTTP/1.1 only
 *   --print-port         print "port P" per listener on stdout (for tests using port 0)
 *
 * Each example handles its own extra flags first (example_arg returns how many it used).
 */
#ifndef NOOK_EXAMPLE_H
#define NOOK_EXAMPLE_H

#include "nook.h"

/* Parses the shared flags; `extra` sees every flag first and returns how many arguments it
 * consumed (0: not its flag). Creates the server with default_listen when no --listen is given.
 * Returns the server, or NULL after printing why. */
typedef int (*example_arg_fn)(int argc, char **argv, int i, void *user_data);
nook_server *example_setup(int argc, char **argv, const char *default_listen,
                           example_arg_fn extra, void *user_data);

/* Serves until SIGINT/SIGTERM (graceful stop); the server is not freed. Returns the exit status. */
int example_serve(nook_server *srv);

/* example_serve, then frees the server. */
int example_run(nook_server *srv);

#endif
