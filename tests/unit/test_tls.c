/* The TLS layer against an mbedTLS client in the same thread: each case is a socketpair whose
 * two ends are driven alternately (server: tls_conn_*, client: mbedtls_ssl_* directly).
 * Covers configuration errors, ALPN, version floor, SNI certificate choice, session-ticket
 * resumption, and data through tls_transport on an io_stream (partial writes included). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "check.h"
#include "io/loop.h"
#include "io/stream.h"
#include "tls/tls.h"

#ifndef NOOK_TEST_DATA
#error "NOOK_TEST_DATA must be the absolute path of tests/data (the build defines it)"
#endif
#define DATA(file) NOOK_TEST_DATA "/" file

/* ---------------------------------------------------------------------------------------------
 * The client side
 * ------------------------------------------------------------------------------------------- */

typedef struct client_opts {
    const char **alpn;                  /* NULL: no ALPN extension */
    const char *sni;                    /* NULL: no server_name extension */
    const int *suites;                  /* NULL: mbedTLS defaults */
    bool tls11;                         /* at most TLS 1.1 (must be refused) */
    bool tls12;                         /* at most TLS 1.2, so the handshake is readable */
    const mbedtls_ssl_session *session; /* resume this session */
} client_opts;

typedef struct client {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_ssl_config conf;
    mbedtls_ssl_context ssl;
    int fd;
    /* The first bytes the server sent, to see which handshake messages it sent in clear. */
    unsigned char seen[16384];
    size_t nseen;
} client;

static int cli_send(void *ctx, const unsigned char *buf, size_t len)
{
    client *c = ctx;
    ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0)
        return (int)n;
    return errno == EAGAIN ? MBEDTLS_ERR_SSL_WANT_WRITE : MBEDTLS_ERR_NET_SEND_FAILED;
}

static int cli_recv(void *ctx, unsigned char *buf, size_t len)
{
    client *c = ctx;
    ssize_t n = recv(c->fd, buf, len, 0);
    if (n < 0)
        return errno == EAGAIN ? MBEDTLS_ERR_SSL_WANT_READ : MBEDTLS_ERR_NET_RECV_FAILED;
    size_t keep = sizeof c->seen - c->nseen < (size_t)n ? sizeof c->seen - c->nseen : (size_t)n;
    memcpy(c->seen + c->nseen, buf, keep);
    c->nseen += keep;
    return (int)n;
}

static void client_versions(client *c, const client_opts *o)
{
    if (o->tls11) {
#if MBEDTLS_VERSION_NUMBER < 0x03000000
        mbedtls_ssl_conf_min_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                     MBEDTLS_SSL_MINOR_VERSION_1);
        mbedtls_ssl_conf_max_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                     MBEDTLS_SSL_MINOR_VERSION_2);
#endif
    }
    if (o->tls12) {
#if MBEDTLS_VERSION_NUMBER >= 0x03020000
        mbedtls_ssl_conf_max_tls_version(&c->conf, MBEDTLS_SSL_VERSION_TLS1_2);
#else
        mbedtls_ssl_conf_max_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                     MBEDTLS_SSL_MINOR_VERSION_3);
#endif
    }
}

static bool client_init(client *c, int fd, const client_opts *o)
{
    memset(c, 0, sizeof *c);
    c->fd = fd;
    mbedtls_entropy_init(&c->entropy);
    mbedtls_ctr_drbg_init(&c->drbg);
    mbedtls_ssl_config_init(&c->conf);
    mbedtls_ssl_init(&c->ssl);
    if (mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy, NULL, 0) != 0 ||
        mbedtls_ssl_config_defaults(&c->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                    MBEDTLS_SSL_PRESET_DEFAULT) != 0)
        return false;
    /* Self-signed test certificates: the test checks which one came, not that it verifies. */
    mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_NONE);
    mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &c->drbg);
    if (o->alpn && mbedtls_ssl_conf_alpn_protocols(&c->conf, o->alpn) != 0)
        return false;
    if (o->suites)
        mbedtls_ssl_conf_ciphersuites(&c->conf, o->suites);
    client_versions(c, o);
    if (mbedtls_ssl_setup(&c->ssl, &c->conf) != 0)
        return false;
    if (o->sni && mbedtls_ssl_set_hostname(&c->ssl, o->sni) != 0)
        return false;
    if (o->session && mbedtls_ssl_set_session(&c->ssl, o->session) != 0)
        return false;
    mbedtls_ssl_set_bio(&c->ssl, c, cli_send, cli_recv, NULL);
    return true;
}

