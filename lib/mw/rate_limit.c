/*
 * Rate limit middleware: a token bucket per client address. The buckets live in one table that
 * every worker thread uses, split into shards with a lock each so that workers seldom wait for
 * one another. The table never holds more than max_clients buckets: a new client takes the
 * place of the one seen least recently in its shard. The table is keyed with SipHash and a
 * random key, so that clients cannot choose addresses that all land in one chain.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "mw/mw_util.h"
#include "nook.h"

#define SHARD_COUNT 16            /* locks the workers spread over */
#define DEFAULT_MAX_CLIENTS 65536 /* max_clients 0 */
#define CLIENT_KEY_MAX 64         /* bytes of a client address kept (nook's peer text is shorter) */
#define INITIAL_BUCKETS 16        /* per shard; the chain array doubles as clients arrive */
#define RETRY_AFTER_MAX 2147483647 /* seconds: keeps the conversion from double defined */

typedef struct client {
    struct client *chain;         /* next in its hash bucket */
    struct client *newer, *older; /* the shard's recency list */
    uint64_t hash;
    double tokens;
    int64_t refilled_us; /* when tokens was last brought up to date */
    size_t key_len;
    char key[CLIENT_KEY_MAX];
} client;

typedef struct shard {
    const io_alloc *alloc; /* the server's */
    pthread_mutex_t lock;
    client **buckets;
    size_t nbuckets; /* a power of two */
    size_t count, capacity;
    client *newest, *oldest;
} shard;

typedef struct limiter {
    mw_conf base;
    double per_second, burst;
    uint64_t hash_key[2];
    size_t nshards;
    shard shards[SHARD_COUNT];
} limiter;

/* ---------------------------------------------------------------------------------------------
 * SipHash-2-4 (Aumasson and Bernstein, 2012)
 * ------------------------------------------------------------------------------------------- */

static uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static void sip_round(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = rotl(v[1], 13) ^ v[0];
    v[0] = rotl(v[0], 32);
    v[2] += v[3];
    v[3] = rotl(v[3], 16) ^ v[2];
    v[0] += v[3];
    v[3] = rotl(v[3], 21) ^ v[0];
    v[2] += v[1];
    v[1] = rotl(v[1], 17) ^ v[2];
    v[2] = rotl(v[2], 32);
}

static void sip_absorb(uint64_t v[4], uint64_t m)
{
    v[3] ^= m;
    sip_round(v);
    sip_round(v);
    v[0] ^= m;
}

