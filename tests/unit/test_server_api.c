/* The public server API without external clients: options, errors, listeners, routes, the
 * allocator hook, and host-loop mode driven by this test's own poll() loop. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "nook.h"

static void test_errors(void)
{
    CHECK_STRN(nook_err_name(NOOK_ENOMEM), strlen(nook_err_name(NOOK_ENOMEM)), "NOOK_ENOMEM");
    CHECK_STRN(nook_strerror(NOOK_ENOMEM), strlen(nook_strerror(NOOK_ENOMEM)), "out of memory");
    CHECK_STRN(nook_err_name(-999), strlen(nook_err_name(-999)), "NOOK_UNKNOWN");
    CHECK(nook_strerror(-999) != NULL);
    for (int e = NOOK_ETHREAD; e <= NOOK_AGAIN; e++)
        CHECK(strcmp(nook_err_name(e), "NOOK_UNKNOWN") != 0);
    CHECK_STRN(nook_version(), strlen(nook_version()), "0.1.0");
}

static void test_options(void)
{
    nook_server *s = nook_server_new();
    CHECK_INT(nook_server_get_int(s, NOOK_OPT_MAX_BODY), 1 << 20);
    CHECK_INT(nook_server_get_int(s, NOOK_OPT_MAX_HEADERS), 100);
    CHECK(nook_server_get_int(s, NOOK_OPT_THREADS) >= 1);
    CHECK_INT(nook_server_set_int(s, NOOK_OPT_MAX_BODY, 10), NOOK_OK);
    CHECK_INT(nook_server_get_int(s, NOOK_OPT_MAX_BODY), 10);
    CHECK_INT(nook_server_set_int(s, NOOK_OPT_THREADS, 0), NOOK_EINVAL);
    CHECK_INT(nook_server_set_int(s, NOOK_OPT_MAX_HEADERS, -1), NOOK_EINVAL);
    CHECK_INT(nook_server_set_int(s, (nook_opt)999, 1), NOOK_EINVAL);
    CHECK_INT(nook_server_get_int(s, (nook_opt)999), NOOK_EINVAL);
    /* The hardening options: their defaults (docs/security.md) and their ranges. */
    CHECK_INT(nook_server_get_int(s, NOOK_OPT_H2_MAX_GLITCHES), 1000);
    CHECK_INT(nook_server_get_int(s, NOOK_OPT_H2_SETTINGS_TIMEOUT), 10000);
    CHECK_INT(nook_server_get_int(s, NOOK_OPT_H2_ZERO_WINDOW_TIMEOUT), 30000);
    CHECK_INT(nook_server_get_int(s, NOOK_OPT_H2_MAX_CONN_OUTPUT), 16 << 20);
    CHECK_INT(nook_server_get_int(s, NOOK_OPT_MIN_BODY_RATE), 512);
    CHECK_INT(nook_server_get_int(s, NOOK_OPT_MAX_CONNECTIONS_PER_IP), 0);
    CHECK_INT(nook_server_set_int(s, NOOK_OPT_H2_MAX_GLITCHES, 0), NOOK_OK); /* off */
    CHECK_INT(nook_server_set_int(s, NOOK_OPT_H2_MAX_GLITCHES, -1), NOOK_EINVAL);
    CHECK_INT(nook_server_set_int(s, NOOK_OPT_H2_MAX_CONN_OUTPUT, 1024), NOOK_EINVAL);
    CHECK_INT(nook_server_set_int(s, NOOK_OPT_MIN_BODY_RATE, -1), NOOK_EINVAL);
    CHECK_INT(nook_server_set_int(s, NOOK_OPT_MAX_CONNECTIONS_PER_IP, 1), NOOK_OK);
    nook_server_free(s);
    nook_server_free(NULL); /* safe */
}

static void noop(nook_req *req, void *ud)
{
    (void)ud;
    nook_respond(req, 204, NULL, NULL, 0);
}

static int freed;
static void count_free(void *ud)
{
    (void)ud;
    freed++;
}