static void client_free(client *c)
{
    mbedtls_ssl_free(&c->ssl);
    mbedtls_ssl_config_free(&c->conf);
    mbedtls_ctr_drbg_free(&c->drbg);
    mbedtls_entropy_free(&c->entropy);
}

/* Whether the server sent a Certificate message before ChangeCipherSpec (TLS 1.2): a full
 * handshake does, an abbreviated (resumed) one does not. */
static bool server_sent_certificate(const client *c)
{
    size_t off = 0;
    while (off + 5 <= c->nseen) {
        unsigned type = c->seen[off];
        size_t len = (size_t)c->seen[off + 3] << 8 | c->seen[off + 4];
        if (type == 20 || off + 5 + len > c->nseen) /* ChangeCipherSpec: encrypted from here */
            return false;
        const unsigned char *msg = c->seen + off + 5;
        for (size_t pos = 0; type == 22 && pos + 4 <= len;
             pos += 4 + ((size_t)msg[pos + 1] << 16 | (size_t)msg[pos + 2] << 8 | msg[pos + 3]))
            if (msg[pos] == 11)
                return true;
        off += 5 + len;
    }
    return false;
}

/* "CN=other.test" for the certificate the server presented. */
static const char *peer_subject(const client *c, char *buf, size_t size)
{
    const mbedtls_x509_crt *crt = mbedtls_ssl_get_peer_cert(&c->ssl);
    if (!crt || mbedtls_x509_dn_gets(buf, size, &crt->subject) < 0)
        return "";
    return buf;
}

/* ---------------------------------------------------------------------------------------------
 * A server connection and a client on a socketpair
 * ------------------------------------------------------------------------------------------- */

typedef struct pair {
    int sfd, cfd;
    tls_conn *srv;
    client cli;
    int srv_rc, cli_rc;
} pair;

static bool set_nonblocking(int fd)
{
    return fcntl(fd, F_SETFL, O_NONBLOCK) == 0;
}

static bool pair_open(pair *p, nook_tls *t, const client_opts *o)
{
    int fds[2];
    memset(p, 0, sizeof *p);
    p->sfd = p->cfd = -1;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
        return false;
    p->sfd = fds[0];
    p->cfd = fds[1];
    if (!set_nonblocking(p->sfd) || !set_nonblocking(p->cfd))
        return false;
    p->srv = tls_conn_new(t, &io_alloc_libc, p->sfd);
    return p->srv && client_init(&p->cli, p->cfd, o);
}

/* Both handshakes in turns until both ended. A side that fails shuts its end down, so the
 * other sees an alert or EOF instead of waiting forever. */
static void pair_handshake(pair *p)
{
    bool srv_done = false, cli_done = false;
    for (int i = 0; i < 10000 && !(srv_done && cli_done); i++) {
        if (!srv_done) {
            bool want_write = false;
            p->srv_rc = tls_conn_handshake(p->srv, &want_write);
            srv_done = p->srv_rc != NOOK_AGAIN;
            if (srv_done && p->srv_rc != NOOK_OK)
                shutdown(p->sfd, SHUT_WR);
        }
        if (!cli_done) {
            p->cli_rc = mbedtls_ssl_handshake(&p->cli.ssl);
            cli_done =
                p->cli_rc != MBEDTLS_ERR_SSL_WANT_READ && p->cli_rc != MBEDTLS_ERR_SSL_WANT_WRITE;
            if (cli_done && p->cli_rc != 0)
                shutdown(p->cfd, SHUT_WR);
        }
    }
}

static void pair_close(pair *p)
{
    tls_conn_free(p->srv);
    client_free(&p->cli);
    if (p->sfd >= 0)
        close(p->sfd);
    if (p->cfd >= 0)
        close(p->cfd);
}

/* One connection: handshake, then the ALPN result ("-" for none) and the certificate seen. */
typedef struct outcome {
    int srv_rc, cli_rc;
    char alpn[16];
    char subject[128];
    bool h2_allowed;
} outcome;

