/*
 * nook — an embeddable HTTP server library.
 *
 * One handler model for every protocol: a handler reads a request (method, path, query, headers,
 * body) and writes a response (status, headers, body — whole or streamed). Nothing in this header
 * names a wire protocol; the same calls serve every connection the server accepts.
 *
 * Conventions
 * - Every type is opaque. Functions that can fail return an int: 0 (NOOK_OK) or a negative NOOK_E…
 *   code; nook_strerror() and nook_err_name() describe it.
 * - Strings handed to nook are copied unless a function says otherwise.
 * - nook_str values returned by the library are views: not NUL-terminated, valid until the request
 *   they came from ends (see "Request lifetime"). An absent value is {NULL, 0}; an empty one is
 *   {"", 0}.
 * - Threads: a server runs one or more event loops ("workers"). A request belongs to one loop and
 *   every nook_req_* / nook_res_* call on it must come from that loop's thread — in practice, from
 *   inside a callback nook made. The calls that are safe from any thread are marked THREAD-SAFE.
 *
 * Request lifetime
 *   nook owns every nook_req. It is valid from the handler call until the response has ended (or the
 *   client went away) and the callback that is running at that moment has returned. A handler that
 *   streams keeps it alive by starting a response and not ending it yet; it then continues from the
 *   NOOK_ON_WRITABLE callback. Once NOOK_ON_DONE has run, the pointer must not be used again.
 */
#ifndef NOOK_H
#define NOOK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define NOOK_API
#elif defined(NOOK_BUILDING) && defined(__GNUC__)
#define NOOK_API __attribute__((visibility("default")))
#else
#define NOOK_API
#endif

/* ---------------------------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------------------------- */

/* Return codes. 0 is success; errors are negative. NOOK_AGAIN (positive) is a success that asks
 * the caller to wait before writing more. */
enum {
    NOOK_OK = 0,
    NOOK_AGAIN = 1,       /* data queued; output is above the high-water mark: wait for WRITABLE */
    NOOK_ENOMEM = -1,     /* out of memory */
    NOOK_EINVAL = -2,     /* invalid argument */
    NOOK_ESTATE = -3,     /* call not valid in the object's current state */
    NOOK_EEXIST = -4,     /* conflicts with something already registered */
    NOOK_EADDR = -5,      /* address could not be parsed or resolved */
    NOOK_EADDRINUSE = -6, /* address already in use */
    NOOK_ESYS = -7,       /* a system call failed; the log says which and why */
    NOOK_EFULL = -8,      /* output buffer at its hard limit; nothing was queued */
    NOOK_ECLOSED = -9,    /* the client went away; the response can no longer be sent */
    NOOK_ELIMIT = -10,    /* a configured limit was reached */
    NOOK_ENOTFOUND = -11, /* no such item */
    NOOK_ETHREAD = -12    /* called from a thread that may not make this call */
};

/* A static, human-readable description of an error code ("out of memory"). Never NULL.
 * THREAD-SAFE. */
NOOK_API const char *nook_strerror(int err);

/* The code's symbolic name ("NOOK_ENOMEM"), or "NOOK_UNKNOWN". THREAD-SAFE. */
NOOK_API const char *nook_err_name(int err);

/* The library version as "MAJOR.MINOR.PATCH". THREAD-SAFE. */
NOOK_API const char *nook_version(void);

/* ---------------------------------------------------------------------------------------------
 * Basic types
 * ------------------------------------------------------------------------------------------- */

typedef struct nook_server nook_server;
typedef struct nook_req nook_req;
typedef struct nook_tls nook_tls;

/* A view of bytes owned by nook. Not NUL-terminated. */
typedef struct nook_str {
    const char *ptr;
    size_t len;
} nook_str;

/* Handlers and middleware: one request, the user_data given at registration. */
typedef void (*nook_handler_fn)(nook_req *req, void *user_data);

/* Releases a user_data pointer when nook no longer needs it (may be NULL). */
typedef void (*nook_free_fn)(void *user_data);

/* ---------------------------------------------------------------------------------------------
 * Server configuration
 * ------------------------------------------------------------------------------------------- */

/* Creates a server with default options, no listeners and no routes. NULL when out of memory.
 * The caller owns it and releases it with nook_server_free(). */
NOOK_API nook_server *nook_server_new(void);

/* Stops the server if it runs (abruptly: drain time 0), waits for its threads, closes every
 * listener and connection, and releases it with every route's user_data. Safe on NULL.
 * Must not be called from one of the server's own threads. */
NOOK_API void nook_server_free(nook_server *srv);

/* Integer options. Each has a default (in brackets) and is set before the server starts;
 * nook_server_set_int returns NOOK_ESTATE once it runs, NOOK_EINVAL for an unknown option or a
 * value out of range. Time values are in milliseconds; 0 disables a timeout. */
