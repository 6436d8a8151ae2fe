/* ASCII helpers shared by every layer (no locale, no ctype). */
#ifndef NOOK_IO_ASCII_H
#define NOOK_IO_ASCII_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 9110 tchar: "!#$%&'*+-.^_`|~", digits and letters. */
extern const unsigned char io_tchar[256];

static inline bool io_is_tchar(unsigned char c) { return io_tchar[c] != 0; }

static inline unsigned char io_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* Case-insensitive equality of two byte ranges of the same length. */
static inline bool io_caseeq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (io_lower((unsigned char)a[i]) != io_lower((unsigned char)b[i]))
            return false;
    return true;
}

/* Value of a hex digit, or -1. */
static inline int io_hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = io_lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Writes v in decimal at out (at most 20 bytes, no NUL); returns the length. The hot paths
 * format lengths and statuses with this instead of snprintf. */
static inline size_t io_fmt_dec(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/* Writes v in lower-case hexadecimal (at most 16 bytes, no NUL); returns the length. */
static inline size_t io_fmt_hex(char *out, uint64_t v)
{
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/* HTTP-date (IMF-fixdate, RFC 9110 §5.6.7): "Sun, 06 Nov 1994 08:49:37 GMT", always
 * IO_HTTP_DATE_LEN bytes and no NUL. Times outside years 1900..9999 are clamped to them, so the
 * year always has the four digits the format requires. */
#define IO_HTTP_DATE_LEN 29
#define IO_HTTP_DATE_MIN (-2208988800LL) /* 1900-01-01T00:00:00Z */
#define IO_HTTP_DATE_MAX 253402300799LL  /* 9999-12-31T23:59:59Z */
void io_fmt_http_date(char *out, int64_t t);

/* "Jan".."Dec", as HTTP-dates spell them. */
extern const char io_month_names[12][4];

/* Writes a status code as exactly three digits (100..999). */
static inline void io_fmt_status(char *out, int status)
{
    out[0] = (char)('0' + status / 100 % 10);
    out[1] = (char)('0' + status / 10 % 10);
    out[2] = (char)('0' + status % 10);
}

#endif
