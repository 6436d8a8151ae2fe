/*
 * The server the integration tests drive: a fixed set of routes that exercise the handler API.
 *
 *   nook_test_server [--tls-cert F --tls-key F] [--listen ADDR]... [--threads N] [--no-h2]
 *                    [--opt NAME=VALUE]... [--drain MS] [--quiet]
 *                    [--access-log common|combined|json] [--static DIR]
 *
 * Listeners after --tls-cert/--tls-key serve TLS (ALPN h2 / http/1.1); others are cleartext
 * (HTTP/1.1 and h2c). --no-h2 sets NOOK_OPT_HTTP2 to 0.
 * --access-log logs every request through a sink callback: each line goes to stderr as
 * "ACCESS(<tag>) <line>", the tag read from the sink's user_data ("test-sink").
 * --static DIR serves DIR under /static with nook_use_static.
 * Prints "port P" (one line per listener, in order) on stdout once listening, then serves until
 * SIGTERM/SIGINT, which stops it with a drain of --drain milliseconds (default 2000).
 * Options: NAME is a nook_opt without the prefix, e.g. MAX_BODY=1024.
 *
 * Routes:
 *   GET  /                     "Hello, World!"
 *   GET  /users/{id}           "user:<decoded id>"
 *   GET  /users/{id}/posts/{post}  "<id>/<post>"
 *   GET  /files/{path...}      "<decoded rest>"
 *   POST /echo                 the request body, same Content-Type
 *   PUT  /echo                 (so /echo answers 405 with Allow: POST, PUT to others)
 *   GET  /headers              sets "X-Mixed-Case: Yes" and "x-lower: yes"; body: the value of
 *                              request header "x-test" looked up as "X-TEST"; with ?echo=1
 *                              also "X-Echo-Of-The-Test-Header: <that value>"
 *   GET  /allheaders           body: every request header as "name: value\n", in order
 *   GET  /query                body: decoded query parameter "q" (or "<absent>")
 *   GET  /stream?n=N&size=S    N chunks of S bytes ('a'..'z' cycling), written with backpressure
 *   GET  /declared?n=N         streams N bytes with a declared Content-Length
 *   GET  /short                declares Content-Length: 10, writes 5, ends (broken response)
 *   GET  /big?size=N           one whole N-byte response
 *   GET  /status/{code}        an empty response with that status
 *   GET  /sendfile?path=P&off=A&len=B   the file's bytes [A, A+B) via nook_res_sendfile
 *   GET  /trailers             streams "body" then trailers grpc-status: 0, X-Checksum: abc
 *                              (?big: 64 KiB of 'x' after "body")
 *   GET  /noresponse           returns without responding (→ 500)
 *   GET  /peer                 the peer address
 *   GET  /thread               an id of the worker thread that ran the handler
 *   /any                       any method: body is the method
 *   GET  /async?ms=N&body=B[&gate=G]   answered by one of a pool of threads after N ms (default
 *                              10) with B; with gate, not before G /async requests were in
 *                              flight at once since the last /stats?reset=1 (or 15 s passed)
 *   GET  /stats[?reset=1]      counters, one "name=value" per line: late_live (late-route
 *                              requests whose DONE has not run), late_peak (most at once since
 *                              the last reset), tokens (tokens the test server holds),
 *                              sendfile_calls / sendfile_bytes (sendfile(2) calls the library
 *                              made, counted by an interposed sendfile)
 *   GET  /gz/pieces?n=N&ms=M&size=S   compressed (nook_use_compress on /gz): N text pieces of
 *                              S bytes, "piece K\n" first, written M ms apart from a posted
 *                              callback (a stream whose pieces must be flushed)
 *   POST /upload[?pause_ms=N][&reject=1]   streaming body: answers "bytes=N fnv=HEX" at the
 *                              end; pause_ms holds the body after every piece for N ms (a slow
 *                              consumer: the client is held back); reject answers 401 at once
 *
 * Middleware on /mw (and below):
 *   - "X-Block: 1" in the request → 403 "blocked" (short-circuit, the handler never runs);
 *   - otherwise adds "X-MW: seen" and "X-MW-Status: <status>" on the way out (HEADERS hook),
 *     and counts finished requests (DONE hook) for GET /mw/count;
 *   - "X-Upper: 1" → a body filter upper-cases the response body.
 *   - "X-Set-Status: NNN" → a HEADERS hook changes the status to NNN on the way out (it runs
 *     before the X-MW-Status one, which so reports NNN);
 *   - "X-MW-Suspend: 1" → the middleware suspends and continues (nook_next) from a callback
 *     posted by another thread 10 ms later.
 *   GET /mw/hello   "hello from handler"         GET /mw/stream   3 pieces, streamed
 *   GET /mw/stream?declared=1[&write=0]   the same with Content-Length: 13 declared (write=0:
 *                   nothing written before nook_res_end: fine for HEAD, 500 for GET)
 *   GET /mw/nocontent?mode=whole|stream|late   204 without a body (nook_respond, nook_res_start
 *                   + nook_res_end, or nook_respond from another thread after 20 ms)
 *   GET /mw/noresponse   returns without responding (→ 500)
 *   GET /mw/late    "late answer", from another thread after 20 ms
 *   GET /mw/count   the number of /mw requests finished before this one
 *   GET /mw/cancelled   how many /mw requests were cancelled (client gone: CANCEL hook)
 *
 * Route middleware (nook_route_use) on "GET /users/{id}" only: adds "X-Route-MW: users" on the
 * way out; "X-Deny: 1" → 403 "denied" (the handler never runs).
 */
