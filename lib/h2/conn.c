/*
 * An HTTP/2 server connection: an nghttp2 session fed from the stream's input (mem_recv) and
 * drained into its output (mem_send). Each request stream becomes one exchange; responses go
 * out as HEADERS + DATA with nghttp2's flow control.
 *
 * nghttp2 callbacks only run inside mem_recv/mem_send, which this file calls from its own event
 * handlers, never from inside a handler's call into us — the core/proto.h re-entrancy rule.
 */
#include "h2/conn.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io/ascii.h"

#define FRAME_HEAD 9 /* bytes of a frame header */
#define SETTINGS_ENTRY 6 /* bytes of a SETTINGS parameter: identifier, value */
#define OUTPUT_CHUNK_MAX (256 * 1024) /* stop asking nghttp2 for bytes past this much queued */
#define HEADER_OVERHEAD 32            /* RFC 9113 §6.5.2: each field counts name + value + 32 */
#define CLOSE_LINGER_MS 1000
#define CLOSE_LINGER_BYTES (64 * 1024) /* input dropped after a GOAWAY before we stop reading */
#define HEAD_BYTES_PER_GLITCH 64 /* a refused request head costs a glitch per this many bytes */
#define RESET_RING 32 /* streams we reset lately: their late HEADERS (trailers) are no error */
#define GLITCH_WINDOW_MS 60000 /* NOOK_OPT_H2_MAX_GLITCHES refills over this time */
#define WINDOW_CREDIT_START 16 /* WINDOW_UPDATEs a new connection may send before any data */
#define WINDOW_CREDIT_MAX 1024
#define MIN_CONTINUATIONS 8  /* never allow fewer CONTINUATION frames per block than this */
#define HPACK_BOMB_FACTOR 16 /* a header list this many times the limit ends the connection */
#define AREA_BLOCKS 4        /* blocks in a session area (see area_take) */

typedef struct h2_conn h2_conn;

/* A block of nghttp2's in the session area (see area_take); p is NULL once nghttp2 freed it.
 * `dead`: the frame buffer, whose content need not survive a sleep. */
typedef struct area_block {
    char *p;
    size_t len;
    bool dead;
} area_block;

#define HEAD_TEXT_INLINE 128

typedef struct h2_stream {
    struct h2_stream *prev, *next;
    h2_conn *c;
    int32_t id;
    nook_req *ex;      /* NULL once finished or cancelled */
    io_buf out;        /* response body not yet handed to nghttp2 */
    size_t header_bytes;
    size_t nheaders;
    nook_str method, path, authority;
    bool have_host;
    bool dispatched;   /* the handler has run (at the head for streaming routes) */
    bool body_done;    /* the body's end was given to the core */
    bool paused;       /* a streaming handler holds the body: data waits in `held` */
    bool end_held;     /* END_STREAM arrived while paused */
    io_buf held;       /* bounded by the window we granted: paused data is not credited */
    bool body_end;     /* the core gave the last body piece */
    bool deferred;     /* nghttp2 is waiting for resume_data */
    bool eof_sent;     /* the data source reported EOF: the response is complete */
    bool refused;      /* answered by the codec itself (413, 431...) */
    int refuse_status; /* set while headers arrive: answer this once they are complete */
    bool remote_ended; /* the request's END_STREAM arrived */
    size_t frame_bytes; /* bytes of the DATA frame still arriving */
    size_t unconsumed;  /* bytes of complete DATA frames, not yet credited back to the peer */
    size_t body_held;   /* body bytes given to a buffering exchange (counted in body_held) */
    bool trailers_refused;    /* the trailers broke a limit: the stream is being reset */
    size_t head_wire;         /* wire bytes of the request's HEADERS frame */
    bool malformed;           /* an invalid field arrived: reset once the block ends */
    const core_hdr *trailers; /* in the exchange's memory, valid while ex lives */
    size_t ntrailers;
    /* The response head's text (status, length, lower-case names, values) when it fits: nghttp2
     * then points at it instead of copying and lower-casing it again (see op_send_head). */
    char head_text[HEAD_TEXT_INLINE];
} h2_stream;

/* Where the input stands in the frame stream. nghttp2 reports no frame it ignores (unknown
 * types, DATA on closed streams, header blocks it drops), so the frames are tracked here, in
 * front of it, and each frame header is screened just before nghttp2 reads it. */
typedef struct h2_framing {
    size_t preface_left; /* bytes of the client connection preface still to come */
    uint8_t hd[FRAME_HEAD]; /* the frame header being received */
    size_t hd_len;
    size_t payload_left; /* bytes of the current frame's payload still to come */
    bool ends_block;     /* the current frame ends a header block (END_HEADERS) */
    /* A SETTINGS frame arriving while streams are open, read entry by entry (see
     * window_settings): the largest stream send window and SETTINGS_INITIAL_WINDOW_SIZE as the
     * entries so far leave them, and the entry being received. */
    bool in_settings;
    uint8_t entry_len;
    uint8_t entry[SETTINGS_ENTRY];
    int64_t win_top;
    int64_t win_initial;
} h2_framing;

struct h2_conn {
    core_conn link;
    core_worker *w;
    const core_limits *lim;
    io_stream s;
    io_timer timer;
    io_defer resume;
    nghttp2_session *ng;
    nghttp2_mem mem;
    h2_stream streams; /* sentinel of the list of live streams */
    size_t nstreams;
    int32_t max_stream_id;   /* highest client stream id seen */
    int32_t reset_ring[RESET_RING];
    unsigned reset_next;
    size_t unconsumed_conn;  /* bytes received, not yet credited to the connection window */
    size_t body_held;        /* request body bytes buffered for handlers (H2_MAX_CONN_INPUT) */
    bool credit_withheld;    /* over that budget: the connection window is left to close */
    size_t queued_out;       /* response bytes in every stream's `out` together */
    h2_framing rx;
    /* Defences against a peer that makes the server work for nothing (see glitch()). */
    uint64_t glitch_level;  /* glitches, scaled by GLITCH_WINDOW_MS, leaking over time */
    uint64_t glitch_at;     /* loop ms of the last glitch */
    uint32_t window_credit; /* WINDOW_UPDATEs an honest client may send now without a glitch */
    size_t block_bytes;     /* wire bytes of the header block being received */
    size_t block_frames;    /* CONTINUATION frames in it */
    uint64_t started_at;    /* loop ms when our SETTINGS were queued */
    bool settings_acked;    /* the peer acknowledged our SETTINGS */
    uint64_t stalled_since; /* loop ms since response data has waited for window; 0: none */
    /* Timeouts run from moments of real progress, never from "any input": a peer that trickles
     * a byte now and then must not keep a connection, a stream or unread output alive. */
    uint64_t active_at;     /* the last request began or stream ended (IDLE_TIMEOUT) */
    uint64_t block_since;   /* a header block has been arriving since; 0: none (HEADER_TIMEOUT) */
    uint64_t request_at;    /* request bytes last arrived (BODY_TIMEOUT) */
    uint64_t written_at;    /* output last moved to the socket, or began waiting (WRITE_TIMEOUT) */
    uint64_t draining_at;   /* the connection began to drain; 0: not yet */
    bool calm;              /* ending for misbehaviour (see end_connection) */
    bool lingering;         /* GOAWAY out, write side shut: input is read and dropped */
    size_t lingered;        /* bytes dropped so far while lingering */
    bool close_now;
    bool draining; /* GOAWAY sent: close once streams are done and output is flushed */
    bool peer_eof;
    bool asleep;             /* idle with buffers released (io_stream_sleep) until input comes */
    bool creating;           /* inside nghttp2_session_server_new: see area_take */
    bool area_failed;        /* the session area could not be mapped: use the pool */
    bool destroying;         /* in nghttp2_session_del */
    h2_stream *block_stream; /* the stream of the header block being received, or NULL */
    char *area;              /* the session area: AREA_PAGES pages, or NULL */
    size_t area_used;
    area_block blocks[AREA_BLOCKS];
    int nblocks;
    char peer[64];
    size_t peer_len;
};

static h2_conn *from_watch(io_watch *w) { return (h2_conn *)((char *)w - offsetof(h2_conn, s)); }
static h2_conn *from_timer(io_timer *t) { return (h2_conn *)((char *)t - offsetof(h2_conn, timer)); }
static h2_conn *from_defer(io_defer *d) { return (h2_conn *)((char *)d - offsetof(h2_conn, resume)); }

static size_t opt(const h2_conn *c, nook_opt o) { return (size_t)core_opt(c->lim, o); }
/* Loop ms, never 0: the moments kept in h2_conn use 0 for "not set". */
static uint64_t now_of(const h2_conn *c)
{
    uint64_t now = io_loop_now(c->s.loop);
    return now ? now : 1;
}
static void schedule(h2_conn *c) { io_loop_defer(c->s.loop, &c->resume); }
/* Per-request memory (streams, their buffers, nghttp2's objects) comes from the worker's pool. */
static const io_alloc *pool_of(const h2_conn *c) { return core_worker_pool(c->w); }

/* ---------------------------------------------------------------------------------------------
 * Allocator bridge: nghttp2 allocates through the server's hook too.
 * ------------------------------------------------------------------------------------------- */

