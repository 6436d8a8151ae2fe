/* Unit tests for lib/mw/: the access log's line formats, the peer-address helper, and the
 * argument checks of the built-in middleware's registration calls. */
#include <math.h>

#include "check.h"
#include "mw/access_log.h"
#include "mw/mw_util.h"
#include "nook.h"

#define S(lit) ((nook_str){(lit), sizeof(lit) - 1})
#define ABSENT ((nook_str){NULL, 0})

/* 2024-10-10 13:55:36 UTC */
#define SAMPLE_TIME 1728568536
#define SAMPLE_COMMON                                                                              \
    "127.0.0.1 - - [10/Oct/2024:13:55:36 +0000] \"GET /a/b?x=1&y=2 HTTP/1.1\" 200 1234"

static mw_access_entry sample(void)
{
    mw_access_entry e = {
        .start = SAMPLE_TIME,
        .client = S("127.0.0.1"),
        .method = S("GET"),
        .path = S("/a/b"),
        .query = S("x=1&y=2"),
        .protocol = "HTTP/1.1",
        .status = 200,
        .bytes = 1234,
        .duration_us = 873,
        .referer = ABSENT,
        .user_agent = S("curl/7.88.1"),
    };
    return e;
}

static void check_line(nook_access_format format, const mw_access_entry *e, const char *want)
{
    char line[1024];
    size_t len = mw_access_format(format, e, line, sizeof line);
    CHECK_STRN(line, len, want);
}

static void test_common(void)
{
    CHECK_CASE("common");
    mw_access_entry e = sample();
    check_line(NOOK_ACCESS_COMMON, &e, SAMPLE_COMMON);

    CHECK_CASE("common: no query, HTTP/2, leap day, nothing sent");
    e.query = ABSENT;
    e.protocol = "HTTP/2";
    e.start = 951782405; /* 2000-02-29 00:00:05 */
    e.status = 404;
    e.bytes = 0;
    check_line(NOOK_ACCESS_COMMON, &e,
               "127.0.0.1 - - [29/Feb/2000:00:00:05 +0000] \"GET /a/b HTTP/2\" 404 0");

    CHECK_CASE("common: an empty query keeps its '?'");
    e = sample();
    e.query = S("");
    check_line(NOOK_ACCESS_COMMON, &e,
               "127.0.0.1 - - [10/Oct/2024:13:55:36 +0000] \"GET /a/b? HTTP/1.1\" 200 1234");
}

static void test_combined(void)
{
    CHECK_CASE("combined: absent referer is \"-\"");
    mw_access_entry e = sample();
    check_line(NOOK_ACCESS_COMBINED, &e,
               "127.0.0.1 - - [10/Oct/2024:13:55:36 +0000] \"GET /a/b?x=1&y=2 HTTP/1.1\" 200 "
               "1234 \"-\" \"curl/7.88.1\"");

    CHECK_CASE("combined: quotes, backslashes, control and non-ASCII bytes are escaped");
    e.referer = S("https://x.example/\"q\"");
    e.user_agent = S("evil\\\" 200 1\n127.0.0.2 \x1b[31m\xc3\xa9\x7f");
    e.path = S("/\"x\"");
    e.query = ABSENT;
    check_line(NOOK_ACCESS_COMBINED, &e,
               "127.0.0.1 - - [10/Oct/2024:13:55:36 +0000] \"GET /\\\"x\\\" HTTP/1.1\" 200 1234 "
               "\"https://x.example/\\\"q\\\"\" "
               "\"evil\\\\\\\" 200 1\\x0a127.0.0.2 \\x1b[31m\\xc3\\xa9\\x7f\"");
}

static void test_json(void)
{
    CHECK_CASE("json");
    mw_access_entry e = sample();
    e.protocol = "HTTP/2";
    check_line(NOOK_ACCESS_JSON, &e,
               "{\"time\":\"2024-10-10T13:55:36Z\",\"ip\":\"127.0.0.1\",\"method\":\"GET\","
               "\"target\":\"/a/b?x=1&y=2\",\"protocol\":\"HTTP/2\",\"status\":200,\"bytes\":1234,"
               "\"duration_us\":873,\"referer\":null,\"user_agent\":\"curl/7.88.1\"}");

    CHECK_CASE("json: escapes; UTF-8 kept, other bytes become U+FFFD");
    e = sample();
    e.client = S("::1");
    e.query = ABSENT;
    e.path = S("/\"\\\x01\t");
    e.referer = S("");
    /* é, then a lone continuation byte, an overlong '/', a UTF-16 surrogate, a cut-off 3-byte
     * sequence, then 😀 (4 bytes) and DEL. */
    e.user_agent = S("\xc3\xa9\x80\xc0\xaf\xed\xa0\x80\xe2\x82\xf0\x9f\x98\x80\x7f");
    check_line(NOOK_ACCESS_JSON, &e,
               "{\"time\":\"2024-10-10T13:55:36Z\",\"ip\":\"::1\",\"method\":\"GET\","
               "\"target\":\"/\\\"\\\\\\u0001\\u0009\",\"protocol\":\"HTTP/1.1\",\"status\":200,"
               "\"bytes\":1234,\"duration_us\":873,\"referer\":\"\",\"user_agent\":"
               "\"\xc3\xa9\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd"
               "\xf0\x9f\x98\x80\\u007f\"}");
}

/* A line longer than the buffer: the full length is reported and nothing is written past the
 * end, so the caller can retry with enough room. */