static uint64_t siphash(const uint64_t key[2], const char *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    uint64_t v[4] = {0x736f6d6570736575ULL ^ key[0], 0x646f72616e646f6dULL ^ key[1],
                     0x6c7967656e657261ULL ^ key[0], 0x7465646279746573ULL ^ key[1]};
    size_t whole = len - len % 8;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = 0;
        for (int b = 7; b >= 0; b--)
            m = (m << 8) | p[i + (size_t)b];
        sip_absorb(v, m);
    }
    uint64_t last = (uint64_t)len << 56;
    for (size_t i = whole; i < len; i++)
        last |= (uint64_t)p[i] << (8 * (i - whole));
    sip_absorb(v, last);
    v[2] ^= 0xff;
    for (int i = 0; i < 4; i++)
        sip_round(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* ---------------------------------------------------------------------------------------------
 * The shard: a chained hash table plus a recency list
 * ------------------------------------------------------------------------------------------- */

static client **bucket_of(shard *s, uint64_t hash)
{
    return &s->buckets[hash & (s->nbuckets - 1)];
}

static client *find_client(shard *s, uint64_t hash, nook_str key)
{
    for (client *c = *bucket_of(s, hash); c; c = c->chain)
        if (c->hash == hash && c->key_len == key.len && memcmp(c->key, key.ptr, key.len) == 0)
            return c;
    return NULL;
}

static void unlink_recency(shard *s, client *c)
{
    if (c->newer)
        c->newer->older = c->older;
    else
        s->newest = c->older;
    if (c->older)
        c->older->newer = c->newer;
    else
        s->oldest = c->newer;
}

static void push_newest(shard *s, client *c)
{
    c->newer = NULL;
    c->older = s->newest;
    if (s->newest)
        s->newest->newer = c;
    else
        s->oldest = c;
    s->newest = c;
}

static void unlink_chain(shard *s, client *c)
{
    client **link = bucket_of(s, c->hash);
    while (*link != c)
        link = &(*link)->chain;
    *link = c->chain;
}

/* Doubles the bucket array while that keeps chains short; a failed allocation only leaves the
 * chains longer. */
static void maybe_grow(shard *s)
{
    if (s->count < s->nbuckets || s->nbuckets >= s->capacity)
        return;
    size_t n = s->nbuckets * 2;
    client **buckets = mw_calloc(s->alloc, n, sizeof *buckets);
    if (!buckets)
        return;
    for (size_t i = 0; i < s->nbuckets; i++) {
        for (client *c = s->buckets[i], *next; c; c = next) {
            next = c->chain;
            c->chain = buckets[c->hash & (n - 1)];
            buckets[c->hash & (n - 1)] = c;
        }
    }
    io_free(s->alloc, s->buckets);
    s->buckets = buckets;
    s->nbuckets = n;
}

/* A bucket for a client not in the table: fresh memory while the shard has room, otherwise the
 * one of the client seen least recently. NULL when out of memory. */
static client *admit_client(shard *s, uint64_t hash, nook_str key)
{
    client *c;
    if (s->count < s->capacity) {
        c = io_malloc(s->alloc, sizeof *c);
        if (!c)
            return NULL;
        s->count++;
        maybe_grow(s);
    } else {
        c = s->oldest;
        unlink_recency(s, c);
        unlink_chain(s, c);
    }
    c->hash = hash;
    c->key_len = key.len;
    memcpy(c->key, key.ptr, key.len);
    client **bucket = bucket_of(s, hash);
    c->chain = *bucket;
    *bucket = c;
    push_newest(s, c);
    return c;
}

/* ---------------------------------------------------------------------------------------------
 * Token buckets
 * ------------------------------------------------------------------------------------------- */

static int64_t monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Takes one token from the client's bucket. Returns 0 when the request may go on, otherwise
 * the whole seconds until a token is back (at least 1). */
static long take_token(const limiter *l, client *c, int64_t now_us)
{
    if (now_us > c->refilled_us) {
        c->tokens += (double)(now_us - c->refilled_us) / 1e6 * l->per_second;
        if (c->tokens > l->burst)
            c->tokens = l->burst;
        c->refilled_us = now_us;
    }
    if (c->tokens >= 1.0) {
        c->tokens -= 1.0;
        return 0;
    }
    double wait = (1.0 - c->tokens) / l->per_second;
    if (wait >= RETRY_AFTER_MAX)
        return RETRY_AFTER_MAX;
    long seconds = (long)wait; /* rounded up by hand: ceil() would need libm */
    if ((double)seconds < wait)
        seconds++;
    return seconds < 1 ? 1 : seconds;
}

/* 0 when the client may go on, or the seconds it has to wait. */
static long check_client(limiter *l, nook_str key)
{
    if (key.len > CLIENT_KEY_MAX)
        key.len = CLIENT_KEY_MAX;
    uint64_t hash = siphash(l->hash_key, key.ptr, key.len);
    shard *s = &l->shards[(hash >> 32) % l->nshards];
    int64_t now = monotonic_us();
    long wait = 0;
    pthread_mutex_lock(&s->lock);
    client *c = find_client(s, hash, key);
    if (c) {
        unlink_recency(s, c);
        push_newest(s, c);
    } else if ((c = admit_client(s, hash, key)) != NULL) {
        c->tokens = l->burst;
        c->refilled_us = now;
    }
    /* Out of memory for a new client: let it through rather than refuse everyone new. */
    if (c)
        wait = take_token(l, c, now);
    pthread_mutex_unlock(&s->lock);
    return wait;
}

static void rate_limit_middleware(nook_req *req, void *user_data)
{
    long wait = check_client(user_data, mw_peer_host(nook_req_peer(req)));
    if (wait == 0) {
        nook_next(req);
        return;
    }
    char retry_after[24];
    snprintf(retry_after, sizeof retry_after, "%ld", wait);
    nook_res_set_header(req, "Retry-After", retry_after);
    static const char body[] = "Too Many Requests\n";
    nook_respond(req, 429, "text/plain; charset=utf-8", body, sizeof body - 1);
}

/* ---------------------------------------------------------------------------------------------
 * Registration
 * ------------------------------------------------------------------------------------------- */

static void limiter_free(void *user_data)
{
    limiter *l = user_data;
    for (size_t i = 0; i < l->nshards; i++) {
        shard *s = &l->shards[i];
        for (client *c = s->newest, *older; c; c = older) {
            older = c->older;
            io_free(s->alloc, c);
        }
        io_free(s->alloc, s->buckets);
        pthread_mutex_destroy(&s->lock);
    }
    mw_conf_free(l);
}

/* Sets up the shards; on failure l->nshards counts those that need freeing. */
static int init_shards(limiter *l, size_t max_clients)
{
    size_t nshards = max_clients < SHARD_COUNT ? max_clients : SHARD_COUNT;
    for (l->nshards = 0; l->nshards < nshards; l->nshards++) {
        shard *s = &l->shards[l->nshards];
        /* Each shard gets an equal part, so the whole never exceeds max_clients. */
        s->capacity = max_clients / nshards;
        s->alloc = l->base.alloc;
        s->nbuckets = INITIAL_BUCKETS;
        s->buckets = mw_calloc(s->alloc, s->nbuckets, sizeof *s->buckets);
        if (!s->buckets)
            return NOOK_ENOMEM;
        if (pthread_mutex_init(&s->lock, NULL) != 0) {
            io_free(s->alloc, s->buckets);
            s->buckets = NULL;
            return NOOK_ESYS;
        }
    }
    return NOOK_OK;
}

static bool random_key(uint64_t key[2])
{
    ssize_t n;
    do {
        n = getrandom(key, 2 * sizeof key[0], 0);
    } while (n < 0 && errno == EINTR);
    return n == (ssize_t)(2 * sizeof key[0]);
}

int nook_use_rate_limit(nook_server *srv, const char *prefix, double per_second, double burst,
                        size_t max_clients)
{
    if (!srv || !isfinite(per_second) || !isfinite(burst) || per_second <= 0 || burst < 1)
        return NOOK_EINVAL;
    limiter *l = mw_conf_new(srv, sizeof *l);
    if (!l)
        return NOOK_ENOMEM;
    l->per_second = per_second;
    l->burst = burst;
    int rc = random_key(l->hash_key) ? NOOK_OK : NOOK_ESYS;
    if (rc == NOOK_OK)
        rc = init_shards(l, max_clients ? max_clients : DEFAULT_MAX_CLIENTS);
    if (rc == NOOK_OK)
        rc = nook_use(srv, prefix, rate_limit_middleware, l, limiter_free);
    if (rc != NOOK_OK)
        limiter_free(l);
    return rc;
}
