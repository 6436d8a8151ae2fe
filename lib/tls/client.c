#include "tls/client.h"

#include <stdio.h>
#include <string.h>

#include <mbedtls/version.h>

#include <mbedtls/error.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#if MBEDTLS_VERSION_NUMBER >= 0x03000000 && defined(MBEDTLS_PSA_CRYPTO_C)
#include <psa/crypto.h>
#endif

#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
#define ALPN_LEN_MAX 32

struct tls_client {
    const io_alloc *alloc;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt ca;
    char alpn_name[ALPN_LEN_MAX];
    const char *alpn[2];
};

static void describe(int rc, const char *what, char *err, size_t err_len)
{
    char detail[160];
    mbedtls_strerror(rc, detail, sizeof detail);
    snprintf(err, err_len, "%s: %s", what, detail);
}

static void conf_min_tls12(mbedtls_ssl_config *conf)
{
#if MBEDTLS_VERSION_NUMBER >= 0x03020000
    mbedtls_ssl_conf_min_tls_version(conf, MBEDTLS_SSL_VERSION_TLS1_2);
#else
    mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
#endif
}

static int load_ca(tls_client *c, const char *ca_file, char *err, size_t err_len)
{
    const char *path = ca_file ? ca_file : SYSTEM_CA_BUNDLE;
    int rc = mbedtls_x509_crt_parse_file(&c->ca, path);
    /* A bundle may hold a few certificates mbedTLS cannot parse (rc > 0 counts them): the rest
     * are still used; only a file with none usable is an error. */
    if (rc < 0) {
        char what[300];
        snprintf(what, sizeof what, "CA file %s", path);
        describe(rc, what, err, err_len);
        return -1;
    }
    mbedtls_ssl_conf_ca_chain(&c->conf, &c->ca, NULL);
    mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    return 0;
}

static int configure(tls_client *c, const char *ca_file, bool verify, const char *alpn, char *err,
                     size_t err_len)
{
    int rc = mbedtls_ssl_config_defaults(&c->conf, MBEDTLS_SSL_IS_CLIENT,
                                         MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc != 0) {
        describe(rc, "TLS client configuration", err, err_len);
        return -1;
    }
    mbedtls_ssl_conf_rng(&c->conf, tls_random, NULL);
    conf_min_tls12(&c->conf);
#if defined(MBEDTLS_SSL_RENEGOTIATION)
    mbedtls_ssl_conf_renegotiation(&c->conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
#endif
    if (alpn) {
        size_t n = strlen(alpn);
        if (n == 0 || n >= sizeof c->alpn_name) {
            snprintf(err, err_len, "ALPN protocol name too long");
            return -1;
        }
        memcpy(c->alpn_name, alpn, n + 1);
        c->alpn[0] = c->alpn_name;
        c->alpn[1] = NULL;
        rc = mbedtls_ssl_conf_alpn_protocols(&c->conf, c->alpn);
        if (rc != 0) {
            describe(rc, "ALPN", err, err_len);
            return -1;
        }
    }
    if (!verify) {
        mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_NONE);
        return 0;
    }
    return load_ca(c, ca_file, err, err_len);
}

tls_client *tls_client_new(const io_alloc *alloc, const char *ca_file, bool verify,
                           const char *alpn, char *err, size_t err_len)
{
#if MBEDTLS_VERSION_NUMBER >= 0x03000000 && defined(MBEDTLS_PSA_CRYPTO_C)
    /* 3.x runs TLS 1.3 through PSA: initialised once (idempotent), also when no server-side
     * nook_tls exists. */
    if (psa_crypto_init() != PSA_SUCCESS) {
        snprintf(err, err_len, "cannot initialise PSA crypto");
        return NULL;
    }
#endif
    tls_client *c = io_malloc(alloc, sizeof *c);
    if (!c) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    memset(c, 0, sizeof *c);
    c->alloc = alloc;
    mbedtls_ssl_config_init(&c->conf);
    mbedtls_x509_crt_init(&c->ca);
    if (configure(c, ca_file, verify, alpn, err, err_len) != 0) {
        tls_client_free(c);
        return NULL;
    }
    return c;
}

void tls_client_free(tls_client *c)
{
    if (!c)
        return;
    mbedtls_ssl_config_free(&c->conf);
    mbedtls_x509_crt_free(&c->ca);
    io_free(c->alloc, c);
}

tls_conn *tls_client_conn(tls_client *c, const io_alloc *alloc, int fd, const char *server_name)
{
    return tls_conn_new_client(&c->conf, alloc, fd, server_name);
}