/*
 * Idle memory. An nghttp2 session makes a few page-sized allocations when it is created and keeps
 * them for its life: the 16 KiB frame buffer, the stream map's 4 KiB bucket table and a 4 KiB
 * scratch buffer. Together they are most of what an idle HTTP/2 connection costs. They are placed
 * instead in pages of their own, one private anonymous mapping per session (the session area),
 * so that a sleeping connection can hand pages back to the kernel (MADV_DONTNEED) and get them
 * back zero-filled when they are next touched:
 *   - the frame buffer's pages always: its content is dead while nothing is queued to send;
 *   - any other block's pages only when they hold nothing but zeros (an empty stream map), since
 *     a page that comes back zero-filled is then exactly what it was.
 * Fresh mapped pages cost no memory until they are written, and calloc needs no memset there. If
 * the mapping fails (the process's map count, say), allocations simply go to the pool as usual.
 */
#define FRAMEBUF_LEN (FRAME_HEAD + 1 + 16384) /* header, pad-length byte, largest default payload */
#define AREA_PAGES 8 /* a 5-page frame buffer and two single pages */

static size_t page_size(void)
{
    /* Workers may ask at once: each computes the same value, stored atomically. */
    static _Atomic size_t page;
    size_t p = atomic_load_explicit(&page, memory_order_relaxed);
    if (!p) {
        long v = sysconf(_SC_PAGESIZE);
        p = v > 0 ? (size_t)v : 4096;
        atomic_store_explicit(&page, p, memory_order_relaxed);
    }
    return p;
}

static size_t round_to_pages(size_t n) { return (n + page_size() - 1) & ~(page_size() - 1); }

/* Whether p lies in the session area: one comparison, as every free asks it. */
static bool in_area(const h2_conn *c, const void *p)
{
    return (uintptr_t)p - (uintptr_t)c->area < c->area_used; /* area_used is 0 without an area */
}

static area_block *area_block_of(h2_conn *c, const void *p)
{
    for (int i = 0; i < c->nblocks; i++)
        if (c->blocks[i].p == p)
            return &c->blocks[i];
    return NULL;
}

/* A zero-filled, page-aligned block from the session area, or NULL: only while the session is
 * being created, only for page-sized requests and the frame buffer. */
static __attribute__((noinline)) void *area_take(h2_conn *c, size_t n)
{
    if (!c->creating || n == 0 || (n != FRAMEBUF_LEN && n % page_size() != 0) ||
        c->nblocks == AREA_BLOCKS)
        return NULL;
    size_t len = round_to_pages(n);
    if (!c->area) {
        if (c->area_failed)
            return NULL;
        void *m = mmap(NULL, AREA_PAGES * page_size(), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) {
            c->area_failed = true;
            return NULL;
        }
        c->area = m;
        c->area_used = 0;
    }
    if (c->area_used + len > AREA_PAGES * page_size())
        return NULL;
    area_block *b = &c->blocks[c->nblocks++];
    *b = (area_block){c->area + c->area_used, len, n == FRAMEBUF_LEN};
    c->area_used += len;
    return b->p;
}

static void area_release(area_block *b) { (void)madvise(b->p, b->len, MADV_DONTNEED); }

static void area_unmap(h2_conn *c)
{
    if (c->area)
        munmap(c->area, AREA_PAGES * page_size());
    c->area = NULL;
    c->area_used = 0;
    c->nblocks = 0;
}

static void *mem_malloc(size_t n, void *ud)
{
    h2_conn *c = ud;
    void *p = c->creating ? area_take(c, n) : NULL;
    return p ? p : io_malloc(pool_of(c), n);
}

/* nghttp2 freed an area block: its pages stay mapped until the session ends, but cost nothing. */
static __attribute__((noinline)) void area_free(h2_conn *c, void *p)
{
    area_block *b = area_block_of(c, p);
    if (!b)
        return;
    if (!c->destroying) /* else unmapped in a moment */
        area_release(b);
    b->p = NULL;
}

static void mem_free(void *p, void *ud)
{
    h2_conn *c = ud;
    if (in_area(c, p))
        area_free(c, p);
    else
        io_free(pool_of(c), p);
}

static void *mem_calloc(size_t nmemb, size_t size, void *ud)
{
    h2_conn *c = ud;
    if (size && nmemb > SIZE_MAX / size)
        return NULL;
    void *p = c->creating ? area_take(c, nmemb * size) : NULL; /* already zero */
    if (!p && (p = io_malloc(pool_of(c), nmemb * size)) != NULL)
        memset(p, 0, nmemb * size);
    return p;
}

static void *mem_realloc(void *p, size_t n, void *ud)
{
    h2_conn *c = ud;
    area_block *b = in_area(c, p) ? area_block_of(c, p) : NULL;
    if (!b)
        return p ? io_realloc(pool_of(c), p, n) : mem_malloc(n, ud);
    /* An area block resized (nghttp2 1.52 never does this): an ordinary block from now on. */
    void *q = io_malloc(pool_of(c), n);
    if (!q)
        return NULL;
    memcpy(q, p, n < b->len ? n : b->len);
    mem_free(p, ud);
    return q;
}

static bool all_zero(const char *p, size_t n)
{
    const uint64_t *w = (const uint64_t *)(const void *)p; /* page-aligned */
    uint64_t acc = 0;
    for (size_t i = 0; i < n / sizeof *w; i++)
        acc |= w[i];
    return acc == 0;
}

