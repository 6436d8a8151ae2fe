/*
 * Fuzzes percent-decoding and query lookup:
 *  - the input is decoded into a separate buffer and in place, with and without plus_is_space:
 *    results must agree, never grow, and hold no NUL;
 *  - core_query_find (which decodes keys while comparing) is checked against a reference built
 *    on core_pct_decode, with a name taken from the first bytes and the rest as the query.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/pct.h"
#include "nook.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_decode(const char *in, size_t len, bool plus)
{
    char *out = malloc(len ? len : 1);
    char *inplace = malloc(len ? len : 1);
    memcpy(inplace, in, len);
    size_t out_len, inplace_len;
    int rc = core_pct_decode(in, len, out, &out_len, plus);
    int rc2 = core_pct_decode(inplace, len, inplace, &inplace_len, plus);
    if (rc != rc2 || (rc != NOOK_OK && rc != NOOK_EINVAL))
        __builtin_trap();
    if (rc == NOOK_OK) {
        size_t escapes = 0;
        for (size_t i = 0; i < len; i++)
            escapes += in[i] == '%';
        if (out_len != inplace_len || out_len > len || out_len != len - 2 * escapes ||
            memcmp(out, inplace, out_len) != 0)
            __builtin_trap();
        /* A NUL may only come through when the input had a raw one. */
        if (memchr(out, '\0', out_len) && !memchr(in, '\0', len))
            __builtin_trap();
        if (escapes == 0 && !plus && memcmp(out, in, len) != 0)
            __builtin_trap();
    }
    free(out);
    free(inplace);
}

/* Reference lookup: split on '&', skip empty pairs, decode each key whole and compare. */
static bool reference_find(const char *q, size_t qlen, const char *name, const char **value,
                           size_t *value_len)
{
    char *key = malloc(qlen ? qlen : 1);
    bool found = false;
    for (size_t i = 0; i < qlen && !found;) {
        const char *amp = memchr(q + i, '&', qlen - i);
        size_t end = amp ? (size_t)(amp - q) : qlen;
        const char *eq = memchr(q + i, '=', end - i);
        size_t klen_raw = eq ? (size_t)(eq - q) - i : end - i;
        size_t klen;
        if (end > i && core_pct_decode(q + i, klen_raw, key, &klen, true) == NOOK_OK &&
            klen == strlen(name) && memcmp(key, name, klen) == 0) {
            size_t v = eq ? (size_t)(eq - q) + 1 : end;
            *value = q + v;
            *value_len = end - v;
            found = true;
        }
        i = end + 1;
    }
    free(key);
    return found;
}

static void check_query(const uint8_t *data, size_t size)
{
    size_t nlen = data[0] % 8;
    if (nlen > size - 1)
        nlen = size - 1;
    char name[8];
    memcpy(name, data + 1, nlen);
    name[nlen] = '\0';
    size_t qlen = size - 1 - nlen;
    char *q = malloc(qlen ? qlen : 1);
    memcpy(q, data + 1 + nlen, qlen);
    const char *v = NULL, *rv = NULL;
    size_t vlen = 0, rvlen = 0;
    bool found = core_query_find(q, qlen, name, &v, &vlen);
    bool rfound = reference_find(q, qlen, name, &rv, &rvlen);
    if (found != rfound || (found && (v != rv || vlen != rvlen)))
        __builtin_trap();
    if (found && (v < q || v + vlen > q + qlen || memchr(v, '&', vlen)))
        __builtin_trap();
    free(q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_decode((const char *)data, size, false);
    check_decode((const char *)data, size, true);
    if (size > 0)
        check_query(data, size);
    return 0;
}
