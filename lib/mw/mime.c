/* Extension → media type, and which media types compress. Plain tables, scanned linearly: both
 * are short, and a lookup happens once per response. */
#include "mw/mime.h"

#include <string.h>

#include "io/ascii.h"

/* Longest extension in the table; anything longer cannot match. */
#define MIME_EXT_MAX 12

static const struct {
    const char *ext;
    size_t ext_len;
    const char *type;
} mime_table[] = {
#define MIME(ext, type) {ext, sizeof ext - 1, type}
    MIME("html", "text/html; charset=utf-8"),
    MIME("htm", "text/html; charset=utf-8"),
    MIME("css", "text/css; charset=utf-8"),
    MIME("js", "text/javascript; charset=utf-8"),
    MIME("mjs", "text/javascript; charset=utf-8"),
    MIME("txt", "text/plain; charset=utf-8"),
    MIME("md", "text/markdown; charset=utf-8"),
    MIME("csv", "text/csv; charset=utf-8"),
    MIME("json", "application/json"),
    MIME("map", "application/json"),
    MIME("webmanifest", "application/manifest+json"),
    MIME("xml", "application/xml"),
    MIME("wasm", "application/wasm"),
    MIME("pdf", "application/pdf"),
    MIME("svg", "image/svg+xml"),
    MIME("png", "image/png"),
    MIME("jpg", "image/jpeg"),
    MIME("jpeg", "image/jpeg"),
    MIME("gif", "image/gif"),
    MIME("webp", "image/webp"),
    MIME("avif", "image/avif"),
    MIME("ico", "image/x-icon"),
    MIME("bmp", "image/bmp"),
    MIME("woff", "font/woff"),
    MIME("woff2", "font/woff2"),
    MIME("ttf", "font/ttf"),
    MIME("otf", "font/otf"),
    MIME("mp3", "audio/mpeg"),
    MIME("ogg", "audio/ogg"),
    MIME("wav", "audio/wav"),
    MIME("mp4", "video/mp4"),
    MIME("webm", "video/webm"),
    MIME("zip", "application/zip"),
    MIME("gz", "application/gzip"),
    MIME("tar", "application/x-tar"),
#undef MIME
};

#define MIME_DEFAULT "application/octet-stream"

const char *mw_mime_for_path(const char *name, size_t len)
{
    size_t dot = len;
    while (dot > 0 && name[dot - 1] != '.' && name[dot - 1] != '/')
        dot--;
    if (dot == 0 || name[dot - 1] != '.')
        return MIME_DEFAULT;
    const char *ext = name + dot;
    size_t n = len - dot;
    if (n == 0 || n > MIME_EXT_MAX)
        return MIME_DEFAULT;
    for (size_t i = 0; i < sizeof mime_table / sizeof mime_table[0]; i++)
        if (mime_table[i].ext_len == n && io_caseeq(ext, mime_table[i].ext, n))
            return mime_table[i].type;
    return MIME_DEFAULT;
}

/* Types outside text/ that are text underneath (or, for the fonts and icons, uncompressed
 * binary that shrinks well). */
static const char *const compressible_types[] = {
    "application/json",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/xml",
    "application/wasm",
    "application/x-ndjson",
    "font/ttf",
    "font/otf",
    "image/x-icon",
    "image/bmp",
};

static bool has_suffix(const char *p, size_t n, const char *suffix)
{
    size_t s = strlen(suffix);
    return n >= s && io_caseeq(p + n - s, suffix, s);
}

bool mw_mime_compressible(nook_str ct)
{
    if (!ct.ptr)
        return false;
    const char *semi = memchr(ct.ptr, ';', ct.len);
    size_t n = semi ? (size_t)(semi - ct.ptr) : ct.len;
    while (n > 0 && (ct.ptr[n - 1] == ' ' || ct.ptr[n - 1] == '\t'))
        n--;
    if (n > 5 && io_caseeq(ct.ptr, "text/", 5))
        return true;
    /* Structured syntax suffixes (RFC 6839): image/svg+xml, application/ld+json, ... */
    if (has_suffix(ct.ptr, n, "+json") || has_suffix(ct.ptr, n, "+xml"))
        return true;
    for (size_t i = 0; i < sizeof compressible_types / sizeof compressible_types[0]; i++)
        if (strlen(compressible_types[i]) == n && io_caseeq(ct.ptr, compressible_types[i], n))
            return true;
    return false;
}
