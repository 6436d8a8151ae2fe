/*
 * aesgcm: how fast mbedTLS itself encrypts TLS-sized records on this machine — the ceiling for
 * nook's large-body throughput over TLS, since every byte nook sends goes through it once.
 *
 *   cc -O2 -o aesgcm bench/aesgcm.c -lmbedcrypto && ./aesgcm [seconds per cipher, default 1]
 *
 * For AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305 it seals 16 KiB records (the largest TLS
 * record) with a 12-byte nonce, 13 bytes of additional data and a 16-byte tag, as the TLS 1.2
 * record layer does, on one thread, for the given time. Output, one line per cipher (MB is
 * 10^6 bytes, the unit the benchmark report uses):
 *
 *   library mbed TLS 2.28.3
 *   AES-128-GCM 2345.6 MB/s
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <mbedtls/chachapoly.h>
#include <mbedtls/gcm.h>
#include <mbedtls/version.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RECORD_BYTES 16384
#define AAD_BYTES 13
#define NONCE_BYTES 12
#define TAG_BYTES 16

typedef struct {
    unsigned char key[32];
    unsigned char nonce[NONCE_BYTES];
    unsigned char aad[AAD_BYTES];
    unsigned char tag[TAG_BYTES];
    unsigned char in[RECORD_BYTES];
    unsigned char out[RECORD_BYTES];
} record;

/* Seals one record; returns 0 or an mbedTLS error. */
typedef int (*seal_fn)(void *ctx, record *r);

static int seal_gcm(void *ctx, record *r)
{
    return mbedtls_gcm_crypt_and_tag(ctx, MBEDTLS_GCM_ENCRYPT, RECORD_BYTES, r->nonce, NONCE_BYTES,
                                     r->aad, AAD_BYTES, r->in, r->out, TAG_BYTES, r->tag);
}

static int seal_chachapoly(void *ctx, record *r)
{
    return mbedtls_chachapoly_encrypt_and_tag(ctx, RECORD_BYTES, r->nonce, r->aad, AAD_BYTES, r->in,
                                              r->out, r->tag);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Seals records for about `seconds`, a new nonce each time as TLS does; returns MB/s or -1. */
static double measure(seal_fn seal, void *ctx, record *r, double seconds)
{
    unsigned long long records = 0;
    double start = now_s(), elapsed = 0;
    while (elapsed < seconds) {
        for (int i = 0; i < 64; i++) {
            memcpy(r->nonce + 4, &records, sizeof records);
            if (seal(ctx, r) != 0)
                return -1;
            records++;
        }
        elapsed = now_s() - start;
    }
    return (double)records * RECORD_BYTES / elapsed / 1e6;
}

static int report(const char *name, double mbps)
{
    if (mbps < 0) {
        fprintf(stderr, "aesgcm: %s failed\n", name);
        return 1;
    }
    printf("%s %.1f MB/s\n", name, mbps);
    return 0;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    if (seconds <= 0) {
        fprintf(stderr, "usage: %s [seconds per cipher]\n", argv[0]);
        return 2;
    }
    static record r; /* 32 KiB: off the stack */
    for (size_t i = 0; i < sizeof r.in; i++)
        r.in[i] = (unsigned char)(i * 131u);
    memset(r.key, 0x5a, sizeof r.key);

    char version[18];
    mbedtls_version_get_string_full(version);
    printf("library %s\n", version);

    int failures = 0;
    static const struct {
        const char *name;
        unsigned key_bits;
    } gcm[] = {{"AES-128-GCM", 128}, {"AES-256-GCM", 256}};
    for (size_t i = 0; i < sizeof gcm / sizeof gcm[0]; i++) {
        mbedtls_gcm_context ctx;
        mbedtls_gcm_init(&ctx);
        double mbps = -1;
        if (mbedtls_gcm_setkey(&ctx, MBEDTLS_CIPHER_ID_AES, r.key, gcm[i].key_bits) == 0)
            mbps = measure(seal_gcm, &ctx, &r, seconds);
        mbedtls_gcm_free(&ctx);
        failures += report(gcm[i].name, mbps);
    }

    mbedtls_chachapoly_context cp;
    mbedtls_chachapoly_init(&cp);
    double mbps = -1;
    if (mbedtls_chachapoly_setkey(&cp, r.key) == 0)
        mbps = measure(seal_chachapoly, &cp, &r, seconds);
    mbedtls_chachapoly_free(&cp);
    failures += report("CHACHA20-POLY1305", mbps);
    return failures ? 1 : 0;
}