typedef enum nook_opt {
    NOOK_OPT_THREADS = 1,          /* worker loops for run()/start() [online CPUs], 1..256 */
    NOOK_OPT_MAX_CONNECTIONS,      /* open connections, all workers together [10000]; extra ones
                                      are closed at accept */
    NOOK_OPT_MAX_REQUEST_LINE,     /* bytes in the request line [8192] → 414 */
    NOOK_OPT_MAX_HEADER_BYTES,     /* bytes in the whole request head [16384] → 431 */
    NOOK_OPT_MAX_HEADERS,          /* header fields in a request [100] → 431 */
    NOOK_OPT_MAX_BODY,             /* request body bytes [1048576] → 413 */
    NOOK_OPT_MAX_REQUESTS_PER_CONN,/* requests served on one connection before closing it [10000] */
    NOOK_OPT_IDLE_TIMEOUT,         /* keep-alive wait for the next request [60000] */
    NOOK_OPT_IDLE_SLEEP,           /* after this long idle (HTTP/1.1 between requests, HTTP/2
                                      with no stream open), a connection frees its buffers, and
                                      a TLS one also mbedTLS's two ~16.5 KiB record buffers (2.x),
                                      all taken back when the next bytes come [1000]; 0: never.
                                      With the default allocator, a worker then calls glibc's
                                      malloc_trim(0) once, a second later, so that the freed pages
                                      leave the process (it locks each malloc arena in turn:
                                      up to ~2 ms with thousands of connections) */
    NOOK_OPT_HEADER_TIMEOUT,       /* time to receive a whole request head [10000] → 408
                                      (HTTP/2: a whole header block → GOAWAY, close) */
    NOOK_OPT_BODY_TIMEOUT,         /* longest pause while receiving a request body [30000] → 408 */
    NOOK_OPT_WRITE_TIMEOUT,        /* longest time without write progress while output is pending [30000] */
    NOOK_OPT_OUTPUT_HIGH_WATER,    /* queued response bytes past which writes return NOOK_AGAIN [65536] */
    NOOK_OPT_MAX_OUTPUT,           /* queued response bytes past which writes fail NOOK_EFULL [4194304] */
    NOOK_OPT_LISTEN_BACKLOG,       /* listen(2) backlog [511] */
    NOOK_OPT_HTTP2,                /* 1: serve HTTP/2 (ALPN "h2" on TLS, prior-knowledge h2c on
                                      cleartext); 0: never offer or accept it [1] */
    NOOK_OPT_ALT_SVC,              /* 1: HTTP/1.1 responses over TLS advertise h2 with
                                      Alt-Svc: h2=":PORT" (when HTTP/2 is on) [1] */
    NOOK_OPT_TLS_HANDSHAKE_TIMEOUT,/* time to complete a TLS handshake [10000] */
    NOOK_OPT_H2_MAX_CONCURRENT_STREAMS, /* SETTINGS_MAX_CONCURRENT_STREAMS [100] */
    NOOK_OPT_H2_INITIAL_WINDOW_SIZE,    /* SETTINGS_INITIAL_WINDOW_SIZE per stream [262144] */
    NOOK_OPT_H2_MAX_FRAME_SIZE,         /* SETTINGS_MAX_FRAME_SIZE [16384] */
    NOOK_OPT_H2_MAX_HEADER_LIST_SIZE,   /* SETTINGS_MAX_HEADER_LIST_SIZE [65536] */
    NOOK_OPT_H2_MAX_GLITCHES,      /* "glitches" an HTTP/2 connection may commit in a burst [1000];
                                      the budget refills at this many per minute. A glitch is a
                                      frame that does no useful work: RST_STREAM from the client,
                                      a reset the server sends because of the client's frame, an
                                      invalid frame, an empty DATA/HEADERS/CONTINUATION, PRIORITY,
                                      PING, SETTINGS, an unknown frame type, or a WINDOW_UPDATE
                                      that is not answering data. Over budget: GOAWAY
                                      (ENHANCE_YOUR_CALM) and close. 0: no limit */
    NOOK_OPT_H2_SETTINGS_TIMEOUT,  /* time for the client to acknowledge the server's SETTINGS
                                      [10000] → GOAWAY(SETTINGS_TIMEOUT) */
    NOOK_OPT_H2_ZERO_WINDOW_TIMEOUT, /* longest time response data may wait for flow-control
                                      window the client does not open [30000] →
                                      GOAWAY(ENHANCE_YOUR_CALM) */
    NOOK_OPT_H2_MAX_CONN_OUTPUT,   /* response bytes queued on one HTTP/2 connection, all streams
                                      together, past which writes fail NOOK_EFULL [16777216] */
    NOOK_OPT_MIN_BODY_RATE,        /* bytes per second an HTTP/1.1 request body must average,
                                      checked every 5 s while it arrives [512] → 408; 0: off */
    NOOK_OPT_MAX_CONNECTIONS_PER_IP, /* open connections from one client address (IPv4 or IPv6),
                                      all workers together [0: no limit]; extra ones are closed
                                      at once. Behind a proxy every client has its address */
    NOOK_OPT_H2_MAX_CONN_INPUT,    /* request body bytes buffered for handlers on one HTTP/2
                                      connection, all streams together (bodies of nook_route
                                      routes, held until their response ends) [8388608]. Past
                                      it the connection's flow-control window is not reopened
                                      until such requests end: the client waits. Never less
                                      than NOOK_OPT_MAX_BODY */
    NOOK_OPT_TLS_SEND_BATCH        /* encrypted bytes a TLS connection gathers into one send(2)
                                      when a write makes several records [131072], 0..16777216.
                                      A send per 16 KiB record wakes the client once per record;
                                      on loopback that cost the server a fifth of its time on
                                      large bodies. The buffer is allocated at the first such
                                      write and freed when the connection sleeps
                                      (NOOK_OPT_IDLE_SLEEP). Below 32768: a send per record */
} nook_opt;

NOOK_API int nook_server_set_int(nook_server *srv, nook_opt opt, int64_t value);

/* The option's current value, or the default; NOOK_EINVAL for an unknown option. */
NOOK_API int64_t nook_server_get_int(const nook_server *srv, nook_opt opt);

/* Log levels, most severe first. */
typedef enum nook_log_level {
    NOOK_LOG_ERROR = 0,
    NOOK_LOG_WARN = 1,
    NOOK_LOG_INFO = 2,
    NOOK_LOG_DEBUG = 3
} nook_log_level;

/* Receives one log line (NUL-terminated, no trailing newline; valid only during the call).
 * Called from any of the server's threads, possibly concurrently. */
typedef void (*nook_log_fn)(nook_log_level level, const char *msg, void *user_data);

/* Sets where log lines go and the most verbose level delivered (lines above max_level are not
 * formatted at all). nook never prints by itself: without a logger (fn NULL, the default),
 * lines are dropped. user_data is passed to every call of fn and stays the caller's; it must
 * outlive the server. Call it while configuring, before the server starts: NOOK_ESTATE once it
 * has started (workers read the logger without a lock); NOOK_EINVAL for a NULL server. */
NOOK_API int nook_server_set_logger(nook_server *srv, nook_log_fn fn, nook_log_level max_level,
                                    void *user_data);

/* A logger that writes "nook: LEVEL: msg" lines to stderr, for programs that want one. */
NOOK_API void nook_log_stderr(nook_log_level level, const char *msg, void *user_data);

/* Memory functions used for everything the server allocates after this call (the server object
 * itself comes from malloc). Each receives the user_data given here. free_fn must accept NULL.
 * Call right after nook_server_new(), before any other call; NOOK_ESTATE otherwise.
 * The functions are called from every worker thread and must be thread-safe. */
typedef void *(*nook_malloc_fn)(size_t size, void *user_data);
typedef void *(*nook_realloc_fn)(void *ptr, size_t size, void *user_data);
typedef void (*nook_release_fn)(void *ptr, void *user_data);
NOOK_API int nook_server_set_allocator(nook_server *srv, nook_malloc_fn malloc_fn,
                                       nook_realloc_fn realloc_fn, nook_release_fn free_fn,
                                       void *user_data);

/* Opens a listener now (so errors show here): "127.0.0.1:8080", "[::1]:8080", "0.0.0.0:0"
 * (port 0 picks a free port; see nook_server_port), or "unix:/path/to.sock" (an existing socket
 * file at that path is replaced). Connections are served once the server runs.
 * With tls (see nook_tls_new), the listener speaks TLS and picks HTTP/2 or HTTP/1.1 per
 * connection by ALPN; the server keeps its own reference to tls. Without (NULL), it serves
 * HTTP/1.1, and HTTP/2 to clients that start with the HTTP/2 preface (h2c, prior knowledge).
 * Errors: NOOK_EADDR, NOOK_EADDRINUSE, NOOK_ESYS, NOOK_ESTATE (already running), NOOK_ENOMEM,
 * NOOK_EINVAL (tls has no certificate). */
