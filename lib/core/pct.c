/* Percent-decoding and query-string lookup: byte loops over caller memory, nothing allocated. */
#include "core/pct.h"

#include "io/ascii.h"
#include "nook.h"

/* Decodes the escape at in[i] (a '%'): the byte, or -1 when malformed or NUL. */
static int escape_at(const char *in, size_t len, size_t i)
{
    if (len - i < 3)
        return -1;
    int hi = io_hexval((unsigned char)in[i + 1]);
    int lo = io_hexval((unsigned char)in[i + 2]);
    if (hi < 0 || lo < 0 || (hi | lo) == 0)
        return -1;
    return hi * 16 + lo;
}

/* The output index never passes the input index, which is what makes in-place decoding safe. On
 * error *out_len is 0 and out holds a partial result. */
int core_pct_decode(const char *in, size_t len, char *out, size_t *out_len, bool plus_is_space)
{
    size_t o = 0;
    *out_len = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '%') {
            int v = escape_at(in, len, i);
            if (v < 0)
                return NOOK_EINVAL;
            c = (char)v;
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        out[o++] = c;
    }
    *out_len = o;
    return NOOK_OK;
}

/* Whether key[0..len) decodes (as a query key: '+' is a space) to exactly `name`. Decodes while
 * comparing, so no buffer is needed; a key that fails to decode never equals. */
static bool key_equals(const char *key, size_t len, const char *name)
{
    size_t j = 0;
    for (size_t i = 0; i < len; i++, j++) {
        char c = key[i];
        if (c == '%') {
            int v = escape_at(key, len, i);
            if (v < 0)
                return false;
            c = (char)v;
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        /* Checked first: a raw NUL in the key must not walk past the end of name. */
        if (name[j] == '\0' || name[j] != c)
            return false;
    }
    return name[j] == '\0';
}

bool core_query_find(const char *query, size_t query_len, const char *name, const char **value,
                     size_t *value_len)
{
    if (!query || !name)
        return false;
    size_t i = 0;
    while (i < query_len) {
        /* One "key[=value]" pair: [i, end). */
        size_t end = i;
        while (end < query_len && query[end] != '&')
            end++;
        size_t eq = i;
        while (eq < end && query[eq] != '=')
            eq++;
        /* An empty pair ("a=1&&b=2", a trailing '&') is no parameter, not a key "". */
        if (end > i && key_equals(query + i, eq - i, name)) {
            size_t v = eq < end ? eq + 1 : end;
            *value = query + v;
            *value_len = end - v;
            return true;
        }
        i = end + 1;
    }
    return false;
}
