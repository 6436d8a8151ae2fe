/*
 * TLS with mbedTLS: the only code in nook that includes mbedTLS headers.
 *
 * nook_tls (public, opaque) is a reference-counted configuration: certificates (chosen by SNI),
 * the ALPN list, one shared mbedtls_ssl_config, session-ticket keys. tls_conn is one server-side
 * connection: a non-blocking handshake on a socket, then an io_transport that io_stream uses
 * (the protocol codecs above never see mbedTLS).
 *
 * Threads: a nook_tls is configured on one thread, then frozen by tls_prepare() and read from
 * every worker. Random numbers come from one CTR-DRBG per thread (never a shared one without a
 * lock). Builds against mbedTLS 2.28 (Debian 12, TLS 1.2) and 3.x (TLS 1.3 enabled too), with API
 * differences guarded by MBEDTLS_VERSION_NUMBER.
 */
#ifndef NOOK_TLS_TLS_H
#define NOOK_TLS_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "io/stream.h"
#include "nook.h"

typedef struct tls_conn tls_conn;

/* Reference counting (nook_tls_new returns one reference; nook_tls_free drops one). */
void tls_ref(nook_tls *t);
void tls_unref(nook_tls *t);

/* True once at least one certificate was added. */
bool tls_has_cert(const nook_tls *t);

/*
 * Freezes the configuration and builds the shared mbedtls_ssl_config. Called by the server when
 * it starts (on one thread), once per server using this nook_tls; offer_h2 false removes "h2"
 * from the ALPN list. Calling it again with the same offer_h2 is a no-op; with a different value
 * it returns NOOK_ESTATE (one nook_tls serves servers that agree on HTTP/2).
 * The config: server endpoint, TLS 1.2 minimum (and 1.3 where the library has it), cipher
 * suites ECDHE-{ECDSA,RSA} with CHACHA20-POLY1305, AES-128-GCM, AES-256-GCM (in that order of
 * preference for TLS 1.2, server order wins), curves P-256 then X25519 then P-384,
 * renegotiation disabled, session tickets on (keys rotated by mbedtls_ssl_ticket, 24 h lifetime), ALPN list, SNI
 * callback. Errors: NOOK_EINVAL (no certificate, or an ALPN list left empty: only "h2"
 * configured and offer_h2 false; the reason is in nook_tls_last_error), NOOK_ESTATE, NOOK_ENOMEM.
 * A failed call leaves the object unprepared.
 */
int tls_prepare(nook_tls *t, bool offer_h2);

/* A server-side TLS connection over a connected non-blocking socket (not owned: the caller
 * closes it). It holds a reference on t until tls_conn_free. NULL on ENOMEM or if the
 * configuration was not prepared. */
tls_conn *tls_conn_new(nook_tls *t, const io_alloc *alloc, int fd);

/* Encrypted bytes gathered into one send when a write makes several records (see
 * NOOK_OPT_TLS_SEND_BATCH); less than two full records' worth: a send per record. Call before
 * the first write. A new connection (either side) gathers TLS_SEND_BATCH_DEFAULT. */
#define TLS_SEND_BATCH_DEFAULT (128u << 10)
void tls_conn_set_send_batch(tls_conn *c, size_t bytes);

/*
 * Advances the handshake. NOOK_OK when it completed; NOOK_AGAIN when it must wait for the socket
 * (*want_write tells whether for writability rather than readability); NOOK_ECLOSED when the peer
 * closed; NOOK_EINVAL when the handshake failed (a protocol error, no common version, cipher or
 * ALPN protocol, a bad record): tls_conn_error() describes it for the log.
 */
int tls_conn_handshake(tls_conn *c, bool *want_write);

/* A short description of the last failure ("handshake: SSL - ...", from mbedtls_strerror). */
const char *tls_conn_error(const tls_conn *c);

/* The ALPN protocol selected ("h2", "http/1.1") or NULL when the client offered none. */
const char *tls_conn_alpn(const tls_conn *c);

/* RFC 9113 §9.2: the negotiated version is TLS 1.2 or later and, for TLS 1.2, the cipher suite
 * is an ephemeral-key AEAD suite (not on the §9.2.2 / Appendix A deny list). */
bool tls_conn_h2_allowed(const tls_conn *c);

/* "TLSv1.2" etc. and the cipher suite name, for logs. */
const char *tls_conn_version(const tls_conn *c);
const char *tls_conn_cipher(const tls_conn *c);

/*
 * The io_transport for an io_stream whose tr_data is a tls_conn after a completed handshake.
 * recv: decrypts into the buffer, looping while mbedTLS has data, until the buffer is full or the
 * socket would block (errno EAGAIN); 0 on close_notify or EOF. send: encrypts and writes; after a
 * partial/blocked write it retries the exact bytes mbedTLS has pending (mbedTLS requires the same
 * data again), never reporting bytes as written before they are. pending: bytes mbedTLS already
 * decrypted (or holds undecrypted) that a recv would return without the socket becoming readable
 * again — a caller that stopped reading with such bytes waiting must come back on its own.
 * (Undecrypted bytes count as 1: mbedTLS tells only that it holds some.) close: queues a
 * close_notify (best effort) and frees the tls_conn (io_stream_close then closes the socket).
 */
extern const io_transport tls_transport;

/* Queues a close_notify alert (best effort, non-blocking). */
void tls_conn_close_notify(tls_conn *c);

/* Frees the connection state (not the socket). NULL-safe. */
void tls_conn_free(tls_conn *c);

/* For lib/tls/client.c: a client-side connection over a connected non-blocking socket (not
 * owned), set up on a client configuration that must outlive it. hostname (copied by mbedTLS)
 * is sent as SNI and is the name the server's certificate must match; NULL sends none. The
 * handshake and the transport are those above. NULL on ENOMEM or a bad hostname. */
struct mbedtls_ssl_config;
tls_conn *tls_conn_new_client(const struct mbedtls_ssl_config *conf, const io_alloc *alloc, int fd,
                              const char *hostname);

/* For lib/tls/client.c: the mbedTLS context of a client connection, to set a verification
 * callback of its own before the handshake. */
struct mbedtls_ssl_context;
struct mbedtls_ssl_context *tls_conn_ssl(tls_conn *c);

/* The per-thread random generator as an mbedTLS f_rng (p_rng is ignored), for client.c. */
int tls_random(void *unused, unsigned char *out, size_t len);

#endif
