#include "tls/tls.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <mbedtls/version.h>

#include <mbedtls/asn1.h>
#include <mbedtls/bignum.h>
#include <mbedtls/cipher.h>
#include <mbedtls/ctr_drbg.h>
#if defined(MBEDTLS_ECDSA_C)
#include <mbedtls/ecdsa.h>
#endif
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>
#if MBEDTLS_VERSION_NUMBER < 0x03000000
#include <mbedtls/ssl_internal.h> /* MBEDTLS_SSL_{IN,OUT}_BUFFER_LEN, for sleeping connections */
#endif
#if MBEDTLS_VERSION_NUMBER >= 0x03000000 && defined(MBEDTLS_PSA_CRYPTO_C)
#include <psa/crypto.h>
#endif

#include "io/alloc.h"
#include "io/ascii.h"

/* Largest plaintext handed to one mbedtls_ssl_write: one full TLS record. */
#define RECORD_MAX 16384
#define RX_AHEAD 1024 /* socket bytes read at once below mbedTLS (see tls_conn.rx) */
#define TX_RECORDS 16 /* records gathered for one send at most (see tls_conn.tx) */
/* A record header (5 bytes), then a handshake message's type (1) and length (3). */
#define HELLO_HEAD 9u
/* Session-ticket key lifetime (mbedtls_ssl_ticket rotates keys on this period). */
#define TICKET_LIFETIME_S 86400
/* Known ALPN protocols, so at most this many in a list. */
#define ALPN_MAX 2
/* TLS 1.2 suites below plus the TLS 1.3 ones. */
#define SUITES_MAX 12
#define GROUPS_MAX 3

/* ---------------------------------------------------------------------------------------------
 * Random numbers: one CTR-DRBG per thread. A DRBG shared between workers would need a lock on
 * every handshake; per-thread instances need none. Created on first use, freed when the thread
 * exits (pthread key destructor).
 * ------------------------------------------------------------------------------------------- */

typedef struct tls_rng {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
} tls_rng;

static _Thread_local tls_rng *thread_rng;
static pthread_key_t rng_key;
static pthread_once_t rng_once = PTHREAD_ONCE_INIT;
static bool rng_key_ok;

static void rng_destroy(void *p)
{
    tls_rng *r = p;
    mbedtls_ctr_drbg_free(&r->drbg);
    mbedtls_entropy_free(&r->entropy);
    free(r);
    thread_rng = NULL;
}

static void rng_key_create(void)
{
    rng_key_ok = pthread_key_create(&rng_key, rng_destroy) == 0;
}

static tls_rng *rng_get(void)
{
    if (thread_rng)
        return thread_rng;
    pthread_once(&rng_once, rng_key_create);
    if (!rng_key_ok)
        return NULL;
    tls_rng *r = malloc(sizeof *r);
    if (!r)
        return NULL;
    mbedtls_entropy_init(&r->entropy);
    mbedtls_ctr_drbg_init(&r->drbg);
    static const unsigned char pers[] = "nook-tls";
    if (mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func, &r->entropy, pers, sizeof pers - 1) !=
            0 ||
        pthread_setspecific(rng_key, r) != 0) {
        rng_destroy(r);
        return NULL;
    }
    thread_rng = r;
    return r;
}

/* The f_rng of every mbedTLS call: p_rng is ignored because the config is shared by all
 * threads, while the generator must be the calling thread's own. */
static int rng_fill(void *unused, unsigned char *out, size_t len)
{
    (void)unused;
    tls_rng *r = rng_get();
    if (!r)
        return MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED;
    return mbedtls_ctr_drbg_random(&r->drbg, out, len);
}

/* ---------------------------------------------------------------------------------------------
 * The configuration object
 * ------------------------------------------------------------------------------------------- */

typedef struct tls_cert {
    mbedtls_x509_crt chain;
    mbedtls_pk_context key;
} tls_cert;

struct nook_tls {
    atomic_int refs;
    atomic_bool prepared;
    bool offer_h2;
    pthread_mutex_t prepare_lock; /* two servers may start on different threads */
    tls_cert **certs;             /* separately allocated: the config points into them */
    size_t ncerts;
    const char *alpn[ALPN_MAX + 1];       /* as set by nook_tls_set_alpn, NULL-terminated */
    const char *alpn_offer[ALPN_MAX + 1]; /* what the config offers: alpn minus "h2" if off */
    int suites[SUITES_MAX + 1];
#if MBEDTLS_VERSION_NUMBER >= 0x03010000
    uint16_t groups[GROUPS_MAX + 1];
#else
    mbedtls_ecp_group_id groups[GROUPS_MAX + 1];
#endif
    mbedtls_ssl_config conf;
    mbedtls_ssl_ticket_context ticket;
    char err[256];
};

static const char ALPN_H2[] = "h2";
static const char ALPN_H1[] = "http/1.1";

static void set_error(nook_tls *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(nook_tls *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->err, sizeof t->err, fmt, ap);
    va_end(ap);
}

/* "X509 - ... (-0x2180)": mbedTLS's text plus the code, which stays useful when the library
 * was built without MBEDTLS_ERROR_C. */
static void describe(int rc, char *buf, size_t size)
{
    char msg[160];
    mbedtls_strerror(rc, msg, sizeof msg);
    snprintf(buf, size, "%s (-0x%04X)", msg, (unsigned)-rc);
}

/* mbedTLS error codes combine a high-level and a low-level part; either may say "no memory". */
static bool is_alloc_error(int rc)
{
    int high = -(-rc & 0xFF80), low = -(-rc & 0x007F);
    return rc == MBEDTLS_ERR_SSL_ALLOC_FAILED || high == MBEDTLS_ERR_X509_ALLOC_FAILED ||
           high == MBEDTLS_ERR_PK_ALLOC_FAILED || high == MBEDTLS_ERR_PEM_ALLOC_FAILED ||
           high == MBEDTLS_ERR_CIPHER_ALLOC_FAILED || low == MBEDTLS_ERR_ASN1_ALLOC_FAILED ||
           low == MBEDTLS_ERR_MPI_ALLOC_FAILED;
}

nook_tls *nook_tls_new(void)
{
#if MBEDTLS_VERSION_NUMBER >= 0x03000000 && defined(MBEDTLS_PSA_CRYPTO_C)
    /* 3.x runs TLS 1.3 and tickets through PSA; it must be initialised once (idempotent). */
    if (psa_crypto_init() != PSA_SUCCESS)
        return NULL;
#endif
    if (!rng_get())
        return NULL;
    nook_tls *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    if (pthread_mutex_init(&t->prepare_lock, NULL) != 0) {
        free(t);
        return NULL;
    }
    atomic_init(&t->refs, 1);
    atomic_init(&t->prepared, false);
    t->alpn[0] = ALPN_H2;
    t->alpn[1] = ALPN_H1;
    mbedtls_ssl_config_init(&t->conf);
    mbedtls_ssl_ticket_init(&t->ticket);
    return t;
}

