/*
 * libFuzzer harness for the server side of the TLS handshake: the input is what a client sends
 * (records holding a ClientHello and whatever follows), written to one end of a socketpair and
 * then closed; the server end runs tls_conn_handshake until it stops asking for more and, once a
 * handshake completes, reads the application data that follows through tls_transport. This
 * reaches mbedTLS's ClientHello parsing through nook's configuration, nook's own code on that
 * path (the SNI certificate matcher with its wildcards and case folding, ALPN selection), and
 * past the ClientHello: ClientKeyExchange, ChangeCipherSpec, Finished and record decryption.
 *
 * Determinism, so that an input means the same thing every time: before each input the server's
 * random generator restarts from a fixed seed (the shared mbedTLS config's f_rng is replaced with
 * det_rng) and time() returns a fixed instant (mbedTLS puts it into the ServerHello random). The
 * server's key share, signature and random are then the same for every run of an input, so a
 * recorded client transcript completes the handshake when replayed. Only the session-ticket keys
 * (made once, by nook's own generator) stay random; they matter only after the Finished.
 *
 * NOOK_FUZZ_TLS_TRANSCRIPT=DIR in the environment: instead of fuzzing, run an mbedTLS client
 * (with its own fixed generator) against this deterministic server, once per entry of
 * `transcripts` (SNI and ALPN), write everything the client sent (its handshake flights, then
 * an HTTP/2 preface as application data and a close_notify) to DIR/full_handshake_NAME, replay
 * each as an ordinary input, and exit 0 only if every replay completed the handshake and
 * delivered the preface. That is how corpus/fuzz_tls_handshake/full_handshake_* were made:
 *     NOOK_FUZZ_TLS_TRANSCRIPT=tests/fuzz/corpus/fuzz_tls_handshake BUILD/tests/fuzz_tls_handshake
 * Remake them whenever the harness's configuration or seeds, or nook's TLS setup, change.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/ssl.h>
#include <mbedtls/version.h>

#include "tls/tls.h"

/* tests/data/{localhost,other}.{crt,key} (ECDSA P-256; SANs localhost, and other.test plus
 * *.wild.test): throwaway test identities, embedded so the harness needs no files. */