NOOK_API int nook_server_listen(nook_server *srv, const char *addr, nook_tls *tls);

/* ---------------------------------------------------------------------------------------------
 * TLS (mbedTLS)
 *
 * A nook_tls holds certificates and protocol settings for one or more listeners. TLS 1.2 is the
 * minimum; only ECDHE key exchange with AEAD ciphers is offered (P-256 first); session tickets
 * make resumed handshakes cheap. Configure it completely before passing it to
 * nook_server_listen(); it is read-only (and safe to share between servers) afterwards.
 * ------------------------------------------------------------------------------------------- */

/* A TLS configuration with no certificate. NULL when out of memory or when the random generator
 * cannot be seeded. Release with nook_tls_free(). */
NOOK_API nook_tls *nook_tls_new(void);

/* Adds a certificate chain and its private key from PEM files (password NULL for an unencrypted
 * key). The first certificate added is the default; later ones are chosen by SNI when the client
 * asks for a name they cover (subjectAltName DNS names, "*.example.com" wildcards included).
 * Errors: NOOK_EINVAL (unreadable or mismatched files; the logger is not involved: the message
 * is in nook_tls_last_error()), NOOK_ESTATE (already used by a listener), NOOK_ENOMEM. */
NOOK_API int nook_tls_add_cert_file(nook_tls *tls, const char *cert_file, const char *key_file,
                                    const char *password);

/* The same from PEM text in memory (copied; lengths exclude any terminating NUL). */
NOOK_API int nook_tls_add_cert_pem(nook_tls *tls, const char *cert_pem, size_t cert_len,
                                   const char *key_pem, size_t key_len, const char *password);

/* The protocols offered by ALPN, most preferred first, comma-separated: the default is
 * "h2,http/1.1". Only "h2" and "http/1.1" are known; "h2" is left out anyway when the server's
 * NOOK_OPT_HTTP2 is 0. A client that offers no ALPN gets HTTP/1.1; one whose offer has nothing
 * in common is refused (no_application_protocol). Errors: NOOK_EINVAL, NOOK_ESTATE. */
NOOK_API int nook_tls_set_alpn(nook_tls *tls, const char *protocols);

/* A description of the last nook_tls_add_cert_* failure on this object ("" if none). */
NOOK_API const char *nook_tls_last_error(const nook_tls *tls);

/* Drops the caller's reference: the configuration lives on while listeners use it. NULL-safe. */
NOOK_API void nook_tls_free(nook_tls *tls);

/* The TCP port that listener number `index` (0-based, in nook_server_listen order) is bound to;
 * 0 for a Unix socket; NOOK_ENOTFOUND if there is no such listener. */
NOOK_API int nook_server_port(const nook_server *srv, size_t index);

/* ---------------------------------------------------------------------------------------------
 * Routes
 * ------------------------------------------------------------------------------------------- */

/* Registers a handler for a pattern: an optional method, a space, then a path:
 *     "GET /users/{id}"    one segment, available as nook_req_param(req, "id")
 *     "/files/{path...}"   a trailing wildcard: the rest of the path, possibly empty, any method
 *     "POST /upload"       a fixed path
 * Static segments win over parameters, parameters over wildcards. A GET route also answers HEAD.
 * A path with no route gets 404; a path whose routes all name other methods gets 405 with Allow.
 * Errors: NOOK_EINVAL (malformed pattern), NOOK_EEXIST (a route with the same method already
 * matches exactly the same paths), NOOK_ESTATE (server running), NOOK_ENOMEM. nook copies the
 * pattern; on success it owns user_data and calls free_ud(user_data) when the server is freed
 * (on failure, the caller keeps it). */
NOOK_API int nook_route(nook_server *srv, const char *pattern, nook_handler_fn fn, void *user_data,
                        nook_free_fn free_ud);

/* Like nook_route(), for handlers that read the request body in pieces (uploads of any size):
 * the handler runs as soon as the request head is complete, before the body, and receives it
 * through nook_req_on_body(). NOOK_OPT_MAX_BODY does not apply: the handler decides. */
NOOK_API int nook_route_streaming(nook_server *srv, const char *pattern, nook_handler_fn fn,
                                  void *user_data, nook_free_fn free_ud);

/* ---------------------------------------------------------------------------------------------
 * Running
 * ------------------------------------------------------------------------------------------- */

/* Serves on the calling thread (plus NOOK_OPT_THREADS - 1 background workers) until
 * nook_server_stop() has finished draining. Returns 0, or an error if the server could not start
 * (NOOK_ESTATE if it already runs or ran; NOOK_EINVAL without listeners or for NULL; a TLS
 * listener's setup error; NOOK_ENOMEM; NOOK_ESYS when a worker thread cannot be created, in
 * which case the workers already started are stopped before it returns). A server runs once:
 * free it and make a new one to serve again. Call it from one thread, not from a handler. */
NOOK_API int nook_server_run(nook_server *srv);

/* Starts NOOK_OPT_THREADS background workers and returns at once: 0 when they run, or the
 * errors of nook_server_run(). Stop with nook_server_stop(), then nook_server_wait() before
 * nook_server_free(). Not thread-safe with the configuration calls: configure first. */
NOOK_API int nook_server_start(nook_server *srv);

/* Asks the server to stop: listeners close at once; idle connections close; requests in flight
 * may finish for up to drain_ms milliseconds, after which every connection is closed. Returns at
 * once; nook_server_run() then returns, or nook_server_wait() joins the workers.
 * THREAD-SAFE and async-signal-safe (may be called from a signal handler). A program that calls
 * it from a signal handler must stop that (e.g. SIG_IGN) before nook_server_free(). */
NOOK_API void nook_server_stop(nook_server *srv, int drain_ms);

/* Waits until background workers started by nook_server_start() have stopped. NOOK_ETHREAD when
 * called from one of them. */
NOOK_API int nook_server_wait(nook_server *srv);

