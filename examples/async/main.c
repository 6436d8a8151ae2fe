/*
 * async: answering later, from other threads. A handler hands the request to a pool of worker
 * threads (which may block: here they sleep) and returns at once; the worker posts the answer
 * back to the request's loop with nook_token_post. If the client leaves first, the posted
 * callback gets NULL and only frees its data.
 *
 *   async [--listen ADDR:PORT]... [--tls-cert F --tls-key F] [--workers N] [--print-port]
 *
 *   GET /slow?ms=N   "done after N ms" (N defaults to 100, at most 10000)
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "example.h"

typedef struct job {
    struct job *next;
    nook_token *token;
    long ms;
} job;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready = PTHREAD_COND_INITIALIZER;
static job *head, **tail = &head;
static bool quitting;

/* On the request's loop thread: the answer, unless the client is gone. */
static void answer(nook_req *req, void *ud)
{
    char *text = ud;
    if (req)
        nook_respond(req, 200, "text/plain", text, strlen(text));
    free(text);
}

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (!head && !quitting)
            pthread_cond_wait(&ready, &lock);
        job *j = head;
        if (j) {
            head = j->next;
            if (!head)
                tail = &head;
        }
        pthread_mutex_unlock(&lock);
        if (!j)
            return NULL;
        struct timespec ts = {j->ms / 1000, (j->ms % 1000) * 1000000L};
        nanosleep(&ts, NULL); /* the blocking work */
        char *text = malloc(48);
        snprintf(text, 48, "done after %ld ms", j->ms);
        if (nook_token_post(j->token, answer, text) != NOOK_OK)
            free(text);
        nook_token_release(j->token);
        free(j);
    }
}

static void slow(nook_req *req, void *ud)
{
    (void)ud;
    nook_str q = nook_req_query_param(req, "ms");
    long ms = q.ptr ? strtol(q.ptr, NULL, 10) : 100;
    job *j = malloc(sizeof *j);
    if (!j || ms < 0 || ms > 10000) {
        free(j);
        nook_respond(req, 400, "text/plain", "bad ms\n", 7);
        return;
    }
    j->token = nook_req_suspend(req);
    j->ms = ms;
    j->next = NULL;
    pthread_mutex_lock(&lock);
    *tail = j;
    tail = &j->next;
    pthread_cond_signal(&ready);
    pthread_mutex_unlock(&lock);
}

static int workers_arg(int argc, char **argv, int i, void *ud)
{
    if (strcmp(argv[i], "--workers") != 0 || i + 1 >= argc)
        return 0;
    *(int *)ud = atoi(argv[i + 1]);
    return 2;
}

int main(int argc, char **argv)
{
    int nworkers = 8;
    nook_server *srv = example_setup(argc, argv, "127.0.0.1:8080", workers_arg, &nworkers);
    if (!srv)
        return 1;
    if (nworkers < 1 || nworkers > 256)
        nworkers = 8;
    pthread_t threads[256];
    for (int i = 0; i < nworkers; i++)
        pthread_create(&threads[i], NULL, worker, NULL);
    nook_route(srv, "GET /slow", slow, NULL, NULL);
    /* Jobs still queued at exit are answered (with NULL) by the workers before they quit; the
     * server is freed after them, as tokens must be released first. */
    int status = example_serve(srv);
    pthread_mutex_lock(&lock);
    quitting = true;
    pthread_cond_broadcast(&ready);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < nworkers; i++)
        pthread_join(threads[i], NULL);
    nook_server_free(srv);
    return status;
}
