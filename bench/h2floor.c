/*
 * h2floor: what nghttp2 alone costs a server per HTTP/2 request on this machine, with no sockets,
 * no event loop and no nook: a lower bound for any server built on nghttp2, to read beside the
 * per-CPU-second figures of the h2c workload.
 *
 *   cc -O2 -o h2floor bench/h2floor.c -lnghttp2 && ./h2floor [requests, default 1000000]
 *
 * An nghttp2 client session and an nghttp2 server session talk through memory. The client sends
 * what h2load sends in the h2c workload (GET /, the same five fields, 16 streams at a time); the
 * server decodes each request and answers it with the head and 13-byte body nook's hello sends
 * (:status, content-length, content-type, date), and serialises the frames. Only the server's
 * side is timed; the client's work is left out. The server's callbacks do nothing but note the
 * path and answer, and its memory comes from free lists that cost a few instructions a call
 * (nook gives nghttp2 a block pool too), so nearly all of its time is nghttp2's. Output:
 *
 *   library nghttp2 1.52.0
 *   server 1000000 requests, 16 at a time: 703.4 ns each, 1421666 per CPU-second
 *
 * The time is wall time around the server's calls on one busy thread. For an instruction count,
 * run it under callgrind collecting the server's side only:
 *
 *   valgrind --tool=callgrind --toggle-collect=server_round ./h2floor 20000
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <nghttp2/nghttp2.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STREAMS_AT_A_TIME 16
#define WIRE_CAP (1u << 20)

static const char BODY[] = "Hello, world\n";

#define NV(n, v)                                                                                  \
    {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE}

typedef struct {
    uint8_t *p;
    size_t len;
} wire;

static void die(const char *what, int rv)
{
    fprintf(stderr, "h2floor: %s: %s\n", what, rv ? nghttp2_strerror(rv) : "failed");
    exit(1);
}

/* Moves everything a session has to send onto the wire. */
static void drain(nghttp2_session *s, wire *w)
{
    for (;;) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(s, &p);
        if (n < 0)
            die("mem_send", (int)n);
        if (n == 0)
            return;
        if (w->len + (size_t)n > WIRE_CAP)
            die("the wire buffer is full", 0);
        memcpy(w->p + w->len, p, (size_t)n);
        w->len += (size_t)n;
    }
}

static void feed(nghttp2_session *s, wire *w)
{
    ssize_t n = nghttp2_session_mem_recv(s, w->p, w->len);
    if (n < 0 || (size_t)n != w->len)
        die("mem_recv", n < 0 ? (int)n : 0);
    w->len = 0;
}

/* --- server -------------------------------------------------------------------------------- */

/* The server's allocator: one free list per power of two from 32 bytes to 64 KiB, blocks never
 * handed back to malloc; larger ones go straight to malloc. Each block starts with a head. */
#define CLASSES 12

typedef struct {
    int k;      /* the class; CLASSES for a block straight from malloc */
    size_t cap; /* bytes after the head */
} block_head;

static void *free_list[CLASSES];

static void *fl_malloc(size_t n, void *ud)
{
    (void)ud;
    int k = 0;
    while (k < CLASSES && ((size_t)32 << k) < n + sizeof(block_head))
        k++;
    block_head *b;
    if (k < CLASSES && free_list[k]) {
        b = free_list[k];
        free_list[k] = *(void **)(b + 1);
    } else {
        size_t size = k < CLASSES ? (size_t)32 << k : n + sizeof(block_head);
        if (size < n || !(b = malloc(size)))
            return NULL;
        *b = (block_head){k, size - sizeof(block_head)};
    }
    return b + 1;
}

static void fl_free(void *p, void *ud)
{
    (void)ud;
    if (!p)
        return;
    block_head *b = (block_head *)p - 1;
    if (b->k == CLASSES) {
        free(b);
        return;
    }
    *(void **)p = free_list[b->k];
    free_list[b->k] = b;
}

static void *fl_calloc(size_t count, size_t size, void *ud)
{
    if (size && count > SIZE_MAX / size)
        return NULL;
    void *p = fl_malloc(count * size, ud);
    if (p)
        memset(p, 0, count * size);
    return p;
}

static void *fl_realloc(void *p, size_t n, void *ud)
{
    if (!p)
        return fl_malloc(n, ud);
    size_t cap = ((block_head *)p - 1)->cap;
    if (n <= cap)
        return p;
    void *q = fl_malloc(n, ud);
    if (!q)
        return NULL;
    memcpy(q, p, cap);
    fl_free(p, ud);
    return q;
}