/* Host-loop mode: instead of run/start, drive one worker from your own event loop.
 * nook_server_fd() prepares it (first call) and returns a file descriptor that becomes readable
 * when there is work; add it to your poll/epoll set. Errors: those of nook_server_run(), and
 * NOOK_ESTATE when the server was started with run/start instead.
 * nook_server_timeout() says how many milliseconds the host may sleep at most (-1: no deadline;
 * 0: work is waiting). It may be early, never late: the host calls nook_server_poll() when the
 * fd is readable or the timeout has passed, whichever comes first.
 * nook_server_poll() does whatever is ready without blocking; it returns 0 while serving, 1 once
 * the server has stopped (after nook_server_stop() and its drain), or NOOK_ESYS (epoll failed).
 * All three must be called from the same thread, which is then the server's loop thread: the
 * handlers run on it, inside nook_server_poll(). */
NOOK_API int nook_server_fd(nook_server *srv);
NOOK_API int nook_server_timeout(nook_server *srv);
NOOK_API int nook_server_poll(nook_server *srv);

/* ---------------------------------------------------------------------------------------------
 * Reading the request (loop thread only; views live as long as the request)
 * ------------------------------------------------------------------------------------------- */

NOOK_API nook_str nook_req_method(const nook_req *req);

/* The path as sent, percent-encoded, without the query ("/a%20b"). */
NOOK_API nook_str nook_req_path(const nook_req *req);

/* The raw query string after '?', without it; {NULL,0} when there was no '?'. */
NOOK_API nook_str nook_req_query(const nook_req *req);

/* A route parameter by name, percent-decoded ("{id}" → "id"); {NULL,0} if the route has none. */
NOOK_API nook_str nook_req_param(nook_req *req, const char *name);

/* The first query parameter with that name, decoded ('+' is a space); {NULL,0} if absent or
 * malformed. */
NOOK_API nook_str nook_req_query_param(nook_req *req, const char *name);

/* The first request header with that name, compared case-insensitively; {NULL,0} if absent. */
NOOK_API nook_str nook_req_header(const nook_req *req, const char *name);

/* Every request header in arrival order: index 0 .. count-1. nook_req_header_at returns
 * NOOK_ENOTFOUND past the end. */
NOOK_API size_t nook_req_header_count(const nook_req *req);
NOOK_API int nook_req_header_at(const nook_req *req, size_t index, nook_str *name, nook_str *value);

/* The whole request body (empty if none). */
NOOK_API nook_str nook_req_body(const nook_req *req);

/* The protocol that carried the request, for logs: "HTTP/1.0", "HTTP/1.1" or "HTTP/2" (a static
 * string). Handlers must not need it: everything else is the same whatever the protocol. */
NOOK_API const char *nook_req_protocol(const nook_req *req);

/* 1 when the request came over TLS, 0 over cleartext (for absolute URLs, HSTS, and the proxy's
 * X-Forwarded-Proto). Any thread that may use req. */
NOOK_API int nook_req_is_tls(const nook_req *req);

/* Microseconds since the request's head was complete (for access logs and metrics). */
NOOK_API int64_t nook_req_elapsed_us(const nook_req *req);

/* Response body bytes handed to the connection so far (after body filters). */
NOOK_API uint64_t nook_res_bytes_sent(const nook_req *req);

/* Request body pieces for a handler registered with nook_route_streaming(), in order; end is 1
 * on the last call (len may be 0). Return NOOK_OK for more, or NOOK_AGAIN to pause: no more
 * pieces come until nook_req_resume_body(), and the client is held back meanwhile (TCP or HTTP/2
 * flow control), so memory stays bounded. Pieces that arrive with no callback set are dropped.
 * Answering before the body has arrived is allowed (the rest is then discarded). */
typedef int (*nook_body_fn)(nook_req *req, const void *data, size_t len, int end,
                            void *user_data);
NOOK_API int nook_req_on_body(nook_req *req, nook_body_fn fn, void *user_data);

/* Ends a pause requested by a body callback's NOOK_AGAIN. NOOK_ESTATE if not paused. */
NOOK_API int nook_req_resume_body(nook_req *req);

/* Memory that lives as long as the request (aligned for any type); NULL when out of memory. */
NOOK_API void *nook_req_alloc(nook_req *req, size_t size);

/* The server's peer address as text ("127.0.0.1:51234", "[::1]:4000", "unix"). */
NOOK_API nook_str nook_req_peer(const nook_req *req);

/* ---------------------------------------------------------------------------------------------
 * Writing the response (loop thread only)
 * ------------------------------------------------------------------------------------------- */

/* Sends a whole response: status, Content-Type (NULL: none), body (copied; may be NULL when len
 * is 0), plus any headers added before. Ends the response.
 * Errors: NOOK_ESTATE (a response was already started), NOOK_EINVAL (status outside 200..999 or
 * 1xx), NOOK_ECLOSED, NOOK_ENOMEM. */
NOOK_API int nook_respond(nook_req *req, int status, const char *content_type, const void *body,
                          size_t len);

/* Sets the status for a streamed response (default 200). NOOK_ESTATE after nook_res_start(). */
NOOK_API int nook_res_status(nook_req *req, int status);

/* Adds a response header (both strings copied). Names are matched case-insensitively by
 * nook_res_set_header and by the library; they are sent as given where the protocol allows.
 * A Content-Length set here makes a streamed response length-delimited: exactly that many bytes
 * must then be written. Errors: NOOK_EINVAL (name not a token, or CR/LF/NUL in the value),
 * NOOK_ESTATE (head already sent), NOOK_ELIMIT (too many headers), NOOK_ENOMEM. */
NOOK_API int nook_res_header(nook_req *req, const char *name, const char *value);

/* Replaces every header of that name with one (value NULL: removes them). Errors as above. */
NOOK_API int nook_res_set_header(nook_req *req, const char *name, const char *value);

/* Starts a streamed response: the status and headers go out now; the body follows with
 * nook_res_write() and ends with nook_res_end(). */
NOOK_API int nook_res_start(nook_req *req);

/* Queues body bytes (copied), starting the response first if needed.
 * Returns NOOK_OK (more may be written), NOOK_AGAIN (queued, but the output is above
 * NOOK_OPT_OUTPUT_HIGH_WATER: stop and continue from NOOK_ON_WRITABLE), NOOK_EFULL (not queued:
 * that would pass NOOK_OPT_MAX_OUTPUT), NOOK_ECLOSED (client gone), NOOK_ESTATE (ended),
 * NOOK_EINVAL (more than a declared Content-Length).
 * A response without a body — to HEAD, or with status 204 or 304, also when a NOOK_ON_HEADERS
 * hook set that status — goes out as its head alone and ends there: writes made from the same
 * callback are accepted and discarded (NOOK_OK, never NOOK_AGAIN; not counted as sent), and
 * nook_res_end() returns NOOK_OK. The request then ends (NOOK_ON_DONE) once the callback has
 * returned, so a producer that writes later learns it from DONE, or from a NULL request in its
 * posted callback. */
NOOK_API int nook_res_write(nook_req *req, const void *data, size_t len);