#define _GNU_SOURCE /* sigaction, strndup, RTLD_NEXT */
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include "nook.h"

static nook_server *server;
static int drain_ms = 2000;

static void text(nook_req *req, int status, nook_str s)
{
    nook_respond(req, status, "text/plain", s.ptr, s.len);
}

static void text_c(nook_req *req, const char *s)
{
    text(req, 200, (nook_str){s, strlen(s)});
}

static long query_long(nook_req *req, const char *name, long def)
{
    nook_str v = nook_req_query_param(req, name);
    if (!v.ptr)
        return def;
    char buf[32];
    size_t n = v.len < sizeof buf - 1 ? v.len : sizeof buf - 1;
    memcpy(buf, v.ptr, n);
    buf[n] = '\0';
    return strtol(buf, NULL, 10);
}

static void on_root(nook_req *req, void *ud)
{
    (void)ud;
    text_c(req, "Hello, World!");
}

static void on_user(nook_req *req, void *ud)
{
    (void)ud;
    nook_str id = nook_req_param(req, "id");
    char *out = nook_req_alloc(req, id.len + 5);
    memcpy(out, "user:", 5);
    memcpy(out + 5, id.ptr, id.len);
    text(req, 200, (nook_str){out, id.len + 5});
}

static void on_user_post(nook_req *req, void *ud)
{
    (void)ud;
    nook_str id = nook_req_param(req, "id"), post = nook_req_param(req, "post");
    char *out = nook_req_alloc(req, id.len + post.len + 1);
    memcpy(out, id.ptr, id.len);
    out[id.len] = '/';
    memcpy(out + id.len + 1, post.ptr, post.len);
    text(req, 200, (nook_str){out, id.len + post.len + 1});
}

static void on_files(nook_req *req, void *ud)
{
    (void)ud;
    text(req, 200, nook_req_param(req, "path"));
}

static void on_echo(nook_req *req, void *ud)
{
    (void)ud;
    nook_str ct = nook_req_header(req, "content-type");
    char *type = NULL;
    if (ct.ptr) {
        type = nook_req_alloc(req, ct.len + 1);
        memcpy(type, ct.ptr, ct.len);
        type[ct.len] = '\0';
    }
    nook_str body = nook_req_body(req);
    nook_respond(req, 200, type, body.ptr, body.len);
}

static void on_headers(nook_req *req, void *ud)
{
    (void)ud;
    nook_res_header(req, "X-Mixed-Case", "Yes");
    nook_res_header(req, "x-lower", "yes");
    nook_str v = nook_req_header(req, "X-TEST");
    char echo[1024];
    if (nook_req_query_param(req, "echo").ptr && v.ptr && v.len < sizeof echo) {
        memcpy(echo, v.ptr, v.len);
        echo[v.len] = '\0';
        nook_res_header(req, "X-Echo-Of-The-Test-Header", echo);
    }
    text(req, 200, v.ptr ? v : (nook_str){"<absent>", 8});
}

static void on_allheaders(nook_req *req, void *ud)
{
    (void)ud;
    size_t total = 0, n = nook_req_header_count(req);
    nook_str name, value;
    for (size_t i = 0; i < n; i++) {
        nook_req_header_at(req, i, &name, &value);
        total += name.len + value.len + 3;
    }
    char *out = nook_req_alloc(req, total + 1), *p = out;
    for (size_t i = 0; i < n; i++) {
        nook_req_header_at(req, i, &name, &value);
        memcpy(p, name.ptr, name.len);
        p += name.len;
        memcpy(p, ": ", 2);
        p += 2;
        memcpy(p, value.ptr, value.len);
        p += value.len;
        *p++ = '\n';
    }
    text(req, 200, (nook_str){out, (size_t)(p - out)});
}

static void on_query(nook_req *req, void *ud)
{
    (void)ud;
    nook_str q = nook_req_query_param(req, "q");
    text(req, 200, q.ptr ? q : (nook_str){"<absent>", 8});
}

/* Streaming with backpressure: write until NOOK_AGAIN, continue from WRITABLE. */
typedef struct stream_state {
    long left, size, sent;
    char *chunk;
} stream_state;

static void stream_more(nook_req *req, void *ud)
{
    stream_state *st = ud;
    while (st->left > 0) {
        int rc = nook_res_write(req, st->chunk, (size_t)st->size);
        if (rc < 0) {
            fprintf(stderr, "test_server: write failed: %s\n", nook_strerror(rc));
            return;
        }
        st->left--;
        if (rc == NOOK_AGAIN)
            return; /* WRITABLE calls us again */
    }
    nook_res_end(req);
}

