#include "tls/client.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <mbedtls/version.h>

#include <mbedtls/asn1.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
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
    bool verify;
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
    c->verify = verify;
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

/* The bytes of an IP address literal (4 or 16), or 0 when s is a name. */
static size_t ip_bytes(const char *s, unsigned char out[16])
{
    if (inet_pton(AF_INET, s, out) == 1)
        return 4;
    if (inet_pton(AF_INET6, s, out) == 1)
        return 16;
    return 0;
}

#define SAN_IP_TAG (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) /* GeneralName iPAddress, RFC 5280 */

#if MBEDTLS_VERSION_NUMBER >= 0x03000000
static bool san_has_ip(const mbedtls_x509_crt *crt, const unsigned char *ip, size_t n)
{
    for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s; s = s->next)
        if (s->buf.tag == SAN_IP_TAG && s->buf.len == n && memcmp(s->buf.p, ip, n) == 0)
            return true;
    return false;
}
#else
/* Whether a GeneralNames sequence (the subjectAltName extension's value) lists the address. */
static bool names_have_ip(unsigned char *p, const unsigned char *end, const unsigned char *ip,
                          size_t n)
{
    size_t len;
    if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE))
        return false;
    end = p + len;
    while (p < end) {
        unsigned char tag = *p++;
        if (mbedtls_asn1_get_len(&p, end, &len) != 0)
            return false;
        if (tag == SAN_IP_TAG && len == n && memcmp(p, ip, n) == 0)
            return true;
        p += len;
    }
    return false;
}

/* mbedTLS 2.28 keeps only dNSName (and otherName) entries in subject_alt_names, so the
 * extensions are walked here: Extensions ::= SEQUENCE OF SEQUENCE { extnID, critical
 * BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }. */
static bool san_has_ip(const mbedtls_x509_crt *crt, const unsigned char *ip, size_t n)
{
    unsigned char *p = crt->v3_ext.p;
    if (!p)
        return false; /* no extensions */
    const unsigned char *end = p + crt->v3_ext.len;
    size_t len;
    if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE))
        return false;
    end = p + len;
    while (p < end) {
        if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE))
            return false;
        const unsigned char *ext_end = p + len;
        mbedtls_asn1_buf oid = {.tag = MBEDTLS_ASN1_OID};
        if (mbedtls_asn1_get_tag(&p, ext_end, &oid.len, MBEDTLS_ASN1_OID) != 0)
            return false;
        oid.p = p;
        p += oid.len;
        int critical;
        int rc = mbedtls_asn1_get_bool(&p, ext_end, &critical);
        if ((rc != 0 && rc != MBEDTLS_ERR_ASN1_UNEXPECTED_TAG) ||
            mbedtls_asn1_get_tag(&p, ext_end, &len, MBEDTLS_ASN1_OCTET_STRING) != 0)
            return false;
        if (MBEDTLS_OID_CMP(MBEDTLS_OID_SUBJECT_ALT_NAME, &oid) == 0)
            return names_have_ip(p, p + len, ip, n);
        p = (unsigned char *)ext_end;
    }
    return false;
}
#endif

/* mbedTLS matches the name given to mbedtls_ssl_set_hostname against DNS names only (2.28): for
 * an address the leaf certificate's iPAddress entries are checked here instead. p_vrfy is the
 * address as text (it outlives the connection). */
static int verify_ip(void *p_vrfy, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
    unsigned char ip[16];
    size_t n = ip_bytes(p_vrfy, ip);
    if (depth == 0 && (n == 0 || !san_has_ip(crt, ip, n)))
        *flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
    return 0;
}

tls_conn *tls_client_conn(tls_client *c, const io_alloc *alloc, int fd, const char *server_name)
{
    unsigned char ip[16];
    if (!server_name || ip_bytes(server_name, ip) == 0)
        return tls_conn_new_client(&c->conf, alloc, fd, server_name);
    /* RFC 6066 §3: no address in SNI. */
    tls_conn *t = tls_conn_new_client(&c->conf, alloc, fd, NULL);
    if (t && c->verify) {
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
        /* 3.6 refuses to verify without a name unless told explicitly that there is none. */
        mbedtls_ssl_set_hostname(tls_conn_ssl(t), NULL);
#endif
        mbedtls_ssl_set_verify(tls_conn_ssl(t), verify_ip, (void *)server_name);
    }
    return t;
}