/* Adds a trailer field, sent after the body when the response ends (both strings copied); may
 * be called until nook_res_end(). Over HTTP/2 trailers always go out (gRPC relies on them); over
 * HTTP/1.1 only with a chunked body (a streamed response without Content-Length), otherwise
 * they are dropped. Errors: NOOK_EINVAL (bad name or value, or a pseudo/framing field),
 * NOOK_ESTATE (ended), NOOK_ELIMIT, NOOK_ENOMEM. */
NOOK_API int nook_res_trailer(nook_req *req, const char *name, const char *value);

/* Ends a streamed response. NOOK_EINVAL if fewer bytes than a declared Content-Length were
 * written (the connection is then reset, as the response is broken). */
NOOK_API int nook_res_end(nook_req *req);

/* Sends len bytes of an open file, from offset, as the whole response body, and ends the
 * response. nook takes the descriptor (also on error) and closes it when done. Status and
 * headers are set before; Content-Length is set to len. Over cleartext HTTP/1.1 without body
 * filters the kernel copies the bytes (sendfile, zero-copy); otherwise nook reads and writes
 * them in pieces, with backpressure, so memory stays bounded either way.
 * Errors: NOOK_ESTATE (a response was started), NOOK_EINVAL (fd < 0), NOOK_ECLOSED. */
NOOK_API int nook_res_sendfile(nook_req *req, int fd, uint64_t offset, uint64_t len);

/* ---------------------------------------------------------------------------------------------
 * Request events
 * ------------------------------------------------------------------------------------------- */

typedef enum nook_event {
    NOOK_ON_WRITABLE = 1, /* queued output fell below half the high-water mark: write more */
    NOOK_ON_CANCEL = 2,   /* the client went away before the response ended: stop work. On
                             HTTP/2 that is a reset stream, a lost connection or a GOAWAY with
                             an error code; after GOAWAY(NO_ERROR) open requests still finish
                             (RFC 9113 §6.8) */
    NOOK_ON_DONE = 3,     /* the response ended (sent or failed); last call for this request */
    NOOK_ON_HEADERS = 4   /* the response head is about to go out: status and headers may still
                             be changed (nook_res_status, nook_res_header, nook_res_set_header);
                             the framing follows the final status: one that allows no body (204,
                             304) drops it, one that allows a body frames it (Content-Length: 0
                             for an empty one) */
} nook_event;

/* Adds a callback for an event on this request. Several may be added (each middleware its own);
 * they run in the reverse order of adding — the one added last (closest to the handler) first,
 * like a stack unwinding. The request is valid during the callback.
 * Errors: NOOK_EINVAL (unknown event, fn NULL), NOOK_ENOMEM. */
NOOK_API int nook_req_on(nook_req *req, nook_event ev, nook_handler_fn fn, void *user_data);

/* The response status as it stands (200 until set), e.g. for a HEADERS or DONE hook. */
NOOK_API int nook_res_get_status(const nook_req *req);

/* The first response header with that name (case-insensitive), {NULL,0} if none. */
NOOK_API nook_str nook_res_get_header(const nook_req *req, const char *name);

/* Response body filters: transform the body on its way out (compression, rewriting). A filter
 * receives every piece the handler writes, in order (end is 1 on the last call, possibly with
 * len 0), and passes on what it wants sent with nook_filter_pass() — zero or more times per
 * call. Filters added later run first (they are closer to the handler). With any filter, a
 * whole response goes out with unknown length (chunked on HTTP/1.1): filters change sizes.
 * Add filters before the response starts or from a NOOK_ON_HEADERS hook — the place to decide
 * per response (compression adds its filter only for responses it compresses, so the others
 * keep their Content-Length). NOOK_ESTATE after. */
typedef int (*nook_filter_fn)(nook_req *req, const void *data, size_t len, int end,
                              void *user_data);
NOOK_API int nook_req_filter(nook_req *req, nook_filter_fn fn, void *user_data);

/* Called only from inside a filter: sends data on to the next filter, or to the client. Returns
 * what nook_res_write would (NOOK_OK, NOOK_AGAIN, NOOK_ECLOSED...). */
NOOK_API int nook_filter_pass(nook_req *req, const void *data, size_t len, int end);

/* ---------------------------------------------------------------------------------------------
 * Middleware
 * ------------------------------------------------------------------------------------------- */

/* Registers middleware for every request whose path is `prefix` or below it, segment-wise
 * ("/api" covers "/api" and "/api/x", not "/apix"; "/" or NULL covers all). Middleware runs in
 * registration order before routing, also for requests that end in 404 or 405. Each one either
 * answers (short-circuit), or calls nook_next() to go on — at once, or later after
 * nook_req_suspend(). To act on the way out it adds hooks (NOOK_ON_HEADERS, filters, DONE)
 * before continuing: that works the same for whole, streamed and late responses.
 * Errors and ownership as for nook_route(). */
NOOK_API int nook_use(nook_server *srv, const char *prefix, nook_handler_fn fn, void *user_data,
                      nook_free_fn free_ud);

/* Registers middleware for one route: it runs only for requests that the route registered with
 * this pattern (same method and shape; parameter names may differ) answers, in the same
 * registration order as all other middleware, so one registered after the server-wide and
 * prefix middleware runs after them, just before the handler:
 *     nook_route(srv, "DELETE /users/{id}", delete_user, NULL, NULL);
 *     nook_route_use(srv, "DELETE /users/{id}", require_admin, NULL, NULL);
 * It does not run for 404 or 405 answers (no route was chosen). Errors: NOOK_ENOTFOUND (no such
 * route yet: register the route first), NOOK_EINVAL, NOOK_ESTATE, NOOK_ENOMEM; ownership as
 * for nook_route(). */
NOOK_API int nook_route_use(nook_server *srv, const char *pattern, nook_handler_fn fn,
                            void *user_data, nook_free_fn free_ud);

/* Continues with the next matching middleware, then the route's handler (or the 404/405 answer).
 * Errors: NOOK_ESTATE (a response was already started, or called twice from one middleware),
 * NOOK_ECLOSED (the client went away). */
NOOK_API int nook_next(nook_req *req);

/* ---------------------------------------------------------------------------------------------
 * Late responses
 *
 * A handler (or middleware) that answers later calls nook_req_suspend() and returns. Work
 * continues on any thread; whatever touches the request is posted back to the request's loop
 * with nook_token_post(). The token stays valid until released, the request until it ended.
 * ------------------------------------------------------------------------------------------- */

typedef struct nook_token nook_token;

/* Keeps the request open after the callback returns. Returns a token (released by the caller
 * with nook_token_release), or NULL when out of memory. Loop thread only. */