static void on_stream(nook_req *req, void *ud)
{
    (void)ud;
    stream_state *st = nook_req_alloc(req, sizeof *st);
    st->left = query_long(req, "n", 10);
    st->size = query_long(req, "size", 1024);
    if (st->size < 1 || st->size > (1 << 24) || st->left < 0) {
        text_c(req, "bad parameters");
        return;
    }
    st->chunk = nook_req_alloc(req, (size_t)st->size);
    for (long i = 0; i < st->size; i++)
        st->chunk[i] = (char)('a' + i % 26);
    nook_res_header(req, "Content-Type", "application/octet-stream");
    nook_req_on(req, NOOK_ON_WRITABLE, stream_more, st);
    stream_more(req, st);
}

static void on_declared(nook_req *req, void *ud)
{
    (void)ud;
    long n = query_long(req, "n", 100);
    char len[32];
    snprintf(len, sizeof len, "%ld", n);
    nook_res_header(req, "Content-Length", len);
    nook_res_start(req);
    for (long i = 0; i < n; i++)
        nook_res_write(req, "x", 1);
    nook_res_end(req);
}

static void on_short(nook_req *req, void *ud)
{
    (void)ud;
    nook_res_header(req, "Content-Length", "10");
    nook_res_write(req, "12345", 5);
    nook_res_end(req);
}

static void on_big(nook_req *req, void *ud)
{
    (void)ud;
    long size = query_long(req, "size", 1 << 20);
    if (size < 0 || size > (1L << 30)) {
        text_c(req, "bad size");
        return;
    }
    /* 'a'..'z' repeated: seed one period, then double it with memcpy. The event loop runs
     * this handler, so it must stay cheap even in an unoptimised sanitizer build (a byte loop
     * over 40 x 200 KB stalled honest clients in the attack tests by tens of ms). */
    char *body = malloc((size_t)size + 1);
    long filled = size < 26 ? size : 26;
    for (long i = 0; i < filled; i++)
        body[i] = (char)('a' + i);
    while (filled < size) {
        long n = filled < size - filled ? filled : size - filled;
        memcpy(body + filled, body, (size_t)n);
        filled += n;
    }
    nook_respond(req, 200, "application/octet-stream", body, (size_t)size);
    free(body);
}

static void on_status(nook_req *req, void *ud)
{
    (void)ud;
    nook_str code = nook_req_param(req, "code");
    char buf[8] = {0};
    memcpy(buf, code.ptr, code.len < 7 ? code.len : 7);
    nook_respond(req, atoi(buf), NULL, NULL, 0);
}

static void on_sendfile(nook_req *req, void *ud)
{
    (void)ud;
    nook_str path = nook_req_query_param(req, "path");
    char *p = path.ptr ? strndup(path.ptr, path.len) : NULL;
    int fd = p ? open(p, O_RDONLY | O_CLOEXEC) : -1;
    free(p);
    if (fd < 0) {
        text_c(req, "cannot open");
        return;
    }
    nook_res_header(req, "Content-Type", "application/octet-stream");
    nook_res_sendfile(req, fd, (uint64_t)query_long(req, "off", 0),
                      (uint64_t)query_long(req, "len", 0));
}

/* The library's sendfile(2) calls land here rather than in libc: a symbol defined in the
 * executable comes first in the dynamic linker's search order. Counting them lets a test prove
 * which connections get zero-copy bodies (cleartext HTTP/1.1) and which never do (TLS, h2). */
static atomic_ulong sendfile_calls, sendfile_bytes;
static ssize_t (*real_sendfile)(int, int, off_t *, size_t); /* set by main() before serving */

ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count)
{
    ssize_t n = real_sendfile(out_fd, in_fd, offset, count);
    atomic_fetch_add(&sendfile_calls, 1);
    if (n > 0)
        atomic_fetch_add(&sendfile_bytes, (unsigned long)n);
    return n;
}

static void on_trailers(nook_req *req, void *ud)
{
    (void)ud;
    nook_res_header(req, "Content-Type", "application/grpc");
    nook_res_write(req, "body", 4);
    nook_str q = nook_req_query(req);
    if (q.len == 3 && memcmp(q.ptr, "big", 3) == 0) { /* 64 KiB more: large DATA frames */
        static char block[16384];
        memset(block, 'x', sizeof block);
        for (int i = 0; i < 4; i++)
            nook_res_write(req, block, sizeof block);
    }
    nook_res_trailer(req, "grpc-status", "0");
    nook_res_trailer(req, "X-Checksum", "abc");
    nook_res_end(req);
}

static void on_noresponse(nook_req *req, void *ud)
{
    (void)req;
    (void)ud;
}

static void on_peer(nook_req *req, void *ud)
{
    (void)ud;
    text(req, 200, nook_req_peer(req));
}

/* The id of the worker thread running the handler: tests count the workers serving. */
static void on_thread(nook_req *req, void *ud)
{
    (void)ud;
    char out[32];
    int n = snprintf(out, sizeof out, "%lx", (unsigned long)pthread_self());
    nook_respond(req, 200, "text/plain", out, (size_t)n);
}

static void on_any(nook_req *req, void *ud)
{
    (void)ud;
    text(req, 200, nook_req_method(req));
}

/* ---- a pool of threads that answer suspended requests later (late responses) ---- */

#define LATE_THREADS 4     /* answers come from several threads at once, as in a real application */
#define GATE_WAIT_MS 15000 /* longest a gated answer waits for the crowd it asks for */