static outcome connect_once(nook_tls *t, const client_opts *o)
{
    outcome r = {.srv_rc = -100, .cli_rc = -100};
    pair p;
    if (pair_open(&p, t, o)) {
        pair_handshake(&p);
        r.srv_rc = p.srv_rc;
        r.cli_rc = p.cli_rc;
        const char *alpn = p.srv_rc == NOOK_OK ? tls_conn_alpn(p.srv) : NULL;
        snprintf(r.alpn, sizeof r.alpn, "%s", alpn ? alpn : "-");
        peer_subject(&p.cli, r.subject, sizeof r.subject);
        r.h2_allowed = p.srv_rc == NOOK_OK && tls_conn_h2_allowed(p.srv);
    }
    pair_close(&p);
    return r;
}

static nook_tls *make_tls(void)
{
    nook_tls *t = nook_tls_new();
    CHECK(t != NULL);
    CHECK_INT(nook_tls_add_cert_file(t, DATA("localhost.crt"), DATA("localhost.key"), NULL),
              NOOK_OK);
    CHECK_INT(nook_tls_add_cert_file(t, DATA("other.crt"), DATA("other.key"), NULL), NOOK_OK);
    return t;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(65536);
    *len = buf ? fread(buf, 1, 65536, f) : 0;
    fclose(f);
    return buf;
}

/* ---------------------------------------------------------------------------------------------
 * Cases
 * ------------------------------------------------------------------------------------------- */

static void test_config_errors(void)
{
    CHECK_CASE("config errors");
    nook_tls *t = nook_tls_new();
    CHECK_STRN(nook_tls_last_error(t), strlen(nook_tls_last_error(t)), "");
    CHECK(!tls_has_cert(t));
    CHECK_INT(tls_prepare(t, true), NOOK_EINVAL); /* no certificate */
    CHECK(tls_conn_new(t, &io_alloc_libc, 0) == NULL);

    /* The key of another certificate. */
    CHECK_INT(nook_tls_add_cert_file(t, DATA("localhost.crt"), DATA("other.key"), NULL),
              NOOK_EINVAL);
    CHECK(strlen(nook_tls_last_error(t)) > 0);
    CHECK(strstr(nook_tls_last_error(t), "other.key") != NULL);
    CHECK_INT(nook_tls_add_cert_file(t, DATA("missing.crt"), DATA("localhost.key"), NULL),
              NOOK_EINVAL);
    CHECK(strstr(nook_tls_last_error(t), "missing.crt") != NULL);
    CHECK_INT(nook_tls_add_cert_pem(t, "junk", 4, "junk", 4, NULL), NOOK_EINVAL);
    CHECK(!tls_has_cert(t));

    CHECK_INT(nook_tls_set_alpn(t, "bogus"), NOOK_EINVAL);
    CHECK(strstr(nook_tls_last_error(t), "bogus") != NULL);
    CHECK_INT(nook_tls_set_alpn(t, ""), NOOK_EINVAL);
    CHECK_INT(nook_tls_set_alpn(t, "h2,,http/1.1"), NOOK_EINVAL);
    CHECK_INT(nook_tls_set_alpn(t, "h2,h2"), NOOK_EINVAL);
    CHECK_INT(nook_tls_set_alpn(t, "http/1.1,h2,http/1.1"), NOOK_EINVAL);
    CHECK_INT(nook_tls_set_alpn(t, NULL), NOOK_EINVAL);
    CHECK_INT(nook_tls_set_alpn(t, " http/1.1 , h2 "), NOOK_OK);
    CHECK_INT(nook_tls_set_alpn(t, "h2"), NOOK_OK);

    CHECK_INT(nook_tls_add_cert_file(t, DATA("localhost.crt"), DATA("localhost.key"), NULL),
              NOOK_OK);
    CHECK(tls_has_cert(t));
    /* Only "h2" offered and HTTP/2 off: nothing left to offer. */
    CHECK_INT(tls_prepare(t, false), NOOK_EINVAL);
    CHECK_INT(tls_prepare(t, true), NOOK_OK);
    CHECK_INT(tls_prepare(t, true), NOOK_OK); /* again, same setting: no-op */
    CHECK_INT(tls_prepare(t, false), NOOK_ESTATE);
    CHECK_INT(nook_tls_add_cert_file(t, DATA("other.crt"), DATA("other.key"), NULL), NOOK_ESTATE);
    CHECK_INT(nook_tls_add_cert_pem(t, "x", 1, "y", 1, NULL), NOOK_ESTATE);
    CHECK_INT(nook_tls_set_alpn(t, "h2"), NOOK_ESTATE);
    nook_tls_free(t);
    nook_tls_free(NULL);
    CHECK_STRN(nook_tls_last_error(NULL), 0, "");
}