/* Falling asleep: nothing is queued in nghttp2 or in our output (io_stream_sleep checked ours). */
static void release_area(h2_conn *c)
{
    bool quiet = !nghttp2_session_want_write(c->ng) && !io_buf_size(&c->s.out);
    for (int i = 0; i < c->nblocks; i++) {
        area_block *b = &c->blocks[i];
        if (b->p && ((b->dead && quiet) || (!b->dead && all_zero(b->p, b->len))))
            area_release(b);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Streams
 * ------------------------------------------------------------------------------------------- */

static h2_stream *stream_new(h2_conn *c, int32_t id)
{
    h2_stream *st = io_malloc(pool_of(c), sizeof *st);
    if (!st)
        return NULL;
    memset(st, 0, sizeof *st);
    st->c = c;
    st->id = id;
    st->next = c->streams.next;
    st->prev = &c->streams;
    c->streams.next->prev = st;
    c->streams.next = st;
    c->nstreams++;
    return st;
}

static void stream_free(h2_stream *st)
{
    h2_conn *c = st->c;
    if (c->block_stream == st)
        c->block_stream = NULL;
    st->prev->next = st->next;
    st->next->prev = st->prev;
    if (--c->nstreams == 0)
        c->active_at = now_of(c); /* idle from now */
    c->unconsumed_conn += st->unconsumed + st->frame_bytes + io_buf_size(&st->held);
    c->body_held -= st->body_held;
    c->queued_out -= io_buf_size(&st->out);
    io_buf_free(&st->out, pool_of(c));
    io_buf_free(&st->held, pool_of(c));
    io_free(pool_of(c), st);
}

/* The exchange is gone, and with it the body it buffered: that no longer counts against
 * NOOK_OPT_H2_MAX_CONN_INPUT, so the connection window may open again (consume_received). */
static void forget_body(h2_stream *st)
{
    h2_conn *c = st->c;
    c->body_held -= st->body_held;
    st->body_held = 0;
    if (c->credit_withheld)
        schedule(c);
}

/* Ends the exchange's life: finished when the whole response went to nghttp2, else cancelled. */
static void stream_release_exchange(h2_stream *st)
{
    nook_req *ex = st->ex;
    if (!ex)
        return;
    st->ex = NULL;
    forget_body(st);
    if (st->eof_sent)
        core_exchange_finish(ex, true);
    else
        core_exchange_cancel(ex);
}

/* The codec gives up on a request (refused, malformed, or the client gave up on it). */
static void cancel_exchange(h2_stream *st)
{
    nook_req *ex = st->ex;
    if (!ex)
        return;
    st->ex = NULL;
    forget_body(st);
    core_exchange_cancel(ex);
}

static void reset_stream(h2_conn *c, int32_t id, uint32_t code)
{
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, id, code);
    schedule(c);
}

/* Credits the request bytes received in the last batch back to the peer (WINDOW_UPDATE as
 * nghttp2 sees fit). Each stream gets its own window back at once; the connection's window
 * only while the request bodies buffered for handlers fit NOOK_OPT_H2_MAX_CONN_INPUT, so a
 * client with many unfinished uploads is held back by flow control instead of filling memory
 * (at most the budget plus one connection window). Credit resumes as those requests end. */
static void consume_received(h2_conn *c)
{
    for (h2_stream *st = c->streams.next; st != &c->streams; st = st->next) {
        if (st->unconsumed) {
            nghttp2_session_consume_stream(c->ng, st->id, st->unconsumed);
            c->unconsumed_conn += st->unconsumed;
            st->unconsumed = 0;
        }
    }
    size_t budget = opt(c, NOOK_OPT_H2_MAX_CONN_INPUT);
    if (budget < opt(c, NOOK_OPT_MAX_BODY))
        budget = opt(c, NOOK_OPT_MAX_BODY); /* one request alone can always complete */
    bool over = c->body_held > budget;
    if (c->credit_withheld && !over)
        c->request_at = now_of(c); /* the client waited for us, not we for it */
    c->credit_withheld = over;
    if (c->unconsumed_conn && !over) {
        nghttp2_session_consume_connection(c->ng, c->unconsumed_conn);
        c->unconsumed_conn = 0;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Defences: a peer that makes the server work for nothing (Rapid Reset, MadeYouReset, floods of
 * empty or useless frames) spends a per-connection budget of "glitches"; past it the connection
 * ends with GOAWAY(ENHANCE_YOUR_CALM). The budget is a leaky bucket: NOOK_OPT_H2_MAX_GLITCHES at
 * once, refilled at that many per GLITCH_WINDOW_MS, so a long-lived honest connection that
 * cancels a stream now and then never runs out.
 * ------------------------------------------------------------------------------------------- */

/* From now on the connection only says goodbye: it closes once its GOAWAY is out, or after
 * one fixed grace period if the peer reads nothing (frames it sends meanwhile do not extend
 * it). */
static void start_closing(h2_conn *c)
{
    if (c->calm)
        return;
    c->calm = true;
    io_timer_set(c->s.loop, &c->timer, CLOSE_LINGER_MS);
}

/* Ends a connection whose peer misbehaves: GOAWAY with `code`, nothing more is read, and the
 * connection closes once the GOAWAY is out (or CLOSE_LINGER_MS later if the peer reads
 * nothing). */
static void end_connection(h2_conn *c, uint32_t code, const char *why)
{
    if (c->calm)
        return;
    start_closing(c);
    core_log(c->w, NOOK_LOG_WARN, "%.*s: h2: %s: GOAWAY(%s)", (int)c->peer_len, c->peer, why,
             code == NGHTTP2_ENHANCE_YOUR_CALM ? "ENHANCE_YOUR_CALM"
                                               : nghttp2_http2_strerror(code));
    nghttp2_session_terminate_session(c->ng, code);
    c->draining = true;
    schedule(c);
}

static void calm_down(h2_conn *c, const char *why)
{
    end_connection(c, NGHTTP2_ENHANCE_YOUR_CALM, why);
}

static void glitches(h2_conn *c, const char *what, uint64_t n)
{
    uint64_t max = opt(c, NOOK_OPT_H2_MAX_GLITCHES);
    if (max == 0 || c->calm)
        return;
    uint64_t now = io_loop_now(c->s.loop);
    uint64_t elapsed = now - c->glitch_at;
    if (elapsed > GLITCH_WINDOW_MS)
        elapsed = GLITCH_WINDOW_MS;
    uint64_t leak = elapsed * max;
    c->glitch_level = leak >= c->glitch_level ? 0 : c->glitch_level - leak;
    c->glitch_at = now;
    c->glitch_level += n * GLITCH_WINDOW_MS;
    if (c->glitch_level > max * GLITCH_WINDOW_MS) {
        char why[96];
        snprintf(why, sizeof why, "too many useless frames (the last: %s)", what);
        calm_down(c, why);
    }
}

static void glitch(h2_conn *c, const char *what) { glitches(c, what, 1); }

/* CONTINUATION frames allowed after a HEADERS frame: enough for a header list at the advertised
 * limit in frames of the advertised size, twice over (HPACK may expand), and never fewer than
 * nghttp2's own default. */
static size_t max_continuations(const h2_conn *c)
{
    size_t per_block =
        opt(c, NOOK_OPT_H2_MAX_HEADER_LIST_SIZE) / opt(c, NOOK_OPT_H2_MAX_FRAME_SIZE);
    size_t n = 2 * per_block + 2;
    return n < MIN_CONTINUATIONS ? MIN_CONTINUATIONS : n;
}

static void remember_reset(h2_conn *c, int32_t id)
{
    c->reset_ring[c->reset_next++ % RESET_RING] = id;
}

static bool reset_lately(const h2_conn *c, int32_t id)
{
    for (unsigned i = 0; i < RESET_RING; i++)
        if (c->reset_ring[i] == id)
            return true;
    return false;
}

/* A stream the client opened that nghttp2 no longer has open: frames on it are dropped. */
static bool closed_stream(const h2_conn *c, int32_t id)
{
    return id > 0 && (id & 1) && id <= c->max_stream_id && !nghttp2_session_find_stream(c->ng, id);
}

/* Counts what a frame header alone reveals; called for every frame, before nghttp2 reads it
 * (feed_frames), including the frames nghttp2 ignores without telling us. */
static void screen_frame(h2_conn *c, const nghttp2_frame_hd *hd)
{
    switch (hd->type) {
    case NGHTTP2_DATA:
        /* Dropped by nghttp2 (its window is credited back at once): free to send, unless
         * counted. An honest client has at most a window's worth in flight after a reset. */
        if (closed_stream(c, hd->stream_id))
            glitch(c, "DATA on a closed stream");
        else if (hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_STREAM))
            glitch(c, "empty DATA");
        break;
    case NGHTTP2_HEADERS:
        c->block_bytes = hd->length;
        c->block_frames = 0;
        if (hd->length == 0)
            glitch(c, "empty HEADERS");
        else if (closed_stream(c, hd->stream_id) && reset_lately(c, hd->stream_id))
            glitch(c, "HEADERS on a closed stream"); /* decoded for HPACK, then dropped */
        break;
    case NGHTTP2_CONTINUATION:
        c->block_bytes += hd->length;
        if (hd->length == 0)
            glitch(c, "empty CONTINUATION");
        /* nghttp2 1.52 only bounds this when Debian's backport is there; this works anyway. */
        if (++c->block_frames > max_continuations(c) ||
            c->block_bytes >
                2 * opt(c, NOOK_OPT_H2_MAX_HEADER_LIST_SIZE) + opt(c, NOOK_OPT_H2_MAX_FRAME_SIZE))
            calm_down(c, "header block too long (CONTINUATION flood)");
        break;
    case NGHTTP2_PRIORITY:
        glitch(c, "PRIORITY"); /* RFC 9113 deprecates it; nook ignores it */
        break;
    case NGHTTP2_RST_STREAM:
        glitch(c, "RST_STREAM from the client");
        break;
    case NGHTTP2_SETTINGS:
        if (!(hd->flags & NGHTTP2_FLAG_ACK))
            glitch(c, "SETTINGS");
        break;
    case NGHTTP2_PING:
        if (!(hd->flags & NGHTTP2_FLAG_ACK))
            glitch(c, "PING");
        break;
    case NGHTTP2_WINDOW_UPDATE:
        /* An honest client opens windows as it receives data: each DATA frame sent and each
         * request earns credit for a couple of updates. Updates beyond that are a flood. */
        if (c->window_credit > 0)
            c->window_credit--;
        else
            glitch(c, "WINDOW_UPDATE");
        break;
    case NGHTTP2_GOAWAY:
    case NGHTTP2_PUSH_PROMISE: /* a connection error from a client: nghttp2 ends the session */
        break;
    default:
        glitch(c, "unknown frame type");
        break;
    }
}

/* A whole frame header has arrived: screen it, and note the header blocks it begins or ends.
 * Returns the header. */
static nghttp2_frame_hd begin_frame(h2_conn *c)
{
    h2_framing *rx = &c->rx;
    const uint8_t *b = rx->hd;
    nghttp2_frame_hd hd = {
        .length = (size_t)b[0] << 16 | (size_t)b[1] << 8 | b[2],
        .stream_id = (int32_t)(((uint32_t)b[5] & 0x7f) << 24 | (uint32_t)b[6] << 16 |
                               (uint32_t)b[7] << 8 | b[8]),
        .type = b[3],
        .flags = b[4],
    };
    rx->payload_left = hd.length;
    rx->ends_block = (hd.type == NGHTTP2_HEADERS || hd.type == NGHTTP2_CONTINUATION) &&
                     (hd.flags & NGHTTP2_FLAG_END_HEADERS);
    if (hd.type == NGHTTP2_HEADERS)
        c->block_since = now_of(c);
    screen_frame(c, &hd);
    return hd;
}

/* RFC 9113 §6.9.2: a change of SETTINGS_INITIAL_WINDOW_SIZE that takes any stream's send window
 * past 2^31-1 is a connection error (FLOW_CONTROL_ERROR); nghttp2 1.52 resets the stream
 * instead. So a SETTINGS frame that arrives while streams are open is read here, entry by entry,
 * before nghttp2 applies it. Every window moves by the same amount, so the largest one is the
 * one to watch. Called once the frames ahead of it have reached nghttp2. */
static void window_settings_begin(h2_conn *c)
{
    h2_framing *rx = &c->rx;
    int64_t top = -1;
    for (h2_stream *st = c->streams.next; st != &c->streams; st = st->next) {
        int64_t w = nghttp2_session_get_stream_remote_window_size(c->ng, st->id);
        top = w > top ? w : top;
    }
    rx->in_settings = top >= 0;
    rx->entry_len = 0;
    rx->win_top = top;
    rx->win_initial =
        nghttp2_session_get_remote_settings(c->ng, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE);
}

/* A SETTINGS frame with entries, as RFC 9113 §6.5 has it: window_settings reads it. Any other
 * SETTINGS frame is nghttp2's to refuse, or to take as it is. */
static bool watched_settings(const nghttp2_frame_hd *hd)
{
    return hd->type == NGHTTP2_SETTINGS && !(hd->flags & NGHTTP2_FLAG_ACK) &&
           hd->stream_id == 0 && hd->length && hd->length % SETTINGS_ENTRY == 0;
}

/* Takes the SETTINGS payload bytes p[0..n), the frame's last ones once rx->payload_left is 0;
 * false once a window would overflow (the connection is then ending). */
static bool window_settings(h2_conn *c, const uint8_t *p, size_t n)
{
    h2_framing *rx = &c->rx;
    rx->in_settings = rx->payload_left > 0;
    for (size_t i = 0; i < n; i++) {
        rx->entry[rx->entry_len++] = p[i];
        if (rx->entry_len < SETTINGS_ENTRY)
            continue;
        rx->entry_len = 0;
        const uint8_t *e = rx->entry;
        uint32_t id = (uint32_t)e[0] << 8 | e[1];
        uint32_t v = (uint32_t)e[2] << 24 | (uint32_t)e[3] << 16 | (uint32_t)e[4] << 8 | e[5];
        if (id != NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE || v > NGHTTP2_MAX_WINDOW_SIZE)
            continue; /* a value over the maximum is nghttp2's to refuse */
        rx->win_top += (int64_t)v - rx->win_initial;
        rx->win_initial = v;
        if (rx->win_top > NGHTTP2_MAX_WINDOW_SIZE) {
            rx->in_settings = false;
            end_connection(c, NGHTTP2_FLOW_CONTROL_ERROR,
                           "SETTINGS_INITIAL_WINDOW_SIZE takes a stream window past 2^31-1");
            return false;
        }
    }
    return true;
}

/* Screens every frame header in the input, then gives all of it to nghttp2 in one call (a call
 * per frame costs several percent of a small request's instructions). Each header is screened
 * before nghttp2 reads any frame of this input, so a stream that a frame ahead of it in the same
 * input closes still looks open: nghttp2 answers frames on streams it closed recently itself,
 * and the next input is screened against the new state. A SETTINGS frame with entries is the
 * exception: what comes before it goes to nghttp2 first (window_settings_begin). Returns the
 * bytes used, 0 once the connection is ending for misbehaviour (the rest is not worth reading),
 * or nghttp2's error. */
static ssize_t feed_frames(h2_conn *c, const uint8_t *p, size_t n)
{
    h2_framing *rx = &c->rx;
    size_t fed = 0; /* bytes of p already given to nghttp2 */
    for (size_t pos = 0; pos < n;) {
        size_t k = n - pos;
        if (rx->preface_left) {
            k = k < rx->preface_left ? k : rx->preface_left;
            rx->preface_left -= k;
        } else if (rx->payload_left) {
            k = k < rx->payload_left ? k : rx->payload_left;
            rx->payload_left -= k;
            if (rx->in_settings && !window_settings(c, p + pos, k))
                return 0; /* nghttp2 sees none of this SETTINGS frame */
        } else {
            size_t want = sizeof rx->hd - rx->hd_len;
            k = k < want ? k : want;
            memcpy(rx->hd + rx->hd_len, p + pos, k);
            rx->hd_len += k;
            if (rx->hd_len == sizeof rx->hd) {
                rx->hd_len = 0;
                nghttp2_frame_hd hd = begin_frame(c);
                if (c->calm)
                    return 0; /* over budget: nghttp2 sees none of it */
                if (watched_settings(&hd)) {
                    /* The frames before it go first, so that the windows are known (its header
                     * may have begun in the last input, which nghttp2 has had). */
                    size_t start = pos + k >= FRAME_HEAD ? pos + k - FRAME_HEAD : fed;
                    ssize_t r =
                        start > fed ? nghttp2_session_mem_recv(c->ng, p + fed, start - fed) : 0;
                    if (r < 0)
                        return r;
                    fed = start;
                    if (c->calm)
                        return 0;
                    window_settings_begin(c);
                }
            }
        }
        pos += k;
        if (!rx->preface_left && !rx->hd_len && !rx->payload_left && rx->ends_block) {
            rx->ends_block = false;
            c->block_since = 0; /* the header block is complete */
        }
    }
    ssize_t r = nghttp2_session_mem_recv(c->ng, p + fed, n - fed);
    return r < 0 ? r : (ssize_t)fed + r;
}

static void earn_window_credit(h2_conn *c, uint32_t n)
{
    c->window_credit = c->window_credit + n > WINDOW_CREDIT_MAX ? WINDOW_CREDIT_MAX
                                                                : c->window_credit + n;
}

/* ---------------------------------------------------------------------------------------------
 * Response side: core_stream_ops
 * ------------------------------------------------------------------------------------------- */

static int submit_fields(h2_conn *c, int32_t id, const core_hdr *h, size_t n);

/* A large DATA frame's payload is not copied into nghttp2's frame buffer: read_body says how
 * much the frame carries (NO_COPY) and send_data, called by nghttp2 right after within the same
 * nghttp2_session_mem_send, queues the frame header and the payload from the stream's buffer
 * straight into the connection's output. A small one is copied: the callback costs more. */
#define NO_COPY_MIN 1024

static ssize_t read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)ng;
    (void)ud;
    h2_stream *st = src->ptr;
    size_t avail = io_buf_size(&st->out);
    size_t n = avail < length ? avail : length;
    if (n >= NO_COPY_MIN) {
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY; /* consumed by send_data */
    } else if (n) {
        memcpy(buf, io_buf_head(&st->out), n);
        io_buf_consume(&st->out, n);
        st->c->queued_out -= n;
    }
    if (n == avail) {
        if (st->body_end) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            st->eof_sent = true;
            /* Trailers end the stream instead of the last DATA frame. */
            if (st->ntrailers && st->ex && submit_fields(st->c, id, st->trailers, st->ntrailers) == 0)
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        } else if (n == 0) {
            st->deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

/* Appends to the connection's output; the write timeout counts from when it stops being empty. */
static int queue_output(h2_conn *c, const void *p, size_t n)
{
    if (io_buf_size(&c->s.out) == 0)
        c->written_at = now_of(c); /* output starts to wait for the socket */
    return io_stream_queue(&c->s, p, n);
}

static int send_data(nghttp2_session *ng, nghttp2_frame *f, const uint8_t *framehd,
                     size_t length, nghttp2_data_source *src, void *ud)
{
    (void)ng;
    h2_conn *c = ud;
    h2_stream *st = src->ptr;
    if (f->data.padlen > 0 || length > io_buf_size(&st->out))
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* no padding is asked for; the bytes are there */
    /* Output is taken in bounded rounds (pump_output); nghttp2 asks again with the same frame
     * once the connection's output has drained. */
    if (io_buf_size(&c->s.out) >= OUTPUT_CHUNK_MAX)
        return NGHTTP2_ERR_WOULDBLOCK;
    if (queue_output(c, framehd, FRAME_HEAD) != NOOK_OK ||
        queue_output(c, io_buf_head(&st->out), length) != NOOK_OK)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    io_buf_consume(&st->out, length);
    c->queued_out -= length;
    return 0;
}

/* RFC 9113 §8.2.2: connection-specific fields must not appear in HTTP/2 ("te" only as
 * "trailers"). */
static bool connection_specific(nook_str name, nook_str value)
{
    switch (name.len) { /* by length first: this runs for every response field */
    case 2:
        return io_caseeq(name.ptr, "te", 2) &&
               !(value.len == 8 && io_caseeq(value.ptr, "trailers", 8));
    case 7:
        return io_caseeq(name.ptr, "upgrade", 7);
    case 10:
        return io_caseeq(name.ptr, "connection", 10) || io_caseeq(name.ptr, "keep-alive", 10);
    case 16:
        return io_caseeq(name.ptr, "proxy-connection", 16);
    case 17:
        return io_caseeq(name.ptr, "transfer-encoding", 17);
    default:
        return false;
    }
}

/* Converts fields for HTTP/2: names lower-cased into `text` (room for every name's bytes),
 * connection-specific fields dropped. With NO_COPY flags the values are written there too (room
 * for them as well), and text must outlive the frame; otherwise nghttp2 copies both. Returns how
 * many entries were written to nv. */
static size_t append_fields(nghttp2_nv *nv, char *text, const core_hdr *h, size_t n,
                            uint8_t flags)
{
    size_t nnv = 0;
    for (size_t i = 0; i < n; i++) {
        if (connection_specific(h[i].name, h[i].value))
            continue;
        char *name = text;
        for (size_t k = 0; k < h[i].name.len; k++)
            text[k] = (char)io_lower((unsigned char)h[i].name.ptr[k]);
        text += h[i].name.len;
        const char *value = h[i].value.ptr;
        if (flags & NGHTTP2_NV_FLAG_NO_COPY_VALUE) {
            if (h[i].value.len)
                memcpy(text, value, h[i].value.len);
            value = text;
            text += h[i].value.len;
        }
        nv[nnv++] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, h[i].name.len,
                                 h[i].value.len, flags};
    }
    return nnv;
}

static int op_send_head(void *stream, int status, const core_hdr *h, size_t n, int64_t clen,
                        bool end)
{
    h2_stream *st = stream;
    h2_conn *c = st->c;
    if (c->close_now)
        return NOOK_ECLOSED;
    /* The head's text (status, length, lower-case names and, here, values) goes into the
     * stream when it fits, and nghttp2 keeps pointers to it: the stream outlives the frame, as
     * nghttp2 drops unread the queued frames of a stream that closes. A bigger head is written
     * to worker scratch (names only) and nghttp2 copies it. */
    size_t text_len = 3 + 20;
    for (size_t i = 0; i < n; i++)
        text_len += h[i].name.len + h[i].value.len;
    bool in_stream = text_len <= sizeof st->head_text;
    uint8_t flags = in_stream ? NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE
                              : NGHTTP2_NV_FLAG_NONE;
    size_t nv_cap = n + 2;
    char *scratch = core_worker_scratch(c->w, nv_cap * sizeof(nghttp2_nv) +
                                                  (in_stream ? 0 : text_len));
    if (!scratch)
        return NOOK_ENOMEM;
    nghttp2_nv *nv = (nghttp2_nv *)scratch;
    char *text = in_stream ? st->head_text : scratch + nv_cap * sizeof(nghttp2_nv);
    size_t nnv = 0;

    /* The two fixed names are literals: never copied. */
    uint8_t fixed_name = flags | NGHTTP2_NV_FLAG_NO_COPY_NAME;
    char *status_text = text;
    io_fmt_status(status_text, status);
    text += 3;
    nv[nnv++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status_text, 7, 3, fixed_name};
    char *len_text = text;
    bool bodiless = status == 204 || status == 304;
    if (clen >= 0 && !bodiless) {
        size_t l = io_fmt_dec(len_text, (uint64_t)clen);
        text += l;
        nv[nnv++] = (nghttp2_nv){(uint8_t *)"content-length", (uint8_t *)len_text, 14, l,
                                 fixed_name};
    }
    nnv += append_fields(nv + nnv, text, h, n, flags);
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_body};
    if (end)
        st->eof_sent = true;
    int rv = nghttp2_submit_response(c->ng, st->id, nv, nnv, end ? NULL : &prd);
    if (rv != 0) {
        core_log(c->w, NOOK_LOG_WARN, "%.*s: h2 stream %d: cannot submit response: %s",
                 (int)c->peer_len, c->peer, st->id, nghttp2_strerror(rv));
        return rv == NGHTTP2_ERR_NOMEM ? NOOK_ENOMEM : NOOK_ECLOSED;
    }
    schedule(c);
    return NOOK_OK;
}

