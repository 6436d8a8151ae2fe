/*
 * The event loop: one per worker thread. epoll for file descriptors, a binary heap of timers,
 * a list of deferred calls (run on the same thread once the current event is handled), and a
 * wake-up eventfd with a locked queue for work posted from other threads.
 *
 * Everything here is single-threaded except io_loop_post() and io_loop_wake().
 *
 * Lifetime rule: later events of the same epoll batch may still point at a watch, so an object
 * that owns a watch is freed only from a timer or a deferred call (both run after the batch),
 * never from inside a watch callback.
 */
#ifndef NOOK_IO_LOOP_H
#define NOOK_IO_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/alloc.h"

typedef struct io_loop io_loop;

/* A file descriptor watched by the loop; embed it in the object that owns the fd. */
typedef struct io_watch io_watch;
typedef void (*io_watch_fn)(io_watch *w, uint32_t events);
struct io_watch {
    int fd;
    uint32_t events; /* EPOLL* mask currently registered */
    io_watch_fn fn;
};

/* A one-shot timer; embed it. `when` is in loop milliseconds (io_loop_now). */
typedef struct io_timer io_timer;
typedef void (*io_timer_fn)(io_timer *t);
struct io_timer {
    uint64_t when; /* the deadline */
    uint64_t key;  /* the heap's order: never later than `when` (see io_timer_set) */
    size_t slot;   /* position in the heap + 1; 0 when not armed */
    io_timer_fn fn;
};

/* A call to make later on the loop's own thread; embed it. */
typedef struct io_defer io_defer;
typedef void (*io_defer_fn)(io_defer *d);
struct io_defer {
    io_defer *next;
    io_defer_fn fn;
    bool queued;
};

io_loop *io_loop_new(const io_alloc *alloc);
void io_loop_free(io_loop *loop);

/* The epoll fd: readable when the loop has something to do (host-loop mode). */
int io_loop_fd(const io_loop *loop);

/* Monotonic milliseconds, refreshed once per loop iteration. */
uint64_t io_loop_now(const io_loop *loop);

int io_watch_add(io_loop *loop, io_watch *w, uint32_t events);
int io_watch_mod(io_loop *loop, io_watch *w, uint32_t events);
void io_watch_del(io_loop *loop, io_watch *w);
/* Re-registers a watch that moved in memory (same fd and events, new address). */
int io_watch_rebind(io_loop *loop, io_watch *w);

/* Arms (or re-arms) t to fire `ms` from now. Re-arming to a later time is O(1). */
int io_timer_set(io_loop *loop, io_timer *t, uint64_t ms);
void io_timer_stop(io_loop *loop, io_timer *t);
static inline bool io_timer_armed(const io_timer *t) { return t->slot != 0; }

/* Queues d to run after the current event (no-op if already queued). */
void io_loop_defer(io_loop *loop, io_defer *d);
/* Removes d from the queue if it is queued. */
void io_loop_undefer(io_loop *loop, io_defer *d);

/* Runs fn(arg) on the loop's thread soon. THREAD-SAFE. NOOK_ENOMEM if the queue node cannot be
 * allocated. */
int io_loop_post(io_loop *loop, void (*fn)(void *arg), void *arg);

/* Makes the loop's current or next wait return at once. THREAD-SAFE and async-signal-safe. */
void io_loop_wake(io_loop *loop);

/* Sets what to call (on the loop thread) after a wake-up; the server uses it to notice stop. */
void io_loop_on_wake(io_loop *loop, void (*fn)(void *arg), void *arg);

/* Milliseconds until the next timer (0 if work is pending, -1 if none). */
int io_loop_timeout(const io_loop *loop);

/* Waits up to timeout_ms (-1: until an event or timer; capped by the next timer), then handles
 * ready descriptors, due timers, posted work and deferred calls. NOOK_OK or NOOK_ESYS. */
int io_loop_run_once(io_loop *loop, int timeout_ms);

#endif