static size_t paths; /* requests whose :path the server read, so that it reads them */

static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)s, (void)id, (void)src, (void)ud;
    size_t n = sizeof BODY - 1 < len ? sizeof BODY - 1 : len;
    memcpy(buf, BODY, n);
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int server_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                         size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                         void *ud)
{
    (void)s, (void)f, (void)flags, (void)ud;
    if (namelen == 5 && memcmp(name, ":path", 5) == 0 && valuelen > 0 && value[0] == '/')
        paths++;
    return 0;
}

static int server_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    nghttp2_nv nv[] = {NV(":status", "200"), NV("content-length", "13"),
                       NV("content-type", "text/plain"),
                       NV("date", "Mon, 07 Dec 2026 19:48:42 GMT")};
    nghttp2_data_provider prd = {.read_callback = read_body};
    return nghttp2_submit_response(s, f->hd.stream_id, nv, sizeof nv / sizeof nv[0], &prd);
}

/* One round on the server: read the client's bytes, answer, serialise. Kept out of line so that
 * callgrind can collect it alone. */
__attribute__((noinline)) static void server_round(nghttp2_session *s, wire *in, wire *out)
{
    feed(s, in);
    drain(s, out);
}

/* --- client -------------------------------------------------------------------------------- */

static size_t answered;

static int client_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)s, (void)ud;
    if ((f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        answered++;
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long total = argc > 1 ? atol(argv[1]) : 1000000;
    if (total < STREAMS_AT_A_TIME || total > 1000000000) {
        fprintf(stderr, "usage: h2floor [requests: %d..1000000000]\n", STREAMS_AT_A_TIME);
        return 2;
    }
    total -= total % STREAMS_AT_A_TIME;

    nghttp2_session_callbacks *cb;
    nghttp2_session *server, *client;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        die("callbacks", 0);
    nghttp2_session_callbacks_set_on_header_callback(cb, server_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, server_frame);
    nghttp2_mem mem = {NULL, fl_malloc, fl_free, fl_calloc, fl_realloc};
    if (nghttp2_session_server_new3(&server, cb, NULL, NULL, &mem) != 0)
        die("server session", 0);
    nghttp2_session_callbacks_set_on_header_callback(cb, NULL);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, client_frame);
    if (nghttp2_session_client_new(&client, cb, NULL) != 0)
        die("client session", 0);
    nghttp2_session_callbacks_del(cb);

    nghttp2_settings_entry limit = {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100};
    int rv = nghttp2_submit_settings(server, NGHTTP2_FLAG_NONE, &limit, 1);
    if (rv == 0)
        rv = nghttp2_submit_settings(client, NGHTTP2_FLAG_NONE, NULL, 0);
    if (rv != 0)
        die("settings", rv);

    wire up = {malloc(WIRE_CAP), 0}, down = {malloc(WIRE_CAP), 0};
    if (!up.p || !down.p)
        die("out of memory", 0);
    const nghttp2_nv req[] = {NV(":method", "GET"), NV(":path", "/"), NV(":scheme", "http"),
                              NV(":authority", "127.0.0.1:8080"),
                              NV("user-agent", "h2load nghttp2/1.52.0")};

    /* The preface and both SETTINGS, untimed. */
    drain(client, &up);
    server_round(server, &up, &down);
    feed(client, &down);

    double served = 0;
    for (long sent = 0; sent < total; sent += STREAMS_AT_A_TIME) {
        for (int i = 0; i < STREAMS_AT_A_TIME; i++)
            if (nghttp2_submit_request(client, NULL, req, sizeof req / sizeof req[0], NULL, NULL) < 0)
                die("submit_request", 0);
        drain(client, &up);
        double t0 = now_s();
        server_round(server, &up, &down);
        served += now_s() - t0;
        feed(client, &down);
    }
    if (answered != (size_t)total || paths != (size_t)total) {
        fprintf(stderr, "h2floor: %zu of %ld requests answered\n", answered, total);
        return 1;
    }
    printf("library nghttp2 %s\n", nghttp2_version(0)->version_str);
    printf("server %ld requests, %d at a time: %.1f ns each, %.0f per CPU-second\n", total,
           STREAMS_AT_A_TIME, served / (double)total * 1e9, (double)total / served);
    nghttp2_session_del(client);
    nghttp2_session_del(server);
    free(up.p);
    free(down.p);
    return 0;
}