typedef struct late_job {
    struct late_job *next;
    struct timespec due;
    long gate;                    /* run once late_peak reached it (0: no gate)... */
    struct timespec gate_expires; /* ...or once this has passed */
    nook_token *token;
    nook_handler_fn fn; /* runs on the request's loop */
    void *arg;
} late_job;

static pthread_mutex_t late_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t late_cond = PTHREAD_COND_INITIALIZER;
static late_job *late_jobs; /* sorted by due time */
static bool late_quit;

/* For /stats, from loop threads and the pool alike: late-route requests whose DONE has not run,
 * the most of them at once since the last reset, and tokens the test server holds. */
static atomic_long late_live, late_peak, tokens_held;

static bool before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static struct timespec after_ms(long ms)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_nsec += (ms % 1000) * 1000000L;
    t.tv_sec += ms / 1000 + t.tv_nsec / 1000000000L;
    t.tv_nsec %= 1000000000L;
    return t;
}

static void late_done(nook_req *req, void *ud)
{
    (void)req;
    (void)ud;
    atomic_fetch_sub(&late_live, 1);
}

/* Counts a late-route request as live until its DONE hook runs. */
static void late_track(nook_req *req)
{
    if (nook_req_on(req, NOOK_ON_DONE, late_done, NULL) != NOOK_OK)
        return;
    long live = atomic_fetch_add(&late_live, 1) + 1;
    long peak = atomic_load(&late_peak);
    while (live > peak && !atomic_compare_exchange_weak(&late_peak, &peak, live))
        ;
}

/* Runs on the request's loop (or with NULL if the request is gone). */
static void late_answer(nook_req *req, void *ud)
{
    char *body = ud;
    if (req)
        nook_respond(req, 200, "text/plain", body, strlen(body));
    free(body);
}

/* Due, and not held back by a gate that is still closed. Called with late_lock held. */
static bool job_ready(const late_job *j, const struct timespec *now)
{
    if (late_quit)
        return true;
    if (before(now, &j->due))
        return false;
    return j->gate == 0 || atomic_load(&late_peak) >= j->gate || !before(now, &j->gate_expires);
}

/* When a job that is not ready may become so without anyone signalling: its due time, or its
 * gate's expiry. */
static struct timespec job_wake(const late_job *j, const struct timespec *now)
{
    return before(now, &j->due) ? j->due : j->gate_expires;
}

static void run_job(late_job *j)
{
    if (nook_token_post(j->token, j->fn, j->arg) != NOOK_OK)
        j->fn(NULL, j->arg);
    nook_token_release(j->token);
    atomic_fetch_sub(&tokens_held, 1);
    free(j);
}

static void *late_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&late_lock);
    while (!late_quit || late_jobs) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        late_job **pp = &late_jobs;
        while (*pp && !job_ready(*pp, &now))
            pp = &(*pp)->next;
        if (*pp) {
            late_job *j = *pp;
            *pp = j->next;
            pthread_mutex_unlock(&late_lock);
            run_job(j);
            pthread_mutex_lock(&late_lock);
        } else if (late_jobs) {
            struct timespec wake = job_wake(late_jobs, &now);
            for (late_job *j = late_jobs->next; j; j = j->next) {
                struct timespec t = job_wake(j, &now);
                if (before(&t, &wake))
                    wake = t;
            }
            pthread_cond_timedwait(&late_cond, &late_lock, &wake);
        } else {
            pthread_cond_wait(&late_cond, &late_lock);
        }
    }
    pthread_mutex_unlock(&late_lock);
    return NULL;
}

/* fn(req, arg) runs on the request's loop after ms, from one of the pool's threads; with a gate,
 * not before late_peak has reached it (or GATE_WAIT_MS passed). */
static void run_later_gated(nook_req *req, long ms, long gate, nook_handler_fn fn, void *arg)
{
    late_job *j = calloc(1, sizeof *j);
    j->token = nook_req_suspend(req);
    atomic_fetch_add(&tokens_held, 1);
    j->fn = fn;
    j->arg = arg;
    j->due = after_ms(ms);
    j->gate = gate;
    j->gate_expires = after_ms(ms + GATE_WAIT_MS);
    pthread_mutex_lock(&late_lock);
    late_job **pp = &late_jobs;
    while (*pp && !before(&j->due, &(*pp)->due))
        pp = &(*pp)->next;
    j->next = *pp;
    *pp = j;
    /* Every thread: this job may be the one that opens a gate the others wait on. */
    pthread_cond_broadcast(&late_cond);
    pthread_mutex_unlock(&late_lock);
}

static void run_later(nook_req *req, long ms, nook_handler_fn fn, void *arg)
{
    run_later_gated(req, ms, 0, fn, arg);
}

static void answer_later(nook_req *req, long ms, const char *text, size_t len)
{
    run_later(req, ms, late_answer, strndup(text, len));
}

