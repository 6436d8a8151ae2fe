#include "io/loop.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "nook.h"

#define MAX_EVENTS 256

typedef struct post_node {
    struct post_node *next;
    void (*fn)(void *arg);
    void *arg;
} post_node;

struct io_loop {
    const io_alloc *alloc;
    int epfd;
    io_watch wake; /* eventfd */
    uint64_t now;
    io_timer **heap;
    size_t nheap, heap_cap;
    io_defer *defer_head, *defer_tail;
    pthread_mutex_t post_lock;
    post_node *posted;
    void (*on_wake)(void *arg);
    void *on_wake_arg;
};

static uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void drain_posted(io_loop *loop)
{
    pthread_mutex_lock(&loop->post_lock);
    post_node *n = loop->posted;
    loop->posted = NULL;
    pthread_mutex_unlock(&loop->post_lock);
    /* The list is LIFO; reverse it so posts run in the order they were made. */
    post_node *fifo = NULL;
    while (n) {
        post_node *next = n->next;
        n->next = fifo;
        fifo = n;
        n = next;
    }
    while (fifo) {
        post_node *next = fifo->next;
        fifo->fn(fifo->arg);
        io_free(loop->alloc, fifo);
        fifo = next;
    }
}

static void on_wake_fd(io_watch *w, uint32_t events)
{
    (void)events;
    io_loop *loop = (io_loop *)((char *)w - offsetof(io_loop, wake));
    uint64_t v;
    while (read(w->fd, &v, sizeof v) > 0) {
    }
    drain_posted(loop);
    if (loop->on_wake)
        loop->on_wake(loop->on_wake_arg);
}

io_loop *io_loop_new(const io_alloc *alloc)
{
    io_loop *loop = io_malloc(alloc, sizeof *loop);
    if (!loop)
        return NULL;
    memset(loop, 0, sizeof *loop);
    loop->alloc = alloc;
    loop->now = monotonic_ms();
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    loop->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    loop->wake.fn = on_wake_fd;
    pthread_mutex_init(&loop->post_lock, NULL);
    if (loop->epfd < 0 || loop->wake.fd < 0 || io_watch_add(loop, &loop->wake, EPOLLIN) != 0) {
        io_loop_free(loop);
        return NULL;
    }
    return loop;
}

void io_loop_free(io_loop *loop)
{
    if (!loop)
        return;
    /* Work posted but never run still owns its arguments: run it so they can be released. */
    drain_posted(loop);
    if (loop->wake.fd >= 0)
        close(loop->wake.fd);
    if (loop->epfd >= 0)
        close(loop->epfd);
    pthread_mutex_destroy(&loop->post_lock);
    io_free(loop->alloc, loop->heap);
    io_free(loop->alloc, loop);
}

int io_loop_fd(const io_loop *loop) { return loop->epfd; }

uint64_t io_loop_now(const io_loop *loop) { return loop->now; }

int io_watch_add(io_loop *loop, io_watch *w, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, w->fd, &ev) != 0)
        return NOOK_ESYS;
    w->events = events;
    return NOOK_OK;
}

int io_watch_mod(io_loop *loop, io_watch *w, uint32_t events)
{
    if (w->events == events)
        return NOOK_OK;
    struct epoll_event ev = {.events = events, .data.ptr = w};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, w->fd, &ev) != 0)
        return NOOK_ESYS;
    w->events = events;
    return NOOK_OK;
}

int io_watch_rebind(io_loop *loop, io_watch *w)
{
    struct epoll_event ev = {.events = w->events, .data.ptr = w};
    return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, w->fd, &ev) == 0 ? NOOK_OK : NOOK_ESYS;
}

void io_watch_del(io_loop *loop, io_watch *w)
{
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->events = 0;
}

/* ---- timers: a binary min-heap keyed by `key`; slot is the 1-based heap index ----
 * A deadline pushed later (activity on a connection, the common case) only moves `when`; the
 * node keeps its old, earlier key, so the heap stays ordered and its root is never later than
 * the true next deadline. A root whose key is stale is re-keyed and sifted down when reached. */

static void heap_place(io_loop *loop, size_t i, io_timer *t)
{
    loop->heap[i] = t;
    t->slot = i + 1;
}

static void heap_up(io_loop *loop, size_t i)
{
    io_timer *t = loop->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (loop->heap[parent]->key <= t->key)
            break;
        heap_place(loop, i, loop->heap[parent]);
        i = parent;
    }
    heap_place(loop, i, t);
}

static void heap_down(io_loop *loop, size_t i)
{
    io_timer *t = loop->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= loop->nheap)
            break;
        if (c + 1 < loop->nheap && loop->heap[c + 1]->key < loop->heap[c]->key)
            c++;
        if (loop->heap[c]->key >= t->key)
            break;
        heap_place(loop, i, loop->heap[c]);
        i = c;
    }
    heap_place(loop, i, t);
}