static const char localhost_crt[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBrjCCAVSgAwIBAgIUCtaEvkr0CPJjYFHym/DC5q01LvcwCgYIKoZIzj0EAwIw\n"
    "FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMjAwMTEzN1oYDzIxMjYxMDI5\n"
    "MDAxMTM3WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO\n"
    "PQMBBwNCAARCN8vUa3DVUjlI9qz+3m/XQ++gT3CP9t6AKpI2lPH5ehChIEgfaOp7\n"
    "ZSa7q8MQm15k8N+ErrWMfw+GJ4LQAV2Lo4GBMH8wHQYDVR0OBBYEFBC3PXaJItWg\n"
    "Ymn+dLw20EbN6va4MB8GA1UdIwQYMBaAFBC3PXaJItWgYmn+dLw20EbN6va4MA8G\n"
    "A1UdEwEB/wQFMAMBAf8wLAYDVR0RBCUwI4IJbG9jYWxob3N0hwR/AAABhxAAAAAA\n"
    "AAAAAAAAAAAAAAABMAoGCCqGSM49BAMCA0gAMEUCICAV2H4KtpXt3QElqIC6jACU\n"
    "7NwiVyjVv1MJqwI5uW1jAiEA4yS/8KR9CjLG175ddINsWwL6NbV5IlWf3RZmdM9k\n"
    "06U=\n"
    "-----END CERTIFICATE-----\n";
static const char localhost_key[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgb2YQbztqeBbt2nzP\n"
    "yaHTRcey0aCQBdPjEdOlboNz21ihRANCAARCN8vUa3DVUjlI9qz+3m/XQ++gT3CP\n"
    "9t6AKpI2lPH5ehChIEgfaOp7ZSa7q8MQm15k8N+ErrWMfw+GJ4LQAV2L\n"
    "-----END PRIVATE KEY-----\n";
static const char other_crt[] = "-----BEGIN CERTIFICATE-----\n"
                                "MIIBpjCCAUugAwIBAgIUIfc/9xyaD8SbrUARvaH9eDtAkB0wCgYIKoZIzj0EAwIw\n"
                                "FTETMBEGA1UEAwwKb3RoZXIudGVzdDAgFw0yNjExMjIwMDExMzdaGA8yMTI2MTAy\n"
                                "OTAwMTEzN1owFTETMBEGA1UEAwwKb3RoZXIudGVzdDBZMBMGByqGSM49AgEGCCqG\n"
                                "SM49AwEHA0IABLJU+aY6q6tzHl6A4Sn6MbzWC+q5yBGTp2GCcUjywvVXlHdwf8Jw\n"
                                "KlVl2uOOefHcvJD8V2uKfjhztdADY4PpABKjdzB1MB0GA1UdDgQWBBQVZJZczMDC\n"
                                "jNUE9WLwyFPpLPzxcjAfBgNVHSMEGDAWgBQVZJZczMDCjNUE9WLwyFPpLPzxcjAP\n"
                                "BgNVHRMBAf8EBTADAQH/MCIGA1UdEQQbMBmCCm90aGVyLnRlc3SCCyoud2lsZC50\n"
                                "ZXN0MAoGCCqGSM49BAMCA0kAMEYCIQDslJE6hPx/Coi/rM8UuW1RrDHGlQyCi9sX\n"
                                "8OW3xeuNhQIhAJlur5LH8KAaP2sIvYHvGi0p/867OMnFh27YyTFsQl6/\n"
                                "-----END CERTIFICATE-----\n";
static const char other_key[] = "-----BEGIN PRIVATE KEY-----\n"
                                "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgLW5CYukutnHmjaZr\n"
                                "vXhTjbGPlhYWn/rBD7Q2R8IGaTChRANCAASyVPmmOqurcx5egOEp+jG81gvqucgR\n"
                                "k6dhgnFI8sL1V5R3cH/CcCpVZdrjjnnx3LyQ/Fdrin44c7XQA2OD6QAS\n"
                                "-----END PRIVATE KEY-----\n";

/* Larger inputs say nothing new about a handshake and could fill the socket buffer. */
#define MAX_INPUT_BYTES 32768
#define SERVER_SEED 0x6e6f6f6b2d746c73ull /* "nook-tls" */
#define CLIENT_SEED 0x636c69656e742121ull
#define FIXED_TIME ((time_t)1798761600) /* 2027-01-01, inside the test certificates' validity */

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static void require(int ok)
{
    if (!ok)
        __builtin_trap();
}

/* ---- determinism ---- */

/* mbedTLS writes time() into the ServerHello random (TLS 1.2 gmt_unix_time). */
time_t time(time_t *out)
{
    if (out)
        *out = FIXED_TIME;
    return FIXED_TIME;
}

typedef struct det_state {
    uint64_t x;
} det_state;

static det_state server_rng, client_rng;

/* splitmix64: not random at all, which is the point. */
static int det_rng(void *p, unsigned char *out, size_t len)
{
    det_state *st = p;
    while (len > 0) {
        uint64_t z = (st->x += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        size_t n = len < 8 ? len : 8;
        memcpy(out, &z, n);
        out += n;
        len -= n;
    }
    return 0;
}

/* The configuration a server-side tls_conn uses (shared by every connection of a nook_tls). */
static mbedtls_ssl_config *conf_of(tls_conn *c)
{
    const mbedtls_ssl_context *ssl = tls_conn_ssl(c);
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    return (mbedtls_ssl_config *)ssl->MBEDTLS_PRIVATE(conf);
#else
    return (mbedtls_ssl_config *)ssl->conf;
#endif
}

/* A server connection on fd whose random numbers restart from SERVER_SEED. */
static tls_conn *server_conn(nook_tls *t, int fd)
{
    tls_conn *c = tls_conn_new(t, &io_alloc_libc, fd);
    require(c != NULL);
    server_rng.x = SERVER_SEED;
    mbedtls_ssl_conf_rng(conf_of(c), det_rng, &server_rng);
    return c;
}

static void add_cert(nook_tls *t, const char *crt, size_t crt_len, const char *key, size_t key_len)
{
    require(nook_tls_add_cert_pem(t, crt, crt_len, key, key_len, NULL) == NOOK_OK);
}

/* One configuration for the whole run, with two certificates so SNI has a choice. */
static nook_tls *config(void)
{
    static nook_tls *t;
    if (t)
        return t;
    t = nook_tls_new();
    require(t != NULL);
    add_cert(t, localhost_crt, sizeof localhost_crt - 1, localhost_key, sizeof localhost_key - 1);
    add_cert(t, other_crt, sizeof other_crt - 1, other_key, sizeof other_key - 1);
    require(tls_prepare(t, true) == NOOK_OK);
    return t;
}

static void write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        require(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

/* Runs one input: returns the handshake's result and, in *app, how many bytes of application
 * data the server read after it (when app_out is not NULL, up to app_cap of them are kept). */
static int run_input(nook_tls *t, const uint8_t *data, size_t size, char *app_out, size_t app_cap,
                     size_t *app)
{
    int fds[2];
    require(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    write_all(fds[1], data, size);
    shutdown(fds[1], SHUT_WR);
    require(fcntl(fds[0], F_SETFL, O_NONBLOCK) == 0);

    tls_conn *c = server_conn(t, fds[0]);
    int rc = NOOK_AGAIN;
    /* All input is already there and then EOF: each step either progresses or ends. */
    for (int i = 0; i < 64 && rc == NOOK_AGAIN; i++) {
        bool want_write = false;
        rc = tls_conn_handshake(c, &want_write);
    }
    require(rc != NOOK_AGAIN);
    require(rc == NOOK_OK || strlen(tls_conn_error(c)) > 0);
    *app = 0;
    if (rc == NOOK_OK) {
        /* The records after the handshake, through the transport the codecs use. */
        io_stream s;
        memset(&s, 0, sizeof s);
        s.watch.fd = fds[0];
        s.tr = &tls_transport;
        s.tr_data = c;
        char buf[4096];
        for (int i = 0; i < 64; i++) {
            ssize_t n = tls_transport.recv(&s, buf, sizeof buf);
            if (n <= 0)
                break;
            if (app_out && *app < app_cap)
                memcpy(app_out + *app, buf,
                       (size_t)n < app_cap - *app ? (size_t)n : app_cap - *app);
            *app += (size_t)n;
        }
    }
    tls_conn_free(c);
    close(fds[0]);
    close(fds[1]);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT_BYTES)
        return 0;
    size_t app;
    run_input(config(), data, size, NULL, 0, &app);
    return 0;
}

/* ---- NOOK_FUZZ_TLS_TRANSCRIPT: record a client that completes the handshake ---- */

typedef struct recorder {
    int fd;
    uint8_t *bytes;
    size_t len, cap;
} recorder;

static int rec_send(void *p, const unsigned char *buf, size_t len)
{
    recorder *r = p;
    ssize_t n = send(r->fd, buf, len, MSG_NOSIGNAL);
    if (n < 0)
        return MBEDTLS_ERR_SSL_WANT_WRITE;
    if (r->len + (size_t)n > r->cap) {
        r->cap = (r->len + (size_t)n) * 2;
        r->bytes = realloc(r->bytes, r->cap);
        require(r->bytes != NULL);
    }
    memcpy(r->bytes + r->len, buf, (size_t)n);
    r->len += (size_t)n;
    return (int)n;
}

static int rec_recv(void *p, unsigned char *buf, size_t len)
{
    recorder *r = p;
    ssize_t n = recv(r->fd, buf, len, 0);
    if (n < 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    return (int)n;
}

/* The clients whose transcripts seed the corpus: the first certificate with HTTP/2, and the
 * second one through its wildcard name with HTTP/1.1 only. */
static const struct {
    const char *name, *sni, *alpn[3];
} transcripts[] = {
    {"h2_localhost", "localhost", {"h2", "http/1.1", NULL}},
    {"http11_wildcard", "a.wild.test", {"http/1.1", NULL, NULL}},
};

/* Records one client's transcript to path; exits 1 unless its replay completes, twice. */
static void write_transcript(nook_tls *t, const char *path, const char *sni,
                             const char *const *alpn)
{
    mbedtls_ssl_config cc;
    mbedtls_ssl_config_init(&cc);
    require(mbedtls_ssl_config_defaults(&cc, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                        MBEDTLS_SSL_PRESET_DEFAULT) == 0);
    mbedtls_ssl_conf_authmode(&cc, MBEDTLS_SSL_VERIFY_NONE);
    client_rng.x = CLIENT_SEED;
    mbedtls_ssl_conf_rng(&cc, det_rng, &client_rng);
    require(mbedtls_ssl_conf_alpn_protocols(&cc, (const char **)alpn) == 0);
    mbedtls_ssl_context cl;
    mbedtls_ssl_init(&cl);
    require(mbedtls_ssl_setup(&cl, &cc) == 0);
    require(mbedtls_ssl_set_hostname(&cl, sni) == 0);

    int fds[2];
    require(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) == 0);
    recorder rec = {fds[1], NULL, 0, 0};
    mbedtls_ssl_set_bio(&cl, &rec, rec_send, rec_recv, NULL);
    tls_conn *srv = server_conn(t, fds[0]);
    int crc = MBEDTLS_ERR_SSL_WANT_READ, src = NOOK_AGAIN;
    for (int i = 0; i < 1000 && (crc != 0 || src != NOOK_OK); i++) {
        if (crc != 0)
            crc = mbedtls_ssl_handshake(&cl);
        require(crc == 0 || crc == MBEDTLS_ERR_SSL_WANT_READ || crc == MBEDTLS_ERR_SSL_WANT_WRITE);
        if (src == NOOK_AGAIN) {
            bool want_write = false;
            src = tls_conn_handshake(srv, &want_write);
        }
        require(src == NOOK_OK || src == NOOK_AGAIN);
    }
    require(crc == 0 && src == NOOK_OK);
    require(mbedtls_ssl_write(&cl, (const unsigned char *)h2_preface, sizeof h2_preface - 1) ==
            (int)(sizeof h2_preface - 1));
    require(mbedtls_ssl_close_notify(&cl) == 0);
    tls_conn_free(srv);
    mbedtls_ssl_free(&cl);
    mbedtls_ssl_config_free(&cc);
    close(fds[0]);
    close(fds[1]);

    FILE *f = fopen(path, "wb");
    require(f && fwrite(rec.bytes, 1, rec.len, f) == rec.len && fclose(f) == 0);
    /* The replay is an ordinary input: it must complete the handshake, and again. */
    for (int round = 0; round < 2; round++) {
        char app[64];
        size_t got;
        int rc = run_input(t, rec.bytes, rec.len, app, sizeof app, &got);
        fprintf(stderr,
                "fuzz_tls_handshake: %zu bytes to %s; replay %d: %s, %zu bytes of "
                "application data\n",
                rec.len, path, round + 1, rc == NOOK_OK ? "handshake complete" : "FAILED", got);
        if (rc != NOOK_OK || got != sizeof h2_preface - 1 ||
            memcmp(app, h2_preface, sizeof h2_preface - 1) != 0)
            _exit(1);
    }
    free(rec.bytes);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("NOOK_FUZZ_TLS_TRANSCRIPT");
    if (!dir || !*dir)
        return 0;
    for (size_t i = 0; i < sizeof transcripts / sizeof transcripts[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/full_handshake_%s", dir, transcripts[i].name);
        write_transcript(config(), path, transcripts[i].sni, transcripts[i].alpn);
    }
    fflush(stderr);
    _exit(0); /* not exit(): libFuzzer reports a target that exits as a crash */
}