static void on_stats(nook_req *req, void *ud)
{
    (void)ud;
    if (nook_req_query_param(req, "reset").ptr)
        atomic_store(&late_peak, atomic_load(&late_live));
    char out[256];
    int n = snprintf(out, sizeof out,
                     "late_live=%ld\nlate_peak=%ld\ntokens=%ld\nsendfile_calls=%lu\n"
                     "sendfile_bytes=%lu\n",
                     atomic_load(&late_live), atomic_load(&late_peak), atomic_load(&tokens_held),
                     atomic_load(&sendfile_calls), atomic_load(&sendfile_bytes));
    nook_respond(req, 200, "text/plain", out, (size_t)n);
}

/* ---- streaming upload ---- */

typedef struct upload {
    uint64_t bytes;
    uint32_t fnv;
    long pause_ms;
} upload;

static void resume_upload(nook_req *req, void *ud)
{
    (void)ud;
    if (req)
        nook_req_resume_body(req);
}

static int upload_piece(nook_req *req, const void *data, size_t len, int end, void *ud)
{
    upload *u = ud;
    for (size_t i = 0; i < len; i++)
        u->fnv = (u->fnv ^ ((const unsigned char *)data)[i]) * 16777619u;
    u->bytes += len;
    if (end) {
        char out[64];
        int n = snprintf(out, sizeof out, "bytes=%llu fnv=%08x", (unsigned long long)u->bytes,
                         u->fnv);
        nook_respond(req, 200, "text/plain", out, (size_t)n);
        return NOOK_OK;
    }
    if (u->pause_ms > 0) {
        run_later(req, u->pause_ms, resume_upload, NULL);
        return NOOK_AGAIN;
    }
    return NOOK_OK;
}

static void on_upload(nook_req *req, void *ud)
{
    (void)ud;
    if (nook_req_query_param(req, "reject").ptr) {
        nook_respond(req, 401, "text/plain", "no", 2);
        return;
    }
    upload *u = nook_req_alloc(req, sizeof *u);
    *u = (upload){0, 2166136261u, query_long(req, "pause_ms", 0)};
    nook_req_on_body(req, upload_piece, u);
}

static void on_async(nook_req *req, void *ud)
{
    (void)ud;
    nook_str body = nook_req_query_param(req, "body");
    if (!body.ptr)
        body = (nook_str){"async done", 10};
    late_track(req);
    run_later_gated(req, query_long(req, "ms", 10), query_long(req, "gate", 0), late_answer,
                    strndup(body.ptr, body.len));
}

/* ---- middleware ---- */

static atomic_long mw_finished; /* from every worker's loop */
static atomic_long mw_cancelled;

static void mw_cancel(nook_req *req, void *ud)
{
    (void)req;
    (void)ud;
    atomic_fetch_add(&mw_cancelled, 1);
}

static void mw_headers(nook_req *req, void *ud)
{
    (void)ud;
    char status[8];
    snprintf(status, sizeof status, "%d", nook_res_get_status(req));
    nook_res_set_header(req, "X-MW", "seen");
    nook_res_set_header(req, "X-MW-Status", status);
}

/* "X-Set-Status: NNN": the status changes on the way out, after the handler chose its own. */
static void mw_set_status(nook_req *req, void *ud)
{
    nook_res_status(req, *(const int *)ud);
}

static void mw_done(nook_req *req, void *ud)
{
    (void)req;
    (void)ud;
    atomic_fetch_add(&mw_finished, 1);
}