static void test_refcount(void)
{
    CHECK_CASE("refcount");
    /* Under ASan: a second destruction or a leak would be reported. */
    nook_tls *t = make_tls();
    tls_ref(t);
    nook_tls_free(t);
    CHECK(tls_has_cert(t)); /* still alive */
    nook_tls_free(t);

    /* A connection keeps its configuration alive. */
    t = make_tls();
    CHECK_INT(tls_prepare(t, true), NOOK_OK);
    tls_conn *c = tls_conn_new(t, &io_alloc_libc, -1);
    CHECK(c != NULL);
    nook_tls_free(t);
    tls_conn_free(c);
    tls_conn_free(NULL);
}

static void test_alpn(void)
{
    const char *h2_h1[] = {"h2", "http/1.1", NULL};
    const char *h1[] = {"http/1.1", NULL};
    const char *h2[] = {"h2", NULL};
    const char *spdy[] = {"spdy/3", NULL};
    nook_tls *t = make_tls();
    CHECK_INT(tls_prepare(t, true), NOOK_OK);

    CHECK_CASE("alpn h2,http/1.1");
    outcome r = connect_once(t, &(client_opts){.alpn = h2_h1});
    CHECK_INT(r.srv_rc, NOOK_OK);
    CHECK_INT(r.cli_rc, 0);
    CHECK_STRN(r.alpn, strlen(r.alpn), "h2");
    CHECK(r.h2_allowed);

    CHECK_CASE("alpn http/1.1");
    r = connect_once(t, &(client_opts){.alpn = h1});
    CHECK_INT(r.srv_rc, NOOK_OK);
    CHECK_STRN(r.alpn, strlen(r.alpn), "http/1.1");

    CHECK_CASE("no alpn");
    r = connect_once(t, &(client_opts){0});
    CHECK_INT(r.srv_rc, NOOK_OK);
    CHECK_INT(r.cli_rc, 0);
    CHECK_STRN(r.alpn, strlen(r.alpn), "-");

    CHECK_CASE("alpn spdy/3 only");
    r = connect_once(t, &(client_opts){.alpn = spdy});
    CHECK_INT(r.srv_rc, NOOK_EINVAL);
    CHECK(r.cli_rc != 0);
    nook_tls_free(t);

    CHECK_CASE("server alpn http/1.1");
    t = make_tls();
    CHECK_INT(nook_tls_set_alpn(t, "http/1.1"), NOOK_OK);
    CHECK_INT(tls_prepare(t, true), NOOK_OK);
    r = connect_once(t, &(client_opts){.alpn = h2_h1});
    CHECK_INT(r.srv_rc, NOOK_OK);
    CHECK_STRN(r.alpn, strlen(r.alpn), "http/1.1");
    nook_tls_free(t);

    CHECK_CASE("http2 off");
    t = make_tls();
    CHECK_INT(tls_prepare(t, false), NOOK_OK);
    r = connect_once(t, &(client_opts){.alpn = h2_h1});
    CHECK_INT(r.srv_rc, NOOK_OK);
    CHECK_STRN(r.alpn, strlen(r.alpn), "http/1.1");
    r = connect_once(t, &(client_opts){.alpn = h2});
    CHECK_INT(r.srv_rc, NOOK_EINVAL);
    CHECK(r.cli_rc != 0);
    nook_tls_free(t);
}

