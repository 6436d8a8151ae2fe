/*
 * Allocations per request in steady state, counted through the allocator hook.
 *
 * A server in this process (one worker, the counting allocator) answers GET / from memory. A
 * client on this thread opens one keep-alive connection, warms it up, then sends 1,000 requests
 * one after another, and the test asserts how many times the server called malloc/realloc
 * during those 1,000: over HTTP/1.1 and over HTTP/2 (h2c by prior knowledge, frames written by
 * hand). The budgets are documented in docs/performance.md; a change that allocates more per
 * request fails here.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "nook.h"

/* Steady-state budgets: allocator calls per request, at most. HTTP/1.1 allocates nothing.
 * HTTP/2 allocates nothing either while the Date value stays the same; when it changes (once a
 * second) HPACK adds the new value to its table, which can take a block the worker's pool does
 * not have yet: a few calls per second at most, so 10 over the 1,000 requests. */
#define H1_ALLOCS_PER_REQUEST 0.0
#define H2_ALLOCS_PER_REQUEST 0.01

#define WARMUP 100
#define MEASURED 1000

static atomic_long n_alloc;

static void *count_malloc(size_t n, void *ud)
{
    (void)ud;
    atomic_fetch_add(&n_alloc, 1);
    return malloc(n);
}

static void *count_realloc(void *p, size_t n, void *ud)
{
    (void)ud;
    atomic_fetch_add(&n_alloc, 1);
    return realloc(p, n);
}

static void count_free(void *p, void *ud)
{
    (void)ud;
    free(p);
}

static void hello(nook_req *req, void *ud)
{
    (void)ud;
    nook_respond(req, 200, "text/plain", "Hello, World!", 13);
}

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int recv_exact(int fd, void *p, size_t n)
{
    char *c = p;
    while (n > 0) {
        ssize_t r = recv(fd, c, n, 0);
        if (r <= 0)
            return -1;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

/* ---- HTTP/1.1: one request, then read exactly one response (ends with the 13-byte body) ---- */

static int h1_round_trip(int fd)
{
    static const char req[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    if (send_all(fd, req, sizeof req - 1) != 0)
        return -1;
    char buf[1024];
    size_t have = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + have, sizeof buf - 1 - have, 0);
        if (r <= 0)
            return -1;
        have += (size_t)r;
        buf[have] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        if (end && have - (size_t)(end + 4 - buf) >= 13)
            return strncmp(buf, "HTTP/1.1 200", 12) == 0 ? 0 : -1;
        if (have == sizeof buf - 1)
            return -1;
    }
}

/* ---- HTTP/2: frames by hand ---- */

static void frame_head(unsigned char *h, size_t len, uint8_t type, uint8_t flags, uint32_t sid)
{
    h[0] = (unsigned char)(len >> 16);
    h[1] = (unsigned char)(len >> 8);
    h[2] = (unsigned char)len;
    h[3] = type;
    h[4] = flags;
    h[5] = (unsigned char)(sid >> 24);
    h[6] = (unsigned char)(sid >> 16);
    h[7] = (unsigned char)(sid >> 8);
    h[8] = (unsigned char)sid;
}

/* Reads frames until stream sid ends; answers SETTINGS with an ACK. */
static int h2_read_until_end(int fd, uint32_t sid)
{
    for (;;) {
        unsigned char h[9];
        if (recv_exact(fd, h, 9) != 0)
            return -1;
        size_t len = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
        uint32_t id = ((uint32_t)h[5] << 24 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 8 | h[8]) &
                      0x7fffffffu;
        unsigned char payload[16384];
        if (len > sizeof payload || recv_exact(fd, payload, len) != 0)
            return -1;
        if (h[3] == 0x4 && !(h[4] & 0x1)) { /* SETTINGS: acknowledge */
            unsigned char ack[9];
            frame_head(ack, 0, 0x4, 0x1, 0);
            if (send_all(fd, ack, 9) != 0)
                return -1;
        }
        if (h[3] == 0x7 || h[3] == 0x3) /* GOAWAY, RST_STREAM */
            return -1;
        if ((h[3] == 0x0 || h[3] == 0x1) && id == sid && (h[4] & 0x1))
            return 0;
    }
}

static int h2_start(int fd)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    unsigned char settings[9];
    frame_head(settings, 0, 0x4, 0, 0);
    return send_all(fd, preface, sizeof preface - 1) || send_all(fd, settings, 9) ? -1 : 0;
}

static int h2_round_trip(int fd, uint32_t sid)
{
    /* :method GET, :scheme http, :path / (static table), :authority literal, not indexed. */
    static const unsigned char block[] = {0x82, 0x86, 0x84, 0x01, 9, '1', '2', '7', '.',
                                          '0',  '.',  '0',  '.',  '1'};
    unsigned char f[9 + sizeof block];
    frame_head(f, sizeof block, 0x1, 0x4 | 0x1, sid); /* END_HEADERS | END_STREAM */
    memcpy(f + 9, block, sizeof block);
    if (send_all(fd, f, sizeof f) != 0)
        return -1;
    return h2_read_until_end(fd, sid);
}

/* ---- the test ---- */

static nook_server *start_server(void)
{
    nook_server *srv = nook_server_new();
    CHECK_INT(nook_server_set_allocator(srv, count_malloc, count_realloc, count_free, NULL),
              NOOK_OK);
    CHECK_INT(nook_server_set_int(srv, NOOK_OPT_THREADS, 1), NOOK_OK);
    CHECK_INT(nook_server_listen(srv, "127.0.0.1:0", NULL), NOOK_OK);
    CHECK_INT(nook_route(srv, "GET /", hello, NULL, NULL), NOOK_OK);
    CHECK_INT(nook_server_start(srv), NOOK_OK);
    return srv;
}

static void measure(const char *proto, int port, double budget)
{
    int fd = dial(port);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    bool h2 = strcmp(proto, "HTTP/2") == 0;
    uint32_t sid = 1;
    int failed = h2 ? h2_start(fd) : 0;
    long before = 0;
    for (int i = 0; i < WARMUP + MEASURED && !failed; i++) {
        if (i == WARMUP)
            before = atomic_load(&n_alloc);
        failed = h2 ? h2_round_trip(fd, sid) : h1_round_trip(fd);
        sid += 2;
    }
    long used = atomic_load(&n_alloc) - before;
    snprintf(check_case, sizeof check_case, "%s", proto);
    CHECK_INT(failed, 0);
    double per = (double)used / MEASURED;
    printf("%s: %ld allocator calls for %d requests (%.3f per request; budget %.2f)\n", proto,
           used, MEASURED, per, budget);
    CHECK(per <= budget);
    check_case[0] = 0;
    close(fd);
}

int main(void)
{
    nook_server *srv = start_server();
    int port = nook_server_port(srv, 0);
    CHECK(port > 0);
    measure("HTTP/1.1", port, H1_ALLOCS_PER_REQUEST);
    measure("HTTP/2", port, H2_ALLOCS_PER_REQUEST);
    nook_server_stop(srv, 1000);
    nook_server_wait(srv);
    nook_server_free(srv);
    return check_main("alloc");
}
