#include "io/stream.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nook.h"

/* Reads are done in pieces of this size at least, so small requests need one recv. */
#define READ_CHUNK 16384

static ssize_t plain_recv(io_stream *s, void *buf, size_t len)
{
    return recv(s->watch.fd, buf, len, 0);
}

static ssize_t plain_send(io_stream *s, const void *buf, size_t len)
{
    return send(s->watch.fd, buf, len, MSG_NOSIGNAL);
}

static size_t plain_pending(const io_stream *s)
{
    (void)s;
    return 0;
}

static void plain_close(io_stream *s) { (void)s; }

const io_transport io_transport_plain = {plain_recv, plain_send, plain_pending, plain_close, NULL};

int io_stream_init(io_stream *s, io_loop *loop, const io_alloc *alloc, int fd, io_watch_fn fn,
                   size_t out_max)
{
    *s = (io_stream){.loop = loop, .alloc = alloc, .tr = &io_transport_plain, .out_max = out_max};
    s->watch.fd = fd;
    s->watch.fn = fn;
    return io_watch_add(loop, &s->watch, EPOLLIN | EPOLLRDHUP);
}

int io_stream_move(io_stream *dst, io_stream *src, io_watch_fn fn)
{
    *dst = *src;
    dst->watch.fn = fn;
    *src = (io_stream){.loop = src->loop, .alloc = src->alloc, .tr = &io_transport_plain};
    src->watch.fd = -1;
    return io_watch_rebind(dst->loop, &dst->watch);
}

int io_stream_read(io_stream *s, size_t max_in)
{
    size_t held = io_buf_size(&s->in);
    if (held >= max_in)
        return NOOK_ELIMIT;
    size_t want = max_in - held < READ_CHUNK ? max_in - held : READ_CHUNK;
    int rc = io_buf_reserve(&s->in, s->alloc, want, max_in);
    if (rc != NOOK_OK)
        return rc;
    size_t room = io_buf_room(&s->in);
    if (room > max_in - held)
        room = max_in - held;
    ssize_t n = s->tr->recv(s, io_buf_tail(&s->in), room);
    if (n > 0) {
        io_buf_commit(&s->in, (size_t)n);
        return (int)n;
    }
    if (n == 0)
        return NOOK_ECLOSED;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return 0;
    return errno == ECONNRESET ? NOOK_ECLOSED : NOOK_ESYS;
}

int io_stream_queue(io_stream *s, const void *p, size_t n)
{
    return io_buf_append(&s->out, s->alloc, p, n, s->out_max);
}

static void update_events(io_stream *s)
{
    if (s->watch.fd < 0)
        return;
    uint32_t ev = s->watch.events & ~(uint32_t)EPOLLOUT;
    if (io_buf_size(&s->out) > 0 || s->want_out)
        ev |= EPOLLOUT;
    io_watch_mod(s->loop, &s->watch, ev);
}

int io_stream_flush(io_stream *s)
{
    while (io_buf_size(&s->out) > 0) {
        ssize_t n = s->tr->send(s, io_buf_head(&s->out), io_buf_size(&s->out));
        if (n > 0) {
            io_buf_consume(&s->out, (size_t)n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            update_events(s);
            return NOOK_AGAIN;
        }
        return (n < 0 && errno != EPIPE && errno != ECONNRESET) ? NOOK_ESYS : NOOK_ECLOSED;
    }
    update_events(s);
    return NOOK_OK;
}

/*
 * send() takes MSG_NOSIGNAL, but sendfile() has no such flag: writing to a socket the peer
 * has reset raises SIGPIPE, whose default action kills the host program. The library's own
 * worker threads block SIGPIPE for good (io_thread_block_sigpipe); a thread the host lends
 * us (nook_run, host-loop mode) keeps its mask, so each sendfile() there blocks SIGPIPE for
 * the call, swallows the one it raised, and restores the host's mask.
 */
static _Thread_local bool t_sigpipe_blocked;

void io_thread_block_sigpipe(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) == 0)
        t_sigpipe_blocked = true;
}

static ssize_t sendfile_nosignal(int out, int in, off_t *pos, size_t want)
{
    if (t_sigpipe_blocked)
        return sendfile(out, in, pos, want);
    sigset_t pipe_only, old, pending;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    if (pthread_sigmask(SIG_BLOCK, &pipe_only, &old) != 0)
        return -1;
    ssize_t n = sendfile(out, in, pos, want);
    int saved = errno;
    /* Swallow only a SIGPIPE this call raised, and only if none was pending before. */
    if (n < 0 && saved == EPIPE && !sigismember(&old, SIGPIPE) && sigpending(&pending) == 0 &&
        sigismember(&pending, SIGPIPE)) {
        const struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_only, NULL, &zero) < 0 && errno == EINTR) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = saved;
    return n;
}

int64_t io_stream_sendfile(io_stream *s, int fd, uint64_t *off, uint64_t len)
{
    off_t pos = (off_t)*off;
    size_t want = len > (1u << 20) ? (1u << 20) : (size_t)len; /* a bounded bite per call */
    ssize_t n = sendfile_nosignal(s->watch.fd, fd, &pos, want);
    if (n > 0) {
        *off = (uint64_t)pos;
        return n;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        s->want_out = true;
        update_events(s);
        return 0;
    }
    if (n == 0)
        return NOOK_ESYS; /* the file is shorter than promised */
    return errno == EPIPE || errno == ECONNRESET ? NOOK_ECLOSED : NOOK_ESYS;
}

void io_stream_sleep(io_stream *s)
{
    if (s->watch.fd < 0 || io_buf_size(&s->in) || io_buf_size(&s->out) || s->tr->pending(s))
        return;
    io_buf_free(&s->in, s->alloc);
    io_buf_free(&s->out, s->alloc);
    if (s->tr->sleep)
        s->tr->sleep(s);
}

void io_stream_want_read(io_stream *s, bool on)
{
    if (s->watch.fd < 0)
        return;
    uint32_t ev = s->watch.events & ~(uint32_t)(EPOLLIN | EPOLLRDHUP);
    if (on)
        ev |= EPOLLIN | EPOLLRDHUP;
    io_watch_mod(s->loop, &s->watch, ev);
}

void io_stream_close(io_stream *s)
{
    if (s->watch.fd >= 0) {
        s->tr->close(s);
        s->tr = &io_transport_plain;
        s->tr_data = NULL;
        io_watch_del(s->loop, &s->watch);
        close(s->watch.fd);
        s->watch.fd = -1;
        if (s->on_close) {
            void (*fn)(void *) = s->on_close;
            s->on_close = NULL;
            fn(s->on_close_arg);
        }
    }
    io_buf_free(&s->in, s->alloc);
    io_buf_free(&s->out, s->alloc);
}