static void test_versions_and_suites(void)
{
    nook_tls *t = make_tls();
    CHECK_INT(tls_prepare(t, true), NOOK_OK);
#if MBEDTLS_VERSION_NUMBER < 0x03000000 && defined(MBEDTLS_SSL_PROTO_TLS1_1)
    CHECK_CASE("TLS 1.1 client");
    outcome r = connect_once(t, &(client_opts){.tls11 = true});
    CHECK_INT(r.srv_rc, NOOK_EINVAL);
    CHECK(r.cli_rc != 0);
#endif

    /* The client prefers AES-128-GCM; the server's order (CHACHA20-POLY1305 first) wins. */
    CHECK_CASE("server suite order");
    static const int aes_first[] = {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                                    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, 0};
    pair p;
    CHECK(pair_open(&p, t, &(client_opts){.suites = aes_first, .tls12 = true}));
    pair_handshake(&p);
    CHECK_INT(p.srv_rc, NOOK_OK);
    CHECK_INT(p.cli_rc, 0);
    const char *suite = tls_conn_cipher(p.srv);
    CHECK_STRN(suite, suite ? strlen(suite) : 0, "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256");
    const char *version = tls_conn_version(p.srv);
    CHECK_STRN(version, strlen(version), "TLSv1.2");
    CHECK(tls_conn_h2_allowed(p.srv));
    CHECK_STRN(tls_conn_error(p.srv), strlen(tls_conn_error(p.srv)), "");
    pair_close(&p);

    /* A client with only suites the server does not offer. */
    CHECK_CASE("no common suite");
    static const int cbc_only[] = {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, 0};
    CHECK(pair_open(&p, t, &(client_opts){.suites = cbc_only, .tls12 = true}));
    pair_handshake(&p);
    CHECK_INT(p.srv_rc, NOOK_EINVAL);
    CHECK(strncmp(tls_conn_error(p.srv), "handshake: ", 11) == 0);
    pair_close(&p);
    nook_tls_free(t);
}

