/* Unit tests for the lowest layer: buffers, the arena, and the event loop's timers, deferred
 * calls and cross-thread posts. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "core/arena.h"
#include "io/ascii.h"
#include "io/buf.h"
#include "io/loop.h"
#include "io/pool.h"
#include "io/stream.h"
#include "nook.h"

static void test_buf(void)
{
    const io_alloc *a = &io_alloc_libc;
    io_buf b = {0};
    CHECK_INT(io_buf_append(&b, a, "hello", 5, 16), NOOK_OK);
    CHECK_INT(io_buf_append(&b, a, "world!", 6, 16), NOOK_OK);
    CHECK_STRN(io_buf_head(&b), io_buf_size(&b), "helloworld!");
    io_buf_consume(&b, 5);
    CHECK_STRN(io_buf_head(&b), io_buf_size(&b), "world!");
    /* 6 held + 10 more = 16: at the limit, allowed; one more byte is not. */
    CHECK_INT(io_buf_append(&b, a, "0123456789", 10, 16), NOOK_OK);
    CHECK_INT(io_buf_append(&b, a, "x", 1, 16), NOOK_ELIMIT);
    CHECK_STRN(io_buf_head(&b), io_buf_size(&b), "world!0123456789");
    io_buf_consume(&b, 16);
    CHECK_INT(io_buf_size(&b), 0);
    CHECK_INT(b.off, 0); /* an emptied buffer restarts at its front */
    io_buf_trim(&b, a, 0);
    CHECK(b.data == NULL);
    io_buf_free(&b, a);
}

/* The pool's backing allocator for test_pool: libc, remembering the size last asked for. */
static size_t backing_asked;
static void *backing_malloc(size_t n, void *ud)
{
    (void)ud;
    backing_asked = n;
    return malloc(n);
}
static void *backing_realloc(void *p, size_t n, void *ud)
{
    (void)ud;
    backing_asked = n;
    return realloc(p, n);
}
static void backing_free(void *p, void *ud)
{
    (void)ud;
    free(p);
}

/* Every size gets a block of the smallest class that holds it (a power of two from 32 up to
 * 4096; larger sizes exactly), all of it usable, and a freed block comes back for its class. */
static void test_pool(void)
{
    const io_alloc backing = {backing_malloc, backing_realloc, backing_free, NULL};
    io_pool pool;
    io_pool_init(&pool, &backing, 1 << 20);
    const io_alloc *a = io_pool_alloc(&pool);
    for (size_t n = 1; n <= 5000; n++) {
        backing_asked = 0;
        unsigned char *p = io_malloc(a, n);
        CHECK(p != NULL);
        memset(p, 0xa5, n); /* AddressSanitizer: the whole size is the caller's */
        size_t cls = 32;
        while (cls < n)
            cls *= 2;
        size_t cap = n > 4096 ? n : cls;
        if (backing_asked) /* a new block: its size says which class it is */
            CHECK(backing_asked >= cap && backing_asked <= cap + 64);
        io_free(a, p);
        if (n <= 4096) {
            backing_asked = 0;
            unsigned char *q = io_malloc(a, n);
            CHECK(q == p); /* the block just freed, from its class's list */
            CHECK_INT(backing_asked, 0);
            io_free(a, q);
        }
    }
    io_pool_drain(&pool);
}

static void test_arena(void)
{
    core_arena ar;
    core_arena_init(&ar, &io_alloc_libc, 64);
    char *p = core_arena_alloc(&ar, 3);
    void *q = core_arena_alloc(&ar, 8);
    CHECK(p != NULL && q != NULL);
    CHECK((uintptr_t)q % alignof(max_align_t) == 0);
    char *big = core_arena_alloc(&ar, 1000); /* larger than a chunk: gets its own */
    CHECK(big != NULL);
    memset(big, 1, 1000);
    char *s = core_arena_strndup(&ar, "abcdef", 3);
    CHECK_STRN(s, strlen(s), "abc");
    core_arena_reset(&ar);
    /* The first chunk is kept and reused from its start: the next allocation is the first one's. */
    CHECK(core_arena_alloc(&ar, 16) == (void *)p);
    core_arena_free(&ar);
    CHECK(ar.chunks == NULL);
}

static int fired[8], nfired;

typedef struct tagged_timer {
    io_timer t;
    int id;
} tagged_timer;

static void on_tagged(io_timer *t)
{
    fired[nfired++] = ((tagged_timer *)t)->id;
}