static void test_short_buffer(void)
{
    CHECK_CASE("short buffer");
    mw_access_entry e = sample();
    char full[1024];
    size_t want = mw_access_format(NOOK_ACCESS_JSON, &e, full, sizeof full);
    char small[32 + 8];
    memset(small, '#', sizeof small);
    size_t got = mw_access_format(NOOK_ACCESS_JSON, &e, small, 32);
    CHECK_INT(got, want);
    CHECK(memcmp(small, full, 32) == 0);
    for (size_t i = 32; i < sizeof small; i++)
        CHECK_INT(small[i], '#');
    CHECK_INT(mw_access_format(NOOK_ACCESS_COMMON, &e, NULL, 0), strlen(SAMPLE_COMMON));
}

static void test_peer_host(void)
{
    static const struct {
        const char *peer, *host;
    } cases[] = {
        {"127.0.0.1:51234", "127.0.0.1"},
        {"[::1]:4000", "::1"},
        {"[fe80::1%eth0]:80", "fe80::1%eth0"},
        {"unix", "unix"},
        {"", ""},
        {"[::1", "[::1"}, /* not an address nook writes: kept whole */
        {"::1", "::1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_CASE("peer host of \"%s\"", cases[i].peer);
        nook_str host = mw_peer_host((nook_str){cases[i].peer, strlen(cases[i].peer)});
        CHECK_STRN(host.ptr, host.len, cases[i].host);
    }
    CHECK_CASE("peer host of an absent peer");
    nook_str none = mw_peer_host(ABSENT);
    CHECK_STRN(none.ptr, none.len, "");
}

/* Bad arguments are refused at registration, good ones accepted; freeing the server releases
 * every configuration (the sanitizer build reports any leak). */
static void test_registration(void)
{
    nook_server *s = nook_server_new();
    CHECK_CASE("access log");
    CHECK_INT(nook_use_access_log(NULL, "/", NOOK_ACCESS_JSON, NULL, NULL), NOOK_EINVAL);
    CHECK_INT(nook_use_access_log(s, "/", (nook_access_format)99, NULL, NULL), NOOK_EINVAL);
    CHECK_INT(nook_use_access_log(s, "no-slash", NOOK_ACCESS_JSON, NULL, NULL), NOOK_EINVAL);
    CHECK_INT(nook_use_access_log(s, NULL, NOOK_ACCESS_COMBINED, NULL, NULL), NOOK_OK);

    CHECK_CASE("cors");
    CHECK_INT(nook_use_cors(s, "/", NULL, NULL, NULL, 0, 0), NOOK_EINVAL);
    CHECK_INT(nook_use_cors(s, "/", "", NULL, NULL, 0, 0), NOOK_EINVAL);
    CHECK_INT(nook_use_cors(s, "/", "https://a.example,,https://b.example", NULL, NULL, 0, 0),
              NOOK_EINVAL);
    CHECK_INT(nook_use_cors(s, "/", "https://a.example, *", NULL, NULL, 0, 0), NOOK_EINVAL);
    CHECK_INT(nook_use_cors(s, "/", "https://a.example\r\nX: y", NULL, NULL, 0, 0), NOOK_EINVAL);
    CHECK_INT(nook_use_cors(s, "/", "*", "GET\n", NULL, 0, 0), NOOK_EINVAL);
    CHECK_INT(nook_use_cors(s, "/", "*", NULL, "X-A\r", 0, 0), NOOK_EINVAL);
    CHECK_INT(nook_use_cors(s, "/", "*", NULL, NULL, -1, 0), NOOK_EINVAL);
    CHECK_INT(nook_use_cors(s, "/", " * ", NULL, NULL, 0, 1), NOOK_OK);
    CHECK_INT(nook_use_cors(s, "/api", "https://a.example, https://b.example", "GET", "X-A", 60, 0),
              NOOK_OK);

    CHECK_CASE("request id");
    CHECK_INT(nook_use_request_id(NULL, "/", NULL), NOOK_EINVAL);
    CHECK_INT(nook_use_request_id(s, "/", ""), NOOK_EINVAL);
    CHECK_INT(nook_use_request_id(s, "/", "Bad Name"), NOOK_EINVAL);
    CHECK_INT(nook_use_request_id(s, "/", NULL), NOOK_OK);
    CHECK_INT(nook_use_request_id(s, "/", "X-Trace-Id"), NOOK_OK);

    CHECK_CASE("rate limit");
    CHECK_INT(nook_use_rate_limit(NULL, "/", 1, 1, 0), NOOK_EINVAL);
    CHECK_INT(nook_use_rate_limit(s, "/", 0, 1, 0), NOOK_EINVAL);
    CHECK_INT(nook_use_rate_limit(s, "/", -1, 1, 0), NOOK_EINVAL);
    CHECK_INT(nook_use_rate_limit(s, "/", NAN, 1, 0), NOOK_EINVAL);
    CHECK_INT(nook_use_rate_limit(s, "/", INFINITY, 1, 0), NOOK_EINVAL);
    CHECK_INT(nook_use_rate_limit(s, "/", 1, 0.5, 0), NOOK_EINVAL);
    CHECK_INT(nook_use_rate_limit(s, "/", 1, INFINITY, 0), NOOK_EINVAL);
    CHECK_INT(nook_use_rate_limit(s, "/", 1, 1, 0), NOOK_OK);
    CHECK_INT(nook_use_rate_limit(s, "/", 0.5, 10, 1), NOOK_OK); /* fewer clients than shards */
    CHECK_INT(nook_use_rate_limit(s, "/", 100, 200, 1000), NOOK_OK);
    CHECK_CASE("%s", "");
    nook_server_free(s);
}

int main(void)
{
    test_common();
    test_combined();
    test_json();
    test_short_buffer();
    test_peer_host();
    test_registration();
    return check_main("mw_format");
}
