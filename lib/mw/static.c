/*
 * Static files (nook_use_static): GET and HEAD under a prefix are answered from files under a
 * root directory, with validators, conditional requests and single byte ranges.
 *
 * Mapping a URL to a file is where file servers get broken, so every path goes through one
 * narrow door (mw_static_path): the raw path is split on '/', each segment is percent-decoded on
 * its own, and whatever could change the path's meaning once decoded — an encoded '/' or '\', a
 * raw '\', a control byte or NUL, a segment that starts with '.' (".", "..", "%2e%2e", ".git",
 * ".env") — is answered 404 before the file system sees it. What is left is opened below the
 * root (resolved once, at registration) with openat2's RESOLVE_NO_SYMLINKS: one system call,
 * and no way out of the root. Only when a symbolic link is on the way (or the kernel has no
 * openat2) is the path resolved with realpath(), and it must still lie under the root with no
 * dot segment there (a link may point anywhere); it is then opened by its resolved name with
 * O_NOFOLLOW. On that route someone who can write under the root could still swap a directory
 * for a link between realpath() and open(): the root is trusted that far — it is what the
 * server publishes.
 *
 * Bodies go out with nook_res_sendfile(): the kernel copies them on cleartext HTTP/1.1
 * (sendfile, zero-copy); over TLS and HTTP/2 the core reads and writes them in pieces with
 * backpressure. Either way the core owns the descriptor from then on.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/pct.h"
#include "io/ascii.h"
#include "mw/mime.h"
#include "mw/mw_util.h"
#include "nook.h"

#if defined(__has_include)
#if __has_include(<linux/openat2.h>)
#include <linux/openat2.h>
#define STATIC_HAVE_OPENAT2 1
#endif
#endif

/* Longest decoded path below the root; a longer one cannot name a file. */
#define STATIC_PATH_MAX PATH_MAX
/* The file a directory request is answered with under NOOK_STATIC_INDEX. */
#define STATIC_INDEX_NAME "index.html"
/* Longest HTTP-date worth parsing (the longest valid form, RFC 850, is 30 bytes). */
#define HTTP_DATE_MAX 64

typedef struct static_conf {
    mw_conf base;
    char *root;        /* realpath of the root */
    size_t root_len;   /* 1 when the root is "/" itself */
    size_t prefix_len; /* bytes of the request path the prefix covers */
    unsigned flags;
} static_conf;

/* An open file being answered, and how far the body has gone. */
typedef struct static_file {
    int fd;
    struct stat st;
    const char *name; /* the logical name, for the media type */
    uint64_t off, left;
    char etag[64];
    char last_modified[IO_HTTP_DATE_LEN + 1];
} static_file;

/* What a path leads to: a file or directory (open), nothing (the next handler may know it), or
 * something never served (404); ANSWERED when a redirect went out instead. */
typedef enum { FOUND, MISSING, DENIED, ANSWERED } lookup;

/* ---------------------------------------------------------------------------------------------
 * Path mapping
 * ------------------------------------------------------------------------------------------- */

/* Exposed (not in a header) for tests/fuzz/fuzz_static_path.c. */
int mw_static_path(const char *raw, size_t len, char *out, size_t cap, size_t *out_len);

/* A decoded segment may be used as a file name: no separator smuggled in by an escape, no
 * control byte, and no leading dot (which covers ".", ".." and hidden files alike). */