static void test_listen_and_routes(void)
{
    nook_server *s = nook_server_new();
    CHECK_INT(nook_server_listen(s, "nonsense", NULL), NOOK_EADDR);
    CHECK_INT(nook_server_listen(s, "127.0.0.1:99999", NULL), NOOK_EADDR);
    CHECK_INT(nook_server_listen(s, "unix:", NULL), NOOK_EADDR);
    CHECK_INT(nook_server_listen(s, "127.0.0.1:0", NULL), NOOK_OK);
    int port = nook_server_port(s, 0);
    CHECK(port > 0);
    CHECK_INT(nook_server_port(s, 1), NOOK_ENOTFOUND);

    /* The same port from a socket without SO_REUSEPORT is refused as in use. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0);
    close(fd);

    /* So is a second server (which would share it through SO_REUSEPORT if it only asked). */
    char taken[32];
    snprintf(taken, sizeof taken, "127.0.0.1:%d", port);
    nook_server *other = nook_server_new();
    CHECK_INT(nook_server_listen(other, taken, NULL), NOOK_EADDRINUSE);
    nook_server_free(other);

    CHECK_INT(nook_route(s, "GET /a/{id}", noop, NULL, count_free), NOOK_OK);
    CHECK_INT(nook_route(s, "GET /a/{other}", noop, NULL, count_free), NOOK_EEXIST);
    CHECK_INT(nook_route(s, "POST /a/{other}", noop, NULL, count_free), NOOK_OK);
    CHECK_INT(nook_route(s, "GET no-slash", noop, NULL, count_free), NOOK_EINVAL);
    CHECK_INT(nook_route(s, "GET /x", NULL, NULL, NULL), NOOK_EINVAL);
    freed = 0;
    nook_server_free(s);
    CHECK_INT(freed, 2); /* only the registered routes' user_data */
}

/* ---- allocator hook ---- */
static atomic_long allocs, frees;
static void *count_malloc(size_t n, void *ud)
{
    (void)ud;
    allocs++;
    return malloc(n);
}
static void *count_realloc(void *p, size_t n, void *ud)
{
    (void)ud;
    if (!p)
        allocs++;
    return realloc(p, n);
}
static void count_release(void *p, void *ud)
{
    (void)ud;
    if (p)
        frees++;
    free(p);
}

/* ---- host-loop mode ---- */
static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

static void hello(nook_req *req, void *ud)
{
    (void)ud;
    nook_respond(req, 200, "text/plain", "hi", 2);
}

static void test_route_use_needs_its_route(void)
{
    nook_server *s = nook_server_new();
    CHECK_INT(nook_route_use(s, "GET /a/{id}", noop, NULL, NULL), NOOK_ENOTFOUND);
    CHECK_INT(nook_route(s, "GET /a/{id}", noop, NULL, NULL), NOOK_OK);
    CHECK_INT(nook_route_use(s, "GET /a/{x}", noop, NULL, NULL), NOOK_OK);
    CHECK_INT(nook_route_use(s, "POST /a/{x}", noop, NULL, NULL), NOOK_ENOTFOUND);
    CHECK_INT(nook_route_use(s, "GET a", noop, NULL, NULL), NOOK_EINVAL);
    CHECK_INT(nook_route_use(s, NULL, noop, NULL, NULL), NOOK_EINVAL);
    nook_server_free(s);
}