static void cert_free(tls_cert *c)
{
    if (!c)
        return;
    mbedtls_x509_crt_free(&c->chain);
    mbedtls_pk_free(&c->key);
    free(c);
}

static void tls_destroy(nook_tls *t)
{
    mbedtls_ssl_config_free(&t->conf);
    mbedtls_ssl_ticket_free(&t->ticket);
    for (size_t i = 0; i < t->ncerts; i++)
        cert_free(t->certs[i]);
    free(t->certs);
    pthread_mutex_destroy(&t->prepare_lock);
    free(t);
}

void tls_ref(nook_tls *t)
{
    if (t)
        atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

void tls_unref(nook_tls *t)
{
    if (t && atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1)
        tls_destroy(t);
}

void nook_tls_free(nook_tls *tls)
{
    tls_unref(tls);
}

bool tls_has_cert(const nook_tls *t)
{
    return t && t->ncerts > 0;
}

const char *nook_tls_last_error(const nook_tls *tls)
{
    return tls ? tls->err : "";
}

static bool is_prepared(const nook_tls *t)
{
    return atomic_load_explicit(&t->prepared, memory_order_acquire);
}

/* ---------------------------------------------------------------------------------------------
 * Certificates
 * ------------------------------------------------------------------------------------------- */

static int cert_check_pair(tls_cert *c)
{
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    return mbedtls_pk_check_pair(&c->chain.pk, &c->key, rng_fill, NULL);
#else
    return mbedtls_pk_check_pair(&c->chain.pk, &c->key);
#endif
}

/* Takes ownership of c: appends it, or frees it and reports why. rc is the parse result;
 * `what` names the source in the message (a file name, "key PEM"). */
static int cert_finish(nook_tls *t, tls_cert *c, int rc, const char *what)
{
    const char *why = "";
    if (rc == 0 && (rc = cert_check_pair(c)) != 0)
        why = "the key does not match the certificate: ";
    if (rc != 0) {
        char detail[200];
        describe(rc, detail, sizeof detail);
        set_error(t, "%s: %s%s", what, why, detail);
        cert_free(c);
        return is_alloc_error(rc) ? NOOK_ENOMEM : NOOK_EINVAL;
    }
    tls_cert **certs = realloc(t->certs, (t->ncerts + 1) * sizeof *certs);
    if (!certs) {
        set_error(t, "%s: out of memory", what);
        cert_free(c);
        return NOOK_ENOMEM;
    }
    certs[t->ncerts++] = c;
    t->certs = certs;
    return NOOK_OK;
}

static tls_cert *cert_alloc(nook_tls *t)
{
    tls_cert *c = malloc(sizeof *c);
    if (!c) {
        set_error(t, "out of memory");
        return NULL;
    }
    mbedtls_x509_crt_init(&c->chain);
    mbedtls_pk_init(&c->key);
    return c;
}

/* x509_crt_parse_file returns the number of certificates it could not parse when it parsed
 * others: a chain with a broken member is refused as a whole. */
static int chain_result(int rc)
{
    return rc > 0 ? MBEDTLS_ERR_X509_CERT_UNKNOWN_FORMAT : rc;
}

int nook_tls_add_cert_file(nook_tls *tls, const char *cert_file, const char *key_file,
                           const char *password)
{
    if (!tls)
        return NOOK_EINVAL;
    if (is_prepared(tls))
        return NOOK_ESTATE;
    if (!cert_file || !key_file) {
        set_error(tls, "certificate and key file names are required");
        return NOOK_EINVAL;
    }
    tls_cert *c = cert_alloc(tls);
    if (!c)
        return NOOK_ENOMEM;
    int rc = chain_result(mbedtls_x509_crt_parse_file(&c->chain, cert_file));
    if (rc != 0)
        return cert_finish(tls, c, rc, cert_file);
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    rc = mbedtls_pk_parse_keyfile(&c->key, key_file, password, rng_fill, NULL);
#else
    rc = mbedtls_pk_parse_keyfile(&c->key, key_file, password);
#endif
    return cert_finish(tls, c, rc, key_file);
}

/* mbedTLS recognises PEM only in a NUL-terminated buffer whose length counts the NUL. */
static unsigned char *pem_copy(const char *p, size_t n)
{
    unsigned char *s = n < SIZE_MAX ? malloc(n + 1) : NULL;
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static int parse_key_pem(tls_cert *c, const char *key_pem, size_t key_len, const char *password)
{
    unsigned char *key = pem_copy(key_pem, key_len);
    if (!key)
        return MBEDTLS_ERR_PK_ALLOC_FAILED;
    const unsigned char *pwd = (const unsigned char *)password;
    size_t pwd_len = password ? strlen(password) : 0;
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    int rc = mbedtls_pk_parse_key(&c->key, key, key_len + 1, pwd, pwd_len, rng_fill, NULL);
#else
    int rc = mbedtls_pk_parse_key(&c->key, key, key_len + 1, pwd, pwd_len);
#endif
    mbedtls_platform_zeroize(key, key_len + 1);
    free(key);
    return rc;
}

int nook_tls_add_cert_pem(nook_tls *tls, const char *cert_pem, size_t cert_len, const char *key_pem,
                          size_t key_len, const char *password)
{
    if (!tls)
        return NOOK_EINVAL;
    if (is_prepared(tls))
        return NOOK_ESTATE;
    if (!cert_pem || !key_pem) {
        set_error(tls, "certificate and key PEM text are required");
        return NOOK_EINVAL;
    }
    tls_cert *c = cert_alloc(tls);
    if (!c)
        return NOOK_ENOMEM;
    unsigned char *crt = pem_copy(cert_pem, cert_len);
    if (!crt)
        return cert_finish(tls, c, MBEDTLS_ERR_X509_ALLOC_FAILED, "certificate PEM");
    int rc = chain_result(mbedtls_x509_crt_parse(&c->chain, crt, cert_len + 1));
    free(crt);
    if (rc != 0)
        return cert_finish(tls, c, rc, "certificate PEM");
    return cert_finish(tls, c, parse_key_pem(c, key_pem, key_len, password), "key PEM");
}

/* ---------------------------------------------------------------------------------------------
 * ALPN
 * ------------------------------------------------------------------------------------------- */

static const char *known_protocol(const char *p, size_t n)
{
    if (n == sizeof ALPN_H2 - 1 && memcmp(p, ALPN_H2, n) == 0)
        return ALPN_H2;
    if (n == sizeof ALPN_H1 - 1 && memcmp(p, ALPN_H1, n) == 0)
        return ALPN_H1;
    return NULL;
}

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t';
}

static bool in_list(const char *const *list, size_t n, const char *proto)
{
    for (size_t i = 0; i < n; i++)
        if (list[i] == proto)
            return true;
    return false;
}

int nook_tls_set_alpn(nook_tls *tls, const char *protocols)
{
    if (!tls || !protocols)
        return NOOK_EINVAL;
    if (is_prepared(tls))
        return NOOK_ESTATE;
    const char *list[ALPN_MAX + 1] = {NULL};
    size_t n = 0;
    for (const char *p = protocols;; p++) {
        while (is_space(*p))
            p++;
        const char *end = p + strcspn(p, ",");
        size_t len = (size_t)(end - p);
        while (len > 0 && is_space(p[len - 1]))
            len--;
        const char *proto = known_protocol(p, len);
        /* Duplicates are refused too, so the list never outgrows the known protocols. */
        if (!proto || in_list(list, n, proto)) {
            set_error(tls, "ALPN: unknown or repeated protocol \"%.*s\"", (int)len, p);
            return NOOK_EINVAL;
        }
        list[n++] = proto;
        if (*end == '\0')
            break;
        p = end;
    }
    memcpy(tls->alpn, list, sizeof list);
    return NOOK_OK;
}

/* ---------------------------------------------------------------------------------------------
 * SNI: certificate selection
 * ------------------------------------------------------------------------------------------- */

/* One certificate name against the requested host name, case-insensitively. A wildcard pattern
 * "*.example.com" stands for exactly one non-empty left-most label. */
static bool name_matches(const unsigned char *pat, size_t plen, const unsigned char *name,
                         size_t len, bool wildcard)
{
    bool is_wild = plen > 2 && pat[0] == '*' && pat[1] == '.';
    if (!wildcard)
        return !is_wild && plen == len && io_caseeq((const char *)pat, (const char *)name, len);
    if (!is_wild)
        return false;
    const unsigned char *dot = memchr(name, '.', len);
    if (!dot || dot == name)
        return false;
    size_t rest = len - (size_t)(dot - name); /* ".example.com", as the pattern minus '*' */
    return rest == plen - 1 && io_caseeq((const char *)pat + 1, (const char *)dot, rest);
}

static bool is_dns_san(const mbedtls_x509_buf *b)
{
    return b->p && (b->tag & (MBEDTLS_ASN1_TAG_CLASS_MASK | MBEDTLS_ASN1_TAG_VALUE_MASK)) ==
                       (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_DNS_NAME);
}

/* The names a certificate covers are its subjectAltName DNS entries; only a certificate with
 * none falls back to its subject CN (RFC 6125 §6.4.4). */
static bool cert_covers(const mbedtls_x509_crt *crt, const unsigned char *name, size_t len,
                        bool wildcard)
{
    bool has_dns = false;
    for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s; s = s->next) {
        if (!is_dns_san(&s->buf))
            continue;
        has_dns = true;
        if (name_matches(s->buf.p, s->buf.len, name, len, wildcard))
            return true;
    }
    if (has_dns)
        return false;
    for (const mbedtls_x509_name *n = &crt->subject; n; n = n->next)
        if (n->oid.p && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) == 0 &&
            name_matches(n->val.p, n->val.len, name, len, wildcard))
            return true;
    return false;
}