static int op_send_body(void *stream, const void *p, size_t n, bool end)
{
    h2_stream *st = stream;
    h2_conn *c = st->c;
    if (c->close_now)
        return NOOK_ECLOSED;
    if (n) {
        /* Every stream's queue counts toward one cap, so a client that opens many streams
         * and reads none of them cannot grow memory without limit. */
        if (c->queued_out + n > opt(c, NOOK_OPT_H2_MAX_CONN_OUTPUT)) {
            /* A whole response that cannot be queued would leave its stream hanging: break
             * it off. A streaming writer gets the error and may try again on WRITABLE. The
             * reset is the client's doing (it does not read), so unlike other INTERNAL_ERROR
             * resets it costs a glitch: requests whose answers are thrown away are not free. */
            if (end) {
                glitch(c, "a response discarded for want of room (the client does not read)");
                reset_stream(c, st->id, NGHTTP2_INTERNAL_ERROR);
            }
            return NOOK_EFULL;
        }
        int rc = io_buf_append(&st->out, pool_of(c), p, n, SIZE_MAX);
        if (rc != NOOK_OK)
            return rc;
        c->queued_out += n;
    }
    if (end)
        st->body_end = true;
    if (st->deferred) {
        st->deferred = false;
        nghttp2_session_resume_data(c->ng, st->id);
    }
    schedule(c);
    return NOOK_OK;
}