NOOK_API nook_token *nook_req_suspend(nook_req *req);

/* Runs fn(req, user_data) on the request's loop thread soon. req is the live request, or NULL
 * if it has ended meanwhile (client gone, server stopped) — so user_data can always be freed.
 * THREAD-SAFE. Errors: NOOK_ENOMEM (fn will not run), NOOK_EINVAL. */
NOOK_API int nook_token_post(nook_token *t, nook_handler_fn fn, void *user_data);

/* Drops the caller's token. THREAD-SAFE. Tokens must be released before nook_server_free(). */
NOOK_API void nook_token_release(nook_token *t);

/* ---------------------------------------------------------------------------------------------
 * Built-in middleware (lib/mw/): each is registered like any middleware, with nook_use()'s
 * prefix rules, and configured by the arguments of its registration call.
 * ------------------------------------------------------------------------------------------- */

/* Access log ------------------------------------------------------------------------------- */

/* Line formats. NOOK_ACCESS_COMMON is the Common Log Format:
 *     127.0.0.1 - - [10/Oct/2024:13:55:36 +0000] "GET /a?b=1 HTTP/1.1" 200 1234
 * NOOK_ACCESS_COMBINED adds "Referer" "User-Agent" ("-" when absent). NOOK_ACCESS_JSON writes one
 * object per line:
 *     {"time":"2024-10-10T13:55:36Z","ip":"127.0.0.1","method":"GET","target":"/a?b=1",
 *      "protocol":"HTTP/2","status":200,"bytes":1234,"duration_us":873,"referer":null,
 *      "user_agent":"curl/7.88.1"}
 * "ip" is the peer address without its port ("::1"; "unix" for a Unix socket), the time is UTC
 * when the request began, "bytes" counts response body bytes sent, "duration_us" is
 * nook_req_elapsed_us() when the response has ended. Request text is escaped (CLF: \" \\ \xHH;
 * JSON: \" \\ \u00HH, and \ufffd for bytes that are not UTF-8), so no client can break or forge
 * a line. */
typedef enum nook_access_format {
    NOOK_ACCESS_COMMON,
    NOOK_ACCESS_COMBINED,
    NOOK_ACCESS_JSON
} nook_access_format;

/* Receives one formatted line: len bytes, no newline, not NUL-terminated, valid only during the
 * call. Called from worker threads, possibly concurrently: it must be thread-safe. */
typedef void (*nook_access_sink_fn)(const char *line, size_t len, void *user_data);

/* Logs every request under prefix once its response has ended (NOOK_ON_DONE), so status, bytes
 * and duration are final; a request whose client went away is logged too, with the status it had.
 * Register it before other middleware to see the requests they answer themselves.
 * sink NULL: lines go to stderr with a newline, one write(2) each (so lines from several threads
 * do not mix). user_data goes to sink; nook does not own it, and it must stay valid until
 * nook_server_free(). Call before the server runs.
 * Errors: NOOK_EINVAL (srv NULL, unknown format, prefix not starting with '/'), NOOK_ESTATE
 * (running), NOOK_ENOMEM. */
NOOK_API int nook_use_access_log(nook_server *srv, const char *prefix, nook_access_format format,
                                 nook_access_sink_fn sink, void *user_data);

/* CORS ------------------------------------------------------------------------------------- */

/* Cross-origin resource sharing for requests under prefix. origins is "*" (any origin) or a
 * comma-separated list of exact origins ("https://app.example, http://localhost:3000"), compared
 * byte for byte with the request's Origin header.
 * - An allowed origin's responses get Access-Control-Allow-Origin (the origin itself, or "*"
 *   when origins is "*" and allow_credentials is 0) and, with allow_credentials,
 *   Access-Control-Allow-Credentials: true. The headers are added as the response head goes out,
 *   so they are on every response, also those answered by later middleware.
 * - A preflight from an allowed origin (OPTIONS with Access-Control-Request-Method) is answered
 *   here: 204 with those headers plus Access-Control-Allow-Methods (methods; NULL:
 *   "GET, HEAD, POST"), Access-Control-Allow-Headers (headers, when not NULL) and
 *   Access-Control-Max-Age (when max_age_seconds > 0). It reaches no later middleware or route.
 * - Any other origin gets no CORS headers; its request proceeds as usual (the browser then keeps
 *   the response from the page).
 * Responses to an allowed origin carry Vary: Origin, and so do all others whenever the answer
 * depends on the origin (always, unless origins is "*" without credentials), so that caches keep
 * one answer per origin.
 * Strings are copied. Call before the server runs. Errors: NOOK_EINVAL (srv or origins NULL, an
 * empty origin in the list, a control byte in a string, max_age_seconds < 0, bad prefix),
 * NOOK_ESTATE (running), NOOK_ENOMEM. */
NOOK_API int nook_use_cors(nook_server *srv, const char *prefix, const char *origins,
                           const char *methods, const char *headers, int max_age_seconds,
                           int allow_credentials);

/* Request id ------------------------------------------------------------------------------- */

/* Gives every request under prefix an id that ties the client's view to the server's logs: the
 * one the client sent in `header` (NULL: "X-Request-Id") when it is 1 to 128 characters of
 * A-Z a-z 0-9 . _ -, otherwise a new random 128-bit id written as 32 lowercase hex digits. The
 * id goes back in the same response header, added as the head goes out (so responses answered
 * by later middleware carry it too). The header name is copied. Call before the server runs.
 * Errors: NOOK_EINVAL (srv NULL, header not a token, bad prefix), NOOK_ESTATE, NOOK_ENOMEM. */
NOOK_API int nook_use_request_id(nook_server *srv, const char *prefix, const char *header);

/* Rate limit ------------------------------------------------------------------------------- */

/* Limits how fast each client may send requests under prefix: a token bucket per client
 * address (without port; all Unix-socket clients share one) that holds up to `burst` requests
 * and refills at per_second. A request that finds its bucket empty is answered 429 with
 * Retry-After (seconds until the next token, rounded up) and goes no further.
 * The buckets are shared by every worker thread (a table split into shards, each with its own
 * lock) and remember at most max_clients clients (0: 65536): when that many are known, the one
 * seen least recently in its shard is forgotten, so memory stays bounded (a forgotten client
 * starts again with a full bucket). Behind a reverse proxy every client has the proxy's address.
 * Call before the server runs. Errors: NOOK_EINVAL (srv NULL, per_second <= 0, burst < 1, either
 * not finite, bad prefix), NOOK_ESTATE (running), NOOK_ENOMEM, NOOK_ESYS (getrandom(2) failed:
 * the table's hash is keyed at random so that clients cannot pick colliding addresses). */
