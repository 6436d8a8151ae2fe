#!/usr/bin/env python3
"""Middleware (nook_use / nook_next), way-out hooks (NOOK_ON_HEADERS, DONE, body filters) and
late responses (nook_req_suspend / nook_token_post), over HTTP/1.1, h2c and HTTP/2 over TLS:
the same behaviour on each. A HEADERS hook that changes the status keeps the framing right
(a body dropped for 204/304, one framed for a 204 turned 200, on whole, late and streamed
responses); a handler that returns without answering gets 500 even after a middleware
suspended; 1,000 late answers are in flight at once on each protocol, and every request and
token is gone afterwards. The server runs two worker loops.

    python3 test_middleware.py --server PATH/nook_test_server --hello PATH/hello
"""
import os
import re
import resource
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nooktest as nt  # noqa: E402
from nooktest import case, eq, expect  # noqa: E402



def protocols(ctx):
    """(name, curl flags, base URL, expected %{http_version})"""
    return [
        ("h1", ["--http1.1"], "http://127.0.0.1:%d" % ctx.plain, "1.1"),
        ("h2c", ["--http2-prior-knowledge"], "http://127.0.0.1:%d" % ctx.plain, "2"),
        ("h2-tls", ["--http2", "-k"], "https://127.0.0.1:%d" % ctx.tls, "2"),
    ]