/* Submits a trailer HEADERS frame: lower-case names, connection-specific fields dropped. */
static int submit_fields(h2_conn *c, int32_t id, const core_hdr *h, size_t n)
{
    size_t names = 0;
    for (size_t i = 0; i < n; i++)
        names += h[i].name.len;
    char *scratch = core_worker_scratch(c->w, n * sizeof(nghttp2_nv) + names);
    if (!scratch)
        return NGHTTP2_ERR_NOMEM;
    nghttp2_nv *nv = (nghttp2_nv *)scratch;
    size_t nnv = append_fields(nv, scratch + n * sizeof(nghttp2_nv), h, n, NGHTTP2_NV_FLAG_NONE);
    return nghttp2_submit_trailer(c->ng, id, nv, nnv);
}

static int op_send_trailers(void *stream, const core_hdr *h, size_t n)
{
    h2_stream *st = stream;
    st->trailers = h;
    st->ntrailers = n;
    return NOOK_OK;
}

static size_t op_queued(void *stream)
{
    h2_stream *st = stream;
    return io_buf_size(&st->out);
}

static void op_abort(void *stream)
{
    h2_stream *st = stream;
    reset_stream(st->c, st->id, NGHTTP2_INTERNAL_ERROR);
}

static void op_resume_body(void *stream)
{
    h2_stream *st = stream;
    st->paused = false;
    st->c->request_at = now_of(st->c); /* the pause was the handler's, not the client's */
    schedule(st->c); /* deliver_held runs from the connection's own context */
}

static const core_stream_ops h2_ops = {.send_head = op_send_head,
                                       .send_body = op_send_body,
                                       .send_trailers = op_send_trailers,
                                       .queued = op_queued,
                                       .abort = op_abort,
                                       .resume_body = op_resume_body};

/* ---------------------------------------------------------------------------------------------
 * Request side: nghttp2 callbacks
 * ------------------------------------------------------------------------------------------- */

/* The codec answers a request it cannot pass on (too large), then stops reading it. */
static void refuse(h2_stream *st, int status)
{
    h2_conn *c = st->c;
    core_log(c->w, NOOK_LOG_INFO, "%.*s: h2 stream %d: rejecting request: %d", (int)c->peer_len,
             c->peer, st->id, status);
    /* An oversized header list costs one glitch per limit's worth of decoded bytes: an HPACK
     * bomb (a few bytes on the wire, megabytes decoded) spends the budget fast. */
    if (status == 431)
        glitches(c, "a header list over the advertised limit",
                 1 + st->header_bytes / opt(c, NOOK_OPT_H2_MAX_HEADER_LIST_SIZE));
    cancel_exchange(st);
    st->refused = true;
    char code[4];
    snprintf(code, sizeof code, "%03d", status);
    nghttp2_nv nv[] = {{(uint8_t *)":status", (uint8_t *)code, 7, 3, NGHTTP2_NV_FLAG_NONE},
                       {(uint8_t *)"content-length", (uint8_t *)"0", 14, 1, NGHTTP2_NV_FLAG_NONE}};
    /* §8.1: a complete response before the request is; once it is out, RST_STREAM(NO_ERROR)
     * says the rest of the request is not wanted (on_frame_send). Resetting first would drop
     * the response. */
    nghttp2_submit_response(c->ng, st->id, nv, 2, NULL);
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    h2_conn *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (f->headers.cat != NGHTTP2_HCAT_REQUEST) {
        /* Trailers: a field section of their own, counted against the same limits. */
        h2_stream *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
        if (st) {
            st->header_bytes = 0;
            st->nheaders = 0;
        }
        c->block_stream = st;
        return 0;
    }
    c->active_at = c->request_at = now_of(c);
    h2_stream *st = stream_new(c, f->hd.stream_id);
    if (st) {
        st->head_wire = f->hd.length;
        st->ex = core_exchange_new(c->w, &h2_ops, st, (nook_str){c->peer, c->peer_len});
    }
    if (st && st->ex)
        core_exchange_set_protocol(st->ex, "HTTP/2", c->s.tr != &io_transport_plain);
    if (!st || !st->ex) {
        if (st)
            stream_free(st);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    }
    nghttp2_session_set_stream_user_data(ng, f->hd.stream_id, st);
    c->block_stream = st;
    return 0;
}

/* The stream with this id. The fields of a header block and then its end arrive one after
 * another, so the block's stream is checked first, without nghttp2's lookup. */
static h2_stream *stream_of(nghttp2_session *ng, h2_conn *c, int32_t id)
{
    h2_stream *st = c->block_stream;
    return st && st->id == id ? st : nghttp2_session_get_stream_user_data(ng, id);
}

static nook_str keep(h2_stream *st, const uint8_t *p, size_t n)
{
    char *q = nook_req_alloc(st->ex, n + 1);
    if (!q)
        return (nook_str){NULL, 0};
    memcpy(q, p, n);
    q[n] = '\0';
    return (nook_str){q, n};
}

/* Request trailers are not passed on, but they cost what a head costs: over a limit the stream
 * is reset (a response may be under way, so no 431), the client is charged as for a 431 (the
 * reset's code adds the "1 +": see on_frame_send), and the handler, if any, is cancelled. */