static int mw_upper(nook_req *req, const void *data, size_t len, int end, void *ud)
{
    (void)ud;
    char *up = nook_req_alloc(req, len + 1);
    for (size_t i = 0; i < len; i++) {
        char c = ((const char *)data)[i];
        up[i] = (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
    }
    return nook_filter_pass(req, up, len, end);
}

/* Posted by the pool for "X-MW-Suspend: 1": the middleware goes on from another callback. */
static void mw_continue(nook_req *req, void *ud)
{
    (void)ud;
    if (req)
        nook_next(req);
}

static void route_mw_header(nook_req *req, void *ud)
{
    (void)ud;
    nook_res_set_header(req, "X-Route-MW", "users");
}

static void route_mw(nook_req *req, void *ud)
{
    (void)ud;
    nook_str deny = nook_req_header(req, "X-Deny");
    if (deny.len == 1 && deny.ptr[0] == '1') {
        nook_respond(req, 403, "text/plain", "denied", 6);
        return;
    }
    nook_req_on(req, NOOK_ON_HEADERS, route_mw_header, NULL);
    nook_next(req);
}

static void mw_main(nook_req *req, void *ud)
{
    (void)ud;
    nook_str block = nook_req_header(req, "X-Block");
    if (block.len == 1 && block.ptr[0] == '1') {
        nook_respond(req, 403, "text/plain", "blocked", 7);
        return;
    }
    nook_req_on(req, NOOK_ON_HEADERS, mw_headers, NULL);
    nook_req_on(req, NOOK_ON_DONE, mw_done, NULL);
    nook_req_on(req, NOOK_ON_CANCEL, mw_cancel, NULL);
    nook_str upper = nook_req_header(req, "X-Upper");
    if (upper.len == 1 && upper.ptr[0] == '1')
        nook_req_filter(req, mw_upper, NULL);
    nook_str set = nook_req_header(req, "X-Set-Status");
    int *status = set.len == 3 ? nook_req_alloc(req, sizeof *status) : NULL;
    if (status) {
        *status = (set.ptr[0] - '0') * 100 + (set.ptr[1] - '0') * 10 + (set.ptr[2] - '0');
        nook_req_on(req, NOOK_ON_HEADERS, mw_set_status, status); /* runs before mw_headers */
    }
    nook_str suspend = nook_req_header(req, "X-MW-Suspend");
    if (suspend.len == 1 && suspend.ptr[0] == '1') {
        run_later(req, 10, mw_continue, NULL);
        return;
    }
    nook_next(req);
}

static void on_mw_hello(nook_req *req, void *ud)
{
    (void)ud;
    text_c(req, "hello from handler");
}

static void on_mw_stream(nook_req *req, void *ud)
{
    (void)ud;
    nook_res_header(req, "Content-Type", "text/plain");
    if (nook_req_query_param(req, "declared").ptr)
        nook_res_header(req, "Content-Length", "13");
    if (query_long(req, "write", 1)) {
        nook_res_write(req, "one ", 4);
        nook_res_write(req, "two ", 4);
        nook_res_write(req, "three", 5);
    }
    nook_res_end(req);
}

static void on_mw_late(nook_req *req, void *ud)
{
    (void)ud;
    late_track(req);
    answer_later(req, 20, "late answer", 11);
}

static void nocontent_late(nook_req *req, void *ud)
{
    (void)ud;
    if (req)
        nook_respond(req, 204, NULL, NULL, 0);
}

static void on_mw_nocontent(nook_req *req, void *ud)
{
    (void)ud;
    nook_str mode = nook_req_query_param(req, "mode");
    if (mode.len == 6 && memcmp(mode.ptr, "stream", 6) == 0) {
        nook_res_status(req, 204);
        nook_res_start(req);
        nook_res_end(req);
    } else if (mode.len == 4 && memcmp(mode.ptr, "late", 4) == 0) {
        late_track(req);
        run_later(req, 20, nocontent_late, NULL);
    } else {
        nook_respond(req, 204, NULL, NULL, 0);
    }
}

static void on_mw_cancelled(nook_req *req, void *ud)
{
    (void)ud;
    char buf[32];
    snprintf(buf, sizeof buf, "%ld", atomic_load(&mw_cancelled));
    text_c(req, buf);
}

static void on_mw_count(nook_req *req, void *ud)
{
    (void)ud;
    char buf[32];
    snprintf(buf, sizeof buf, "%ld", atomic_load(&mw_finished));
    text_c(req, buf);
}

/* ---- a compressed stream written in pieces over time (nook_use_compress on /gz) ---- */

typedef struct pieces {
    long left, next, size, ms;
} pieces;

/* Piece k: "piece k\n", then words up to size bytes (tests rebuild it the same way). */
static void piece_text(char *out, long k, long size)
{
    static const char words[] = "nook streams compressed pieces ";
    long n = snprintf(out, (size_t)size, "piece %ld\n", k);
    for (long i = 0; n + i < size; i++)
        out[n + i] = words[i % (long)(sizeof words - 1)];
}

/* Writes the next piece (first from the handler, then from callbacks posted ms apart). */
static void pieces_next(nook_req *req, void *ud)
{
    pieces *p = ud;
    if (!req) {
        free(p);
        return;
    }
    char *buf = malloc((size_t)p->size);
    if (buf) {
        piece_text(buf, p->next++, p->size);
        nook_res_write(req, buf, (size_t)p->size);
        free(buf);
    }
    if (buf && --p->left > 0) {
        run_later(req, p->ms, pieces_next, p);
        return;
    }
    nook_res_end(req);
    free(p);
}

static void on_gz_pieces(nook_req *req, void *ud)
{
    (void)ud;
    pieces *p = malloc(sizeof *p);
    if (!p) {
        nook_respond(req, 503, "text/plain", "busy", 4);
        return;
    }
    *p = (pieces){query_long(req, "n", 3), 0, query_long(req, "size", 2000),
                  query_long(req, "ms", 200)};
    if (p->left < 1 || p->size < 16 || p->size > (1 << 20) || p->ms < 0) {
        free(p);
        text_c(req, "bad parameters");
        return;
    }
    nook_res_header(req, "Content-Type", "text/plain; charset=utf-8");
    pieces_next(req, p);
}

/* ---- --access-log: the access log middleware with a callback sink ---- */

typedef struct access_sink {
    const char *tag;
} access_sink;

static const access_sink sink_data = {"test-sink"};

/* "ACCESS(<tag>) <line>\n" in one write(2), so that lines from two workers never mix; the tag
 * comes from user_data, which proves the sink receives it. */
static void access_line(const char *line, size_t len, void *user_data)
{
    const access_sink *s = user_data;
    size_t tag = strlen(s->tag), total = 7 + tag + 2 + len + 1;
    char *out = malloc(total);
    if (!out)
        return;
    memcpy(out, "ACCESS(", 7);
    memcpy(out + 7, s->tag, tag);
    memcpy(out + 7 + tag, ") ", 2);
    memcpy(out + 9 + tag, line, len);
    out[total - 1] = '\n';
    if (write(STDERR_FILENO, out, total) < 0)
        perror("test_server: access log");
    free(out);
}

static int use_access_log(const char *format)
{
    nook_access_format f = strcmp(format, "common") == 0     ? NOOK_ACCESS_COMMON
                           : strcmp(format, "combined") == 0 ? NOOK_ACCESS_COMBINED
                           : strcmp(format, "json") == 0     ? NOOK_ACCESS_JSON
                                                             : (nook_access_format)-1;
    return nook_use_access_log(server, "/", f, access_line, (void *)&sink_data);
}

static void on_signal(int sig)
{
    (void)sig;
    nook_server_stop(server, drain_ms);
}

static int set_opt(const char *spec)
{
    static const struct {
        const char *name;
        nook_opt opt;
    } names[] = {
        {"THREADS", NOOK_OPT_THREADS},
        {"MAX_CONNECTIONS", NOOK_OPT_MAX_CONNECTIONS},
        {"MAX_REQUEST_LINE", NOOK_OPT_MAX_REQUEST_LINE},
        {"MAX_HEADER_BYTES", NOOK_OPT_MAX_HEADER_BYTES},
        {"MAX_HEADERS", NOOK_OPT_MAX_HEADERS},
        {"MAX_BODY", NOOK_OPT_MAX_BODY},
        {"MAX_REQUESTS_PER_CONN", NOOK_OPT_MAX_REQUESTS_PER_CONN},
        {"IDLE_TIMEOUT", NOOK_OPT_IDLE_TIMEOUT},
        {"IDLE_SLEEP", NOOK_OPT_IDLE_SLEEP},
        {"HEADER_TIMEOUT", NOOK_OPT_HEADER_TIMEOUT},
        {"BODY_TIMEOUT", NOOK_OPT_BODY_TIMEOUT},
        {"WRITE_TIMEOUT", NOOK_OPT_WRITE_TIMEOUT},
        {"OUTPUT_HIGH_WATER", NOOK_OPT_OUTPUT_HIGH_WATER},
        {"MAX_OUTPUT", NOOK_OPT_MAX_OUTPUT},
        {"LISTEN_BACKLOG", NOOK_OPT_LISTEN_BACKLOG},
        {"HTTP2", NOOK_OPT_HTTP2},
        {"ALT_SVC", NOOK_OPT_ALT_SVC},
        {"TLS_HANDSHAKE_TIMEOUT", NOOK_OPT_TLS_HANDSHAKE_TIMEOUT},
        {"H2_MAX_CONCURRENT_STREAMS", NOOK_OPT_H2_MAX_CONCURRENT_STREAMS},
        {"H2_INITIAL_WINDOW_SIZE", NOOK_OPT_H2_INITIAL_WINDOW_SIZE},
        {"H2_MAX_FRAME_SIZE", NOOK_OPT_H2_MAX_FRAME_SIZE},
        {"H2_MAX_HEADER_LIST_SIZE", NOOK_OPT_H2_MAX_HEADER_LIST_SIZE},
        {"H2_MAX_GLITCHES", NOOK_OPT_H2_MAX_GLITCHES},
        {"H2_SETTINGS_TIMEOUT", NOOK_OPT_H2_SETTINGS_TIMEOUT},
        {"H2_ZERO_WINDOW_TIMEOUT", NOOK_OPT_H2_ZERO_WINDOW_TIMEOUT},
        {"H2_MAX_CONN_OUTPUT", NOOK_OPT_H2_MAX_CONN_OUTPUT},
        {"MIN_BODY_RATE", NOOK_OPT_MIN_BODY_RATE},
        {"MAX_CONNECTIONS_PER_IP", NOOK_OPT_MAX_CONNECTIONS_PER_IP},
        {"TLS_SEND_BATCH", NOOK_OPT_TLS_SEND_BATCH},
    };
    const char *eq = strchr(spec, '=');
    if (!eq)
        return NOOK_EINVAL;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i].name) == (size_t)(eq - spec) &&
            memcmp(names[i].name, spec, (size_t)(eq - spec)) == 0)
            return nook_server_set_int(server, names[i].opt, strtoll(eq + 1, NULL, 10));
    return NOOK_EINVAL;
}

