/* ASCII helpers shared by every layer (no locale, no ctype). */
#ifndef NOOK_IO_ASCII_H
#define NOOK_IO_ASCII_H

#include <stdbool.h>
#include <stddef.h>

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

#endif