static void test_sni(void)
{
    nook_tls *t = make_tls();
    CHECK_INT(tls_prepare(t, true), NOOK_OK);
    static const struct {
        const char *sni, *subject;
    } cases[] = {
        {NULL, "CN=localhost"},
        {"localhost", "CN=localhost"},
        {"other.test", "CN=other.test"},
        {"OTHER.Test", "CN=other.test"},
        {"x.wild.test", "CN=other.test"},
        {"X.WILD.TEST", "CN=other.test"},
        {"wild.test", "CN=localhost"},
        {"a.b.wild.test", "CN=localhost"},
        {"unknown.example", "CN=localhost"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_CASE("sni %s", cases[i].sni ? cases[i].sni : "(none)");
        outcome r = connect_once(t, &(client_opts){.sni = cases[i].sni});
        CHECK_INT(r.srv_rc, NOOK_OK);
        CHECK_STRN(r.subject, strlen(r.subject), cases[i].subject);
    }
    nook_tls_free(t);
}

/* Every full handshake signs with the server's key, and the client checks each
 * ServerKeyExchange signature against the certificate: an ECDSA key (held as an ECDSA context
 * once prepared, its curve table kept) signs correctly time after time, and an RSA key, left as
 * it was parsed, signs too. */
static void test_key_types(void)
{
    CHECK_CASE("ecdsa key, repeated signatures");
    nook_tls *t = make_tls();
    CHECK_INT(tls_prepare(t, true), NOOK_OK);
    for (int i = 0; i < 5; i++) {
        outcome r = connect_once(t, &(client_opts){.sni = i % 2 ? "other.test" : NULL});
        CHECK_INT(r.srv_rc, NOOK_OK);
        CHECK_INT(r.cli_rc, 0);
    }
    nook_tls_free(t);

    CHECK_CASE("rsa key");
    t = nook_tls_new();
    CHECK_INT(nook_tls_add_cert_file(t, DATA("rsa.crt"), DATA("rsa.key"), NULL), NOOK_OK);
    CHECK_INT(tls_prepare(t, true), NOOK_OK);
    outcome r = connect_once(t, &(client_opts){0});
    CHECK_INT(r.srv_rc, NOOK_OK);
    CHECK_INT(r.cli_rc, 0);
    CHECK_STRN(r.subject, strlen(r.subject), "CN=rsa.test");
    nook_tls_free(t);
}

static void test_pem(void)
{
    CHECK_CASE("pem");
    size_t crt_len = 0, key_len = 0;
    char *crt = read_file(DATA("other.crt"), &crt_len);
    char *key = read_file(DATA("other.key"), &key_len);
    CHECK(crt && key);
    nook_tls *t = nook_tls_new();
    CHECK_INT(nook_tls_add_cert_pem(t, crt, crt_len, key, key_len / 2, NULL), NOOK_EINVAL);
    CHECK_INT(nook_tls_add_cert_pem(t, crt, crt_len, key, key_len, NULL), NOOK_OK);
    CHECK_INT(tls_prepare(t, true), NOOK_OK);
    outcome r = connect_once(t, &(client_opts){0});
    CHECK_INT(r.srv_rc, NOOK_OK);
    CHECK_STRN(r.subject, strlen(r.subject), "CN=other.test");
    nook_tls_free(t);
    free(crt);
    free(key);
}

static void test_resumption(void)
{
    CHECK_CASE("resumption");
    nook_tls *t = make_tls();
    CHECK_INT(tls_prepare(t, true), NOOK_OK);
    mbedtls_ssl_session saved;
    mbedtls_ssl_session_init(&saved);

    pair p;
    CHECK(pair_open(&p, t, &(client_opts){.tls12 = true}));
    pair_handshake(&p);
    CHECK_INT(p.srv_rc, NOOK_OK);
    CHECK(server_sent_certificate(&p.cli)); /* a full handshake, so the detector works */
    CHECK_INT(mbedtls_ssl_get_session(&p.cli.ssl, &saved), 0);
    pair_close(&p);

    CHECK(pair_open(&p, t, &(client_opts){.tls12 = true, .session = &saved}));
    pair_handshake(&p);
    CHECK_INT(p.srv_rc, NOOK_OK);
    CHECK_INT(p.cli_rc, 0);
    CHECK(!server_sent_certificate(&p.cli)); /* abbreviated: the ticket was accepted */
    pair_close(&p);

    /* Another configuration has other ticket keys: the ticket is refused, full handshake. */
    nook_tls *t2 = make_tls();
    CHECK_INT(tls_prepare(t2, true), NOOK_OK);
    CHECK(pair_open(&p, t2, &(client_opts){.tls12 = true, .session = &saved}));
    pair_handshake(&p);
    CHECK_INT(p.srv_rc, NOOK_OK);
    CHECK(server_sent_certificate(&p.cli));
    pair_close(&p);

    mbedtls_ssl_session_free(&saved);
    nook_tls_free(t2);
    nook_tls_free(t);
}

/* ---- data through tls_transport ---- */

static int blocked_sends;

/* tls_transport.send, counting the calls that found the socket full. */
static ssize_t counting_send(io_stream *s, const void *buf, size_t len)
{
    ssize_t n = tls_transport.send(s, buf, len);
    if (n < 0 && errno == EAGAIN)
        blocked_sends++;
    return n;
}

static void ignore_events(io_watch *w, uint32_t events)
{
    (void)w;
    (void)events;
}

/* Reads everything the client can get now into got[*have..want). false on a client error. */
static bool client_drain(client *c, unsigned char *got, size_t *have, size_t want)
{
    while (*have < want) {
        int n = mbedtls_ssl_read(&c->ssl, got + *have, want - *have);
        if (n > 0)
            *have += (size_t)n;
        else
            return n == MBEDTLS_ERR_SSL_WANT_READ;
    }
    return true;
}

static void fill_pattern(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 131 + (i >> 11) + seed) & 0xFF);
}

/* 1 MiB server to client over a small socket buffer, queued in pieces of varied sizes while
 * earlier ones are still being flushed and read by the client only every other round: records
 * are cut by the socket, often the last (short) record of the output, and the output has grown
 * by the retry. Retrying with anything but the held record's bytes would lose or repeat data. */
static void transfer_to_client(io_stream *s, client *cli)
{
    enum { TOTAL = 1 << 20 };
    unsigned char *sent = malloc(TOTAL), *got = malloc(TOTAL);
    fill_pattern(sent, TOTAL, 1);
    size_t queued = 0, have = 0;
    int rc = NOOK_OK;
    for (int i = 0; i < 100000 && have < TOTAL; i++) {
        size_t piece = 1000 + (size_t)i * 7919 % 30000;
        if (queued < TOTAL) {
            size_t n = TOTAL - queued < piece ? TOTAL - queued : piece;
            CHECK_INT(io_stream_queue(s, sent + queued, n), NOOK_OK);
            queued += n;
        }
        rc = io_stream_flush(s);
        if (rc != NOOK_OK && rc != NOOK_AGAIN)
            break;
        if ((i % 2 || queued == TOTAL) && !client_drain(cli, got, &have, TOTAL))
            break;
    }
    CHECK_INT(rc, NOOK_OK);
    CHECK_INT(have, TOTAL);
    CHECK(have == TOTAL && memcmp(sent, got, TOTAL) == 0);
    CHECK(blocked_sends > 0); /* the partial-write path was taken */
    free(sent);
    free(got);
}

