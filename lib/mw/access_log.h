/* The access log's line formats, apart from the middleware so that tests can check them. */
#ifndef NOOK_MW_ACCESS_LOG_H
#define NOOK_MW_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "nook.h"

/* What one line says about one request. Views are not NUL-terminated; an absent one is
 * {NULL, 0}. */
typedef struct mw_access_entry {
    time_t start;    /* when the request began (UTC seconds) */
    nook_str client; /* the peer address without its port ("::1", "unix") */
    nook_str method;
    nook_str path;        /* as sent, percent-encoded */
    nook_str query;       /* absent when the target had no '?' */
    const char *protocol; /* "HTTP/1.1", "HTTP/2" */
    int status;
    uint64_t bytes; /* response body bytes sent */
    int64_t duration_us;
    nook_str referer, user_agent; /* request headers, absent when not sent */
} mw_access_entry;

/* Writes the line for `entry` (without a newline, without a NUL) into out[0..cap) and returns
 * its full length. Like snprintf, a result above cap means out holds only the beginning: call
 * again with that much room. Request text is escaped, so a line never contains a control byte
 * and JSON lines are valid UTF-8. */
size_t mw_access_format(nook_access_format format, const mw_access_entry *entry, char *out,
                        size_t cap);

#endif
