/*
 * Fuzzes the static file server's path mapping (mw_static_path in lib/mw/static.c), the one
 * door between a request path and the file system. For every input, with room to spare and
 * with a tight buffer:
 *  - the result is NOOK_OK, NOOK_EINVAL or NOOK_ELIMIT, and a tight buffer never changes an
 *    accepted answer into another one (only into NOOK_ELIMIT);
 *  - an accepted path is relative, NUL-terminated at out_len, and made of segments that are
 *    non-empty, never start with '.', and hold no '\', control byte or NUL — so it cannot climb
 *    out of the root or name a hidden file;
 *  - it equals a reference: the raw path split on '/', empty segments dropped, each segment
 *    decoded with core_pct_decode, joined with '/'.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/pct.h"
#include "nook.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Defined in lib/mw/static.c; not in a header, as nothing else in the library needs it. */
int mw_static_path(const char *raw, size_t len, char *out, size_t cap, size_t *out_len);

static void check_segments(const char *out, size_t n)
{
    if (n > 0 && (out[0] == '/' || out[n - 1] == '/'))
        __builtin_trap();
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];
        bool seg_start = i == 0 || out[i - 1] == '/';
        if (c == '\\' || c < 0x20 || c == 0x7f || (seg_start && (c == '.' || c == '/')))
            __builtin_trap();
    }
}

/* The mapping written the slow, obvious way; false where it must be refused. */
static bool reference(const char *raw, size_t len, char *out, size_t *out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && raw[j] != '/')
            j++;
        if (j > i) {
            size_t n;
            if (o > 0)
                out[o++] = '/';
            if (core_pct_decode(raw + i, j - i, out + o, &n, false) != NOOK_OK)
                return false;
            if (n == 0 || out[o] == '.')
                return false;
            for (size_t k = 0; k < n; k++) {
                unsigned char c = (unsigned char)out[o + k];
                if (c == '/' || c == '\\' || c < 0x20 || c == 0x7f)
                    return false;
            }
            o += n;
        }
        i = j + 1;
    }
    *out_len = o;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *raw = (const char *)data;
    size_t cap = size + 1, n = 0, ref_n = 0;
    char *out = malloc(cap);
    char *ref = malloc(cap);
    int rc = mw_static_path(raw, size, out, cap, &n);
    bool ref_ok = reference(raw, size, ref, &ref_n);
    if (rc != NOOK_OK && rc != NOOK_EINVAL)
        __builtin_trap(); /* the input always fits here */
    if ((rc == NOOK_OK) != ref_ok)
        __builtin_trap();
    if (rc == NOOK_OK) {
        if (n >= cap || out[n] != '\0' || strlen(out) != n || n != ref_n ||
            memcmp(out, ref, n) != 0)
            __builtin_trap();
        check_segments(out, n);
    }
    /* A tight buffer: the same answer, or NOOK_ELIMIT. */
    size_t tight = size ? data[0] % cap : 0, n2;
    char *small = malloc(tight ? tight : 1);
    int rc2 = mw_static_path(raw, size, small, tight, &n2);
    if (rc2 != rc && rc2 != NOOK_ELIMIT)
        __builtin_trap();
    if (rc2 == NOOK_OK && (n2 != n || memcmp(small, out, n) != 0 || small[n2] != '\0'))
        __builtin_trap();
    free(small);
    free(ref);
    free(out);
    return 0;
}