int main(int argc, char **argv)
{
    *(void **)&real_sendfile = dlsym(RTLD_NEXT, "sendfile");
    server = nook_server_new();
    nook_server_set_logger(server, nook_log_stderr, NOOK_LOG_INFO, NULL);
    nook_server_set_int(server, NOOK_OPT_THREADS, 1);
    const char *listens[8];
    bool listen_tls[8];
    int nlisten = 0;
    const char *cert = NULL, *key = NULL;
    const char *access_log = NULL, *static_root = NULL;
    for (int i = 1; i < argc; i++) {
        int rc = NOOK_OK;
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc && nlisten < 8) {
            listen_tls[nlisten] = cert && key;
            listens[nlisten++] = argv[++i];
        } else if (strcmp(argv[i], "--tls-cert") == 0 && i + 1 < argc)
            cert = argv[++i];
        else if (strcmp(argv[i], "--tls-key") == 0 && i + 1 < argc)
            key = argv[++i];
        else if (strcmp(argv[i], "--quiet") == 0) /* warnings and errors only */
            nook_server_set_logger(server, nook_log_stderr, NOOK_LOG_WARN, NULL);
        else if (strcmp(argv[i], "--no-h2") == 0)
            rc = nook_server_set_int(server, NOOK_OPT_HTTP2, 0);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            rc = nook_server_set_int(server, NOOK_OPT_THREADS, atoi(argv[++i]));
        else if (strcmp(argv[i], "--opt") == 0 && i + 1 < argc)
            rc = set_opt(argv[++i]);
        else if (strcmp(argv[i], "--drain") == 0 && i + 1 < argc)
            drain_ms = atoi(argv[++i]);
        else if (strcmp(argv[i], "--access-log") == 0 && i + 1 < argc)
            access_log = argv[++i];
        else if (strcmp(argv[i], "--static") == 0 && i + 1 < argc)
            static_root = argv[++i];
        else
            rc = NOOK_EINVAL;
        if (rc != NOOK_OK) {
            fprintf(stderr, "test_server: bad argument %s: %s\n", argv[i], nook_strerror(rc));
            return 2;
        }
    }
    if (nlisten == 0) {
        listen_tls[nlisten] = cert && key;
        listens[nlisten++] = "127.0.0.1:0";
    }
    nook_tls *tls = NULL;
    if (cert && key) {
        tls = nook_tls_new();
        if (!tls || nook_tls_add_cert_file(tls, cert, key, NULL) != NOOK_OK) {
            fprintf(stderr, "test_server: TLS: %s\n", tls ? nook_tls_last_error(tls) : "no memory");
            return 1;
        }
    }
    for (int i = 0; i < nlisten; i++) {
        int rc = nook_server_listen(server, listens[i], listen_tls[i] ? tls : NULL);
        if (rc != NOOK_OK) {
            fprintf(stderr, "test_server: listen %s: %s\n", listens[i], nook_strerror(rc));
            return 1;
        }
    }

    static const struct {
        const char *pattern;
        nook_handler_fn fn;
    } routes[] = {
        {"GET /", on_root},
        {"GET /users/{id}", on_user},
        {"GET /users/{id}/posts/{post}", on_user_post},
        {"GET /files/{path...}", on_files},
        {"POST /echo", on_echo},
        {"PUT /echo", on_echo},
        {"GET /headers", on_headers},
        {"GET /allheaders", on_allheaders},
        {"GET /query", on_query},
        {"GET /stream", on_stream},
        {"GET /declared", on_declared},
        {"GET /short", on_short},
        {"GET /big", on_big},
        {"GET /status/{code}", on_status},
        {"GET /trailers", on_trailers},
        {"GET /sendfile", on_sendfile},
        {"GET /noresponse", on_noresponse},
        {"GET /peer", on_peer},
        {"GET /thread", on_thread},
        {"/any", on_any},
        {"GET /async", on_async},
        {"GET /mw/hello", on_mw_hello},
        {"GET /mw/stream", on_mw_stream},
        {"GET /mw/late", on_mw_late},
        {"GET /mw/count", on_mw_count},
        {"GET /mw/cancelled", on_mw_cancelled},
        {"GET /mw/nocontent", on_mw_nocontent},
        {"GET /mw/noresponse", on_noresponse},
        {"GET /stats", on_stats},
        {"GET /gz/pieces", on_gz_pieces},
    };
    nook_route_streaming(server, "POST /upload", on_upload, NULL, NULL);
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        int rc = nook_route(server, routes[i].pattern, routes[i].fn, NULL, NULL);
        if (rc != NOOK_OK) {
            fprintf(stderr, "test_server: route %s: %s\n", routes[i].pattern, nook_strerror(rc));
            return 1;
        }
    }

    /* The access log first, so that it sees every request, those middleware answers included. */
    int mw_rc = access_log ? use_access_log(access_log) : NOOK_OK;
    if (mw_rc == NOOK_OK)
        mw_rc = nook_use(server, "/mw", mw_main, NULL, NULL);
    if (mw_rc == NOOK_OK)
        mw_rc = nook_route_use(server, "GET /users/{id}", route_mw, NULL, NULL);
    if (mw_rc == NOOK_OK)
        mw_rc = nook_use_compress(server, "/gz", 0, 0);
    if (mw_rc == NOOK_OK && static_root)
        mw_rc = nook_use_static(server, "/static", static_root, 0);
    if (mw_rc != NOOK_OK) {
        fprintf(stderr, "test_server: middleware: %s\n", nook_strerror(mw_rc));
        return 1;
    }
    pthread_t late[LATE_THREADS];
    for (int i = 0; i < LATE_THREADS; i++)
        pthread_create(&late[i], NULL, late_thread, NULL);
    nook_tls_free(tls);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    for (int i = 0; i < nlisten; i++)
        printf("port %d\n", nook_server_port(server, (size_t)i));
    fflush(stdout);
    int rc = nook_server_run(server);
    /* A late signal must not reach nook_server_stop() on a server being freed. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    pthread_mutex_lock(&late_lock);
    late_quit = true; /* answers still queued run with NULL requests: their memory is freed */
    pthread_cond_broadcast(&late_cond);
    pthread_mutex_unlock(&late_lock);
    for (int i = 0; i < LATE_THREADS; i++)
        pthread_join(late[i], NULL);
    nook_server_free(server);
    return rc == NOOK_OK ? 0 : 1;
}