static void count_trailer(h2_conn *c, h2_stream *st)
{
    size_t limit = opt(c, NOOK_OPT_H2_MAX_HEADER_LIST_SIZE);
    if (st->trailers_refused ||
        (st->header_bytes <= limit && ++st->nheaders <= opt(c, NOOK_OPT_MAX_HEADERS)))
        return;
    st->trailers_refused = true;
    core_log(c->w, NOOK_LOG_INFO, "%.*s: h2 stream %d: trailers over the limit: reset",
             (int)c->peer_len, c->peer, st->id);
    glitches(c, "trailers over the advertised limit", st->header_bytes / limit);
    cancel_exchange(st);
    reset_stream(c, st->id, NGHTTP2_ENHANCE_YOUR_CALM);
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud)
{
    (void)flags;
    h2_conn *c = ud;
    h2_stream *st = stream_of(ng, c, f->hd.stream_id);
    if (!st || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    /* nghttp2 1.52 advertises SETTINGS_MAX_HEADER_LIST_SIZE but does not enforce it. */
    st->header_bytes += namelen + valuelen + HEADER_OVERHEAD;
    if (st->header_bytes > HPACK_BOMB_FACTOR * opt(c, NOOK_OPT_H2_MAX_HEADER_LIST_SIZE)) {
        /* A few bytes on the wire that decode to this much are an attack, not a mistake:
         * stop decoding now (a callback failure ends nghttp2's input processing). */
        calm_down(c, "HPACK bomb (a header list decoding far past the limit)");
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (f->headers.cat != NGHTTP2_HCAT_REQUEST) {
        count_trailer(c, st);
        return 0;
    }
    if (!st->ex || st->refuse_status)
        return 0; /* already over a limit: the rest is decoded (HPACK state) but dropped */
    if (st->header_bytes > opt(c, NOOK_OPT_H2_MAX_HEADER_LIST_SIZE) ||
        ++st->nheaders > opt(c, NOOK_OPT_MAX_HEADERS)) {
        st->refuse_status = 431; /* answered once the header block is complete */
        return 0;
    }
    if (namelen > 0 && name[0] == ':') {
        nook_str v = keep(st, value, valuelen);
        if (namelen == 7 && memcmp(name, ":method", 7) == 0)
            st->method = v;
        else if (namelen == 5 && memcmp(name, ":path", 5) == 0)
            st->path = v;
        else if (namelen == 10 && memcmp(name, ":authority", 10) == 0)
            st->authority = v;
        return 0;
    }
    if (namelen == 4 && memcmp(name, "host", 4) == 0)
        st->have_host = true;
    if (core_exchange_add_header(st->ex, (nook_str){(const char *)name, namelen},
                                 (nook_str){(const char *)value, valuelen}) != NOOK_OK)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

/* The request head is complete: give the exchange its target and Host. */
static int finish_head(h2_stream *st)
{
    if (!st->method.ptr || !st->path.ptr)
        return NOOK_EINVAL; /* CONNECT (no :path) is not served */
    int rc = core_exchange_set_target(st->ex, st->method, st->path);
    if (rc == NOOK_OK && st->authority.ptr && !st->have_host)
        rc = core_exchange_add_header(st->ex, (nook_str){"host", 4}, st->authority);
    return rc;
}

static void body_end(h2_stream *st)
{
    st->body_done = true;
    st->dispatched = true;
    core_exchange_body_end(st->ex);
}

/* Gives request body bytes to the core; a streaming handler may pause (NOOK_AGAIN). */
static void deliver(h2_stream *st, const uint8_t *data, size_t len)
{
    int rc = core_exchange_body(st->ex, data, len);
    if (rc == NOOK_OK && !st->dispatched) {
        /* A buffering route's handler has not run: the body stays until its response ends. */
        st->body_held += len;
        st->c->body_held += len;
    }
    if (rc == NOOK_AGAIN)
        st->paused = true;
    else if (rc != NOOK_OK)
        refuse(st, rc == NOOK_ELIMIT ? 413 : 503);
}

/* RFC 9113 §6.8: after the client's GOAWAY(NO_ERROR) the streams it opened still finish
 * (nghttp2 takes no new ones and ends the session when they are done). A GOAWAY with an error
 * says the client has given up on all of them: their handlers are cancelled (NOOK_ON_CANCEL),
 * and the connection closes once our own GOAWAY is out. */
static void peer_goaway(h2_conn *c, uint32_t code)
{
    if (code == NGHTTP2_NO_ERROR)
        return;
    core_log(c->w, NOOK_LOG_INFO, "%.*s: h2: the client gave up: GOAWAY(%s)", (int)c->peer_len,
             c->peer, nghttp2_http2_strerror(code));
    for (h2_stream *st = c->streams.next; st != &c->streams; st = st->next)
        stream_release_exchange(st);
    nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR);
    c->draining = true;
    schedule(c);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    h2_conn *c = ud;
    if (f->hd.type == NGHTTP2_SETTINGS && (f->hd.flags & NGHTTP2_FLAG_ACK))
        c->settings_acked = true;
    if (f->hd.type == NGHTTP2_GOAWAY)
        peer_goaway(c, f->goaway.error_code);
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
        earn_window_credit(c, 2);
    h2_stream *st = stream_of(ng, c, f->hd.stream_id);
    if (st && f->hd.type == NGHTTP2_DATA) {
        st->unconsumed += st->frame_bytes;
        st->frame_bytes = 0;
    }
    if (st && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        st->remote_ended = true;
    if (st && st->malformed && f->hd.type == NGHTTP2_HEADERS) {
        st->malformed = false;
        cancel_exchange(st);
        reset_stream(c, st->id, NGHTTP2_PROTOCOL_ERROR);
        return 0;
    }
    if (!st || !st->ex || st->body_done)
        return 0;
    if (st->refuse_status) {
        refuse(st, st->refuse_status);
        return 0;
    }
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        if (finish_head(st) != NOOK_OK) {
            cancel_exchange(st);
            reset_stream(c, st->id, NGHTTP2_PROTOCOL_ERROR);
            return 0;
        }
        /* A streaming route's handler runs now, before the body. */
        st->dispatched = core_exchange_head_done(st->ex);
        if (!st->ex)
            return 0;
    }
    if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        if (st->paused)
            st->end_held = true; /* after the held data */
        else
            body_end(st);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    h2_conn *c = ud;
    h2_stream *st = nghttp2_session_get_stream_user_data(ng, id);
    /* Credit flow control only for complete DATA frames, after the whole input batch
     * (consume_received): crediting as bytes arrive would let a peer send past the window it
     * was given, even within a single frame. */
    if (!st) {
        c->unconsumed_conn += len;
        return 0;
    }
    if (len > 0)
        c->request_at = now_of(c); /* the request progresses */
    if (st->paused && st->ex && !st->body_done) {
        /* Held, not credited: the peer runs out of window, so this stays bounded by it. */
        if (io_buf_append(&st->held, pool_of(c), data, len, SIZE_MAX) != NOOK_OK)
            refuse(st, 503);
        return 0;
    }
    st->frame_bytes += len;
    if (!st->ex || st->body_done)
        return 0;
    deliver(st, data, len);
    return 0;
}

/* RFC 9113 §5.1.1: a client's new stream id must exceed every id it used before; opening one
 * implicitly closes the lower idle ones. nghttp2 ignores HEADERS on such a stream, so the
 * connection error is raised here — except for streams reset lately, whose trailers may
 * legitimately still be on their way. */
static int on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *ud)
{
    h2_conn *c = ud;
    if (hd->type != NGHTTP2_HEADERS || hd->stream_id <= 0 || (hd->stream_id & 1) == 0)
        return 0;
    if (hd->stream_id > c->max_stream_id) {
        c->max_stream_id = hd->stream_id;
        return 0;
    }
    if (!nghttp2_session_find_stream(ng, hd->stream_id) && !reset_lately(c, hd->stream_id))
        nghttp2_session_terminate_session(ng, NGHTTP2_PROTOCOL_ERROR);
    return 0;
}

/* After a codec-made answer (413, 431) has gone out whole, the rest of the request is refused
 * with RST_STREAM(NO_ERROR) (§8.1). */
static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    h2_conn *c = ud;
    if (f->hd.type == NGHTTP2_RST_STREAM) {
        remember_reset(c, f->hd.stream_id);
        /* MadeYouReset: frames that make the server reset a stream cost as much as the
         * client's own resets. NO_ERROR (after a codec answer) and INTERNAL_ERROR (the
         * handler's or our own failure) are not the client's doing. A request head that was
         * refused this way was still decoded whole (HPACK must stay in step), so its size
         * adds to the cost: a block of thousands of empty fields is not one glitch. */
        uint32_t code = f->rst_stream.error_code;
        if (code != NGHTTP2_NO_ERROR && code != NGHTTP2_INTERNAL_ERROR) {
            h2_stream *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
            size_t head = st && !st->dispatched ? st->head_wire : 0;
            glitches(c, "a stream reset the client caused", 1 + head / HEAD_BYTES_PER_GLITCH);
        }
        return 0;
    }
    if (f->hd.type == NGHTTP2_DATA) {
        earn_window_credit(c, 2);
        c->stalled_since = 0; /* progress */
    }
    if (f->hd.type != NGHTTP2_HEADERS || !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    h2_stream *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (st && st->refused && !st->remote_ended)
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    return 0;
}

/* An invalid regular field (an empty name, a byte a name or value may not hold): the request is
 * malformed (RFC 9113 §8.2.1) and its stream is reset when the header block ends. Each such
 * field costs a glitch as it is decoded, so a block of thousands of them ends the connection
 * part-way instead of being decoded whole first; once over budget, nghttp2 stops at once. */
static int on_invalid_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                             size_t namelen, const uint8_t *value, size_t valuelen,
                             uint8_t flags, void *ud)
{
    (void)name;
    (void)namelen;
    (void)value;
    (void)valuelen;
    (void)flags;
    h2_conn *c = ud;
    glitch(c, "an invalid header field");
    if (c->calm)
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* the connection is ending: decode no further */
    h2_stream *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (st)
        st->malformed = true;
    return 0;
}

static int on_invalid_frame(nghttp2_session *ng, const nghttp2_frame *f, int err, void *ud)
{
    (void)ng;
    (void)f;
    (void)err;
    glitch(ud, "an invalid frame");
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud)
{
    h2_conn *c = ud;
    if (error_code != NGHTTP2_NO_ERROR)
        remember_reset(c, id);
    h2_stream *st = nghttp2_session_get_stream_user_data(ng, id);
    if (!st)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    stream_release_exchange(st);
    stream_free(st);
    return 0; /* never fatal here */
}

/* ---------------------------------------------------------------------------------------------
 * I/O
 * ------------------------------------------------------------------------------------------- */

