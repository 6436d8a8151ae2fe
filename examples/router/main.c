/*
 * router: a small JSON API — path parameters, a trailing wildcard, request bodies, and the
 * automatic 404 / 405 (with Allow).
 *
 *   router [--listen ADDR:PORT]... [--tls-cert F --tls-key F] [--threads N] [--print-port]
 *
 *   GET  /users/{id}          {"id":"42","name":"user 42"}
 *   POST /users               201, Location: /users/<n>, echoes the JSON body back
 *   GET  /files/{path...}     {"path":"a/b/c.txt"}
 *   DELETE /users/{id}        204
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "example.h"

/* Writes s as a JSON string (quotes included) into out; returns the length used. Escapes what
 * JSON requires, so a path parameter can never break the document. */
static size_t json_string(char *out, size_t cap, nook_str s)
{
    size_t n = 0;
    if (cap < 3)
        return 0;
    out[n++] = '"';
    for (size_t i = 0; i < s.len && n + 7 < cap; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n++] = '"';
    return n;
}

static void reply_json(nook_req *req, int status, const char *json, size_t len)
{
    nook_respond(req, status, "application/json", json, len);
}

static void get_user(nook_req *req, void *ud)
{
    (void)ud;
    nook_str id = nook_req_param(req, "id");
    char buf[1024], idj[400];
    size_t il = json_string(idj, sizeof idj, id);
    int n = snprintf(buf, sizeof buf, "{\"id\":%.*s,\"name\":\"user %.*s\"}", (int)il, idj,
                     (int)(il - 2), idj + 1);
    reply_json(req, 200, buf, (size_t)n);
}

static atomic_int next_id = 1;

static void create_user(nook_req *req, void *ud)
{
    (void)ud;
    nook_str body = nook_req_body(req);
    if (body.len == 0 || body.ptr[0] != '{') {
        reply_json(req, 400, "{\"error\":\"expected a JSON object\"}", 34);
        return;
    }
    char loc[32];
    snprintf(loc, sizeof loc, "/users/%d", atomic_fetch_add(&next_id, 1));
    nook_res_header(req, "Location", loc);
    reply_json(req, 201, body.ptr, body.len);
}

static void delete_user(nook_req *req, void *ud)
{
    (void)ud;
    nook_respond(req, 204, NULL, NULL, 0);
}

static void get_file(nook_req *req, void *ud)
{
    (void)ud;
    char buf[4200], pj[4096];
    size_t pl = json_string(pj, sizeof pj, nook_req_param(req, "path"));
    int n = snprintf(buf, sizeof buf, "{\"path\":%.*s}", (int)pl, pj);
    reply_json(req, 200, buf, (size_t)n);
}

int main(int argc, char **argv)
{
    nook_server *srv = example_setup(argc, argv, "127.0.0.1:8080", NULL, NULL);
    if (!srv)
        return 1;
    nook_route(srv, "GET /users/{id}", get_user, NULL, NULL);
    nook_route(srv, "DELETE /users/{id}", delete_user, NULL, NULL);
    nook_route(srv, "POST /users", create_user, NULL, NULL);
    nook_route(srv, "GET /files/{path...}", get_file, NULL, NULL);
    return example_run(srv);
}