static void test_timers(void)
{
    io_loop *loop = io_loop_new(&io_alloc_libc);
    tagged_timer t[4];
    for (int i = 0; i < 4; i++)
        t[i] = (tagged_timer){.t.fn = on_tagged, .id = i};
    io_timer_set(loop, &t[0].t, 30);
    io_timer_set(loop, &t[1].t, 10);
    io_timer_set(loop, &t[2].t, 20);
    io_timer_set(loop, &t[3].t, 5);
    io_timer_set(loop, &t[1].t, 40); /* pushed later lazily: must now fire after t0 */
    io_timer_stop(loop, &t[2].t);
    CHECK(!io_timer_armed(&t[2].t));
    nfired = 0;
    for (int i = 0; i < 100 && nfired < 3; i++)
        io_loop_run_once(loop, 50);
    CHECK_INT(nfired, 3);
    CHECK_INT(fired[0], 3);
    CHECK_INT(fired[1], 0);
    CHECK_INT(fired[2], 1);
    CHECK_INT(io_loop_timeout(loop), -1);
    io_loop_free(loop);
}

/* A deadline pushed later must not hide an earlier one in its subtree: with A..G armed in
 * this order the heap holds C below B; pushing B far out and firing A must still fire C at
 * its own time, and the loop's next timeout must never be later than C's deadline. */
static int c_fired_at;
static void on_c(io_timer *t)
{
    (void)t;
    c_fired_at = 1;
}

static void on_other(io_timer *t) { (void)t; }

static void test_timer_pushed_later_hides_nothing(void)
{
    io_loop *loop = io_loop_new(&io_alloc_libc);
    io_timer a = {.fn = on_other}, b = {.fn = on_other}, c = {.fn = on_c},
             d = {.fn = on_other}, e = {.fn = on_other}, f = {.fn = on_other},
             g = {.fn = on_other};
    uint64_t start = io_loop_now(loop);
    io_timer_set(loop, &a, 5);
    io_timer_set(loop, &b, 6);
    io_timer_set(loop, &d, 500);
    io_timer_set(loop, &c, 30);
    io_timer_set(loop, &e, 600);
    io_timer_set(loop, &f, 700);
    io_timer_set(loop, &g, 800);
    io_timer_set(loop, &b, 10000); /* pushed later: C, below it, is still due at +30 */
    CHECK(io_loop_timeout(loop) <= 30);
    c_fired_at = 0;
    uint64_t c_at = 0;
    for (int i = 0; i < 200 && !c_fired_at; i++) {
        int t = io_loop_timeout(loop);
        CHECK(t >= 0 && t <= 30); /* never a sleep past C's deadline */
        io_loop_run_once(loop, 100);
        if (c_fired_at)
            c_at = io_loop_now(loop) - start;
    }
    CHECK(c_fired_at != 0);
    CHECK(c_at >= 30 && c_at < 200);
    CHECK(io_loop_timeout(loop) > 200); /* D at +500 is next; B no longer at +6 */
    io_loop_free(loop);
}

static int deferred_runs;
static void on_defer(io_defer *d)
{
    (void)d;
    deferred_runs++;
}

static void test_defer(void)
{
    io_loop *loop = io_loop_new(&io_alloc_libc);
    io_defer a = {.fn = on_defer}, b = {.fn = on_defer};
    io_loop_defer(loop, &a);
    io_loop_defer(loop, &a); /* queued once only */
    io_loop_defer(loop, &b);
    io_loop_undefer(loop, &b);
    CHECK_INT(io_loop_timeout(loop), 0); /* pending work: do not sleep */
    io_loop_run_once(loop, 0);
    CHECK_INT(deferred_runs, 1);
    io_loop_free(loop);
}

static int posted_sum;
static void on_post(void *arg) { posted_sum += (int)(intptr_t)arg; }

static void *poster(void *arg)
{
    io_loop *loop = arg;
    for (int i = 1; i <= 100; i++)
        io_loop_post(loop, on_post, (void *)(intptr_t)i);
    return NULL;
}

static void test_post(void)
{
    io_loop *loop = io_loop_new(&io_alloc_libc);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, poster, loop);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 10 && posted_sum < 10100; i++)
        io_loop_run_once(loop, 100);
    CHECK_INT(posted_sum, 2 * 5050);
    io_loop_free(loop);
}

/* sendfile() to a socket whose peer has gone: the error must come back as NOOK_ECLOSED, with
 * no SIGPIPE (whose default action would end this test program), and the thread's signal mask
 * and pending set must be as they were. */