NOOK_API int nook_use_rate_limit(nook_server *srv, const char *prefix, double per_second,
                                 double burst, size_t max_clients);

/* Static files. For GET and HEAD requests at or below `prefix` (as for nook_use), the rest of
 * the path names a file under the directory `root`: "/static/css/a.css" with prefix "/static"
 * serves ROOT/css/a.css. What it answers:
 *   - 200 with Content-Type (by extension, about 30 common ones, "; charset=utf-8" for text;
 *     "application/octet-stream" when unknown), Content-Length, ETag (strong, from size and
 *     modification time), Last-Modified and Accept-Ranges: bytes; HEAD gets the same head
 *     without the body.
 *   - 304 for If-None-Match (weak comparison, "*" included) or, without it, If-Modified-Since
 *     (any of the three HTTP-date forms; a date in the future is ignored); 412 for a failed
 *     If-Match / If-Unmodified-Since.
 *   - 206 with Content-Range for one byte range ("bytes=a-b", "a-", "-n"), honouring If-Range;
 *     416, with a Content-Range that gives the file's size, when it starts past the end.
 *     Several ranges in one request are answered with the whole file (200): no multipart
 *     bodies.
 *   - 301 to "PATH/" for a directory named without its trailing '/', and its index.html for
 *     one named with it, both only with NOOK_STATIC_INDEX (and an index.html present).
 *     Directories are never listed.
 *   - 404, without touching the file system, for any path that could leave the root or reveal
 *     what is not meant to be served: ".." or "." segments, encoded dots, slashes or backslashes
 *     ("%2e%2e", "%2f", "%5c"), raw backslashes, control bytes or "%00", and every segment that
 *     starts with '.' (".git", ".env"); also 404 when the file's real path, after following
 *     symlinks, lies outside the real path of root or has a name starting with '.' below it,
 *     or is not a regular file.
 * Anything else — a missing file, another method, a directory without an index — goes on with
 * nook_next(), so routes registered for those paths still answer. The body is read in 64 KiB
 * pieces as the connection accepts them, so a large file costs no more memory than a small
 * one; the file is closed when the request ends, however it ends.
 * root is resolved (realpath) now and must be a directory; the strings are copied. Call before
 * the server runs. Errors: NOOK_EINVAL (NULL srv or root, root not a directory, prefix not
 * starting with '/', unknown flags), NOOK_ENOMEM, and those of nook_use() (NOOK_ESTATE). */
enum {
    NOOK_STATIC_INDEX = 1 /* serve index.html for a directory */
};
NOOK_API int nook_use_static(nook_server *srv, const char *prefix, const char *root,
                             unsigned flags);

/* Response compression for requests at or below `prefix`: gzip, and "br" (Brotli) when the
 * library was built with it, chosen from the request's Accept-Encoding by its q-values ("*"
 * stands for codings not named; at equal q, br is preferred to gzip; "gzip;q=0" refuses gzip;
 * "identity" ranked above every acceptable coding keeps the body as it is). When no coding is
 * acceptable the response goes out unencoded — even if the client said "identity;q=0" — since
 * a readable answer serves it better than 406. No Accept-Encoding field: no compression.
 * The decision is made per response just before its head goes out, so it sees what the handler
 * set. A response is left alone when it already has Content-Encoding, its status is 1xx, 204,
 * 206 or 304, the request is HEAD, Cache-Control says no-transform, its Content-Type is not
 * text-like (text/..., JSON, JavaScript, XML, SVG, WebAssembly... — not images, audio, video or
 * archives), or its Content-Length is below `min_size`. A response whose length is not in its
 * headers (nook_respond() bodies, streams without Content-Length) counts as large enough. When
 * it compresses, it sets Content-Encoding, drops Content-Length and Accept-Ranges, makes a
 * strong ETag weak, and the body goes out chunked (HTTP/1.1). Vary: Accept-Encoding is added
 * whenever the answer depended on it: to every response of a compressible type that was not
 * excluded by the rules before it, compressed or not (HEAD and small bodies included).
 * Each piece the handler writes is compressed and flushed at once, so streamed responses
 * (server-sent events) reach the client as they are written. Memory per compressed response is
 * fixed whatever the body size: about 300 KiB for gzip, 1.8 MiB for br.
 * level: 1 (fastest) .. 9 (smallest), 0 for the default 6 (br uses at most quality 5).
 * min_size: bytes, 0 for the default 256.
 * Register it before the middleware and routes whose responses it should compress (it adds its
 * hooks on the way in). Call before the server runs. Errors: NOOK_EINVAL (NULL srv, level out
 * of range, prefix not starting with '/'), NOOK_ENOMEM, and those of nook_use() (NOOK_ESTATE).
 */
NOOK_API int nook_use_compress(nook_server *srv, const char *prefix, int level, size_t min_size);

/* Reverse proxy ---------------------------------------------------------------------------- */

/* A reverse-proxy configuration: the upstreams requests are forwarded to and how. Build it with
 * the nook_proxy_* calls, then hand it to nook_use_proxy(). Configuration calls are not
 * thread-safe and must all come before the server runs. */
typedef struct nook_proxy nook_proxy;

/* How a request picks its upstream among those not marked down. */
typedef enum nook_proxy_balance {
    NOOK_PROXY_ROUND_ROBIN = 0,       /* in turn (per worker thread) */
    NOOK_PROXY_LEAST_OUTSTANDING = 1  /* the one with the fewest requests in flight (per worker) */
} nook_proxy_balance;

/* Request fields the proxy adds (nook_proxy_set_forwarded). */
enum {
    NOOK_PROXY_FORWARDED = 1,  /* Forwarded: for=CLIENT;host=HOST;proto=http|https (RFC 7239),
                                  appended to one the client sent */
    NOOK_PROXY_X_FORWARDED = 2 /* X-Forwarded-For (appended), X-Forwarded-Host and
                                  X-Forwarded-Proto (replaced) */
};

/* An empty configuration with the defaults: round-robin, certificate verification on (against
 * the system CA bundle), connect timeout 5000 ms, response timeout 60000 ms, idle timeout
 * 60000 ms, idle HTTP/1.1 upstream connections kept 4000 ms, an upstream that fails is skipped
 * for 5000 ms, at most 32 connections and 1024 waiting requests per upstream per worker, prefix
 * kept, both forwarded-field kinds added.
 * NULL when out of memory. Release with nook_proxy_free() unless nook_use_proxy() took it. */
NOOK_API nook_proxy *nook_proxy_new(void);

