/*
 * TLS client side (for the proxy's h2:// upstreams): a configuration that verifies servers
 * against a CA file and offers ALPN, and connections made from it. The connections are ordinary
 * tls_conn objects: tls_conn_handshake() drives them and tls_transport carries their bytes, so
 * io_stream users never see mbedTLS.
 *
 * Threads: a tls_client is built on one thread, then only read (every worker may make
 * connections from it at once).
 */
#ifndef NOOK_TLS_CLIENT_H
#define NOOK_TLS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "io/alloc.h"
#include "tls/tls.h"

typedef struct tls_client tls_client;

/*
 * A client configuration: TLS 1.2 or later; ALPN offering `alpn` (a single protocol such as
 * "h2"; NULL offers none); with verify, the server's chain must lead to a certificate in
 * ca_file (PEM; NULL: the system bundle /etc/ssl/certs/ca-certificates.crt) and its name must
 * match the one given to tls_client_conn (MBEDTLS_SSL_VERIFY_REQUIRED); without, anything is
 * accepted (testing only). The strings are copied. NULL on failure, with the reason in err.
 */
tls_client *tls_client_new(const io_alloc *alloc, const char *ca_file, bool verify,
                           const char *alpn, char *err, size_t err_len);

/* Frees the configuration; every connection made from it must be freed first. NULL-safe. */
void tls_client_free(tls_client *c);

/* A connection over a connected non-blocking socket (not owned). server_name is sent as SNI
 * and is the name the certificate must carry. An IPv4 or IPv6 address instead is not sent
 * (RFC 6066 §3: SNI carries host names only); the certificate must then list that address
 * among its subjectAltName iPAddress entries, and server_name must stay valid as long as the
 * connection. NULL on ENOMEM. */
tls_conn *tls_client_conn(tls_client *c, const io_alloc *alloc, int fd, const char *server_name);

#endif
