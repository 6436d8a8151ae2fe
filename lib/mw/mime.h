/* Media types for the built-in middleware: what a file extension is served as (static files),
 * and which types are worth compressing (compression). */
#ifndef NOOK_MW_MIME_H
#define NOOK_MW_MIME_H

#include <stdbool.h>
#include <stddef.h>

#include "nook.h"

/* The Content-Type for a file name, by its extension (case-insensitive): a static string, with
 * "; charset=utf-8" for text types; "application/octet-stream" when the extension is unknown. */
const char *mw_mime_for_path(const char *name, size_t len);

/* Whether a Content-Type value (parameters allowed, any case) names text-like data that
 * compresses well. Already-compressed formats (images, audio, video, archives, woff) and an
 * absent type are not. */
bool mw_mime_compressible(nook_str content_type);

#endif