def fetch(flags, url, *extra):
    """Returns (status, headers dict with lower-case names, body, http_version)."""
    rc, out, err = nt.curl("-s", "--max-time", "10", "-D", "-", "-w", "\n%{http_version}", *flags,
                           *extra, url)
    eq(rc, 0, "curl exit code for %s" % url)
    text = out if isinstance(out, str) else out.decode("latin-1")
    head, _, rest = text.partition("\r\n\r\n")
    body, _, version = rest.rpartition("\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        n, _, v = line.partition(":")
        headers[n.strip().lower()] = v.strip()
    return status, headers, body, version


@case
def way_out_headers_on_every_protocol(ctx):
    for name, flags, base, version in protocols(ctx):
        status, h, body, v = fetch(flags, base + "/mw/hello")
        eq((status, body, v), (200, "hello from handler", version), "%s: status, body, version" % name)
        eq(h.get("x-mw"), "seen", "%s: X-MW set by the HEADERS hook" % name)
        eq(h.get("x-mw-status"), "200", "%s: the hook sees the status" % name)


@case
def short_circuit_skips_the_handler(ctx):
    for name, flags, base, _ in protocols(ctx):
        status, h, body, _ = fetch(flags, base + "/mw/hello", "-H", "X-Block: 1")
        eq((status, body), (403, "blocked"), "%s: short-circuit answer" % name)
        expect("x-mw" not in h, "%s: no way-out hook from a middleware that answered" % name, h)


@case
def route_middleware_runs_for_its_route_only(ctx):
    # nook_route_use on "GET /users/{id}": its hook marks that route's answers, its check can
    # answer instead of the handler, and nothing else (another route, a 405 on the same path,
    # a 404) sees it.
    for name, flags, base, _ in protocols(ctx):
        status, h, body, _ = fetch(flags, base + "/users/7")
        eq((status, body, h.get("x-route-mw")), (200, "user:7", "users"),
           "%s: GET /users/7 through its route's middleware" % name)
        status, h, body, _ = fetch(flags, base + "/users/7", "-H", "X-Deny: 1")
        eq((status, body), (403, "denied"), "%s: the route's middleware answers" % name)
        status, h, body, _ = fetch(flags, base + "/users/7/posts/1")
        eq((status, h.get("x-route-mw")), (200, None), "%s: another route" % name)
        status, h, body, _ = fetch(flags, base + "/users/7", "-X", "POST", "-H", "X-Deny: 1")
        eq((status, h.get("x-route-mw")), (405, None), "%s: a 405 on the same path" % name)
        status, h, body, _ = fetch(flags, base + "/nothing/here", "-H", "X-Deny: 1")
        eq(status, 404, "%s: a 404" % name)


@case
def filter_on_streamed_response(ctx):
    for name, flags, base, _ in protocols(ctx):
        status, h, body, _ = fetch(flags, base + "/mw/stream", "-H", "X-Upper: 1")
        eq((status, body), (200, "ONE TWO THREE"), "%s: filtered streamed body" % name)
        eq(h.get("x-mw"), "seen", "%s: hook on a streamed response" % name)


@case
def hooks_and_filter_on_late_response(ctx):
    for name, flags, base, _ in protocols(ctx):
        status, h, body, _ = fetch(flags, base + "/mw/late", "-H", "X-Upper: 1")
        eq((status, body), (200, "LATE ANSWER"), "%s: late answer through the filter" % name)
        eq(h.get("x-mw-status"), "200", "%s: hook on a late response" % name)


@case
def middleware_sees_404(ctx):
    for name, flags, base, _ in protocols(ctx):
        status, h, _, _ = fetch(flags, base + "/mw/nothing-here")
        eq(status, 404, "%s: status" % name)
        eq(h.get("x-mw-status"), "404", "%s: middleware saw the 404 on its way out" % name)


@case
def prefix_is_segment_wise(ctx):
    status, h, _, _ = fetch(["--http1.1"], "http://127.0.0.1:%d/mwx" % ctx.plain)
    eq(status, 404, "status of /mwx")
    expect("x-mw" not in h, "/mw middleware does not cover /mwx", h)


@case
def done_hook_counts_finished_requests(ctx):
    base = "http://127.0.0.1:%d" % ctx.plain
    before = int(fetch(["--http1.1"], base + "/mw/count")[2])
    for flags in (["--http1.1"], ["--http2-prior-knowledge"]):
        fetch(flags, base + "/mw/hello")
    after = int(fetch(["--http1.1"], base + "/mw/count")[2])
    eq(after - before, 3, "DONE hooks run between two counts (count itself, two hellos)")


@case
def late_answers_with_query_body(ctx):
    for name, flags, base, _ in protocols(ctx):
        status, _, body, _ = fetch(flags, base + "/async?ms=30&body=later%21")
        eq((status, body), (200, "later!"), "%s: late answer" % name)


# ---------------------------------------------------------------------------------------------
# A HEADERS hook that changes the status: the framing follows the final status
# ---------------------------------------------------------------------------------------------

# (path, X-Set-Status, what): responses a hook makes bodiless
TO_BODILESS = [(p, code, "%s %s -> %s" % (what, p, code))
               for code in ("304", "204")
               for p, what in (("/mw/hello", "whole"), ("/mw/late", "late"),
                               ("/mw/stream", "streamed"),
                               ("/mw/stream?declared=1", "streamed with Content-Length"))]
# 204 answers a hook turns into 200: they need framing (an empty body)
FROM_BODILESS = [("/mw/nocontent?mode=%s" % m, "200", "%s 204 -> 200" % m)
                 for m in ("whole", "stream", "late")]


@case
def status_changed_by_a_hook_frames_the_response_h1(ctx):
    # Two requests on one connection, read strictly: body bytes after a 304, or a 200 with no
    # framing, make the second response unreadable (or the read time out).
    for path, code, what in TO_BODILESS + FROM_BODILESS:
        with nt.connect(ctx.plain) as s:
            s.sendall(nt.request_bytes("GET", path, [("X-Set-Status", code)]))
            rd = nt.Reader(s)
            r = rd.read_response("GET")
            eq((r.status, r.header("x-mw-status")), (int(code), code), "%s: status" % what)
            eq(r.body, b"", "%s: body" % what)
            if code == "200":
                expect(r.header("content-length") == "0" or r.chunked,
                       "%s: Content-Length: 0 or an empty chunked body" % what, r.header_list)
            else:
                eq((r.header("content-length"), r.header("transfer-encoding")), (None, None),
                   "%s: no framing fields" % what)
            s.sendall(nt.request_bytes("GET", "/mw/hello"))
            nxt = rd.read_response("GET")
            eq((nxt.status, nxt.body), (200, b"hello from handler"),
               "%s: the next request on the same connection" % what)


@case
def status_changed_by_a_hook_frames_the_response_h2(ctx):
    for name, port, tls in (("h2c", ctx.plain, False), ("h2-tls", ctx.tls, True)):
        c = nt.H2Client(nt.connect_h2(port, tls, timeout=5), "https" if tls else "http")
        try:
            for path, code, what in TO_BODILESS + FROM_BODILESS:
                r = c.get(path, [("x-set-status", code)])
                what = "%s %s" % (name, what)
                eq((r.status, r.headers.get("x-mw-status"), r.body, r.reset),
                   (int(code), code, b"", None), "%s: status, hook's view, body, reset" % what)
                if code != "200":
                    eq(r.headers.get("content-length"), None, "%s: no content-length" % what)
                r = c.get("/mw/hello")
                eq((r.status, r.body, r.reset), (200, b"hello from handler", None),
                   "%s: the next stream on the same connection" % what)
        finally:
            c.close()


@case
def declared_length_without_body_is_only_for_head(ctx):
    # nook_res_end() with a Content-Length declared and nothing written: a HEAD answer announces
    # the length; a GET cannot be answered so (NOOK_EINVAL), and its handler gets the 500.
    for name, flags, base, _ in protocols(ctx):
        url = base + "/mw/stream?declared=1&write=0"
        rc, out, err = nt.curl("-s", "-I", "--max-time", "10", *flags, url)
        eq(rc, 0, "%s: curl exit code for HEAD (stderr %s)" % (name, err))
        head = out.decode("latin-1").lower()
        expect(head.split(" ")[1] == "200" and "content-length: 13\r\n" in head,
               "%s: HEAD answered 200 with Content-Length: 13" % name, head)
        eq(fetch(flags, url)[0], 500, "%s: GET status" % name)


# ---------------------------------------------------------------------------------------------
# The automatic 500 is judged per step, also after a middleware suspended
# ---------------------------------------------------------------------------------------------

@case
def handler_answers_after_middleware_suspended(ctx):
    for name, flags, base, _ in protocols(ctx):
        status, h, body, _ = fetch(flags, base + "/mw/hello", "-H", "X-MW-Suspend: 1")
        eq((status, body), (200, "hello from handler"), "%s: answer after nook_next from a "
           "posted callback" % name)
        eq(h.get("x-mw-status"), "200", "%s: the middleware's hook" % name)


@case
def silent_handler_gets_500_also_after_middleware_suspended(ctx):
    for name, flags, base, _ in protocols(ctx):
        for suspend in ("0", "1"):
            status, h, body, _ = fetch(flags, base + "/mw/noresponse", "-H",
                                       "X-MW-Suspend: " + suspend)
            eq((status, body), (500, "Internal Server Error\n"),
               "%s, X-MW-Suspend %s: a handler that returns without answering" % (name, suspend))
            eq(h.get("x-mw-status"), "500", "%s: hooks see the 500" % name)
    expect("handler for GET /mw/noresponse returned without responding" in ctx.srv.stderr(),
           "the 500 logged", ctx.srv.stderr()[-500:])


def h2load(*args):
    p = subprocess.run(["h2load", *args], capture_output=True, text=True, timeout=120)
    m = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored", p.stdout)
    expect(m is not None, "an h2load summary", p.stdout[-800:] + p.stderr[-400:])
    return tuple(int(x) for x in m.groups())


def stats(ctx, query=""):
    """The test server's /stats counters as a dict of ints."""
    status, _, body, _ = fetch(["--http1.1"], "http://127.0.0.1:%d/stats%s" % (ctx.plain, query))
    eq(status, 200, "/stats status")
    return {k: int(v) for k, v in (line.split("=") for line in body.split())}


def settled_stats(ctx, timeout=5.0):
    """/stats once no late request and no token is left (DONE runs just after the client has
    its response), or as it is at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        st = stats(ctx)
        if (st["late_live"], st["tokens"]) == (0, 0) or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def thousand_in_flight(ctx, what, *h2load_args):
    # gate=1000: no answer leaves before 1,000 requests were in flight at once (or 15 s passed,
    # which then fails below): the pool of answering threads holds them.
    stats(ctx, "?reset=1")
    got = h2load(*h2load_args)
    st = settled_stats(ctx)
    eq(got, (1000, 1000, 0, 0), "%s: total, succeeded, failed, errored" % what)
    eq(st["late_peak"], 1000, "%s: late requests in flight at once" % what)
    eq((st["late_live"], st["tokens"]), (0, 0), "%s: live late requests and tokens afterwards"
       % what)


LATE_URL = "%s://127.0.0.1:%d/async?ms=10&gate=1000"


@case
def thousand_concurrent_late_answers_h2(ctx):
    # 1,000 requests in flight at once on 10 connections, answered from the pool's threads.
    thousand_in_flight(ctx, "h2c", "-n", "1000", "-c", "10", "-m", "100",
                       LATE_URL % ("http", ctx.plain))
    thousand_in_flight(ctx, "h2 over TLS", "-n", "1000", "-c", "10", "-m", "100",
                       LATE_URL % ("https", ctx.tls))


@case
def thousand_concurrent_late_answers_h1(ctx):
    # HTTP/1.1 has one request per connection in flight: 1,000 connections.
    thousand_in_flight(ctx, "HTTP/1.1", "--h1", "-n", "1000", "-c", "1000",
                       LATE_URL % ("http", ctx.plain))


@case
def nghttp_sees_late_answers(ctx):
    for name, base in (("h2c", "http://127.0.0.1:%d" % ctx.plain),
                       ("h2-tls", "https://127.0.0.1:%d" % ctx.tls)):
        rc, out, err = nt.run_tool(["nghttp", "-nv", base + "/mw/late"], timeout=20)
        text = out.decode("utf-8", "replace")
        eq(rc, 0, "%s: nghttp exit code (stderr %s)" % (name, err[-300:]))
        expect(re.search(r"recv \(stream_id=\d+\) :status: 200$", text, re.M),
               "%s: :status 200 from nghttp -nv" % name, text[-1500:])
        expect(re.search(r"recv \(stream_id=\d+\) x-mw: seen$", text, re.M),
               "%s: the middleware's header" % name, text[-1500:])
        rc, out, err = nt.run_tool(["nghttp", base + "/async?ms=30&body=late-for-nghttp"],
                                   timeout=20)
        eq((rc, out), (0, b"late-for-nghttp"), "%s: nghttp exit code and body" % name)


@case
def client_gone_before_late_answer(ctx):
    # The client leaves before the answer; the posted callback then gets NULL and frees its data
    # (the server's exit under ASan/LSan proves nothing leaked), and the server keeps serving.
    with nt.connect(ctx.plain) as s:
        s.sendall(nt.request_bytes("GET", "/async?ms=300"))
    import time
    time.sleep(0.5)
    eq(fetch(["--http1.1"], "http://127.0.0.1:%d/" % ctx.plain)[0], 200, "status afterwards")


def cancelled(ctx):
    return int(fetch(["--http1.1"], "http://127.0.0.1:%d/mw/cancelled" % ctx.plain)[2])


@case
def client_leaving_is_reported_h1(ctx):
    # HTTP/1.1: the client closes before the late answer: the CANCEL hook runs.
    before = cancelled(ctx)
    with nt.connect(ctx.plain) as s:
        s.sendall(nt.request_bytes("GET", "/mw/late"))
    time.sleep(0.3)
    eq(cancelled(ctx) - before, 1, "CANCEL hooks run for a closed HTTP/1.1 client")


@case
def client_reset_is_reported_h2(ctx):
    # HTTP/2: RST_STREAM for a stream still waiting for its late answer runs CANCEL, and the
    # connection goes on serving other streams.
    before = cancelled(ctx)
    with nt.connect(ctx.plain) as s:
        c = nt.H2Client(s, "http")
        late = c.send_get("/mw/late")
        time.sleep(0.005)
        c.conn.reset_stream(late)  # goes out with the next request
        r = c.get("/")
        eq((r.status, r.body), (200, b"Hello, World!"),
           "stream 3 answered on the same connection")
    time.sleep(0.3)
    eq(cancelled(ctx) - before, 1, "CANCEL hooks run for a reset HTTP/2 stream")


def setup(opts):
    # 1,000 HTTP/1.1 connections at once need as many descriptors, in h2load and the server.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    srv = nt.plain_and_tls_server(opts.server, "--threads", "2")
    ctx = type("Ctx", (), {})()
    ctx.plain, ctx.tls = srv.ports
    ctx.srv = srv
    return (ctx,), (srv,)


if __name__ == "__main__":
    nt.main(setup)
