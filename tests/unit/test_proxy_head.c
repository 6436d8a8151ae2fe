/* Unit tests for the proxy's HTTP/1.1 upstream response-head and trailer-section parser
 * (lib/mw/proxy_head.c): the accepted heads with their framing and keep-alive, every rejection,
 * the fields passed on (Connection-named ones left out), and the trailer fields. */
#include <stdint.h>

#include "check.h"
#include "mw/proxy.h"

#define OK 0
#define BAD (-1)

typedef struct head_case {
    const char *name;
    const char *head;
    int rc;
    int status;
    int64_t content_length;
    bool chunked, keep_alive;
    size_t len; /* the head's length where it holds a NUL; 0: measured up to CRLFCRLF */
} head_case;

static const head_case head_cases[] = {
    {"plain 200", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", OK, 200, 5, false, true},
    {"no reason phrase", "HTTP/1.1 204\r\n\r\n", OK, 204, -1, false, true},
    {"empty reason phrase", "HTTP/1.1 200 \r\n\r\n", OK, 200, -1, false, true},
    {"bare LF line ends", "HTTP/1.1 200 OK\nContent-Length: 1\n\n", OK, 200, 1, false, true},
    {"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", OK, 200, -1, true, true},
    {"chunked, any case", "HTTP/1.1 200 OK\r\ntransfer-encoding:  Chunked \r\n\r\n", OK, 200, -1,
     true, true},
    {"until close", "HTTP/1.1 200 OK\r\nX: y\r\n\r\n", OK, 200, -1, false, true},
    {"1xx", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", OK, 103, -1, false, true},
    {"Connection: close", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", OK, 200, -1, false,
     false},
    {"close among options", "HTTP/1.1 200 OK\r\nConnection: x-a, CLOSE\r\n\r\n", OK, 200, -1, false,
     false},
    {"HTTP/1.0 closes", "HTTP/1.0 200 OK\r\n\r\n", OK, 200, -1, false, false},
    {"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", OK, 200, -1, false,
     true},
    {"repeated equal lengths", "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n",
     OK, 200, 7, false, true},
    {"a list of equal lengths", "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n", OK, 200, 7,
     false, true},
    {"length 0", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", OK, 200, 0, false, true},
    {"largest length", "HTTP/1.1 200 OK\r\nContent-Length: 922337203685477579\r\n\r\n", OK, 200,
     922337203685477579LL, false, true},

    {"differing lengths", "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n", BAD},
    {"a list of differing lengths", "HTTP/1.1 200 OK\r\nContent-Length: 7, 8\r\n\r\n", BAD},
    {"length and chunked",
     "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", BAD},
    {"chunked and length",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", BAD},
    {"empty length", "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", BAD},
    {"signed length", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", BAD},
    {"hex length", "HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n", BAD},
    {"overflowing length", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", BAD},
    {"gzip coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", BAD},
    {"chunked then gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", BAD},
    {"chunked twice",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", BAD},
    {"empty coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n", BAD},
    {"HTTP/2 status line", "HTTP/2 200 OK\r\n\r\n", BAD},
    {"HTTP/1.2", "HTTP/1.2 200 OK\r\n\r\n", BAD},
    {"two-digit status", "HTTP/1.1 20 OK\r\n\r\n", BAD},
    {"four-digit status", "HTTP/1.1 2000 OK\r\n\r\n", BAD},
    {"status below 100", "HTTP/1.1 099 X\r\n\r\n", BAD},
    {"lower-case version", "http/1.1 200 OK\r\n\r\n", BAD},
    {"no empty line", "HTTP/1.1 200 OK\r\nX: y\r\n", BAD},
    {"space before colon", "HTTP/1.1 200 OK\r\nX : y\r\n\r\n", BAD},
    {"obs-fold", "HTTP/1.1 200 OK\r\nX: y\r\n  z\r\n\r\n", BAD},
    {"no colon", "HTTP/1.1 200 OK\r\nX\r\n\r\n", BAD},
    {"empty name", "HTTP/1.1 200 OK\r\n: y\r\n\r\n", BAD},
#define NUL_HEAD "HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n"
    {"NUL in a value", NUL_HEAD, BAD, .len = sizeof NUL_HEAD - 1},
    {"bare CR in a value", "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", BAD},
    {"DEL in a value", "HTTP/1.1 200 OK\r\nX: a\x7f\r\n\r\n", BAD},
    {"empty input", "", BAD},
};

/* Heads are measured up to the final CRLFCRLF (the NUL case gives its length). */
static size_t head_len(const char *h)
{
    const char *end = strstr(h, "\r\n\r\n");
    if (end)
        return (size_t)(end - h) + 4;
    end = strstr(h, "\n\n");
    if (end)
        return (size_t)(end - h) + 2;
    return strlen(h);
}

static void test_heads(void)
{
    for (size_t i = 0; i < sizeof head_cases / sizeof head_cases[0]; i++) {
        const head_case *c = &head_cases[i];
        CHECK_CASE("%s", c->name);
        size_t len = c->len ? c->len : head_len(c->head);
        px_h1_head h;
        CHECK_INT(px_h1_parse_head(c->head, len, &h), c->rc);
        if (c->rc != OK)
            continue;
        CHECK_INT(h.status, c->status);
        CHECK_INT(h.content_length, c->content_length);
        CHECK_INT(h.chunked, c->chunked);
        CHECK_INT(h.keep_alive, c->keep_alive);
    }
    check_case[0] = '\0';
}

static void test_too_many_connection_options(void)
{
    char head[2048] = "HTTP/1.1 200 OK\r\nConnection: ";
    for (int i = 0; i < PX_CONN_TOKENS_MAX; i++)
        snprintf(head + strlen(head), sizeof head - strlen(head), "o%d, ", i);
    strcat(head, "\r\n\r\n");
    px_h1_head h;
    CHECK_CASE("%d Connection options", PX_CONN_TOKENS_MAX);
    CHECK_INT(px_h1_parse_head(head, strlen(head), &h), OK);
    strcpy(head + strlen(head) - 4, "one-more\r\n\r\n");
    CHECK_CASE("%d Connection options", PX_CONN_TOKENS_MAX + 1);
    CHECK_INT(px_h1_parse_head(head, strlen(head), &h), BAD);
    check_case[0] = '\0';
}

/* Fields collected as "name=value;" in one string. */
typedef struct collected {
    char text[1024];
} collected;

static void collect(void *ud, const char *name, size_t nlen, const char *value, size_t vlen)
{
    collected *c = ud;
    size_t n = strlen(c->text);
    snprintf(c->text + n, sizeof c->text - n, "%.*s=%.*s;", (int)nlen, name, (int)vlen, value);
}

static void test_head_fields(void)
{
    static const char head[] = "HTTP/1.1 200 OK\r\n"
                               "Content-Type: text/plain\r\n"
                               "X-Drop: 1\r\n"
                               "Connection: x-drop,  X-Other\r\n"
                               "x-other: 2\r\n"
                               "X-Kept:\t padded value \t\r\n"
                               "Empty:\r\n"
                               "\r\n";
    px_h1_head h;
    CHECK_INT(px_h1_parse_head(head, sizeof head - 1, &h), OK);
    collected c = {{0}};
    px_h1_head_fields(head, sizeof head - 1, collect, &c);
    CHECK_STRN(c.text, strlen(c.text),
               "Content-Type=text/plain;Connection=x-drop,  X-Other;X-Kept=padded value;Empty=;");
}

static void test_trailer_fields(void)
{
    static const struct {
        const char *name, *tail, *want;
    } cases[] = {
        {"no trailers", "0\r\n\r\n", ""},
        {"after data", "\r\n0\r\n\r\n", ""},
        {"two fields", "\r\n0\r\ngrpc-status: 0\r\nx-sum:  abc \r\n\r\n",
         "grpc-status=0;x-sum=abc;"},
        {"extension on the last chunk", "0;ext=1\r\na: b\r\n\r\n", "a=b;"},
        {"invalid lines skipped", "0\r\nno colon\r\n: empty\r\nx y: z\r\nok: 1\r\n\r\n", "ok=1;"},
        {"nothing after the end", "0\r\na: 1\r\n\r\nb: 2\r\n\r\n", "a=1;"},
        {"cut short", "0\r\na: 1\r\nb: 2", "a=1;"},
        {"empty", "", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_CASE("%s", cases[i].name);
        collected c = {{0}};
        px_h1_trailer_fields(cases[i].tail, strlen(cases[i].tail), collect, &c);
        CHECK_STRN(c.text, strlen(c.text), cases[i].want);
    }
    check_case[0] = '\0';
}

static void test_connection_tokens(void)
{
    px_conn_tokens t = {0};
    px_conn_tokens_add(&t, " keep-alive ,,X-Foo,\tclose", 26);
    CHECK_INT(t.n, 3);
    CHECK(px_conn_tokens_has(&t, "x-foo", 5));
    CHECK(px_conn_tokens_has(&t, "CLOSE", 5));
    CHECK(!px_conn_tokens_has(&t, "x-fo", 4));
    CHECK(!t.overflow);
}

int main(void)
{
    test_heads();
    test_too_many_connection_options();
    test_head_fields();
    test_trailer_fields();
    test_connection_tokens();
    return check_main("test_proxy_head");
}
