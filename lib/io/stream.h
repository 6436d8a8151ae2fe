/*
 * A byte stream over a connected socket: an input buffer filled from the peer and an output
 * buffer drained to it. The transport (plain socket now; TLS sits here later) is behind two
 * function pointers so protocol code above never knows which one it has.
 */
#ifndef NOOK_IO_STREAM_H
#define NOOK_IO_STREAM_H

#include <stdbool.h>
#include <sys/types.h>

#include "io/buf.h"
#include "io/loop.h"

typedef struct io_stream io_stream;

typedef struct io_transport {
    /* Like recv/send: > 0 bytes, 0 on orderly EOF (recv only), -1 with errno (EAGAIN: later). */
    ssize_t (*recv)(io_stream *s, void *buf, size_t len);
    ssize_t (*send)(io_stream *s, const void *buf, size_t len);
    /* Input the transport holds that recv would return without the socket becoming readable
     * again (TLS records already read); 0 for a plain socket. */
    size_t (*pending)(const io_stream *s);
    /* Ends the transport (TLS: close_notify) and frees tr_data; the socket is closed after. */
    void (*close)(io_stream *s);
    /* Optional (NULL: nothing to do): the stream is idle with nothing pending either way, so the
     * transport may give back memory it can rebuild (TLS: the record buffers) until next used. */
    void (*sleep)(io_stream *s);
} io_transport;

extern const io_transport io_transport_plain;

struct io_stream {
    io_watch watch; /* watch.fd is the socket */
    io_loop *loop;
    const io_alloc *alloc;
    const io_transport *tr;
    void *tr_data; /* the transport's state (a tls_conn), NULL for plain sockets */
    io_buf in, out;
    size_t out_max; /* hard cap on queued output */
    bool want_out;  /* keep EPOLLOUT armed with nothing queued (a file being sent) */
    /* Called once, right after the socket is closed (by io_stream_close), whoever owns the
     * stream by then: the server's per-address connection count. Moves with the stream. */
    void (*on_close)(void *arg);
    void *on_close_arg;
};

/* Sets up a stream for a connected non-blocking socket and starts watching it for input. */
int io_stream_init(io_stream *s, io_loop *loop, const io_alloc *alloc, int fd, io_watch_fn fn,
                   size_t out_max);

/* Moves a stream to new memory (a codec taking over a connection): dst gets the socket, buffers
 * and transport, and the epoll registration now points at dst with callback fn. src is left
 * without a socket. NOOK_OK or NOOK_ESYS. */
int io_stream_move(io_stream *dst, io_stream *src, io_watch_fn fn);

/* Reads what is available into s->in, growing it to at most max_in bytes held.
 * Returns the number of bytes added (> 0), 0 when nothing is available now, NOOK_ECLOSED on EOF,
 * NOOK_ELIMIT when s->in already holds max_in bytes, NOOK_ESYS on a socket error. */
int io_stream_read(io_stream *s, size_t max_in);

/* Queues bytes for the peer. NOOK_OK, NOOK_ELIMIT (past out_max: nothing queued), NOOK_ENOMEM. */
int io_stream_queue(io_stream *s, const void *p, size_t n);

/* Writes queued output. NOOK_OK when all is written, NOOK_AGAIN when some is left (the watch
 * then also waits for EPOLLOUT), NOOK_ECLOSED / NOOK_ESYS when the peer is gone. */
int io_stream_flush(io_stream *s);

/* Blocks SIGPIPE in the calling thread for good; for threads the library itself owns. */
void io_thread_block_sigpipe(void);

/* Sends up to len bytes of a regular file straight from the kernel (plain sockets only; call
 * once the queued output is written). Advances *off. Returns the bytes sent, 0 when the socket
 * is full (EPOLLOUT is then armed until want_out is cleared), or NOOK_ECLOSED / NOOK_ESYS. */
int64_t io_stream_sendfile(io_stream *s, int fd, uint64_t *off, uint64_t len);

/* For an idle stream (nothing buffered either way): frees its input and output buffers and
 * lets the transport sleep; the next read or write allocates again. A stream with bytes
 * buffered is left as it is. */
void io_stream_sleep(io_stream *s);

/* Stops or resumes watching for input (backpressure on a peer that sends too much). */
void io_stream_want_read(io_stream *s, bool on);

/* Closes the socket and releases the buffers. */
void io_stream_close(io_stream *s);

#endif