static void sendfile_to_closed_peer(const char *who)
{
    char path[] = "/tmp/nook-test-io-XXXXXX";
    int file = mkstemp(path);
    CHECK(file >= 0);
    unlink(path);
    static char block[65536];
    CHECK_INT(write(file, block, sizeof block), sizeof block);

    int sv[2];
    CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    close(sv[1]);
    io_loop *loop = io_loop_new(&io_alloc_libc);
    io_stream s;
    CHECK_INT(io_stream_init(&s, loop, &io_alloc_libc, sv[0], NULL, 1024), NOOK_OK);
    sigset_t before, after, pending;
    pthread_sigmask(SIG_SETMASK, NULL, &before);
    uint64_t off = 0;
    snprintf(check_case, sizeof check_case, "sendfile on %s", who);
    CHECK_INT(io_stream_sendfile(&s, file, &off, sizeof block), NOOK_ECLOSED);
    pthread_sigmask(SIG_SETMASK, NULL, &after);
    CHECK_INT(sigismember(&after, SIGPIPE), sigismember(&before, SIGPIPE));
    sigpending(&pending);
    CHECK(!sigismember(&before, SIGPIPE) ? !sigismember(&pending, SIGPIPE) : 1);
    check_case[0] = 0;
    io_stream_close(&s);
    io_loop_free(loop);
    close(file);
}

static void *library_thread(void *arg)
{
    (void)arg;
    io_thread_block_sigpipe();
    sendfile_to_closed_peer("a library thread");
    return NULL;
}

static void test_sendfile_sigpipe(void)
{
    signal(SIGPIPE, SIG_DFL);
    sendfile_to_closed_peer("a host thread");
    pthread_t th;
    pthread_create(&th, NULL, library_thread, NULL);
    pthread_join(th, NULL);
}

/* The hand-written formatters against what the C library prints for the same values. */
static void test_formatters(void)
{
    CHECK_CASE("io_fmt_dec and io_fmt_hex");
    const uint64_t nums[] = {0, 9, 10, 255, 4096, 1048576, 1000000007, UINT64_MAX};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        char got[24], want[24];
        got[io_fmt_dec(got, nums[i])] = '\0';
        snprintf(want, sizeof want, "%llu", (unsigned long long)nums[i]);
        CHECK_STRN(got, strlen(got), want);
        got[io_fmt_hex(got, nums[i])] = '\0';
        snprintf(want, sizeof want, "%llx", (unsigned long long)nums[i]);
        CHECK_STRN(got, strlen(got), want);
    }
    CHECK_CASE("io_fmt_http_date");
    /* From before 1970 to the last second of 9999, in uneven steps (every weekday, month,
     * leap day and time of day comes up), with strftime in the C locale as the reference. */
    int mismatches = 0;
    for (int64_t t = IO_HTTP_DATE_MIN; t <= IO_HTTP_DATE_MAX; t += 86400LL * 97 + 3671) {
        char got[IO_HTTP_DATE_LEN + 1], want[64];
        io_fmt_http_date(got, t);
        got[IO_HTTP_DATE_LEN] = '\0';
        time_t tt = (time_t)t;
        struct tm tm;
        gmtime_r(&tt, &tm);
        strftime(want, sizeof want, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        if (strcmp(got, want) != 0 && mismatches++ < 3)
            CHECK_STRN(got, strlen(got), want);
    }
    CHECK_INT(mismatches, 0);
    char d[IO_HTTP_DATE_LEN + 1] = {0};
    io_fmt_http_date(d, 784111777);
    CHECK_STRN(d, strlen(d), "Sun, 06 Nov 1994 08:49:37 GMT"); /* RFC 9110's own example */
    io_fmt_http_date(d, IO_HTTP_DATE_MAX + 1000000);
    /* clamped: the year must have four digits */
    CHECK_STRN(d, strlen(d), "Fri, 31 Dec 9999 23:59:59 GMT");
    io_fmt_http_date(d, INT64_MIN);
    CHECK_STRN(d, strlen(d), "Mon, 01 Jan 1900 00:00:00 GMT");
}

int main(void)
{
    test_buf();
    test_pool();
    test_arena();
    test_timers();
    test_timer_pushed_later_hides_nothing();
    test_defer();
    test_post();
    test_sendfile_sigpipe();
    test_formatters();
    return check_main("io");
}