/* Streams whose request is still arriving: they hold memory, so silence on them is bounded. */
static bool receiving(const h2_conn *c)
{
    for (const h2_stream *st = c->streams.next; st != &c->streams; st = st->next)
        if (st->ex && !st->remote_ended && !st->paused)
            return true;
    return false;
}

/* Resumed streams get what was held while they were paused (credited as it is delivered),
 * then the end of the body if it came meanwhile. */
static void deliver_held(h2_conn *c)
{
    for (h2_stream *st = c->streams.next; st != &c->streams; st = st->next) {
        while (!st->paused && st->ex && io_buf_size(&st->held) > 0) {
            size_t n = io_buf_size(&st->held);
            if (n > 16384)
                n = 16384;
            st->unconsumed += n;
            const uint8_t *p = (const uint8_t *)io_buf_head(&st->held);
            io_buf_consume(&st->held, n);
            deliver(st, p, n);
        }
        if (!st->paused && st->end_held && st->ex && io_buf_size(&st->held) == 0) {
            st->end_held = false;
            body_end(st);
        }
    }
    consume_received(c);
}

/* Notes when response data starts waiting for window the client does not open (on the stream
 * or the connection); any DATA frame sent ends the stall (on_frame_send). */
static void update_stall(h2_conn *c)
{
    bool waiting = false;
    if (c->queued_out > 0 && nghttp2_session_get_remote_window_size(c->ng) <= 0)
        waiting = true;
    for (h2_stream *st = c->streams.next; !waiting && st != &c->streams; st = st->next)
        if (io_buf_size(&st->out) > 0 && nghttp2_session_find_stream(c->ng, st->id) &&
            nghttp2_session_get_stream_remote_window_size(c->ng, st->id) <= 0)
            waiting = true;
    if (!waiting) {
        c->stalled_since = 0;
    } else if (c->stalled_since == 0) {
        uint64_t now = io_loop_now(c->s.loop);
        c->stalled_since = now ? now : 1;
    }
}

/* What a connection's next deadline is for. */
typedef enum { DUE_NONE, DUE_SETTINGS, DUE_STALL, DUE_NAP, DUE_IDLE, DUE_TIMEOUT } h2_due;

static void consider(uint64_t *at, h2_due *what, uint64_t from, int64_t ms, h2_due why)
{
    if (from == 0 || ms <= 0)
        return; /* not running, or the option is off */
    uint64_t d = from + (uint64_t)ms;
    if (*at == 0 || d < *at) {
        *at = d;
        *what = why;
    }
}

/* The earliest deadline (0: none). Each runs from a moment of real progress kept in h2_conn,
 * so frames and stray bytes that make none (a trickled partial frame, a PING) never push one
 * back:
 *   SETTINGS acknowledgement   from our SETTINGS
 *   zero-window hold           from the start of the stall
 *   header block (HEADER_TIMEOUT)  from its HEADERS frame, however its bytes trickle
 *   request (BODY_TIMEOUT)     from the last request bytes, while a request is arriving
 *   write (WRITE_TIMEOUT)      from the last bytes the socket took, while output waits
 *   idle (IDLE_TIMEOUT, IDLE_SLEEP)  from the last request's start or stream's end
 *   drain                      CLOSE_LINGER_MS from the start of draining, with no stream */
static uint64_t next_deadline(const h2_conn *c, h2_due *what)
{
    uint64_t at = 0;
    *what = DUE_NONE;
    if (!c->settings_acked)
        consider(&at, what, c->started_at, core_opt(c->lim, NOOK_OPT_H2_SETTINGS_TIMEOUT),
                 DUE_SETTINGS);
    consider(&at, what, c->stalled_since, core_opt(c->lim, NOOK_OPT_H2_ZERO_WINDOW_TIMEOUT),
             DUE_STALL);
    bool fixed = at != 0; /* no nap on the way to these */
    consider(&at, what, c->block_since, core_opt(c->lim, NOOK_OPT_HEADER_TIMEOUT), DUE_TIMEOUT);
    if (receiving(c))
        consider(&at, what, c->request_at, core_opt(c->lim, NOOK_OPT_BODY_TIMEOUT), DUE_TIMEOUT);
    bool writing = io_buf_size(&c->s.out) > 0;
    if (writing)
        consider(&at, what, c->written_at, core_opt(c->lim, NOOK_OPT_WRITE_TIMEOUT), DUE_TIMEOUT);
    if (c->nstreams == 0 && c->draining) {
        consider(&at, what, c->draining_at, CLOSE_LINGER_MS, DUE_TIMEOUT);
    } else if (c->nstreams == 0 && !writing) {
        consider(&at, what, c->active_at, core_opt(c->lim, NOOK_OPT_IDLE_TIMEOUT), DUE_IDLE);
        /* On the way to the idle timeout, a stop where the connection frees what it can. */
        if (!c->asleep && !fixed)
            consider(&at, what, c->active_at, core_opt(c->lim, NOOK_OPT_IDLE_SLEEP), DUE_NAP);
    }
    return at;
}

static void set_phase_timer(h2_conn *c)
{
    if (c->calm)
        return; /* its one timer is set (start_closing) */
    if (c->draining && !c->draining_at)
        c->draining_at = now_of(c);
    h2_due what;
    uint64_t at = next_deadline(c, &what);
    uint64_t now = io_loop_now(c->s.loop);
    if (at)
        io_timer_set(c->s.loop, &c->timer, at > now ? at - now : 1);
    else
        io_timer_stop(c->s.loop, &c->timer);
}

/* Moves nghttp2's pending frames into the output buffer and writes them, a bounded amount at a
 * time so a peer that does not read cannot make us buffer without limit. It goes on while the
 * socket takes everything: stopping with frames still inside nghttp2 and nothing queued would
 * leave no event to resume from. */
static void pump_output(h2_conn *c)
{
    for (;;) {
        bool produced = false;
        while (io_buf_size(&c->s.out) < OUTPUT_CHUNK_MAX) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->ng, &data);
            if (n < 0) {
                core_log(c->w, NOOK_LOG_WARN, "%.*s: h2: %s", (int)c->peer_len, c->peer,
                         nghttp2_strerror((int)n));
                c->close_now = true;
                return;
            }
            if (n == 0)
                break;
            if (queue_output(c, data, (size_t)n) != NOOK_OK) {
                c->close_now = true;
                return;
            }
            produced = true;
        }
        if (!produced && io_buf_size(&c->s.out) == 0)
            return; /* nothing queued and nothing nghttp2 can send now */
        size_t waiting = io_buf_size(&c->s.out);
        int rc = io_stream_flush(&c->s);
        if (io_buf_size(&c->s.out) < waiting)
            c->written_at = now_of(c); /* write progress: the only thing that moves it */
        if (rc == NOOK_ECLOSED || rc == NOOK_ESYS) {
            c->close_now = true;
            return;
        }
        if (rc == NOOK_AGAIN || !nghttp2_session_want_write(c->ng))
            return; /* EPOLLOUT brings us back, or nothing is left */
    }
}

static void notify_writable(h2_conn *c)
{
    size_t low = opt(c, NOOK_OPT_OUTPUT_HIGH_WATER) / 2;
    if (c->queued_out >= opt(c, NOOK_OPT_H2_MAX_CONN_OUTPUT) / 2)
        return; /* the connection as a whole is backed up */
    for (h2_stream *st = c->streams.next; st != &c->streams; st = st->next)
        if (st->ex && st->dispatched && !core_exchange_ended(st->ex) && io_buf_size(&st->out) < low)
            core_exchange_writable(st->ex);
}

static void feed_input(h2_conn *c)
{
    size_t n = io_buf_size(&c->s.in);
    if (n == 0)
        return;
    ssize_t used = feed_frames(c, (const uint8_t *)io_buf_head(&c->s.in), n);
    if (used < 0 && c->calm) {
        io_buf_consume(&c->s.in, n); /* a callback stopped nghttp2: the GOAWAY is on its way */
        return;
    }
    if (used < 0) {
        core_log(c->w, NOOK_LOG_INFO, "%.*s: h2 connection error: %s", (int)c->peer_len, c->peer,
                 nghttp2_strerror((int)used));
        /* nghttp2 has queued a GOAWAY where the protocol asks for one: send it, then close. */
        io_buf_consume(&c->s.in, n);
        c->draining = true;
        start_closing(c);
        return;
    }
    io_buf_consume(&c->s.in, c->calm ? n : (size_t)used); /* ending: the rest is dropped */
    consume_received(c);
    if (!c->draining && !nghttp2_session_want_read(c->ng))
        start_closing(c); /* nghttp2 ended the session over the peer's frames */
}

static void service(h2_conn *c)
{
    deliver_held(c);
    feed_input(c);
    if (!c->close_now)
        pump_output(c);
    if (!c->close_now)
        notify_writable(c);
    update_stall(c);
    if (c->calm)
        io_stream_want_read(&c->s, false);
    bool done = !nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng);
    if (c->draining && c->nstreams == 0 && io_buf_size(&c->s.out) == 0)
        done = true;
    if (c->peer_eof)
        done = true; /* HTTP/2 has no half-close: the peer is gone, its streams with it */
    if (done && c->calm && !c->lingering && !c->peer_eof && io_buf_size(&c->s.out) == 0) {
        /* Closing with the peer's frames unread would reset the connection, and a reset may
         * destroy the GOAWAY before the peer reads it: shut our side, drop input a while. */
        shutdown(c->s.watch.fd, SHUT_WR);
        c->lingering = true;
        io_stream_want_read(&c->s, true);
        io_timer_set(c->s.loop, &c->timer, CLOSE_LINGER_MS);
        return;
    }
    if (done && (io_buf_size(&c->s.out) == 0 || c->peer_eof))
        c->close_now = true;
    if (c->close_now)
        schedule(c);
    else
        set_phase_timer(c);
}

