#!/usr/bin/env python3
"""Middleware (nook_use / nook_next), way-out hooks (NOOK_ON_HEADERS, DONE, body filters) and
late responses (nook_req_suspend / nook_token_post), over HTTP/1.1, h2c and HTTP/2 over TLS:
the same behaviour on each.

    python3 test_middleware.py --server PATH/nook_test_server --hello PATH/hello
"""
import os
import re
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
    rc, out, err = nt.curl("-s", "-D", "-", "-w", "\n%{http_version}", *flags, *extra, url)
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


def h2load(*args):
    p = subprocess.run(["h2load", *args], capture_output=True, text=True, timeout=120)
    m = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored", p.stdout)
    expect(m is not None, "an h2load summary", p.stdout[-800:] + p.stderr[-400:])
    return tuple(int(x) for x in m.groups())


@case
def thousand_concurrent_late_answers_h2(ctx):
    # 1,000 requests in flight at once on 10 connections, each answered from another thread.
    got = h2load("-n", "1000", "-c", "10", "-m", "100", "http://127.0.0.1:%d/async?ms=100" % ctx.plain)
    eq(got, (1000, 1000, 0, 0), "h2c: total, succeeded, failed, errored")
    got = h2load("-n", "1000", "-c", "10", "-m", "100", "https://127.0.0.1:%d/async?ms=100" % ctx.tls)
    eq(got, (1000, 1000, 0, 0), "h2 over TLS: total, succeeded, failed, errored")


@case
def thousand_concurrent_late_answers_h1(ctx):
    got = h2load("--h1", "-n", "1000", "-c", "500", "http://127.0.0.1:%d/async?ms=100" % ctx.plain)
    eq(got, (1000, 1000, 0, 0), "HTTP/1.1: total, succeeded, failed, errored")


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
    import h2.config
    import h2.connection
    before = cancelled(ctx)
    with nt.connect(ctx.plain) as s:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "GET"), (":path", "/mw/late"), (":scheme", "http"),
                              (":authority", "x")], end_stream=True)
        s.sendall(conn.data_to_send())
        time.sleep(0.005)
        conn.reset_stream(1)
        conn.send_headers(3, [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                              (":authority", "x")], end_stream=True)
        s.sendall(conn.data_to_send())
        got, deadline = b"", time.monotonic() + 5
        ended = False
        while not ended and time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if getattr(ev, "stream_id", None) == 3 and type(ev).__name__ == "DataReceived":
                    got += ev.data
                if getattr(ev, "stream_id", None) == 3 and type(ev).__name__ == "StreamEnded":
                    ended = True
            s.sendall(conn.data_to_send())
        eq(got, b"Hello, World!", "stream 3 answered on the same connection")
    time.sleep(0.3)
    eq(cancelled(ctx) - before, 1, "CANCEL hooks run for a reset HTTP/2 stream")


def setup(opts):
    srv = nt.plain_and_tls_server(opts.server)
    ctx = type("Ctx", (), {})()
    ctx.plain, ctx.tls = srv.ports
    return (ctx,), (srv,)


if __name__ == "__main__":
    nt.main(setup)