/*
 * Offers mbedTLS every certificate that covers the name, exact names before wildcards, so a
 * specific certificate wins over a wildcard one, and mbedTLS can still pick among several (an
 * ECDSA and an RSA one) by what the client supports. No match: the default stays in effect.
 */
static int sni_select(void *p, mbedtls_ssl_context *ssl, const unsigned char *name, size_t len)
{
    nook_tls *t = p;
    for (int wildcard = 0; wildcard <= 1; wildcard++) {
        for (size_t i = 0; i < t->ncerts; i++) {
            if (!cert_covers(&t->certs[i]->chain, name, len, wildcard))
                continue;
            int rc = mbedtls_ssl_set_hs_own_cert(ssl, &t->certs[i]->chain, &t->certs[i]->key);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * tls_prepare: the shared mbedtls_ssl_config
 * ------------------------------------------------------------------------------------------- */

/* Server preference order (mbedTLS picks by the server's list). In TLS 1.2, ChaCha20-Poly1305
 * comes first: mbedTLS 2.28 seals it about 30% faster than AES-GCM on x86-64 with AES-NI
 * (bench/aesgcm.c: ~380 against ~290 MB/s for 16 KiB records), which bounds large bodies. */
static const int wanted_suites[] = {
#if MBEDTLS_VERSION_NUMBER >= 0x03000000 && defined(MBEDTLS_SSL_PROTO_TLS1_3)
    MBEDTLS_TLS1_3_AES_128_GCM_SHA256,
    MBEDTLS_TLS1_3_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS1_3_AES_256_GCM_SHA384,
#endif
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
};

/* Only suites this mbedTLS build has: an unknown id in the list would be skipped silently by
 * some versions and rejected by others. */
static void build_suites(nook_tls *t)
{
    size_t n = 0;
    for (size_t i = 0; i < sizeof wanted_suites / sizeof wanted_suites[0] && n < SUITES_MAX; i++)
        if (mbedtls_ssl_ciphersuite_from_id(wanted_suites[i]))
            t->suites[n++] = wanted_suites[i];
    t->suites[n] = 0;
}

/* P-256, X25519, P-384: P-256 first because every client has it and ECDSA certificates are
 * usually on it. */
static void build_groups(nook_tls *t)
{
#if MBEDTLS_VERSION_NUMBER >= 0x03010000
    t->groups[0] = MBEDTLS_SSL_IANA_TLS_GROUP_SECP256R1;
    t->groups[1] = MBEDTLS_SSL_IANA_TLS_GROUP_X25519;
    t->groups[2] = MBEDTLS_SSL_IANA_TLS_GROUP_SECP384R1;
    t->groups[3] = MBEDTLS_SSL_IANA_TLS_GROUP_NONE;
    mbedtls_ssl_conf_groups(&t->conf, t->groups);
#else
    static const mbedtls_ecp_group_id wanted[] = {
        MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_CURVE25519, MBEDTLS_ECP_DP_SECP384R1};
    size_t n = 0;
    for (size_t i = 0; i < GROUPS_MAX; i++)
        if (mbedtls_ecp_curve_info_from_grp_id(wanted[i]))
            t->groups[n++] = wanted[i];
    t->groups[n] = MBEDTLS_ECP_DP_NONE;
    mbedtls_ssl_conf_curves(&t->conf, t->groups);
#endif
}

static void conf_min_tls12(mbedtls_ssl_config *conf)
{
#if MBEDTLS_VERSION_NUMBER >= 0x03020000
    mbedtls_ssl_conf_min_tls_version(conf, MBEDTLS_SSL_VERSION_TLS1_2);
#else
    mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
#endif
}

/* The ALPN list the config offers; NOOK_EINVAL when nothing is left (only "h2" configured and
 * HTTP/2 off): every client offering ALPN would be refused, so fail at start-up instead. */
static int build_alpn(nook_tls *t, bool offer_h2)
{
    size_t n = 0;
    for (size_t i = 0; t->alpn[i]; i++)
        if (offer_h2 || t->alpn[i] != ALPN_H2)
            t->alpn_offer[n++] = t->alpn[i];
    t->alpn_offer[n] = NULL;
    if (n == 0) {
        set_error(t, "ALPN: the list offers only h2 and HTTP/2 is off");
        return NOOK_EINVAL;
    }
    return NOOK_OK;
}

static int build_config(nook_tls *t)
{
    mbedtls_ssl_config *conf = &t->conf;
    int rc = mbedtls_ssl_config_defaults(conf, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
                                         MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc == 0)
        rc = mbedtls_ssl_ticket_setup(&t->ticket, rng_fill, NULL, MBEDTLS_CIPHER_AES_256_GCM,
                                      TICKET_LIFETIME_S);
    if (rc == 0)
        rc = mbedtls_ssl_conf_own_cert(conf, &t->certs[0]->chain, &t->certs[0]->key);
    if (rc == 0)
        rc = mbedtls_ssl_conf_alpn_protocols(conf, t->alpn_offer);
    if (rc != 0) {
        char detail[200];
        describe(rc, detail, sizeof detail);
        set_error(t, "TLS configuration: %s", detail);
        return is_alloc_error(rc) ? NOOK_ENOMEM : NOOK_EINVAL;
    }
    mbedtls_ssl_conf_rng(conf, rng_fill, NULL);
    conf_min_tls12(conf);
    build_suites(t);
    mbedtls_ssl_conf_ciphersuites(conf, t->suites);
    build_groups(t);
#if defined(MBEDTLS_SSL_RENEGOTIATION)
    mbedtls_ssl_conf_renegotiation(conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
#endif
    mbedtls_ssl_conf_session_tickets_cb(conf, mbedtls_ssl_ticket_write, mbedtls_ssl_ticket_parse,
                                        &t->ticket);
    mbedtls_ssl_conf_sni(conf, sni_select, t);
    return NOOK_OK;
}

/*
 * ECDSA keys, for handshake speed. mbedTLS 2.x signs with an ECKEY-type key through a temporary
 * ECDSA copy whose curve group is loaded afresh, so every signature rebuilds the comb table of
 * the generator point: more than half of what a P-256 signature costs (0.73 ms against 0.33 ms
 * per signature on the benchmark machine, one of each per full handshake). The same key held in
 * an ECDSA-type context is signed with in place, and its group keeps the table once it is built.
 * It is built here, by one signature, while no worker runs: afterwards signing only reads the
 * group, so the one key is shared by every thread without a lock. A key that cannot be moved
 * over (a curve without ECDSA, no memory) simply stays as it was parsed; so do keys under
 * mbedTLS 3.x, which keeps them its own way.
 */
static void key_prepare(tls_cert *c)
{
#if MBEDTLS_VERSION_NUMBER < 0x03000000 && defined(MBEDTLS_ECDSA_C)
    if (mbedtls_pk_get_type(&c->key) != MBEDTLS_PK_ECKEY)
        return;
    mbedtls_pk_context k;
    mbedtls_pk_init(&k);
    unsigned char hash[32] = {0}, sig[MBEDTLS_ECDSA_MAX_LEN];
    size_t sig_len;
    int rc = mbedtls_pk_setup(&k, mbedtls_pk_info_from_type(MBEDTLS_PK_ECDSA));
    if (rc == 0)
        rc = mbedtls_ecdsa_from_keypair(mbedtls_pk_ec(k), mbedtls_pk_ec(c->key));
    if (rc == 0)
        rc = mbedtls_pk_sign(&k, MBEDTLS_MD_SHA256, hash, sizeof hash, sig, &sig_len, rng_fill,
                             NULL);
    if (rc != 0) {
        mbedtls_pk_free(&k);
        return;
    }
    mbedtls_pk_free(&c->key);
    c->key = k; /* a pk context is two pointers: moving it moves the ownership */
#else
    (void)c;
#endif
}

static int prepare_locked(nook_tls *t, bool offer_h2)
{
    if (is_prepared(t))
        return t->offer_h2 == offer_h2 ? NOOK_OK : NOOK_ESTATE;
    if (t->ncerts == 0) {
        set_error(t, "no certificate");
        return NOOK_EINVAL;
    }
    int rc = build_alpn(t, offer_h2);
    if (rc == NOOK_OK) {
        for (size_t i = 0; i < t->ncerts; i++)
            key_prepare(t->certs[i]);
        rc = build_config(t);
    }
    if (rc != NOOK_OK) {
        /* Back to a clean, unprepared state so a later attempt starts over. */
        mbedtls_ssl_config_free(&t->conf);
        mbedtls_ssl_config_init(&t->conf);
        mbedtls_ssl_ticket_free(&t->ticket);
        mbedtls_ssl_ticket_init(&t->ticket);
        return rc;
    }
    t->offer_h2 = offer_h2;
    atomic_store_explicit(&t->prepared, true, memory_order_release);
    return NOOK_OK;
}

int tls_prepare(nook_tls *t, bool offer_h2)
{
    if (!t)
        return NOOK_EINVAL;
    pthread_mutex_lock(&t->prepare_lock);
    int rc = prepare_locked(t, offer_h2);
    pthread_mutex_unlock(&t->prepare_lock);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Connections
 * ------------------------------------------------------------------------------------------- */

/*
 * Sleep. mbedTLS gives every context two record buffers of about 16.5 KiB (input and output)
 * for its whole life; an idle keep-alive connection needs neither. While the context is between
 * records (nothing read ahead, nothing left to write, no handshake), the only live bytes in a
 * buffer are its prefix before the message: the 64-bit record counter, the header (with a
 * connection ID where built in) and the explicit IV. Sleeping keeps those prefixes, the
 * pointers' offsets and the buffers' sizes, and frees both buffers; waking allocates them again
 * (mbedtls_calloc, as mbedtls_ssl_setup does) and puts everything back.
 *
 * These are context fields mbedTLS documents as internal: public in 2.28, reached through
 * MBEDTLS_PRIVATE in 3.x, whose fields keep their names and roles through 3.6. A 3.x buffer's
 * size is a constant of a private header unless MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH records it,
 * so there it is read from glibc (malloc_usable_size: at least what mbedTLS asked for) and only
 * when mbedTLS allocates with libc's calloc. Where neither holds, connections never sleep.
 * test_idle_sleep runs against both major versions in CI.
 */
#define SLEEP_PREFIX_MAX 64

#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#define SSL_F(ssl, f) ((ssl)->MBEDTLS_PRIVATE(f))
#else
#define SSL_F(ssl, f) ((ssl)->f)
#endif

#if defined(MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH) && MBEDTLS_VERSION_NUMBER < 0x04000000
#define TLS_CAN_SLEEP 1
#define IN_BUF_LEN(ssl) SSL_F(ssl, in_buf_len)
#define OUT_BUF_LEN(ssl) SSL_F(ssl, out_buf_len)
#elif MBEDTLS_VERSION_NUMBER < 0x03000000
#define TLS_CAN_SLEEP 1
#define IN_BUF_LEN(ssl) ((size_t)MBEDTLS_SSL_IN_BUFFER_LEN)
#define OUT_BUF_LEN(ssl) ((size_t)MBEDTLS_SSL_OUT_BUFFER_LEN)
#elif MBEDTLS_VERSION_NUMBER < 0x04000000 && defined(__GLIBC__) && !defined(MBEDTLS_PLATFORM_MEMORY)
/* Without MBEDTLS_PLATFORM_MEMORY, mbedtls_calloc is libc's calloc (mbedtls/platform.h). */
#include <malloc.h>
#define TLS_CAN_SLEEP 1
#define IN_BUF_LEN(ssl) malloc_usable_size(SSL_F(ssl, in_buf))
#define OUT_BUF_LEN(ssl) malloc_usable_size(SSL_F(ssl, out_buf))
#endif

/* The pointers mbedTLS keeps into one record buffer, the buffer itself first. */
#if defined(MBEDTLS_SSL_DTLS_CONNECTION_ID)
#define BUF_PTRS 7
#define BUF_PTRS_OF(ssl, d)                                                                     \
    {&SSL_F(ssl, d##_buf), &SSL_F(ssl, d##_ctr), &SSL_F(ssl, d##_hdr), &SSL_F(ssl, d##_cid),    \
     &SSL_F(ssl, d##_len), &SSL_F(ssl, d##_iv), &SSL_F(ssl, d##_msg)}
#else
#define BUF_PTRS 6
#define BUF_PTRS_OF(ssl, d)                                                                     \
    {&SSL_F(ssl, d##_buf), &SSL_F(ssl, d##_ctr), &SSL_F(ssl, d##_hdr), &SSL_F(ssl, d##_len),    \
     &SSL_F(ssl, d##_iv), &SSL_F(ssl, d##_msg)}
#endif

typedef struct buf_marks {
    size_t size;            /* the buffer's length, to allocate it again */
    size_t off[BUF_PTRS];   /* each pointer's offset into the buffer (off[0] = 0) */
    size_t keep;            /* the prefix: bytes before the message */
    unsigned char prefix[SLEEP_PREFIX_MAX];
} buf_marks;

struct sleep_state {
    buf_marks in, out;
};

/*
 * A write of several records makes each with its own mbedtls_ssl_write, and a send per record
 * wakes the peer once per record: on loopback the wake-ups cost the sender more than the
 * copies. So while tls_send makes more than one record, bio_send appends them here and
 * tls_send sends them together. A record's plaintext counts as written once the socket took
 * the whole record (rec says where each ends), as without gathering: until then the caller
 * hands the same bytes again, the first `plain` of them already sealed here.
 */
struct tx_batch {
    size_t len, off; /* bytes gathered; bytes of them sent */
    size_t plain;    /* plaintext behind the records not yet sent whole */
    size_t sent;     /* plaintext of records sent but not yet reported (sent outside tls_send) */
    unsigned nrec, head; /* records gathered; the first not yet sent whole */
    struct {
        size_t end, plain; /* offset after the record; its plaintext length */
    } rec[TX_RECORDS];
    unsigned char buf[];
};

struct tls_conn {
    mbedtls_ssl_context ssl;
    nook_tls *tls; /* a reference: the config must outlive every connection using it */
    const io_alloc *alloc;
    int fd;
    int sys_errno;  /* errno of the socket call behind MBEDTLS_ERR_NET_{RECV,SEND}_FAILED */
    int fail_errno; /* once set, the connection is dead: recv and send report this */
    bool rx_eof;    /* close_notify or EOF seen: recv reports 0 from now on */
    /* After MBEDTLS_ERR_SSL_WANT_WRITE mbedTLS holds one encrypted record and must be called
     * again with the same plaintext; this is that plaintext's length (0: nothing held). */
    size_t tx_pending;
    /* Records gathered for one send (see tx_batch): allocated at the first write of several
     * records, freed when the connection sleeps. */
    struct tx_batch *tx;
    size_t tx_cap;  /* its buffer's size (NOOK_OPT_TLS_SEND_BATCH) */
    bool batching;  /* tls_send is making several records: bio_send appends them to tx */
    bool asleep; /* the record buffers are released (tls_sleep) */
    struct sleep_state sleep;
    /* Read-ahead below mbedTLS, which asks the socket for a record's 5-byte header and then for
     * its body: one recv of up to RX_AHEAD bytes serves both (and more records) from here.
     * Allocated at the first read (1 KiB, a size libc's per-thread cache serves cheaply), given
     * back when the connection sleeps: freed after every read, it would be allocated again for
     * each (and ASan's quarantine would hold every one). */
    unsigned char *rx;
    size_t rx_off, rx_len;
    /* A recv gave less than it was asked for during this call into mbedTLS: the socket is
     * empty, so the next read waits for the event loop instead of a recv that fails. */
    bool rx_drained;
    /* Server side, until the first handshake message's header has been seen: its bytes so far
     * (see screen_hello). */
    bool screening;
    uint8_t head_len;
    unsigned char head[HELLO_HEAD];
    char err[256];
};

static int socket_send(tls_conn *c, const unsigned char *buf, size_t len)
{
    for (;;) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0)
            return (int)n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return MBEDTLS_ERR_SSL_WANT_WRITE;
        if (errno == EPIPE || errno == ECONNRESET)
            return MBEDTLS_ERR_NET_CONN_RESET;
        c->sys_errno = errno;
        return MBEDTLS_ERR_NET_SEND_FAILED;
    }
}

/* Sends what tx holds, moving the plaintext of each record sent whole to `sent`: 0 once all
 * of it is out, else what the socket said (MBEDTLS_ERR_SSL_WANT_WRITE when it is full). */
static int tx_flush(tls_conn *c)
{
    struct tx_batch *b = c->tx;
    int rc = 0;
    while (b->off < b->len) {
        int n = socket_send(c, b->buf + b->off, b->len - b->off);
        if (n < 0) {
            rc = n;
            break;
        }
        b->off += (size_t)n;
    }
    for (; b->head < b->nrec && b->rec[b->head].end <= b->off; b->head++) {
        b->sent += b->rec[b->head].plain;
        b->plain -= b->rec[b->head].plain;
    }
    if (b->off == b->len)
        b->len = b->off = b->nrec = b->head = 0;
    return rc;
}

static bool tx_holds(const tls_conn *c)
{
    return c->tx && c->tx->len > 0;
}

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    tls_conn *c = ctx;
    struct tx_batch *b = c->tx;
    if (c->batching) {
        if (b->len > 0 && (len > c->tx_cap - b->len || b->nrec == TX_RECORDS))
            return MBEDTLS_ERR_SSL_WANT_WRITE; /* full: tls_send sends it, then this again */
        if (len <= c->tx_cap) {
            memcpy(b->buf + b->len, buf, len);
            b->len += len;
            return (int)len;
        }
    } else if (tx_holds(c)) {
        /* Records gathered earlier go first (a TLS 1.3 ticket or an alert written later). */
        int rc = tx_flush(c);
        if (rc != 0)
            return rc;
    }
    return socket_send(c, buf, len);
}

/* recv into buf: the byte count (0 at EOF) or an mbedTLS error. */
static int socket_recv(tls_conn *c, unsigned char *buf, size_t len)
{
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, 0);
        if (n >= 0) {
            c->rx_drained = (size_t)n < len;
            return (int)n; /* 0: mbedTLS turns EOF into MBEDTLS_ERR_SSL_CONN_EOF */
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return MBEDTLS_ERR_SSL_WANT_READ;
        if (errno == ECONNRESET)
            return MBEDTLS_ERR_NET_CONN_RESET;
        c->sys_errno = errno;
        return MBEDTLS_ERR_NET_RECV_FAILED;
    }
}

/* recv through the read-ahead: the byte count (0 at EOF) or an mbedTLS error. */
static int read_ahead(tls_conn *c, unsigned char *buf, size_t len)
{
    if (c->rx_off == c->rx_len) {
        if (c->rx_drained)
            return MBEDTLS_ERR_SSL_WANT_READ;
        /* A request as big as the read-ahead (a large record's body) goes straight to
         * mbedTLS's buffer. */
        if (len >= RX_AHEAD || (!c->rx && !(c->rx = io_malloc(c->alloc, RX_AHEAD))))
            return socket_recv(c, buf, len);
        int n = socket_recv(c, c->rx, RX_AHEAD);
        if (n <= 0)
            return n;
        c->rx_off = 0;
        c->rx_len = (size_t)n;
    }
    size_t n = c->rx_len - c->rx_off;
    if (n > len)
        n = len;
    memcpy(buf, c->rx + c->rx_off, n);
    c->rx_off += n;
    return (int)n;
}

/*
 * A client's first bytes must open a handshake record (type 22, version 3.x) holding a
 * ClientHello (type 1) that fits one record. mbedTLS 2.28 refuses anything else at once;
 * 3.6 reassembles handshake messages across records, and so waits on a header that announces
 * megabytes until the handshake timeout. This screen fails such a connection on its first
 * bytes with either version. Returns 0, or the error bio_recv reports.
 */
static int screen_hello(tls_conn *c, const unsigned char *p, size_t n)
{
    size_t room = HELLO_HEAD - (size_t)c->head_len;
    size_t take = room < n ? room : n;
    memcpy(c->head + c->head_len, p, take);
    c->head_len = (uint8_t)(c->head_len + take);
    const unsigned char *h = c->head;
    size_t got = c->head_len;
    bool bad = (got > 0 && h[0] != 22) || (got > 1 && h[1] != 3) || (got > 5 && h[5] != 1);
    if (!bad && got == HELLO_HEAD) {
        size_t hello_len = (size_t)h[6] << 16 | (size_t)h[7] << 8 | h[8];
        bad = hello_len > RECORD_MAX;
        c->screening = false;
    }
    return bad ? MBEDTLS_ERR_SSL_INVALID_RECORD : 0; /* bad: every later call fails too */
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    tls_conn *c = ctx;
    int n = read_ahead(c, buf, len);
    if (n > 0 && c->screening) {
        int rc = screen_hello(c, buf, (size_t)n);
        if (rc != 0)
            return rc;
    }
    return n;
}

tls_conn *tls_conn_new(nook_tls *t, const io_alloc *alloc, int fd)
{
    if (!t || !alloc || !is_prepared(t))
        return NULL;
    tls_conn *c = io_malloc(alloc, sizeof *c);
    if (!c)
        return NULL;
    memset(c, 0, sizeof *c);
    c->alloc = alloc;
    c->fd = fd;
    mbedtls_ssl_init(&c->ssl);
    if (mbedtls_ssl_setup(&c->ssl, &t->conf) != 0) {
        mbedtls_ssl_free(&c->ssl);
        io_free(alloc, c);
        return NULL;
    }
    mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
    c->tx_cap = TLS_SEND_BATCH_DEFAULT;
    c->screening = true;
    tls_ref(t);
    c->tls = t;
    return c;
}

tls_conn *tls_conn_new_client(const struct mbedtls_ssl_config *conf, const io_alloc *alloc, int fd,
                              const char *hostname)
{
    tls_conn *c = io_malloc(alloc, sizeof *c);
    if (!c)
        return NULL;
    memset(c, 0, sizeof *c);
    c->alloc = alloc;
    c->fd = fd;
    mbedtls_ssl_init(&c->ssl);
    if (mbedtls_ssl_setup(&c->ssl, conf) != 0 ||
        (hostname && mbedtls_ssl_set_hostname(&c->ssl, hostname) != 0)) {
        mbedtls_ssl_free(&c->ssl);
        io_free(alloc, c);
        return NULL;
    }
    mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
    c->tx_cap = TLS_SEND_BATCH_DEFAULT;
    return c; /* c->tls stays NULL: the client configuration is owned elsewhere */
}

struct mbedtls_ssl_context *tls_conn_ssl(tls_conn *c)
{
    return &c->ssl;
}

int tls_random(void *unused, unsigned char *out, size_t len)
{
    return rng_fill(unused, out, len);
}

static void conn_set_error(tls_conn *c, const char *what, int rc)
{
    if (rc == MBEDTLS_ERR_NET_RECV_FAILED || rc == MBEDTLS_ERR_NET_SEND_FAILED) {
        snprintf(c->err, sizeof c->err, "%s: socket error (errno %d)", what, c->sys_errno);
        return;
    }
    char detail[200];
    describe(rc, detail, sizeof detail);
    snprintf(c->err, sizeof c->err, "%s: %s", what, detail);
}

static bool is_peer_gone(int rc)
{
    return rc == MBEDTLS_ERR_SSL_CONN_EOF || rc == MBEDTLS_ERR_NET_CONN_RESET ||
           rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || rc == MBEDTLS_ERR_NET_RECV_FAILED ||
           rc == MBEDTLS_ERR_NET_SEND_FAILED;
}

int tls_conn_handshake(tls_conn *c, bool *want_write)
{
    c->rx_drained = false; /* called on a socket event: the socket may have bytes */
    int rc = mbedtls_ssl_handshake(&c->ssl);
    if (rc == 0)
        return NOOK_OK;
    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
        if (want_write)
            *want_write = rc == MBEDTLS_ERR_SSL_WANT_WRITE;
        return NOOK_AGAIN;
    }
    conn_set_error(c, "handshake", rc);
    return is_peer_gone(rc) ? NOOK_ECLOSED : NOOK_EINVAL;
}

void tls_conn_set_send_batch(tls_conn *c, size_t bytes)
{
    if (!c->tx)
        c->tx_cap = bytes;
}

const char *tls_conn_error(const tls_conn *c)
{
    return c ? c->err : "";
}

const char *tls_conn_alpn(const tls_conn *c)
{
    return mbedtls_ssl_get_alpn_protocol(&c->ssl);
}

const char *tls_conn_version(const tls_conn *c)
{
    return mbedtls_ssl_get_version(&c->ssl);
}

const char *tls_conn_cipher(const tls_conn *c)
{
    return mbedtls_ssl_get_ciphersuite(&c->ssl);
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/*
 * RFC 9113 §9.2.2 reduces, for the suites mbedTLS implements, to: ephemeral (EC)DHE key
 * exchange and an AEAD cipher. The suite's properties are private fields in mbedTLS 3, so they
 * are read from its name, which both major versions spell alike:
 * "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256", "TLS-DHE-RSA-WITH-CHACHA20-POLY1305-SHA256".
 */
static bool suite_is_ephemeral_aead(const char *name)
{
    if (!has_prefix(name, "TLS-ECDHE-") && !has_prefix(name, "TLS-DHE-"))
        return false;
    const char *cipher = strstr(name, "-WITH-");
    return cipher && (strstr(cipher, "-GCM") || strstr(cipher, "-CCM") ||
                      strstr(cipher, "-CHACHA20-POLY1305"));
}

bool tls_conn_h2_allowed(const tls_conn *c)
{
    /* mbedtls_ssl_get_version is the one version getter both major versions have. */
    const char *version = mbedtls_ssl_get_version(&c->ssl);
    if (strcmp(version, "TLSv1.3") == 0)
        return true;
    if (strcmp(version, "TLSv1.2") != 0)
        return false;
    const char *suite = mbedtls_ssl_get_ciphersuite(&c->ssl);
    return suite && suite_is_ephemeral_aead(suite);
}

/* ---------------------------------------------------------------------------------------------
 * The io_transport
 * ------------------------------------------------------------------------------------------- */

/* Marks the connection dead after a fatal error; returns the errno recv/send report. */
static int conn_fail(tls_conn *c, const char *what, int rc)
{
    conn_set_error(c, what, rc);
    if (rc == MBEDTLS_ERR_NET_CONN_RESET)
        c->fail_errno = ECONNRESET;
    else if ((rc == MBEDTLS_ERR_NET_RECV_FAILED || rc == MBEDTLS_ERR_NET_SEND_FAILED) &&
             c->sys_errno != 0)
        c->fail_errno = c->sys_errno;
    else
        c->fail_errno = EPROTO;
    return c->fail_errno;
}

static bool is_eof(int rc)
{
    return rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || rc == MBEDTLS_ERR_SSL_CONN_EOF;
}

static bool would_block(int rc)
{
    return rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE;
}

/* What a recv reports once no more bytes come: EOF, a failure, or "later". */
static ssize_t recv_end(tls_conn *c)
{
    if (c->fail_errno) {
        errno = c->fail_errno;
        return -1;
    }
    if (c->rx_eof)
        return 0;
    errno = EAGAIN;
    return -1;
}

#ifdef TLS_CAN_SLEEP
/* Records where ptrs (BUF_PTRS_OF) point into their buffer of `size` bytes and keeps the bytes
 * before the message; false if the layout is not one sleep can restore. */
static bool mark(buf_marks *m, unsigned char **const ptrs[BUF_PTRS], size_t size)
{
    unsigned char *buf = *ptrs[0], *msg = *ptrs[BUF_PTRS - 1];
    if (!buf || msg < buf || (size_t)(msg - buf) > SLEEP_PREFIX_MAX || size < SLEEP_PREFIX_MAX)
        return false;
    for (int i = 0; i < BUF_PTRS; i++) {
        if (*ptrs[i] < buf || *ptrs[i] > msg)
            return false;
        m->off[i] = (size_t)(*ptrs[i] - buf);
    }
    m->size = size;
    m->keep = (size_t)(msg - buf);
    memcpy(m->prefix, buf, m->keep);
    return true;
}

/* True until the handshake is over and its parameters are freed; except that mbedTLS 3.x keeps
 * a TLS 1.3 connection's parameters until mbedtls_ssl_free. Those point into the record
 * buffers only while a handshake message is parsed (the raw SNI, read in the SNI callback). */
static bool handshaking(const mbedtls_ssl_context *ssl)
{
    if (SSL_F(ssl, state) != MBEDTLS_SSL_HANDSHAKE_OVER)
        return true;
#if MBEDTLS_VERSION_NUMBER >= 0x03020000 && defined(MBEDTLS_SSL_PROTO_TLS1_3)
    if (mbedtls_ssl_get_version_number(ssl) == MBEDTLS_SSL_VERSION_TLS1_3)
        return false;
#endif
    return SSL_F(ssl, handshake) != NULL;
}

/* Zeroes and frees the buffer behind ptrs; every pointer becomes NULL. */
static void release(unsigned char **const ptrs[BUF_PTRS], size_t size)
{
    mbedtls_platform_zeroize(*ptrs[0], size);
    mbedtls_free(*ptrs[0]);
    for (int i = 0; i < BUF_PTRS; i++)
        *ptrs[i] = NULL;
}

/* Points ptrs into buf as m recorded, after putting the prefix back. */
static void restore(unsigned char **const ptrs[BUF_PTRS], unsigned char *buf, const buf_marks *m)
{
    memcpy(buf, m->prefix, m->keep);
    for (int i = 0; i < BUF_PTRS; i++)
        *ptrs[i] = buf + m->off[i];
}
#endif

static void tls_sleep(io_stream *s)
{
    tls_conn *c = s->tr_data;
    if (!c || c->rx_off < c->rx_len || tx_holds(c) || (c->tx && c->tx->sent))
        return;
    if (c->rx) {
        io_free(c->alloc, c->rx); /* the read-ahead holds nothing */
        c->rx = NULL;
        c->rx_off = c->rx_len = 0;
    }
    if (c->tx) {
        io_free(c->alloc, c->tx);
        c->tx = NULL;
    }
#ifdef TLS_CAN_SLEEP
    mbedtls_ssl_context *ssl = &c->ssl;
    if (c->asleep || c->fail_errno || c->rx_eof || c->tx_pending || handshaking(ssl) ||
        SSL_F(ssl, in_left) || SSL_F(ssl, in_msglen) || SSL_F(ssl, in_offt) ||
        SSL_F(ssl, keep_current_message) || SSL_F(ssl, out_left) || mbedtls_ssl_check_pending(ssl))
        return;
    unsigned char **const in[BUF_PTRS] = BUF_PTRS_OF(ssl, in);
    unsigned char **const out[BUF_PTRS] = BUF_PTRS_OF(ssl, out);
    struct sleep_state st;
    if (!mark(&st.in, in, IN_BUF_LEN(ssl)) || !mark(&st.out, out, OUT_BUF_LEN(ssl)))
        return;
    c->sleep = st;
    release(in, st.in.size);
    release(out, st.out.size);
    c->asleep = true;
#endif
}

/* Gives an asleep connection its buffers back; false (and the connection failed) without
 * memory. */
static bool wake(tls_conn *c)
{
#ifdef TLS_CAN_SLEEP
    if (!c->asleep)
        return true;
    mbedtls_ssl_context *ssl = &c->ssl;
    unsigned char *in = mbedtls_calloc(1, c->sleep.in.size);
    unsigned char *out = in ? mbedtls_calloc(1, c->sleep.out.size) : NULL;
    if (!out) {
        mbedtls_free(in);
        conn_fail(c, "wake", MBEDTLS_ERR_SSL_ALLOC_FAILED);
        return false;
    }
    unsigned char **const in_ptrs[BUF_PTRS] = BUF_PTRS_OF(ssl, in);
    unsigned char **const out_ptrs[BUF_PTRS] = BUF_PTRS_OF(ssl, out);
    restore(in_ptrs, in, &c->sleep.in);
    restore(out_ptrs, out, &c->sleep.out);
    c->asleep = false;
#else
    (void)c;
#endif
    return true;
}

static ssize_t tls_recv(io_stream *s, void *buf, size_t len)
{
    tls_conn *c = s->tr_data;
    if (!c->fail_errno && !wake(c))
        return recv_end(c);
    c->rx_drained = false; /* a new read: the socket may have bytes since the last one */
    unsigned char *out = buf;
    size_t got = 0;
    while (got < len && !c->fail_errno && !c->rx_eof) {
        int n = mbedtls_ssl_read(&c->ssl, out + got, len - got);
        if (n > 0) {
            got += (size_t)n;
            /* The socket gave all it had and every byte of it is decrypted: another call
             * would only find that out (some 500 instructions a call). */
            if (c->rx_drained && c->rx_off == c->rx_len &&
                mbedtls_ssl_get_bytes_avail(&c->ssl) == 0 && !mbedtls_ssl_check_pending(&c->ssl))
                break;
            continue;
        }
        if (would_block(n))
            break;
        if (is_eof(n))
            c->rx_eof = true;
        else
            conn_fail(c, "read", n);
    }
    /* Bytes first: an EOF or error found after them is reported by the next call. */
    return got > 0 ? (ssize_t)got : recv_end(c);
}

/* The most plaintext one record carries on this connection. */
static size_t record_cap(const tls_conn *c)
{
    int max = mbedtls_ssl_get_max_out_record_payload(&c->ssl);
    return max > 0 && max < RECORD_MAX ? (size_t)max : RECORD_MAX;
}

/* Plaintext for the next mbedtls_ssl_write: the held record's again, else up to a record. */
static size_t write_chunk(const tls_conn *c, size_t left, size_t cap)
{
    size_t n = c->tx_pending ? c->tx_pending : cap;
    return left < n ? left : n;
}

/* Sends the gathered records and adds the plaintext of those sent whole to *done. 0 once all
 * are out, or what the socket said (see tx_flush). */
static int tx_finish(tls_conn *c, size_t *done)
{
    if (!c->tx)
        return 0;
    int rc = tx_flush(c);
    *done += c->tx->sent;
    c->tx->sent = 0;
    return rc;
}

static ssize_t tls_send(io_stream *s, const void *buf, size_t len)
{
    tls_conn *c = s->tr_data;
    if (!c->fail_errno && !wake(c)) {
        errno = c->fail_errno;
        return -1;
    }
    const unsigned char *in = buf;
    size_t done = 0;
    /* Records left from the last call hold the first tx->plain bytes of this one (and those
     * sent since count as written now). */
    int rc = tx_finish(c, &done);
    size_t cap = record_cap(c);
    if (rc == 0 && len - done > write_chunk(c, len - done, cap) && c->tx_cap >= 2 * RECORD_MAX) {
        if (!c->tx && (c->tx = io_malloc(c->alloc, sizeof *c->tx + c->tx_cap)) != NULL)
            memset(c->tx, 0, sizeof *c->tx);
        c->batching = c->tx != NULL;
    }
    struct tx_batch *b = c->tx;
    for (size_t off; rc == 0 && (off = done + (b ? b->plain : 0)) < len && !c->fail_errno;) {
        size_t chunk = write_chunk(c, len - off, cap);
        int n = mbedtls_ssl_write(&c->ssl, in + off, chunk);
        if (n > 0) {
            c->tx_pending = 0;
            if (c->batching && b->len > 0) {
                b->rec[b->nrec].end = b->len;
                b->rec[b->nrec++].plain = (size_t)n;
                b->plain += (size_t)n;
            } else {
                done += (size_t)n; /* sent as it was made */
            }
            continue;
        }
        if (would_block(n)) {
            c->tx_pending = chunk;
            /* Batching, this is tx being full (or the socket, for a record larger than tx):
             * send tx, and mbedTLS's held record goes into it next time round. */
            if (c->batching && b->len > 0 && (rc = tx_finish(c, &done)) == 0)
                continue;
            break;
        }
        c->tx_pending = 0;
        conn_fail(c, "write", n);
    }
    if (rc == 0 && tx_holds(c))
        rc = tx_finish(c, &done);
    c->batching = false;
    if (rc != 0 && rc != MBEDTLS_ERR_SSL_WANT_WRITE && !c->fail_errno)
        conn_fail(c, "write", rc);
    if (done > 0)
        return (ssize_t)done;
    errno = c->fail_errno ? c->fail_errno : EAGAIN;
    return -1;
}

/* mbedTLS cannot say how many undecrypted bytes it holds, only that it holds some: count that
 * as 1 so the caller knows a recv would make progress. */
static size_t tls_pending(const io_stream *s)
{
    const tls_conn *c = s->tr_data;
    if (c->rx_off < c->rx_len)
        return c->rx_len - c->rx_off; /* read from the socket, not yet given to mbedTLS */
    if (c->asleep)
        return 0; /* it went to sleep with nothing pending */
    size_t avail = mbedtls_ssl_get_bytes_avail(&c->ssl);
    if (avail > 0)
        return avail;
    return mbedtls_ssl_check_pending(&c->ssl) ? 1 : 0;
}

void tls_conn_close_notify(tls_conn *c)
{
    if (!c || c->fail_errno || !wake(c))
        return;
    /* With a record still held from a blocked write, the first call only flushes it; the
     * second then queues the alert itself. */
    bool held = c->tx_pending != 0;
    c->tx_pending = 0;
    if (mbedtls_ssl_close_notify(&c->ssl) == 0 && held)
        mbedtls_ssl_close_notify(&c->ssl);
}

void tls_conn_free(tls_conn *c)
{
    if (!c)
        return;
    mbedtls_ssl_free(&c->ssl); /* asleep, the buffer pointers are NULL and skipped */
    if (c->rx)
        io_free(c->alloc, c->rx);
    if (c->tx)
        io_free(c->alloc, c->tx);
    nook_tls *t = c->tls;
    io_free(c->alloc, c);
    tls_unref(t);
}

/* io_stream_close: the stream owns the connection from the handshake on. */
static void tls_close(io_stream *s)
{
    tls_conn *c = s->tr_data;
    tls_conn_close_notify(c);
    tls_conn_free(c);
    s->tr_data = NULL;
}

const io_transport tls_transport = {tls_recv, tls_send, tls_pending, tls_close, tls_sleep};
