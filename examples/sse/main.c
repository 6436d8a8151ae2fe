/*
 * sse: server-sent events — a clock stream. Each subscriber's response stays open; a ticker
 * thread posts one event per interval to every subscriber's loop with nook_token_post.
 *
 *   sse [--listen ADDR:PORT]... [--tls-cert F --tls-key F] [--interval-ms N] [--print-port]
 *
 *   GET /          a page that subscribes with EventSource and shows the time
 *   GET /events    text/event-stream: "data: <UTC time>" every interval; ?count=N ends after N
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, gmtime_r */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "example.h"

typedef struct subscriber {
    struct subscriber *next; /* ticker thread only */
    nook_token *token;
    atomic_int refs;  /* the ticker's list, plus one per posted tick */
    atomic_bool gone; /* ended or client left: the ticker drops it */
    long left;        /* events still to send, -1: forever (loop thread only) */
} subscriber;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static subscriber *subscribers; /* added under lock by loops, walked by the ticker */
static atomic_bool quitting;
static long interval_ms = 1000;

static void unref(subscriber *s)
{
    if (atomic_fetch_sub(&s->refs, 1) == 1)
        free(s);
}

/* On the subscriber's loop thread. */
static void tick(nook_req *req, void *ud)
{
    subscriber *s = ud;
    if (!req || atomic_load(&s->gone)) {
        atomic_store(&s->gone, true);
        unref(s);
        return;
    }
    char line[96];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    int n = (int)strftime(line, sizeof line, "data: %Y-%m-%dT%H:%M:%SZ\n\n", &tm);
    nook_res_write(req, line, (size_t)n); /* a slow reader only delays its own events */
    if (s->left > 0 && --s->left == 0) {
        nook_res_end(req);
        atomic_store(&s->gone, true);
    }
    unref(s);
}

static void on_cancel(nook_req *req, void *ud)
{
    (void)req;
    atomic_store(&((subscriber *)ud)->gone, true);
}

static void *ticker(void *arg)
{
    (void)arg;
    while (!atomic_load(&quitting)) {
        struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&lock);
        for (subscriber **pp = &subscribers; *pp;) {
            subscriber *s = *pp;
            if (atomic_load(&s->gone) || atomic_load(&quitting)) {
                *pp = s->next;
                nook_token_release(s->token);
                unref(s);
                continue;
            }
            atomic_fetch_add(&s->refs, 1);
            if (nook_token_post(s->token, tick, s) != NOOK_OK)
                unref(s);
            pp = &s->next;
        }
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static void events(nook_req *req, void *ud)
{
    (void)ud;
    subscriber *s = calloc(1, sizeof *s);
    if (!s) {
        nook_respond(req, 503, "text/plain", "busy\n", 5);
        return;
    }
    nook_str count = nook_req_query_param(req, "count");
    s->left = count.ptr ? strtol(count.ptr, NULL, 10) : -1;
    atomic_init(&s->refs, 1);
    nook_res_header(req, "Content-Type", "text/event-stream");
    nook_res_header(req, "Cache-Control", "no-store");
    nook_res_write(req, ": connected\n\n", 13);
    nook_req_on(req, NOOK_ON_CANCEL, on_cancel, s);
    s->token = nook_req_suspend(req);
    pthread_mutex_lock(&lock);
    s->next = subscribers;
    subscribers = s;
    pthread_mutex_unlock(&lock);
}

static const char page[] =
    "<!doctype html><meta charset=utf-8><title>nook clock</title>"
    "<p>UTC: <b id=t>…</b></p><script>"
    "new EventSource('/events').onmessage = e => t.textContent = e.data;"
    "</script>\n";

static void index_page(nook_req *req, void *ud)
{
    (void)ud;
    nook_respond(req, 200, "text/html; charset=utf-8", page, sizeof page - 1);
}

static int interval_arg(int argc, char **argv, int i, void *ud)
{
    (void)ud;
    if (strcmp(argv[i], "--interval-ms") != 0 || i + 1 >= argc)
        return 0;
    interval_ms = strtol(argv[i + 1], NULL, 10);
    return interval_ms > 0 && interval_ms <= 60000 ? 2 : -1;
}

int main(int argc, char **argv)
{
    nook_server *srv = example_setup(argc, argv, "127.0.0.1:8080", interval_arg, NULL);
    if (!srv)
        return 1;
    nook_route(srv, "GET /", index_page, NULL, NULL);
    nook_route(srv, "GET /events", events, NULL, NULL);
    pthread_t th;
    pthread_create(&th, NULL, ticker, NULL);
    int status = example_serve(srv);
    atomic_store(&quitting, true); /* the ticker releases every token before the server goes */
    pthread_join(th, NULL);
    nook_server_free(srv);
    return status;
}