static void heap_remove(io_loop *loop, size_t i)
{
    loop->heap[i]->slot = 0;
    loop->nheap--;
    if (i == loop->nheap)
        return;
    io_timer *moved = loop->heap[loop->nheap];
    heap_place(loop, i, moved);
    heap_down(loop, i);
    heap_up(loop, moved->slot - 1);
}

int io_timer_set(io_loop *loop, io_timer *t, uint64_t ms)
{
    uint64_t when = loop->now + ms;
    if (t->slot) {
        t->when = when;
        if (when < t->key) {
            t->key = when;
            heap_up(loop, t->slot - 1);
        }
        return NOOK_OK;
    }
    if (loop->nheap == loop->heap_cap) {
        size_t cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
        io_timer **h = io_realloc(loop->alloc, loop->heap, cap * sizeof *h);
        if (!h)
            return NOOK_ENOMEM;
        loop->heap = h;
        loop->heap_cap = cap;
    }
    t->when = when;
    t->key = when;
    loop->nheap++;
    heap_place(loop, loop->nheap - 1, t);
    heap_up(loop, loop->nheap - 1);
    return NOOK_OK;
}

void io_timer_stop(io_loop *loop, io_timer *t)
{
    if (t->slot)
        heap_remove(loop, t->slot - 1);
}

static void run_timers(io_loop *loop)
{
    while (loop->nheap > 0) {
        io_timer *t = loop->heap[0];
        if (t->key < t->when) { /* extended since it was placed: re-key, then look again */
            t->key = t->when;
            heap_down(loop, 0);
            continue;
        }
        if (t->when > loop->now)
            break;
        heap_remove(loop, 0);
        t->fn(t);
    }
}

/* ---- deferred calls ---- */

void io_loop_defer(io_loop *loop, io_defer *d)
{
    if (d->queued)
        return;
    d->queued = true;
    d->next = NULL;
    if (loop->defer_tail)
        loop->defer_tail->next = d;
    else
        loop->defer_head = d;
    loop->defer_tail = d;
}

void io_loop_undefer(io_loop *loop, io_defer *d)
{
    if (!d->queued)
        return;
    io_defer **pp = &loop->defer_head, *prev = NULL;
    while (*pp && *pp != d) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = d->next;
        if (loop->defer_tail == d)
            loop->defer_tail = prev;
    }
    d->queued = false;
    d->next = NULL;
}

static void run_deferred(io_loop *loop)
{
    while (loop->defer_head) {
        io_defer *d = loop->defer_head;
        loop->defer_head = d->next;
        if (!loop->defer_head)
            loop->defer_tail = NULL;
        d->queued = false;
        d->next = NULL;
        d->fn(d);
    }
}

/* ---- cross-thread ---- */

int io_loop_post(io_loop *loop, void (*fn)(void *arg), void *arg)
{
    post_node *n = io_malloc(loop->alloc, sizeof *n);
    if (!n)
        return NOOK_ENOMEM;
    n->fn = fn;
    n->arg = arg;
    pthread_mutex_lock(&loop->post_lock);
    n->next = loop->posted;
    loop->posted = n;
    pthread_mutex_unlock(&loop->post_lock);
    io_loop_wake(loop);
    return NOOK_OK;
}

void io_loop_wake(io_loop *loop)
{
    uint64_t one = 1;
    ssize_t r = write(loop->wake.fd, &one, sizeof one);
    (void)r; /* a full counter already means "wake up" */
}

void io_loop_on_wake(io_loop *loop, void (*fn)(void *arg), void *arg)
{
    loop->on_wake = fn;
    loop->on_wake_arg = arg;
}

int io_loop_timeout(const io_loop *loop)
{
    if (loop->defer_head)
        return 0;
    if (loop->nheap == 0)
        return -1;
    uint64_t now = monotonic_ms();
    uint64_t when = loop->heap[0]->key; /* may be early (a stale key), never late */
    if (when <= now)
        return 0;
    uint64_t d = when - now;
    return d > 0x7fffffff ? 0x7fffffff : (int)d;
}

int io_loop_run_once(io_loop *loop, int timeout_ms)
{
    int t = io_loop_timeout(loop);
    if (t < 0 || (timeout_ms >= 0 && timeout_ms < t))
        t = timeout_ms;
    struct epoll_event evs[MAX_EVENTS];
    int n = epoll_wait(loop->epfd, evs, MAX_EVENTS, t);
    if (n < 0 && errno != EINTR)
        return NOOK_ESYS;
    loop->now = monotonic_ms();
    for (int i = 0; i < n; i++) {
        io_watch *w = evs[i].data.ptr;
        w->fn(w, evs[i].events);
    }
    run_timers(loop);
    run_deferred(loop);
    return NOOK_OK;
}