static void destroy(h2_conn *c)
{
    while (c->streams.next != &c->streams) {
        h2_stream *st = c->streams.next;
        stream_release_exchange(st);
        stream_free(st);
    }
    c->destroying = true;
    nghttp2_session_del(c->ng);
    area_unmap(c);
    io_timer_stop(c->s.loop, &c->timer);
    io_loop_undefer(c->s.loop, &c->resume);
    io_stream_close(&c->s);
    core_worker_remove_conn(c->w, &c->link);
    io_free(core_worker_alloc(c->w), c);
}

/* Reads one chunk of what fits; input beyond the limit waits in the socket (TCP backpressure).
 * The peer's close or a socket error ends reading. Returns io_stream_read's result. */
static int read_input(h2_conn *c)
{
    int rc = io_stream_read(&c->s, opt(c, NOOK_OPT_H2_MAX_FRAME_SIZE) * 4 + 65536);
    if (rc == NOOK_ECLOSED || rc == NOOK_ESYS) {
        c->peer_eof = true;
        io_stream_want_read(&c->s, false);
    }
    return rc;
}

static void on_io(io_watch *w, uint32_t events)
{
    h2_conn *c = from_watch(w);
    if (c->close_now)
        return;
    if (events & EPOLLERR) {
        c->close_now = true;
        schedule(c);
        return;
    }
    if (c->lingering) {
        int rc = io_stream_read(&c->s, 65536);
        c->lingered += io_buf_size(&c->s.in);
        io_buf_consume(&c->s.in, io_buf_size(&c->s.in));
        if (rc == NOOK_ECLOSED || rc == NOOK_ESYS) {
            c->close_now = true;
            schedule(c);
        } else if (c->lingered > CLOSE_LINGER_BYTES) {
            /* A client still flooding after the GOAWAY: stop reading. TCP then holds it back
             * at no cost to us until the linger timer closes the connection; closing now
             * would only let it start over on a new one at once. */
            io_stream_want_read(&c->s, false);
        }
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) {
        c->asleep = false;
        read_input(c);
    }
    service(c);
    if (!c->close_now && c->s.tr->pending(&c->s) > 0)
        schedule(c); /* the transport holds input the socket will not signal again */
}

static void on_resume(io_defer *d)
{
    h2_conn *c = from_defer(d);
    if (!c->close_now && !c->lingering) {
        int got = !c->peer_eof && c->s.tr->pending(&c->s) > 0 ? read_input(c) : 0;
        size_t held = io_buf_size(&c->s.in);
        service(c);
        /* One read takes at most a chunk. When this round moved input (read some, or used
         * some) and the transport holds more, read it on the next round: no socket event
         * will announce it. A round that moved nothing waits for whatever holds input back,
         * so that this cannot spin. */
        bool moved = got > 0 || io_buf_size(&c->s.in) < held;
        if (moved && !c->close_now && !c->calm && c->s.tr->pending(&c->s) > 0)
            schedule(c);
    }
    if (c->close_now)
        destroy(c);
}

static void on_timer(io_timer *t)
{
    h2_conn *c = from_timer(t);
    if (c->calm) {
        c->close_now = true;
        schedule(c);
        return;
    }
    h2_due what;
    uint64_t at = next_deadline(c, &what);
    if (at == 0 || at > io_loop_now(c->s.loop)) {
        set_phase_timer(c); /* progress since the timer was set moved the deadline */
        return;
    }
    switch (what) {
    case DUE_NAP:
        io_stream_sleep(&c->s);
        release_area(c);
        core_worker_released(c->w);
        c->asleep = true;
        set_phase_timer(c); /* now the idle timeout itself */
        return;
    case DUE_SETTINGS:
        end_connection(c, NGHTTP2_SETTINGS_TIMEOUT, "SETTINGS not acknowledged in time");
        service(c);
        return;
    case DUE_STALL:
        calm_down(c, "response held back by a flow-control window left closed");
        service(c);
        return;
    case DUE_IDLE:
        /* Idle: say goodbye properly, then close shortly after. */
        nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR);
        c->draining = true;
        service(c);
        return;
    default: break;
    }
    core_log(c->w, NOOK_LOG_INFO, "%.*s: h2 connection timed out", (int)c->peer_len, c->peer);
    if (!c->draining) {
        /* Say why before closing; whatever is in flight is cancelled. */
        nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR);
        pump_output(c);
    }
    c->close_now = true;
    schedule(c);
}

static void on_shutdown(core_conn *link, bool graceful)
{
    h2_conn *c = (h2_conn *)link;
    if (!graceful) {
        c->close_now = true;
    } else if (!c->draining) {
        /* GOAWAY with the last stream we took: those finish, newer ones are refused. */
        nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->ng), NGHTTP2_NO_ERROR,
                              NULL, 0);
        c->draining = true;
    }
    schedule(c);
}

static const core_conn_ops h2_conn_ops = {on_shutdown};

static int session_new(h2_conn *c)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return NOOK_ENOMEM;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame);
    nghttp2_session_callbacks_set_on_invalid_header_callback(cbs, on_invalid_header);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_send_data_callback(cbs, send_data);
    nghttp2_option *o;
    if (nghttp2_option_new(&o) != 0) {
        nghttp2_session_callbacks_del(cbs);
        return NOOK_ENOMEM;
    }
    nghttp2_option_set_max_settings(o, 32);
    nghttp2_option_set_no_auto_window_update(o, 1);
    /* nghttp2's own limits, where this build of it has them, back ours up: set looser than
     * ours, so the client hears ENHANCE_YOUR_CALM from us first. */
#ifdef NOOK_HAVE_NGHTTP2_RESET_RATE_LIMIT
    uint64_t glitches = opt(c, NOOK_OPT_H2_MAX_GLITCHES);
    if (glitches > 0)
        nghttp2_option_set_stream_reset_rate_limit(o, 2 * glitches,
                                                   2 * glitches * 1000 / GLITCH_WINDOW_MS + 1);
#endif
#ifdef NOOK_HAVE_NGHTTP2_MAX_CONTINUATIONS
    nghttp2_option_set_max_continuations(o, max_continuations(c) + 2);
#endif
    c->mem = (nghttp2_mem){c, mem_malloc, mem_free, mem_calloc, mem_realloc};
    c->creating = true;
    int rv = nghttp2_session_server_new3(&c->ng, cbs, c, o, &c->mem);
    c->creating = false;
    nghttp2_option_del(o);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0)
        return NOOK_ENOMEM;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)opt(c, NOOK_OPT_H2_MAX_CONCURRENT_STREAMS)},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)opt(c, NOOK_OPT_H2_INITIAL_WINDOW_SIZE)},
        {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, (uint32_t)opt(c, NOOK_OPT_H2_MAX_FRAME_SIZE)},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)opt(c, NOOK_OPT_H2_MAX_HEADER_LIST_SIZE)},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    rv = nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    return rv == 0 ? NOOK_OK : NOOK_ENOMEM;
}

static h2_conn *start(core_worker *w, io_stream *from, nook_str peer)
{
    const io_alloc *a = core_worker_alloc(w);
    h2_conn *c = io_malloc(a, sizeof *c);
    if (!c) {
        core_log(w, NOOK_LOG_ERROR, "out of memory for a new h2 connection");
        io_stream_close(from);
        return NULL;
    }
    memset(c, 0, sizeof *c);
    c->w = w;
    c->lim = core_worker_limits(w);
    c->link.ops = &h2_conn_ops;
    c->timer.fn = on_timer;
    c->resume.fn = on_resume;
    c->streams.next = c->streams.prev = &c->streams;
    c->peer_len = peer.len < sizeof c->peer ? peer.len : sizeof c->peer - 1;
    memcpy(c->peer, peer.ptr, c->peer_len);
    if (io_stream_move(&c->s, from, on_io) != NOOK_OK || session_new(c) != NOOK_OK) {
        core_log(w, NOOK_LOG_ERROR, "cannot start an h2 connection: %s", strerror(errno));
        if (c->ng)
            nghttp2_session_del(c->ng);
        area_unmap(c);
        io_stream_close(c->s.watch.fd >= 0 ? &c->s : from);
        io_free(a, c);
        return NULL;
    }
    c->started_at = c->active_at = now_of(c);
    c->rx.preface_left = NGHTTP2_CLIENT_MAGIC_LEN;
    c->window_credit = WINDOW_CREDIT_START;
    core_worker_add_conn(w, &c->link);
    io_stream_want_read(&c->s, true);
    schedule(c); /* input may already be buffered (h2c preface, TLS records) */
    return c;
}

void h2_conn_start(core_worker *w, io_stream *from, nook_str peer) { start(w, from, peer); }

void h2_conn_start_refused(core_worker *w, io_stream *from, nook_str peer)
{
    h2_conn *c = start(w, from, peer);
    if (!c)
        return;
    core_log(w, NOOK_LOG_INFO, "%.*s: h2 over inadequate TLS: GOAWAY(INADEQUATE_SECURITY)",
             (int)peer.len, peer.ptr);
    nghttp2_session_terminate_session(c->ng, NGHTTP2_INADEQUATE_SECURITY);
    c->draining = true;
}
