/*
 * libFuzzer harness for the server side of the TLS handshake: the input is what a client sends
 * (records holding a ClientHello and whatever follows), written to one end of a socketpair and
 * then closed; the server end runs tls_conn_handshake until it stops asking for more. This
 * reaches mbedTLS's ClientHello parsing through nook's configuration, and nook's own code on
 * that path: the SNI certificate matcher (wildcards, case folding) and ALPN selection.
 *
 * The server's random values differ from run to run, so an input can never complete a
 * handshake (it cannot answer the server's key share); every run ends in NOOK_ECLOSED or
 * NOOK_EINVAL, which is fine: the point is that no input crashes or leaks.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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
#define MAX_INPUT 32768

static void require(int ok)
{
    if (!ok)
        __builtin_trap();
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT)
        return 0;
    nook_tls *t = config();
    int fds[2];
    require(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    write_all(fds[1], data, size);
    shutdown(fds[1], SHUT_WR);
    require(fcntl(fds[0], F_SETFL, O_NONBLOCK) == 0);

    tls_conn *c = tls_conn_new(t, &io_alloc_libc, fds[0]);
    require(c != NULL);
    int rc = NOOK_AGAIN;
    /* All input is already there and then EOF: each step either progresses or ends. */
    for (int i = 0; i < 64 && rc == NOOK_AGAIN; i++) {
        bool want_write = false;
        rc = tls_conn_handshake(c, &want_write);
    }
    require(rc != NOOK_AGAIN);
    require(rc == NOOK_OK || strlen(tls_conn_error(c)) > 0);
    tls_conn_free(c);
    close(fds[0]);
    close(fds[1]);
    return 0;
}