/* One write of several records is gathered into one send (NOOK_OPT_TLS_SEND_BATCH), but its
 * plaintext still counts as written record by record, as the socket takes each: a slow
 * reader shows write progress (the write timeout's measure) per record, not per batch. */
static void progress_per_record(io_stream *s, client *cli)
{
    enum { TOTAL = 100 * 1024, RECORD = 16384 };
    unsigned char *sent = malloc(TOTAL), *got = malloc(TOTAL);
    fill_pattern(sent, TOTAL, 5);
    CHECK_INT(io_stream_queue(s, sent, TOTAL), NOOK_OK);
    size_t have = 0, last = TOTAL;
    int steps = 0, rc = NOOK_AGAIN;
    for (int i = 0; i < 100000 && have < TOTAL; i++) {
        rc = io_stream_flush(s);
        if (rc != NOOK_OK && rc != NOOK_AGAIN)
            break;
        size_t now = io_buf_size(&s->out);
        CHECK(now <= last);
        if (now < last) {
            steps++;
            last = now;
        }
        if (!client_drain(cli, got, &have, TOTAL))
            break;
    }
    CHECK_INT(rc, NOOK_OK);
    CHECK_INT(have, TOTAL);
    CHECK(have == TOTAL && memcmp(sent, got, TOTAL) == 0);
    CHECK(steps > TOTAL / RECORD / 2); /* 7 records (16 KiB or, on TLS 1.3, one byte less);
                                        * one step per batch would be 1 */
    free(sent);
    free(got);
}

/* The client writes until all is accepted (same arguments again after WANT_WRITE). */
static bool client_write_some(client *c, const unsigned char *p, size_t n, size_t *done)
{
    while (*done < n) {
        int w = mbedtls_ssl_write(&c->ssl, p + *done, n - *done);
        if (w > 0)
            *done += (size_t)w;
        else
            return w == MBEDTLS_ERR_SSL_WANT_WRITE;
    }
    return true;
}

/* 200 KiB client to server through io_stream_read. */
static void transfer_to_server(io_stream *s, client *cli)
{
    enum { TOTAL = 200 * 1024 };
    unsigned char *sent = malloc(TOTAL);
    fill_pattern(sent, TOTAL, 7);
    size_t written = 0;
    for (int i = 0; i < 100000 && io_buf_size(&s->in) < TOTAL; i++) {
        if (!client_write_some(cli, sent, TOTAL, &written))
            break;
        int rc = io_stream_read(s, TOTAL);
        if (rc < 0)
            break;
    }
    CHECK_INT(io_buf_size(&s->in), TOTAL);
    CHECK(io_buf_size(&s->in) == TOTAL && memcmp(io_buf_head(&s->in), sent, TOTAL) == 0);
    io_buf_consume(&s->in, io_buf_size(&s->in));
    free(sent);
}

/* A record read in part: the rest is reported by pending() without the socket. */
static void partial_record(io_stream *s, client *cli)
{
    unsigned char msg[1000];
    fill_pattern(msg, sizeof msg, 3);
    size_t done = 0;
    CHECK(client_write_some(cli, msg, sizeof msg, &done));
    CHECK_INT(io_stream_read(s, 100), 100);
    CHECK_INT(s->tr->pending(s), 900);
    io_buf_consume(&s->in, 100);
    CHECK_INT(io_stream_read(s, 10000), 900);
    CHECK(memcmp(io_buf_head(&s->in), msg + 100, 900) == 0);
    CHECK_INT(s->tr->pending(s), 0);
    io_buf_consume(&s->in, 900);
    CHECK_INT(io_stream_read(s, 10000), 0); /* nothing more: would block */
}