static void test_host_loop(void)
{
    allocs = frees = 0;
    nook_server *s = nook_server_new();
    CHECK_INT(nook_server_set_allocator(s, count_malloc, count_realloc, count_release, NULL),
              NOOK_OK);
    CHECK_INT(nook_server_listen(s, "127.0.0.1:0", NULL), NOOK_OK);
    CHECK_INT(nook_route(s, "GET /", hello, NULL, NULL), NOOK_OK);
    CHECK_INT(nook_server_set_allocator(s, count_malloc, count_realloc, count_release, NULL),
              NOOK_ESTATE);
    int sfd = nook_server_fd(s);
    CHECK(sfd >= 0);
    CHECK_INT(nook_server_start(s), NOOK_ESTATE); /* already driven by the host */

    int c = connect_to(nook_server_port(s, 0));
    CHECK(c >= 0);
    const char *req = "GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n";
    CHECK_INT(write(c, req, strlen(req)), (long long)strlen(req));
    char buf[2048];
    size_t got = 0;
    for (int i = 0; i < 200 && got < 2 * 60; i++) {
        struct pollfd pf[2] = {{sfd, POLLIN, 0}, {c, POLLIN, 0}};
        int t = nook_server_timeout(s);
        poll(pf, 2, t < 0 || t > 20 ? 20 : t);
        CHECK(nook_server_poll(s) == 0);
        ssize_t n = read(c, buf + got, sizeof buf - 1 - got);
        if (n > 0)
            got += (size_t)n;
    }
    buf[got] = '\0';
    char *second = strstr(buf + 1, "HTTP/1.1 200");
    CHECK(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
    CHECK(second != NULL);
    CHECK(strstr(buf, "\r\n\r\nhi") != NULL);
    close(c);

    nook_server_stop(s, 0);
    int rc = 0;
    for (int i = 0; i < 100 && rc == 0; i++) {
        struct pollfd pf = {sfd, POLLIN, 0};
        poll(&pf, 1, 10);
        rc = nook_server_poll(s);
    }
    CHECK_INT(rc, 1); /* stopped */
    CHECK(allocs > 0);
    nook_server_free(s);
    CHECK_INT(frees, allocs); /* everything from the hook went back to it */
}

/* Log lines a test logger caught: the levels and whether user_data came through. */
typedef struct caught_log {
    int lines, above_max, wrong_ud, rejecting;
} caught_log;

static void catch_log(nook_log_level level, const char *msg, void *user_data)
{
    caught_log *cl = user_data;
    if (!cl || cl->lines < 0) {
        if (cl)
            cl->wrong_ud++;
        return;
    }
    cl->lines++;
    if (level > NOOK_LOG_INFO)
        cl->above_max++;
    if (strstr(msg, "rejecting request: 400"))
        cl->rejecting++;
}

/* Reads from a non-blocking client until EOF or `ms` of host-loop time: polls with exactly the
 * timeout the server asks for, so a timeout reported too late would show as a missed close. */
static int host_loop_until_eof(nook_server *s, int sfd, int c, char *buf, size_t cap,
                               size_t *got, int ms)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct pollfd pf[2] = {{sfd, POLLIN, 0}, {c, POLLIN, 0}};
        int t = nook_server_timeout(s);
        poll(pf, 2, t);
        CHECK(nook_server_poll(s) == 0);
        ssize_t n = read(c, buf + *got, cap - 1 - *got);
        if (n > 0)
            *got += (size_t)n;
        else if (n == 0)
            return 1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long el = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        if (el > ms)
            return 0;
    }
}

/* Host-loop mode with timers: the idle timeout closes a keep-alive connection while the host
 * sleeps only as long as nook_server_timeout() says; the logger gets the lines up to its level,
 * with its user_data, and cannot be changed once the server runs. */
