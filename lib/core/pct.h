/* Percent-decoding (RFC 3986) and query-string lookup. No allocation. */
#ifndef NOOK_CORE_PCT_H
#define NOOK_CORE_PCT_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Decodes in[0..len) into out (which may be `in` itself: decoding never grows). "%41" → 'A'
 * (hex digits in either case); with plus_is_space, '+' → ' ' (query strings); other bytes copy
 * through unchanged. Sets *out_len. Returns NOOK_OK, or NOOK_EINVAL for a '%' not followed by two
 * hex digits, or for "%00" (a decoded NUL is never legitimate in a path or a query value).
 */
int core_pct_decode(const char *in, size_t len, char *out, size_t *out_len, bool plus_is_space);

/*
 * Finds the first parameter named `name` (compared after decoding the key, case-sensitive) in a
 * query string "a=1&b=2&c" (without the '?'). Separators: '&' (and ';' is NOT one). A key without
 * '=' has an empty value. Sets *value and *value_len to the raw (still encoded) value.
 * Returns true when found. Keys that fail to decode are skipped.
 */
bool core_query_find(const char *query, size_t query_len, const char *name, const char **value,
                     size_t *value_len);

#endif