static bool safe_segment(const char *s, size_t n)
{
    if (n == 0 || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '/' || c == '\\' || c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

/*
 * Maps the raw (percent-encoded) part of a request path below the prefix, "/a/b%20c", to a path
 * relative to the root, "a/b c", NUL-terminated in out[0..cap). Runs of '/' count as one; an
 * empty result names the root itself. Returns NOOK_OK; NOOK_EINVAL for a path that must never
 * reach the file system (see the top of this file); NOOK_ELIMIT when it does not fit in out.
 */
int mw_static_path(const char *raw, size_t len, char *out, size_t cap, size_t *out_len)
{
    size_t o = 0;
    *out_len = 0;
    if (cap == 0)
        return NOOK_ELIMIT;
    for (size_t i = 0; i < len;) {
        if (raw[i] == '/') {
            i++;
            continue;
        }
        const char *slash = memchr(raw + i, '/', len - i);
        size_t seg = (slash ? (size_t)(slash - raw) : len) - i;
        /* Decoding never grows, so the raw length bounds what the segment needs. */
        if (o + (o > 0) + seg >= cap)
            return NOOK_ELIMIT;
        if (o > 0)
            out[o++] = '/';
        size_t n;
        if (core_pct_decode(raw + i, seg, out + o, &n, false) != NOOK_OK ||
            !safe_segment(out + o, n))
            return NOOK_EINVAL;
        o += n;
        i += seg;
    }
    out[o] = '\0';
    *out_len = o;
    return NOOK_OK;
}

/* Whether a resolved path lies under the root and has no dot segment below it. */
static bool under_root(const static_conf *c, const char *resolved)
{
    const char *rest = resolved;
    if (c->root_len > 1) {
        if (strncmp(resolved, c->root, c->root_len) != 0 ||
            (resolved[c->root_len] != '\0' && resolved[c->root_len] != '/'))
            return false;
        rest = resolved + c->root_len;
    }
    return strstr(rest, "/.") == NULL;
}

/* openat2(2) is Linux 5.6; an older kernel (or a sandbox that does not know it: ENOSYS, or
 * EPERM from older seccomp profiles) says so once, and every lookup takes the realpath() route
 * from then on. */
static atomic_bool have_openat2 = true;

/* Opens path for reading with no symbolic link followed anywhere along it, in one system call;
 * -1 with ELOOP when a link is in the way. */
static int open_without_links(const char *path)
{
#if defined(STATIC_HAVE_OPENAT2) && defined(SYS_openat2)
    struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK,
                           .resolve = RESOLVE_NO_SYMLINKS};
    return (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
#else
    (void)path;
    errno = ENOSYS;
    return -1;
#endif
}

/* Keeps fd in f if it is a regular file or a directory. */
static lookup take_fd(int fd, static_file *f)
{
    if (fstat(fd, &f->st) != 0 || !(S_ISREG(f->st.st_mode) || S_ISDIR(f->st.st_mode))) {
        close(fd);
        return DENIED;
    }
    f->fd = fd;
    return FOUND;
}

/* Resolves root + "/" + rel (+ "/" + leaf) and opens it; on FOUND f->fd and f->st are set.
 * O_NONBLOCK: opening a FIFO must not hang the loop (take_fd refuses it). */
static lookup open_under_root(nook_req *req, const static_conf *c, const char *rel,
                              const char *leaf, static_file *f)
{
    size_t rlen = strlen(rel), llen = leaf ? strlen(leaf) : 0;
    char *path = nook_req_alloc(req, c->root_len + rlen + llen + 3);
    if (!path)
        return DENIED;
    char *p = path;
    memcpy(p, c->root, c->root_len);
    p += c->root_len;
    *p++ = '/';
    memcpy(p, rel, rlen);
    p += rlen;
    if (leaf && rlen)
        *p++ = '/';
    if (leaf)
        memcpy(p, leaf, llen);
    p[llen] = '\0';
    /* With no link on the way, path is already its own resolved name: the root was resolved at
     * registration and rel has no dot segment (mw_static_path). This one call is the common
     * case, and it leaves no gap between checking and opening. */
    if (atomic_load_explicit(&have_openat2, memory_order_relaxed)) {
        int fd = open_without_links(path);
        if (fd >= 0)
            return take_fd(fd, f);
        if (errno == ENOENT || errno == ENOTDIR)
            return MISSING;
        if (errno == ENOSYS || errno == EPERM) /* EPERM: a sandbox's answer to a new call */
            atomic_store_explicit(&have_openat2, false, memory_order_relaxed);
        else if (errno != ELOOP && errno != EINVAL && errno != E2BIG)
            return DENIED;
    }
    /* A link somewhere (or no openat2): resolve it, and the target must lie under the root. */
    char *resolved = nook_req_alloc(req, PATH_MAX);
    if (!resolved)
        return DENIED;
    if (!realpath(path, resolved))
        return errno == ENOENT || errno == ENOTDIR ? MISSING : DENIED;
    if (!under_root(c, resolved))
        return DENIED;
    int fd = open(resolved, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? MISSING : DENIED;
    return take_fd(fd, f);
}

/* ---------------------------------------------------------------------------------------------
 * Validators and HTTP dates
 * ------------------------------------------------------------------------------------------- */

typedef struct cursor {
    const char *p, *end;
} cursor;

static bool eat(cursor *c, char ch)
{
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

static bool eat_digits(cursor *c, int count, int *v)
{
    *v = 0;
    for (int i = 0; i < count; i++, c->p++) {
        if (c->p >= c->end || *c->p < '0' || *c->p > '9')
            return false;
        *v = *v * 10 + (*c->p - '0');
    }
    return true;
}

static bool eat_month(cursor *c, int *mon)
{
    if (c->end - c->p < 3)
        return false;
    for (int i = 0; i < 12; i++)
        if (memcmp(c->p, io_month_names[i], 3) == 0) {
            *mon = i;
            c->p += 3;
            return true;
        }
    return false;
}

static bool eat_clock(cursor *c, struct tm *tm)
{
    return eat_digits(c, 2, &tm->tm_hour) && eat(c, ':') && eat_digits(c, 2, &tm->tm_min) &&
           eat(c, ':') && eat_digits(c, 2, &tm->tm_sec);
}

static bool eat_word(cursor *c, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0)
        return false;
    c->p += n;
    return true;
}

/* "Sun, 06 Nov 1994 08:49:37 GMT" or the obsolete "Sunday, 06-Nov-94 08:49:37 GMT". */
static bool parse_after_comma(cursor *c, struct tm *tm)
{
    if (!eat(c, ' ') || !eat_digits(c, 2, &tm->tm_mday))
        return false;
    if (eat(c, ' ')) {
        if (!eat_month(c, &tm->tm_mon) || !eat(c, ' ') || !eat_digits(c, 4, &tm->tm_year))
            return false;
        tm->tm_year -= 1900;
    } else {
        int yy;
        if (!eat(c, '-') || !eat_month(c, &tm->tm_mon) || !eat(c, '-') || !eat_digits(c, 2, &yy))
            return false;
        tm->tm_year = yy < 70 ? yy + 100 : yy;
    }
    return eat(c, ' ') && eat_clock(c, tm) && eat_word(c, " GMT");
}

/* asctime's "Sun Nov  6 08:49:37 1994". */
static bool parse_asctime(cursor *c, struct tm *tm)
{
    c->p += 3;
    if (!eat(c, ' ') || !eat_month(c, &tm->tm_mon) || !eat(c, ' '))
        return false;
    if (eat(c, ' ') ? !eat_digits(c, 1, &tm->tm_mday) : !eat_digits(c, 2, &tm->tm_mday))
        return false;
    if (!eat(c, ' ') || !eat_clock(c, tm) || !eat(c, ' ') || !eat_digits(c, 4, &tm->tm_year))
        return false;
    tm->tm_year -= 1900;
    return true;
}

/* The three HTTP-date forms a recipient must accept (RFC 9110 §5.6.7), as seconds since the
 * epoch; -1 when malformed. */
static int64_t parse_http_date(nook_str s)
{
    if (!s.ptr || s.len < 4 || s.len > HTTP_DATE_MAX)
        return -1;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *comma = memchr(s.ptr, ',', s.len);
    cursor c = {comma ? comma + 1 : s.ptr, s.ptr + s.len};
    bool ok = comma ? parse_after_comma(&c, &tm) : parse_asctime(&c, &tm);
    if (!ok || c.p != c.end || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
        tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    return (int64_t)timegm(&tm);
}

/* Whether an If-Match / If-None-Match list names our tag ("*" names any). Weak comparison
 * ignores the W/ prefix; strong comparison never matches a weak tag (RFC 9110 §8.8.3.2). A
 * malformed list matches nothing from the point where it goes wrong. */
static bool etag_list_matches(nook_str list, const char *etag, bool weak_ok)
{
    size_t elen = strlen(etag);
    const char *p = list.ptr, *end = list.ptr + list.len;
    while (p < end) {
        if (*p == ' ' || *p == '\t' || *p == ',') {
            p++;
            continue;
        }
        if (*p == '*')
            return true;
        bool weak = end - p >= 2 && p[0] == 'W' && p[1] == '/';
        if (weak)
            p += 2;
        if (p >= end || *p != '"')
            return false;
        const char *close = memchr(p + 1, '"', (size_t)(end - p - 1));
        if (!close)
            return false;
        size_t n = (size_t)(close - p) + 1;
        if ((weak_ok || !weak) && n == elen && memcmp(p, etag, n) == 0)
            return true;
        p = close + 1;
    }
    return false;
}

/* ---------------------------------------------------------------------------------------------
 * Conditional requests and ranges
 * ------------------------------------------------------------------------------------------- */

typedef enum { RANGE_NONE, RANGE_OK, RANGE_UNSATISFIABLE } range_result;

/* Digits as a saturating unsigned number; false when there are none. */
static bool eat_u64(cursor *c, uint64_t *v)
{
    const char *start = c->p;
    *v = 0;
    for (; c->p < c->end && *c->p >= '0' && *c->p <= '9'; c->p++) {
        unsigned d = (unsigned)(*c->p - '0');
        *v = *v > (UINT64_MAX - d) / 10 ? UINT64_MAX : *v * 10 + d;
    }
    return c->p > start;
}

static void skip_ows(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

/* One "first-last", "first-" or "-suffix" against a file of `size` bytes. */
static range_result parse_range_spec(cursor *c, uint64_t size, uint64_t *first, uint64_t *last)
{
    uint64_t a, b;
    if (eat(c, '-')) {
        if (!eat_u64(c, &b))
            return RANGE_NONE;
        if (b == 0 || size == 0)
            return RANGE_UNSATISFIABLE;
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return RANGE_OK;
    }
    if (!eat_u64(c, &a) || !eat(c, '-'))
        return RANGE_NONE;
    b = UINT64_MAX;
    if (c->p < c->end && *c->p >= '0' && *c->p <= '9' && (!eat_u64(c, &b) || b < a))
        return RANGE_NONE;
    if (a >= size)
        return RANGE_UNSATISFIABLE;
    *first = a;
    *last = b < size - 1 ? b : size - 1;
    return RANGE_OK;
}

/* A Range header with one byte range. Several ranges would need a multipart/byteranges body:
 * they are answered with the whole file instead, which RFC 9110 §14.2 allows (so is anything
 * malformed, or in another unit). */
static range_result parse_range(nook_str h, uint64_t size, uint64_t *first, uint64_t *last)
{
    if (h.len < 6 || !io_caseeq(h.ptr, "bytes=", 6))
        return RANGE_NONE;
    cursor c = {h.ptr + 6, h.ptr + h.len};
    skip_ows(&c);
    range_result r = parse_range_spec(&c, size, first, last);
    skip_ows(&c);
    return c.p == c.end ? r : RANGE_NONE;
}

/* If-Range (RFC 9110 §13.1.5): the range applies only if the client's copy is current, judged
 * by a strong entity-tag or by the exact Last-Modified date. */
static bool if_range_holds(nook_req *req, const static_file *f)
{
    nook_str v = nook_req_header(req, "If-Range");
    if (!v.ptr)
        return true;
    if (v.len > 0 && v.ptr[0] == 'W')
        return false; /* a weak tag never validates a range */
    if (v.len > 0 && v.ptr[0] == '"')
        return etag_list_matches(v, f->etag, false);
    return parse_http_date(v) == (int64_t)f->st.st_mtime;
}

/* The precondition checks of RFC 9110 §13.2.2 for GET/HEAD: the status they call for (412 or
 * 304), or 0 to go on. */
static int precondition_status(nook_req *req, const static_file *f)
{
    int64_t mtime = (int64_t)f->st.st_mtime;
    nook_str im = nook_req_header(req, "If-Match");
    if (im.ptr) {
        if (!etag_list_matches(im, f->etag, false))
            return 412;
    } else {
        int64_t ius = parse_http_date(nook_req_header(req, "If-Unmodified-Since"));
        if (ius >= 0 && mtime > ius)
            return 412;
    }
    nook_str inm = nook_req_header(req, "If-None-Match");
    if (inm.ptr)
        return etag_list_matches(inm, f->etag, true) ? 304 : 0;
    int64_t ims = parse_http_date(nook_req_header(req, "If-Modified-Since"));
    /* A date in the future is invalid (RFC 9110 §13.1.3): the file may change before then. */
    if (ims >= 0 && ims <= (int64_t)time(NULL) && mtime <= ims)
        return 304;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The response
 * ------------------------------------------------------------------------------------------- */

static void respond_text(nook_req *req, int status, const char *text)
{
    nook_respond(req, status, "text/plain; charset=utf-8", text, strlen(text));
}

static void close_file(nook_req *req, void *ud)
{
    (void)req;
    static_file *f = ud;
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
}

static int add_header_u64(nook_req *req, const char *name, uint64_t v)
{
    char buf[24];
    buf[io_fmt_dec(buf, v)] = '\0';
    return nook_res_header(req, name, buf);
}

/* ETag and Last-Modified from size and mtime; every answer about the file carries them. */
static int validator_headers(nook_req *req, static_file *f)
{
    uint64_t mtime_ns =
        (uint64_t)f->st.st_mtim.tv_sec * 1000000000u + (uint64_t)f->st.st_mtim.tv_nsec;
    char *p = f->etag;
    *p++ = '"';
    p += io_fmt_hex(p, (uint64_t)f->st.st_size);
    *p++ = '-';
    p += io_fmt_hex(p, mtime_ns);
    *p++ = '"';
    *p = '\0';
    io_fmt_http_date(f->last_modified, f->st.st_mtime);
    f->last_modified[IO_HTTP_DATE_LEN] = '\0';
    int rc = nook_res_header(req, "ETag", f->etag);
    return rc == NOOK_OK ? nook_res_header(req, "Last-Modified", f->last_modified) : rc;
}

/* Picks the part of the file to send (f->off, f->left): 200 whole, 206 one range, or 416. */
static int choose_range(nook_req *req, static_file *f, bool head)
{
    uint64_t size = (uint64_t)f->st.st_size, first = 0, last = 0;
    nook_str range = nook_req_header(req, "Range");
    range_result r = RANGE_NONE;
    /* Range is defined for GET only (RFC 9110 §14.2): HEAD describes the whole file. */
    if (range.ptr && !head && if_range_holds(req, f))
        r = parse_range(range, size, &first, &last);
    f->off = r == RANGE_OK ? first : 0;
    f->left = r == RANGE_OK ? last - first + 1 : size;
    return r == RANGE_UNSATISFIABLE ? 416 : r == RANGE_OK ? 206 : 200;
}

/* The head of a 200 or 206. */
static int body_headers(nook_req *req, const static_file *f, int status)
{
    int rc = nook_res_status(req, status);
    if (rc == NOOK_OK)
        rc = nook_res_header(req, "Accept-Ranges", "bytes");
    if (rc == NOOK_OK)
        rc = nook_res_header(req, "Content-Type", mw_mime_for_path(f->name, strlen(f->name)));
    if (rc == NOOK_OK)
        rc = add_header_u64(req, "Content-Length", f->left);
    if (rc == NOOK_OK && status == 206) {
        char cr[64];
        snprintf(cr, sizeof cr, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, f->off,
                 f->off + f->left - 1, (uint64_t)f->st.st_size);
        rc = nook_res_header(req, "Content-Range", cr);
    }
    return rc;
}

static void unsatisfiable(nook_req *req, const static_file *f)
{
    char cr[40];
    snprintf(cr, sizeof cr, "bytes */%" PRIu64, (uint64_t)f->st.st_size);
    if (nook_res_header(req, "Content-Range", cr) != NOOK_OK)
        respond_text(req, 500, "Internal Server Error\n");
    else
        respond_text(req, 416, "Range Not Satisfiable\n");
}

/* Answers with the open regular file f: validators, preconditions, range, then the body. */
static void serve_file(nook_req *req, static_file *f, bool head)
{
    if (validator_headers(req, f) != NOOK_OK) {
        respond_text(req, 500, "Internal Server Error\n");
        return;
    }
    int status = precondition_status(req, f);
    if (status == 304) {
        nook_respond(req, 304, NULL, NULL, 0);
        return;
    }
    if (status == 412) {
        respond_text(req, 412, "Precondition Failed\n");
        return;
    }
    status = choose_range(req, f, head);
    if (status == 416) {
        unsatisfiable(req, f);
        return;
    }
    if (body_headers(req, f, status) != NOOK_OK) {
        respond_text(req, 500, "Internal Server Error\n");
        return;
    }
    if (head) {
        nook_res_start(req); /* for HEAD the core ends the response with its head */
        return;
    }
    /* The core takes the descriptor: zero-copy sendfile on cleartext HTTP/1.1, bounded
     * read-and-write with backpressure elsewhere. */
    int fd = f->fd;
    f->fd = -1;
    nook_res_sendfile(req, fd, f->off, f->left);
}

/* "/dir" → "/dir/" (with the query kept), runs of '/' collapsed so "//host" cannot become a
 * redirect to another site. */
static void redirect_to_slash(nook_req *req)
{
    nook_str path = nook_req_path(req), query = nook_req_query(req);
    char *loc = nook_req_alloc(req, path.len + query.len + 3);
    if (!loc) {
        respond_text(req, 500, "Internal Server Error\n");
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < path.len; i++)
        if (!(path.ptr[i] == '/' && n > 0 && loc[n - 1] == '/'))
            loc[n++] = path.ptr[i];
    loc[n++] = '/';
    if (query.ptr) {
        loc[n++] = '?';
        memcpy(loc + n, query.ptr, query.len);
        n += query.len;
    }
    loc[n] = '\0';
    if (nook_res_header(req, "Location", loc) != NOOK_OK) {
        respond_text(req, 500, "Internal Server Error\n");
        return;
    }
    respond_text(req, 301, "Moved Permanently\n");
}

/* A directory: its index file if allowed and present (after a redirect to the slash form when
 * the path lacks it), otherwise nothing to serve here. */
static lookup open_index(nook_req *req, const static_conf *c, const char *rel, bool slash,
                         static_file *f)
{
    close_file(req, f);
    if (!(c->flags & NOOK_STATIC_INDEX))
        return MISSING;
    lookup l = open_under_root(req, c, rel, STATIC_INDEX_NAME, f);
    f->name = STATIC_INDEX_NAME;
    if (l == FOUND && !S_ISREG(f->st.st_mode))
        return DENIED;
    if (l == FOUND && !slash) {
        redirect_to_slash(req);
        return ANSWERED;
    }
    return l;
}

/* Finds what the path names: the open file in f, or why there is none. */
static lookup find_file(nook_req *req, const static_conf *c, static_file *f)
{
    nook_str path = nook_req_path(req);
    const char *raw = path.ptr + c->prefix_len;
    size_t raw_len = path.len - c->prefix_len, rel_len;
    bool slash = raw_len > 0 && raw[raw_len - 1] == '/';
    /* The decoded path is never longer than the raw one. */
    size_t cap = raw_len < STATIC_PATH_MAX ? raw_len + 1 : STATIC_PATH_MAX;
    char *rel = nook_req_alloc(req, cap);
    if (!rel || mw_static_path(raw, raw_len, rel, cap, &rel_len) != NOOK_OK)
        return DENIED;
    f->name = rel;
    lookup l = open_under_root(req, c, rel, NULL, f);
    if (l == FOUND && S_ISDIR(f->st.st_mode))
        return open_index(req, c, rel, slash, f);
    return l == FOUND && slash ? MISSING : l; /* "file.txt/" names nothing */
}

static void static_mw(nook_req *req, void *ud)
{
    const static_conf *c = ud;
    nook_str method = nook_req_method(req);
    bool get = method.len == 3 && memcmp(method.ptr, "GET", 3) == 0;
    bool head = method.len == 4 && memcmp(method.ptr, "HEAD", 4) == 0;
    if ((!get && !head) || nook_req_path(req).len < c->prefix_len) {
        nook_next(req);
        return;
    }
    static_file *f = nook_req_alloc(req, sizeof *f);
    if (f) {
        memset(f, 0, sizeof *f);
        f->fd = -1;
    }
    /* DONE closes whatever is open when the request ends, however it ends. */
    if (!f || nook_req_on(req, NOOK_ON_DONE, close_file, f) != NOOK_OK) {
        respond_text(req, 500, "Internal Server Error\n");
        return;
    }
    lookup l = find_file(req, c, f);
    if (l != FOUND)
        close_file(req, f); /* not needed while later handlers run */
    if (l == FOUND)
        serve_file(req, f, head);
    else if (l == MISSING)
        nook_next(req);
    else if (l == DENIED)
        respond_text(req, 404, "Not Found\n");
}

/* ---------------------------------------------------------------------------------------------
 * Registration
 * ------------------------------------------------------------------------------------------- */

static void static_conf_free(void *ud)
{
    static_conf *c = ud;
    if (c) {
        io_free(c->base.alloc, c->root);
        mw_conf_free(c);
    }
}

int nook_use_static(nook_server *srv, const char *prefix, const char *root, unsigned flags)
{
    if (!srv || !root || (prefix && prefix[0] != '/') || (flags & ~(unsigned)NOOK_STATIC_INDEX))
        return NOOK_EINVAL;
    struct stat st;
    char resolved[PATH_MAX];
    if (!realpath(root, resolved) || stat(resolved, &st) != 0 || !S_ISDIR(st.st_mode))
        return NOOK_EINVAL;
    static_conf *c = mw_conf_new(srv, sizeof *c);
    if (c)
        c->root = mw_strdup(c->base.alloc, resolved);
    if (!c || !c->root) {
        static_conf_free(c);
        return NOOK_ENOMEM;
    }
    size_t plen = prefix ? strlen(prefix) : 0;
    while (plen > 0 && prefix[plen - 1] == '/')
        plen--; /* as nook_use() stores it: "/static/" covers what "/static" does */
    c->root_len = strlen(c->root);
    c->prefix_len = plen;
    c->flags = flags;
    int rc = nook_use(srv, prefix, static_mw, c, static_conf_free);
    if (rc != NOOK_OK)
        static_conf_free(c);
    return rc;
}