/* Adds an upstream by URL:
 *     "h2://host:port"    HTTP/2 over TLS (ALPN h2; the certificate must name host)
 *     "h2c://host:port"   HTTP/2 over cleartext, prior knowledge
 *     "http://host:port"  HTTP/1.1 over cleartext
 *     "https://host:port" HTTP/1.1 over TLS (ALPN http/1.1; the certificate must name host)
 * For TLS with host an IP address, no SNI is sent (RFC 6066 §3) and the certificate must list
 * that address in its subjectAltName (iPAddress).
 * A request an HTTP/2 upstream resets with HTTP_1_1_REQUIRED goes again to the same server over
 * HTTP/1.1 (TLS for h2://), provided none of its body had been sent yet (else 502).
 * host is an IPv4 address, "[IPv6]", or a name resolved now, once, with getaddrinfo(3) (the
 * first IPv4 answer, else the first): resolution blocks, which is why it happens here and never
 * while serving. A path after the port is not allowed. Up to 64 upstreams.
 * Errors: NOOK_EINVAL (malformed URL, unknown scheme, no port), NOOK_EADDR (the name does not
 * resolve), NOOK_ELIMIT (too many), NOOK_ESTATE (already in use by a server). */
NOOK_API int nook_proxy_add_upstream(nook_proxy *p, const char *url);

/* TLS for h2:// and https:// upstreams: ca_file (PEM, copied; NULL: the system bundle) holds
 * the certificates a server's chain must lead to; verify 0 accepts any certificate (for tests
 * only).
 * Errors: NOOK_EINVAL, NOOK_ESTATE, NOOK_ENOMEM. A CA file that cannot be read is reported by
 * nook_use_proxy() (NOOK_EINVAL, the reason in nook_proxy_last_error). */
NOOK_API int nook_proxy_set_tls(nook_proxy *p, const char *ca_file, int verify);

/* Errors for the setters below: NOOK_EINVAL (out of range), NOOK_ESTATE (in use). */
NOOK_API int nook_proxy_set_balance(nook_proxy *p, nook_proxy_balance balance);

/* connect_ms: TCP connect plus TLS handshake plus the upstream's first SETTINGS, >= 1; past it
 * the upstream is marked down and the requests waiting for that connection go to another
 * upstream that is up, else get 504 (a refused or failed connection: the same, else 502).
 * response_ms, >= 1: from when a request reaches the proxy, or from the latest piece of its
 * body, until the upstream's response head (→ 504). idle_ms, >= 0: an HTTP/2 upstream
 * connection with no request is closed after it, and a response during which nothing moves
 * for that long, neither response bytes from the upstream (while the client keeps up) nor
 * request body bytes from the client, is broken off as if the upstream had reset it; 0: never
 * (for long-lived streams). Milliseconds; -1 leaves a value as it is. */
NOOK_API int nook_proxy_set_timeouts(nook_proxy *p, int connect_ms, int response_ms, int idle_ms);

/* keepalive_ms: how long an idle HTTP/1.1 upstream connection is kept for the next request,
 * >= 0 (0: a new connection per request; -1: unchanged). Keep it below the upstreams' own
 * keep-alive timeout (often 5 s), so that the proxy, not the upstream, closes idle connections.
 * A request that meets a connection the upstream closed anyway goes again on a new connection
 * when that is safe (nothing of it was sent, or its method is idempotent and none of its body
 * was sent); otherwise it gets 502. Errors: NOOK_EINVAL, NOOK_ESTATE. */
NOOK_API int nook_proxy_set_keepalive(nook_proxy *p, int keepalive_ms);

/* max_conns: upstream connections per upstream per worker thread, 1..1024 (HTTP/2 connections
 * carry as many requests at once as the upstream's SETTINGS_MAX_CONCURRENT_STREAMS allow, never
 * more; HTTP/1.1 ones one at a time; requests beyond wait, within their response timeout).
 * down_ms: how long an upstream that failed (connection refused, reset, timed out) is skipped,
 * >= 0. -1 leaves a value as it is. */
NOOK_API int nook_proxy_set_limits(nook_proxy *p, int max_conns, int down_ms);

/* max_waiting: requests that may wait for a connection or a stream of one upstream, per worker
 * thread, 1..1048576 (-1: unchanged); a request that would wait past it gets 503 at once.
 * Errors: NOOK_EINVAL, NOOK_ESTATE. */
NOOK_API int nook_proxy_set_max_waiting(nook_proxy *p, int max_waiting);

/* strip 1: the registration prefix is removed from the path sent upstream ("/api/x" under
 * "/api" goes up as "/x"); 0 (default): the path goes up as received. */
NOOK_API int nook_proxy_set_strip_prefix(nook_proxy *p, int strip);

/* Which forwarding fields to add: NOOK_PROXY_FORWARDED | NOOK_PROXY_X_FORWARDED, or 0. */
NOOK_API int nook_proxy_set_forwarded(nook_proxy *p, unsigned flags);

/* Forwards every request at or below prefix (as for nook_use) to one of p's upstreams and
 * streams its response back; nothing after it in the chain sees these requests. Request bodies
 * and response bodies are streamed both ways with backpressure (an upload or download of any
 * size costs bounded memory); trailers are passed both ways (gRPC works through it).
 * Fields: hop-by-hop ones (Connection and what it names, Keep-Alive, Transfer-Encoding, TE
 * other than "trailers", Upgrade, Proxy-*) are removed both ways; Host becomes :authority for
 * HTTP/2 upstreams; forwarding fields are added (nook_proxy_set_forwarded); the upstream's
 * Alt-Svc is dropped.
 * Failures: no upstream up or a connection failure → 502; response timeout, or no upstream
 * that connects in time → 504; too many requests waiting (nook_proxy_set_max_waiting) → 503;
 * an upstream that breaks off a response already started → the client's stream is reset
 * (HTTP/2) or its connection closed (HTTP/1.1); a client that goes away → the upstream stream
 * is reset.
 * Connections to upstreams are kept per worker thread and reused.
 * On success the server owns p (freed by nook_server_free); on failure the caller keeps it.
 * Call before the server runs. Errors: NOOK_EINVAL (NULL srv or p, no upstream, bad prefix, the
 * TLS client could not be set up — an unreadable CA file: see nook_proxy_last_error),
 * NOOK_ESTATE (p already in use, or the server runs), NOOK_ENOMEM. */
NOOK_API int nook_use_proxy(nook_server *srv, const char *prefix, nook_proxy *p);

/* Why the last nook_proxy_add_upstream() or nook_use_proxy() on p failed ("" if none): a
 * static-length text inside p, valid until p changes or is freed. */
NOOK_API const char *nook_proxy_last_error(const nook_proxy *p);

/* Releases a configuration not handed to a server. NULL-safe. */
NOOK_API void nook_proxy_free(nook_proxy *p);

#ifdef __cplusplus
}
#endif
#endif /* NOOK_H */