static void test_host_loop_timers_and_logger(void)
{
    caught_log cl = {0};
    nook_server *s = nook_server_new();
    CHECK_INT(nook_server_set_logger(s, catch_log, NOOK_LOG_INFO, &cl), NOOK_OK);
    CHECK_INT(nook_server_set_int(s, NOOK_OPT_IDLE_TIMEOUT, 300), NOOK_OK);
    CHECK_INT(nook_server_set_int(s, NOOK_OPT_IDLE_SLEEP, 100), NOOK_OK);
    CHECK_INT(nook_server_listen(s, "127.0.0.1:0", NULL), NOOK_OK);
    CHECK_INT(nook_route(s, "GET /", hello, NULL, NULL), NOOK_OK);
    int sfd = nook_server_fd(s);
    CHECK(sfd >= 0);
    caught_log other = {.lines = -1};
    CHECK_INT(nook_server_set_logger(s, catch_log, NOOK_LOG_DEBUG, &other), NOOK_ESTATE);
    CHECK_INT(nook_server_timeout(s), -1); /* nothing to wait for yet */

    /* A keep-alive request, then silence: the idle timeout must close it about 300 ms later. */
    int c = connect_to(nook_server_port(s, 0));
    CHECK(c >= 0);
    fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK);
    const char *req = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    CHECK_INT(write(c, req, strlen(req)), (long long)strlen(req));
    char buf[2048];
    size_t got = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_INT(host_loop_until_eof(s, sfd, c, buf, sizeof buf, &got, 3000), 1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long el = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    buf[got] = '\0';
    CHECK(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
    CHECK(el >= 250 && el < 1500);
    close(c);

    /* A malformed request: one INFO line ("rejecting request: 400"), delivered with user_data. */
    c = connect_to(nook_server_port(s, 0));
    CHECK(c >= 0);
    fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK);
    const char *bad = "GET / HTTP/1.1\r\nHost : t\r\n\r\n";
    CHECK_INT(write(c, bad, strlen(bad)), (long long)strlen(bad));
    got = 0;
    CHECK_INT(host_loop_until_eof(s, sfd, c, buf, sizeof buf, &got, 3000), 1);
    buf[got] = '\0';
    CHECK(strncmp(buf, "HTTP/1.1 400", 12) == 0);
    close(c);
    CHECK_INT(cl.rejecting, 1);
    CHECK_INT(cl.above_max, 0);
    CHECK_INT(other.wrong_ud, 0);

    nook_server_stop(s, 0);
    int rc = 0;
    for (int i = 0; i < 100 && rc == 0; i++) {
        struct pollfd pf = {sfd, POLLIN, 0};
        poll(&pf, 1, 10);
        rc = nook_server_poll(s);
    }
    CHECK_INT(rc, 1);
    nook_server_free(s);

    /* Below the level of the line: nothing delivered. */
    caught_log quiet = {0};
    s = nook_server_new();
    CHECK_INT(nook_server_set_logger(s, catch_log, NOOK_LOG_WARN, &quiet), NOOK_OK);
    CHECK_INT(nook_server_listen(s, "127.0.0.1:0", NULL), NOOK_OK);
    sfd = nook_server_fd(s);
    c = connect_to(nook_server_port(s, 0));
    fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK);
    CHECK_INT(write(c, bad, strlen(bad)), (long long)strlen(bad));
    got = 0;
    CHECK_INT(host_loop_until_eof(s, sfd, c, buf, sizeof buf, &got, 3000), 1);
    close(c);
    CHECK_INT(quiet.rejecting, 0);
    nook_server_free(s);
}

/* Built-in middleware keeps its configuration in memory from the server's allocator. */
static void test_middleware_uses_the_allocator(void)
{
    allocs = frees = 0;
    nook_server *s = nook_server_new();
    CHECK_INT(nook_server_set_allocator(s, count_malloc, count_realloc, count_release, NULL),
              NOOK_OK);
    CHECK_INT(nook_use_access_log(s, "/", NOOK_ACCESS_JSON, NULL, NULL), NOOK_OK);
    long after_log = allocs;
    CHECK(after_log > 0);
    CHECK_INT(nook_use_cors(s, "/", "https://a.example, https://b.example", NULL, "X-A", 60, 0),
              NOOK_OK);
    CHECK_INT(nook_use_request_id(s, "/", NULL), NOOK_OK);
    CHECK_INT(nook_use_rate_limit(s, "/", 10, 20, 1000), NOOK_OK);
    CHECK_INT(nook_use_compress(s, "/", 0, 0), NOOK_OK);
    CHECK_INT(nook_use_static(s, "/files", "/tmp", NOOK_STATIC_INDEX), NOOK_OK);
    CHECK(allocs > after_log + 5);
    nook_server_free(s);
    CHECK_INT(frees, allocs);
}

int main(void)
{
    test_errors();
    test_options();
    test_listen_and_routes();
    test_route_use_needs_its_route();
    test_host_loop();
    test_host_loop_timers_and_logger();
    test_middleware_uses_the_allocator();
    return check_main("server_api");
}
