/* Unit tests for percent-decoding and query-string lookup. */
#include <stdbool.h>

#include "check.h"
#include "core/pct.h"
#include "nook.h"

static void test_decode(void)
{
    static const struct {
        const char *in;
        bool plus_is_space;
        int rc;
        const char *out; /* when rc is NOOK_OK */
    } cases[] = {
        {"%41%62", false, NOOK_OK, "Ab"},
        {"%4a%4A", false, NOOK_OK, "JJ"}, /* hex digits in either case */
        {"%7e%7E", false, NOOK_OK, "~~"},
        {"", false, NOOK_OK, ""},
        {"plain/path", false, NOOK_OK, "plain/path"},
        {"a%2Fb", false, NOOK_OK, "a/b"},
        {"%25", false, NOOK_OK, "%"}, /* a decoded '%' is not decoded again */
        {"%2541", false, NOOK_OK, "%41"},
        {"%C3%A9", false, NOOK_OK, "\xc3\xa9"}, /* UTF-8 bytes pass through */
        {"%ff", false, NOOK_OK, "\xff"},
        {"a+b", false, NOOK_OK, "a+b"},
        {"a+b", true, NOOK_OK, "a b"},
        {"%2B+", true, NOOK_OK, "+ "}, /* an encoded '+' stays a plus */
        {"%", false, NOOK_EINVAL, NULL},
        {"%4", false, NOOK_EINVAL, NULL},
        {"ab%4", false, NOOK_EINVAL, NULL},
        {"%zz", false, NOOK_EINVAL, NULL},
        {"%4g", false, NOOK_EINVAL, NULL},
        {"%g4", false, NOOK_EINVAL, NULL},
        {"% 41", false, NOOK_EINVAL, NULL},
        {"%00", false, NOOK_EINVAL, NULL},
        {"a%00b", true, NOOK_EINVAL, NULL},
        {"%0", false, NOOK_EINVAL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *in = cases[i].in;
        size_t len = strlen(in);
        char out[64], inplace[64];
        size_t out_len = 99, inplace_len = 99;
        CHECK_CASE("decode \"%s\" plus_is_space=%d", in, cases[i].plus_is_space);
        CHECK_INT(core_pct_decode(in, len, out, &out_len, cases[i].plus_is_space), cases[i].rc);
        /* In place: the output is the input buffer itself. */
        memcpy(inplace, in, len);
        CHECK_INT(core_pct_decode(inplace, len, inplace, &inplace_len, cases[i].plus_is_space),
                  cases[i].rc);
        if (cases[i].rc == NOOK_OK) {
            CHECK_STRN(out, out_len, cases[i].out);
            CHECK_STRN(inplace, inplace_len, cases[i].out);
        } else {
            CHECK_INT(out_len, 0);
        }
    }
    CHECK_CASE("%s", "");

    /* The length is what counts, not a NUL: decoding stops at len. */
    char out[8];
    size_t n;
    CHECK_INT(core_pct_decode("%41%zz", 3, out, &n, false), NOOK_OK);
    CHECK_STRN(out, n, "A");
    CHECK_INT(core_pct_decode(NULL, 0, out, &n, false), NOOK_OK);
    CHECK_INT(n, 0);
}

static void test_query(void)
{
    static const struct {
        const char *query, *name;
        const char *value; /* NULL: not found */
    } cases[] = {
        {"a=1&b=2", "a", "1"},
        {"a=1&b=2", "b", "2"},
        {"a=1&b=2&a=3", "a", "1"}, /* the first match wins */
        {"b=2&a=", "a", ""},
        {"flag&x=1", "flag", ""}, /* no '=': an empty value */
        {"x=1&flag", "flag", ""},
        {"a%20b=1", "a b", "1"}, /* keys compare decoded */
        {"a+b=1", "a b", "1"},   /* '+' in a key is a space */
        {"a%2Bb=1", "a+b", "1"},
        {"a%2Bb=1", "a b", NULL},
        {"%61=1", "a", "1"},
        {"a=x%20y+z", "a", "x%20y+z"}, /* values are raw views */
        {"a=1=2", "a", "1=2"},         /* only the first '=' separates */
        {"a=1&&b=2", "b", "2"},
        {"a=1&&b=2", "", NULL}, /* an empty pair is not a key "" */
        {"=v", "", "v"},        /* but "=v" is */
        {"", "a", NULL},
        {"a=1&b=2", "c", NULL},
        {"a=1&b=2", "A", NULL}, /* case-sensitive */
        {"ab=1", "a", NULL},
        {"a=1", "ab", NULL},
        {"a;b=1", "b", NULL}, /* ';' is no separator */
        {"a;b=1", "a;b", "1"},
        {"%zz=1&k=2", "k", "2"}, /* a key that fails to decode is skipped */
        {"%zz=1", "%zz", NULL},
        {"%00=1", "", NULL},
        {"a=1&", "a", "1"},
        {"&a=1", "a", "1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *q = cases[i].query;
        const char *v = NULL;
        size_t vlen = 0;
        CHECK_CASE("find \"%s\" in \"%s\"", cases[i].name, q);
        bool found = core_query_find(q, strlen(q), cases[i].name, &v, &vlen);
        CHECK_INT(found, cases[i].value != NULL);
        if (found && cases[i].value) {
            CHECK_STRN(v, vlen, cases[i].value);
            CHECK(v >= q && v + vlen <= q + strlen(q)); /* a view into the query */
        }
    }
    CHECK_CASE("%s", "");

    /* A raw NUL in a key must not let the comparison run past the name. */
    const char *v;
    size_t vlen;
    CHECK(!core_query_find("a\0b=1", 5, "a", &v, &vlen));
    CHECK(core_query_find("a\0b=1&a=2", 9, "a", &v, &vlen));
    CHECK_STRN(v, vlen, "2");
    /* The query is a view: bytes past query_len are not looked at. */
    CHECK(core_query_find("a=123", 4, "a", &v, &vlen));
    CHECK_STRN(v, vlen, "12");
    CHECK(!core_query_find(NULL, 0, "a", &v, &vlen));
    CHECK(!core_query_find("a=1", 3, NULL, &v, &vlen));
}

int main(void)
{
    test_decode();
    test_query();
    return check_main("pct");
}