/* Both directions of close_notify; io_stream_close frees the tls_conn through the transport. */
static void closes(io_stream *s, pair *p)
{
    /* Client close_notify: the server's next read is EOF, and stays so. */
    CHECK_INT(mbedtls_ssl_close_notify(&p->cli.ssl), 0);
    CHECK_INT(io_stream_read(s, 10000), NOOK_ECLOSED);
    CHECK_INT(io_stream_read(s, 10000), NOOK_ECLOSED);
    /* The server's close_notify, sent by io_stream_close, reaches the client. */
    io_stream_close(s);
    p->srv = NULL;
    p->sfd = -1;
    CHECK(s->tr_data == NULL);
    unsigned char b[16];
    CHECK_INT(mbedtls_ssl_read(&p->cli.ssl, b, sizeof b), MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY);
}

static void test_transport(void)
{
    CHECK_CASE("transport");
    nook_tls *t = make_tls();
    CHECK_INT(tls_prepare(t, true), NOOK_OK);
    pair p;
    CHECK(pair_open(&p, t, &(client_opts){0}));
    pair_handshake(&p);
    CHECK_INT(p.srv_rc, NOOK_OK);
    int small = 4096;
    CHECK_INT(setsockopt(p.sfd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);

    io_loop *loop = io_loop_new(&io_alloc_libc);
    io_stream s;
    CHECK_INT(io_stream_init(&s, loop, &io_alloc_libc, p.sfd, ignore_events, SIZE_MAX), NOOK_OK);
    io_transport counting = tls_transport;
    counting.send = counting_send;
    s.tr = &counting;
    s.tr_data = p.srv;

    transfer_to_client(&s, &p.cli);
    progress_per_record(&s, &p.cli);
    transfer_to_server(&s, &p.cli);
    partial_record(&s, &p.cli);
    closes(&s, &p);

    io_loop_free(loop);
    pair_close(&p);
    nook_tls_free(t);
}

/* A peer that goes away mid-handshake. */
static void test_peer_gone(void)
{
    CHECK_CASE("peer gone");
    nook_tls *t = make_tls();
    CHECK_INT(tls_prepare(t, true), NOOK_OK);
    pair p;
    CHECK(pair_open(&p, t, &(client_opts){0}));
    bool want_write = true;
    CHECK_INT(tls_conn_handshake(p.srv, &want_write), NOOK_AGAIN);
    CHECK(!want_write);
    close(p.cfd);
    p.cfd = -1;
    CHECK_INT(tls_conn_handshake(p.srv, &want_write), NOOK_ECLOSED);
    pair_close(&p);

    /* Garbage instead of a ClientHello. */
    CHECK(pair_open(&p, t, &(client_opts){0}));
    static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(write(p.cfd, junk, sizeof junk - 1) == (ssize_t)(sizeof junk - 1));
    CHECK_INT(tls_conn_handshake(p.srv, &want_write), NOOK_EINVAL);
    CHECK(strlen(tls_conn_error(p.srv)) > 0);
    pair_close(&p);
    nook_tls_free(t);
}

/* Handshakes on another thread: its random generator is created there and freed at its exit
 * (ASan reports a leak otherwise). */
static nook_tls *thread_tls;

static void *thread_main(void *arg)
{
    static const char *h2[] = {"h2", NULL};
    *(outcome *)arg = connect_once(thread_tls, &(client_opts){.alpn = h2});
    return NULL;
}

static void test_threads(void)
{
    CHECK_CASE("threads");
    thread_tls = make_tls();
    CHECK_INT(tls_prepare(thread_tls, true), NOOK_OK);
    pthread_t th[2];
    outcome r[2];
    for (int i = 0; i < 2; i++)
        CHECK_INT(pthread_create(&th[i], NULL, thread_main, &r[i]), 0);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        CHECK_INT(r[i].srv_rc, NOOK_OK);
        CHECK_STRN(r[i].alpn, strlen(r[i].alpn), "h2");
    }
    nook_tls_free(thread_tls);
}

int main(void)
{
    test_config_errors();
    test_refcount();
    test_alpn();
    test_versions_and_suites();
    test_sni();
    test_key_types();
    test_pem();
    test_resumption();
    test_transport();
    test_peer_gone();
    test_threads();
    return check_main("tls");
}
