#!/usr/bin/env python3
"""The built-in middleware (access log, CORS, request id, rate limit, compression) as the
middleware example wires them, over HTTP/1.1, h2c and HTTP/2 over TLS: the same behaviour on
each. The access log is checked in all three formats, and through a callback sink (the test
server's --access-log) for streamed, late and cancelled requests.

    python3 test_mw_builtin.py --server PATH/nook_test_server --hello PATH/hello

The example is found next to hello (PATH/middleware).
"""
import calendar
import json
import os
import re
import socket
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nooktest as nt  # noqa: E402
from nooktest import case, eq, expect  # noqa: E402

ORIGIN = "https://app.example"
TOKEN = "Bearer letmein"
HEX_ID = re.compile(r"[0-9a-f]{32}")


def protocols(ctx):
    """(name, curl flags, base URL, protocol the access log names)"""
    return [
        ("h1", ["--http1.1"], "http://127.0.0.1:%d" % ctx.plain, "HTTP/1.1"),
        ("h2c", ["--http2-prior-knowledge"], "http://127.0.0.1:%d" % ctx.plain, "HTTP/2"),
        ("h2-tls", ["--http2", "-k"], "https://127.0.0.1:%d" % ctx.tls, "HTTP/2"),
    ]


def fetch(flags, url, *extra):
    """Returns (status, headers: lower-case name -> list of values, body)."""
    rc, out, err = nt.curl("-s", "--max-time", "10", "-D", "-", *flags, *extra, url, timeout=15)
    eq(rc, 0, "curl exit code for %s (stderr %s)" % (url, err))
    text = out.decode("latin-1")
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = {}
    for line in lines[1:]:
        n, _, v = line.partition(":")
        headers.setdefault(n.strip().lower(), []).append(v.strip())
    return int(lines[0].split()[1]), headers, body


def one(headers, name):
    """The single value of a response header (None when absent); fails if it repeats."""
    values = headers.get(name, [])
    expect(len(values) <= 1, "at most one %s header" % name, values)
    return values[0] if values else None


def cors_headers(headers):
    return {n: v for n, v in headers.items() if n.startswith("access-control-")}


def log_entries(srv):
    """Every JSON access log line the server has written to stderr so far."""
    out = []
    for line in srv.stderr().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def log_entry(srv, target, timeout=5.0):
    """The one access log entry for `target`; waits for it, as the line is written when the
    response has ended, which may be just after the client has it."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in log_entries(srv) if e.get("target") == target]
        if found or time.monotonic() > deadline:
            eq(len(found), 1, "access log entries for %s" % target)
            return found[0]
        time.sleep(0.02)


def middleware_binary(opts):
    path = Path(opts.hello).parent / "middleware"
    if not path.exists():
        raise AssertionError("expected the middleware example at %s, got no such file" % path)
    return str(path)


def example_server(binary, *args, listen=("127.0.0.1:0",)):
    srv = nt.TestServer(binary, "--print-port", *args, listen=listen)
    srv.name = "middleware"
    return srv


# ---------------------------------------------------------------------------------------------
# A hand-written middleware that answers itself
# ---------------------------------------------------------------------------------------------

@case
def auth_middleware_short_circuits_on_every_protocol(ctx):
    for name, flags, base, _ in protocols(ctx):
        status, h, body = fetch(flags, base + "/private")
        eq((status, body), (401, "unauthorized\n"), "%s: without the token" % name)
        eq(one(h, "www-authenticate"), "Bearer", "%s: WWW-Authenticate" % name)
        status, _, body = fetch(flags, base + "/private", "-H", "Authorization: " + TOKEN)
        eq((status, body), (200, "secret"), "%s: with the token" % name)
        status, _, body = fetch(flags, base + "/")
        eq((status, body), (200, "public"), "%s: the public page" % name)


# ---------------------------------------------------------------------------------------------
# Access log
# ---------------------------------------------------------------------------------------------

@case
def access_log_has_one_json_line_per_request(ctx):
    for name, flags, base, proto in protocols(ctx):
        for path, want_status, want_body in (("/private", 401, "unauthorized\n"),
                                             ("/", 200, "public")):
            target = "%s?case=log-%s" % (path, name)
            status, _, body = fetch(flags, base + target, "-A", "nooktest/" + name,
                                    "-e", "https://ref.example/" + name)
            eq(status, want_status, "%s %s: status" % (name, target))
            e = log_entry(ctx.srv, target)
            got = {k: e.get(k) for k in ("ip", "method", "target", "protocol", "status", "bytes",
                                         "referer", "user_agent")}
            eq(got, {"ip": "127.0.0.1", "method": "GET", "target": target, "protocol": proto,
                     "status": want_status, "bytes": len(want_body.encode()),
                     "referer": "https://ref.example/" + name, "user_agent": "nooktest/" + name},
               "%s: logged fields" % name)
            expect(isinstance(e.get("duration_us"), int) and e["duration_us"] > 0,
                   "%s: a positive duration_us" % name, e.get("duration_us"))
            expect(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", e.get("time", "")),
                   "%s: an RFC 3339 UTC time" % name, e.get("time"))


@case
def access_log_escapes_what_the_client_sent(ctx):
    # A quote and a backslash must not end the JSON string; a byte that is not UTF-8 must not
    # make the line unreadable.
    agent = b'evil", "status": 200, \\ \xff'
    target = "/?case=escape"
    r = nt.http(ctx.plain, "GET", target, headers=[("User-Agent", agent)])
    eq(r.status, 200, "status")
    e = log_entry(ctx.srv, target)
    eq(e.get("user_agent"), 'evil", "status": 200, \\ \ufffd', "user_agent as logged")
    eq(e.get("referer"), None, "an absent referer is null")
    eq(e.get("status"), 200, "the status field is the real one")


# ---------------------------------------------------------------------------------------------
# CORS
# ---------------------------------------------------------------------------------------------

@case
def cors_simple_request_from_allowed_origin(ctx):
    for name, flags, base, _ in protocols(ctx):
        status, h, body = fetch(flags, base + "/", "-H", "Origin: " + ORIGIN)
        eq((status, body), (200, "public"), "%s: status and body" % name)
        eq(cors_headers(h), {"access-control-allow-origin": [ORIGIN]}, "%s: CORS headers" % name)
        expect("Origin" in ", ".join(h.get("vary", [])), "%s: Vary: Origin" % name, h.get("vary"))
        # A middleware after CORS answers itself: its answer still carries the headers.
        status, h, _ = fetch(flags, base + "/private", "-H", "Origin: " + ORIGIN)
        eq(status, 401, "%s: status without the token" % name)
        eq(one(h, "access-control-allow-origin"), ORIGIN, "%s: CORS on the 401" % name)


@case
def cors_preflight_is_answered_before_routing(ctx):
    for name, flags, base, _ in protocols(ctx):
        # /private would answer 401 (no token) and its route 405 (GET only): 204 proves that
        # neither saw the preflight.
        target = "/private?case=preflight-%s" % name
        status, h, body = fetch(flags, base + target, "-X", "OPTIONS",
                                "-H", "Origin: " + ORIGIN,
                                "-H", "Access-Control-Request-Method: POST",
                                "-H", "Access-Control-Request-Headers: authorization")
        eq((status, body), (204, ""), "%s: preflight status and body" % name)
        eq(cors_headers(h), {
            "access-control-allow-origin": [ORIGIN],
            "access-control-allow-methods": ["GET, POST"],
            "access-control-allow-headers": ["Authorization, Content-Type"],
            "access-control-max-age": ["600"],
        }, "%s: preflight headers" % name)
        expect(HEX_ID.fullmatch(one(h, "x-request-id") or ""),
               "%s: earlier middleware still adds its headers" % name, h.get("x-request-id"))
        eq(log_entry(ctx.srv, target).get("status"), 204, "%s: logged status" % name)


@case
def cors_foreign_origin_gets_no_cors_headers(ctx):
    for name, flags, base, _ in protocols(ctx):
        status, h, body = fetch(flags, base + "/", "-H", "Origin: https://evil.example")
        eq((status, body), (200, "public"), "%s: the request still proceeds" % name)
        eq(cors_headers(h), {}, "%s: CORS headers" % name)
        # Its preflight is not answered either: it goes on to routing (GET-only route: 405).
        status, h, _ = fetch(flags, base + "/", "-X", "OPTIONS",
                             "-H", "Origin: https://evil.example",
                             "-H", "Access-Control-Request-Method: POST")
        eq(status, 405, "%s: foreign preflight reaches routing" % name)
        eq(cors_headers(h), {}, "%s: CORS headers on the foreign preflight" % name)


# ---------------------------------------------------------------------------------------------
# Request id
# ---------------------------------------------------------------------------------------------

@case
def request_id_is_generated_when_absent(ctx):
    for name, flags, base, _ in protocols(ctx):
        ids = [one(fetch(flags, base + "/")[1], "x-request-id") for _ in range(2)]
        for i in ids:
            expect(i is not None and HEX_ID.fullmatch(i), "%s: 32 lowercase hex digits" % name, i)
        expect(ids[0] != ids[1], "%s: a new id per request" % name, ids)


@case
def request_id_is_reused_when_well_formed(ctx):
    for name, flags, base, _ in protocols(ctx):
        for incoming in ("abc.DEF_1-2", "x", "a" * 128):
            _, h, _ = fetch(flags, base + "/", "-H", "X-Request-Id: " + incoming)
            eq(one(h, "x-request-id"), incoming, "%s: id for %s" % (name, nt.short(incoming, 40)))


@case
def request_id_is_replaced_when_malformed(ctx):
    for name, flags, base, _ in protocols(ctx):
        for incoming in ("has space", "a" * 129, "a" * 200, "semi;colon", "quote\"d"):
            _, h, _ = fetch(flags, base + "/", "-H", "X-Request-Id: " + incoming)
            got = one(h, "x-request-id")
            expect(got is not None and HEX_ID.fullmatch(got),
                   "%s: a new id instead of %s" % (name, nt.short(incoming, 40)), got)


# ---------------------------------------------------------------------------------------------
# Rate limit (own servers: the shared one allows plenty, so the cases above never meet it)
# ---------------------------------------------------------------------------------------------

def codes(url, n, *flags):
    """Status codes of n requests sent back to back on one connection."""
    outputs = [a for _ in range(n) for a in ("-o", "/dev/null", url)]
    rc, out, err = nt.curl("-s", "--max-time", "10", "-w", "%{http_code}\n", *flags, *outputs,
                           timeout=15)
    eq(rc, 0, "curl exit code (stderr %s)" % err)
    return [int(c) for c in out.decode().split()]


@case
def rate_limit_refuses_a_burst_and_recovers(ctx):
    with tempfile.TemporaryDirectory(prefix="nook-mw-") as tmp:
        rate_limit_burst_and_recovery(ctx, os.path.join(tmp, "mw.sock"))


def rate_limit_burst_and_recovery(ctx, sock):
    with example_server(ctx.binary, "--rate", "2", "--burst", "3",
                        listen=("127.0.0.1:0", "unix:" + sock)) as srv:
        base = "http://127.0.0.1:%d/" % srv.ports[0]
        got = codes(base, 6, "--http1.1")
        eq(got[:3], [200, 200, 200], "the burst")
        expect(got[3:] == [429, 429, 429], "429 once the bucket is empty", got)
        status, h, body = fetch(["--http2-prior-knowledge"], base)
        eq((status, body), (429, "Too Many Requests\n"), "h2c: status and body")
        eq(one(h, "retry-after"), "1", "Retry-After (2 per second: under a second, rounded up)")
        time.sleep(1.1)
        eq(codes(base, 1, "--http1.1"), [200], "after waiting")

        # Unix-socket clients have no address: they share one bucket of their own.
        got = [codes("http://localhost/", 1, "--unix-socket", sock)[0] for _ in range(4)]
        eq(got, [200, 200, 200, 429], "four Unix-socket connections")
        eq(log_entries(srv)[-1].get("ip"), "unix", "the access log's ip for a Unix socket")


def get_from(source_ip, port):
    """Status of GET / sent from a chosen loopback address."""
    with socket.create_connection(("127.0.0.1", port), timeout=5,
                                  source_address=(source_ip, 0)) as s:
        s.sendall(nt.request_bytes("GET", "/"))
        return nt.Reader(s, timeout=5).read_response("GET").status


@case
def rate_limit_forgets_the_least_recent_client_when_full(ctx):
    # One client remembered, one request per client: a second client takes the first one's
    # place, so the first starts again with a full bucket. Memory stays bounded.
    with example_server(ctx.binary, "--rate", "0.01", "--burst", "1", "--max-clients", "1") as srv:
        port = srv.port
        try:
            eq(get_from("127.0.0.2", port), 200, "127.0.0.2: first request")
        except OSError as e:
            raise nt.Skip("cannot use 127.0.0.2 as a source address: %s" % e)
        eq(get_from("127.0.0.2", port), 429, "127.0.0.2: second request")
        eq(get_from("127.0.0.3", port), 200, "127.0.0.3: a new client")
        eq(get_from("127.0.0.3", port), 429, "127.0.0.3: second request")
        eq(get_from("127.0.0.2", port), 200, "127.0.0.2: forgotten, so a full bucket again")


# ---------------------------------------------------------------------------------------------
# Compression, as the example wires it
# ---------------------------------------------------------------------------------------------

def has_vary(headers, token):
    values = ", ".join(headers.get("vary", []))
    return token.lower() in [v.strip().lower() for v in values.split(",")]


@case
def large_page_is_gzip_compressed_on_every_protocol(ctx):
    for name, flags, base, _ in protocols(ctx):
        status, h, page = fetch(flags, base + "/about")
        eq((status, one(h, "content-encoding")), (200, None), "%s: without Accept-Encoding" % name)
        expect(len(page) >= 1024, "%s: a page of at least 1 KiB" % name, len(page))
        status, h, body = fetch(flags, base + "/about", "-H", "Accept-Encoding: gzip")
        eq((status, one(h, "content-encoding")), (200, "gzip"), "%s: Content-Encoding" % name)
        expect(has_vary(h, "Accept-Encoding"), "%s: Vary: Accept-Encoding" % name, h.get("vary"))
        eq(one(h, "content-length"), None, "%s: no Content-Length for the gzip body" % name)
        raw = body.encode("latin-1")
        expect(len(raw) < len(page), "%s: smaller than the page" % name, len(raw))
        eq(zlib.decompress(raw, 31).decode("latin-1"), page, "%s: inflated body" % name)
        # The short answers stay as they are, with Vary all the same.
        status, h, body = fetch(flags, base + "/", "-H", "Accept-Encoding: gzip")
        eq((status, body, one(h, "content-encoding")), (200, "public", None),
           "%s: / below the threshold" % name)
        expect(has_vary(h, "Accept-Encoding"), "%s: Vary on the small answer" % name, h.get("vary"))


# ---------------------------------------------------------------------------------------------
# Access log: Common and Combined Log Format lines from a live server
# ---------------------------------------------------------------------------------------------

CLF = re.compile(r'^(?P<ip>\S+) - - \[(?P<day>\d\d)/(?P<mon>[A-Z][a-z]{2})/(?P<year>\d{4}):'
                 r'(?P<hms>\d\d:\d\d:\d\d) \+0000\] "(?P<method>\S+) (?P<target>\S+) '
                 r'(?P<proto>HTTP/[0-9.]+)" (?P<status>\d{3}) (?P<bytes>\d+)'
                 r'(?: "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)")?$')


def clf_entry(srv, target, timeout=5.0):
    """The one CLF line (parsed) whose request target is `target`."""
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in (CLF.match(l) for l in srv.stderr().splitlines())
                 if m and m.group("target") == target]
        if found or time.monotonic() > deadline:
            eq(len(found), 1, "CLF lines for %s" % target)
            return found[0]
        time.sleep(0.02)


def check_clf_time(m, what):
    logged = time.strptime("%s/%s/%s:%s" % (m["day"], m["mon"], m["year"], m["hms"]),
                           "%d/%b/%Y:%H:%M:%S")
    expect(abs(calendar.timegm(logged) - time.time()) < 300, "%s: the time, in UTC" % what,
           m.group(0))


@case
def access_log_common_and_combined_formats(ctx):
    for fmt in ("common", "combined"):
        srv = nt.TlsTestServer(ctx.binary, "--print-port", "--log", fmt, "--rate", "100000",
                               "--burst", "100000")
        srv.name = "middleware --log " + fmt
        with srv:
            c = type("Ctx", (), {"plain": srv.ports[0], "tls": srv.ports[1]})()
            for name, flags, base, proto in protocols(c):
                for path, want_status, want_body in (("/private", 401, "unauthorized\n"),
                                                     ("/", 200, "public")):
                    target = "%s?case=%s-%s" % (path, fmt, name)
                    status, _, body = fetch(flags, base + target, "-A", "agent/" + name,
                                            "-e", "https://ref.example/" + name)
                    eq((status, body), (want_status, want_body), "%s %s: answer" % (fmt, target))
                    m = clf_entry(srv, target)
                    what = "%s %s" % (fmt, target)
                    got = (m["ip"], m["method"], m["proto"], int(m["status"]), int(m["bytes"]))
                    eq(got, ("127.0.0.1", "GET", proto, want_status, len(want_body)),
                       "%s: ip, method, protocol, status, bytes" % what)
                    check_clf_time(m, what)
                    if fmt == "combined":
                        eq((m["referer"], m["agent"]), ("https://ref.example/" + name,
                                                        "agent/" + name), "%s: referer, agent" % what)
                    else:
                        eq(m["referer"], None, "%s: no referer/agent fields" % what)
            # Quotes, backslashes and bytes that are not ASCII are escaped: the line keeps its
            # shape and no field can be forged.
            target = "/?case=%s-escape" % fmt
            r = nt.http(srv.ports[0], "GET", target,
                        headers=[("User-Agent", b'evil" 200 9 "x\\ \xff'), ("Referer", b"-")])
            eq(r.status, 200, "%s escape: status" % fmt)
            m = clf_entry(srv, target)
            eq((int(m["status"]), int(m["bytes"])), (200, 6), "%s escape: real status and bytes"
               % fmt)
            if fmt == "combined":
                eq(m["agent"], 'evil\\" 200 9 \\"x\\\\ \\xff', "%s escape: the agent as logged" % fmt)


# ---------------------------------------------------------------------------------------------
# Access log through a callback sink (the test server's --access-log): streamed, late and
# cancelled requests are logged when they end, with their status, bytes and duration
# ---------------------------------------------------------------------------------------------

SINK_PREFIX = "ACCESS(test-sink) "


def sink_entries(srv):
    return [json.loads(l[len(SINK_PREFIX):]) for l in srv.stderr().splitlines()
            if l.startswith(SINK_PREFIX)]


def sink_entry(srv, target, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in sink_entries(srv) if e.get("target") == target]
        if found or time.monotonic() > deadline:
            eq(len(found), 1, "sink lines for %s" % target)
            return found[0]
        time.sleep(0.02)


def logged(srv, target):
    e = sink_entry(srv, target)
    expect(isinstance(e.get("duration_us"), int) and e["duration_us"] > 0,
           "%s: a positive duration_us" % target, e)
    return e["status"], e["bytes"], e["duration_us"], e["protocol"]


@case
def access_log_callback_sink_sees_streamed_late_and_cancelled_requests(ctx):
    srv = nt.TlsTestServer(ctx.test_server, "--access-log", "json", "--threads", "2")
    with srv:
        plain, tls = srv.ports
        c = type("Ctx", (), {"plain": plain, "tls": tls})()
        for name, flags, base, proto in protocols(c):
            # Streamed: 4 pieces of 1000 bytes, written with nook_res_write.
            target = "/stream?n=4&size=1000&case=" + name
            status, _, body = fetch(flags, base + target)
            eq((status, len(body)), (200, 4000), "%s: streamed answer" % name)
            st, nbytes, _, p = logged(srv, target)
            eq((st, nbytes, p), (200, 4000, proto), "%s streamed: status, bytes, protocol" % name)
            # Late: answered from another thread after 150 ms.
            target = "/async?ms=150&body=later&case=" + name
            eq(fetch(flags, base + target)[::2], (200, "later"), "%s: late answer" % name)
            st, nbytes, us, _ = logged(srv, target)
            eq((st, nbytes), (200, 5), "%s late: status and bytes" % name)
            expect(us >= 150000, "%s late: a duration of at least the 150 ms wait" % name, us)
        # Cancelled before the late answer (HTTP/1.1: the client closes; h2c: curl gives up and
        # leaves): logged when the client went, with the status it had (nothing sent: 200, 0).
        target = "/async?ms=3000&body=never&case=cancel-h1"
        with nt.connect(plain) as s:
            s.sendall(nt.request_bytes("GET", target))
            time.sleep(0.1)
        st, nbytes, us, _ = logged(srv, target)
        eq((st, nbytes), (200, 0), "h1 cancelled late request: status and bytes")
        expect(us < 2500000, "h1 cancelled: logged when the client left, not at the answer", us)
        target = "/async?ms=3000&body=never&case=cancel-h2c"
        rc, _, _ = nt.curl("-s", "--http2-prior-knowledge", "-m", "0.3", "-o", "/dev/null",
                           "http://127.0.0.1:%d%s" % (plain, target))
        eq(rc, 28, "curl gave up (timeout)")
        st, nbytes, us, _ = logged(srv, target)
        eq((st, nbytes), (200, 0), "h2c cancelled late request: status and bytes")
        expect(us < 2500000, "h2c cancelled: logged when the client left", us)
        # Cancelled mid-body: a 64 MiB stream the client abandons after its first bytes.
        target = "/stream?n=1024&size=65536&case=cancel-mid-body"
        with nt.connect(plain) as s:
            s.sendall(nt.request_bytes("GET", target))
            expect(len(s.recv(65536)) > 0, "the first bytes of the stream")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        st, nbytes, _, _ = logged(srv, target)
        eq(st, 200, "cancelled mid-body: status")
        expect(0 < nbytes < 1024 * 65536, "cancelled mid-body: some bytes, not all", nbytes)
        # Every line came through the callback with its user_data; none went to stderr bare.
        bare = [l for l in srv.stderr().splitlines() if l.startswith("{")]
        eq(bare, [], "access log lines written without the sink")


# ---------------------------------------------------------------------------------------------
# nghttp: a CORS preflight
# ---------------------------------------------------------------------------------------------

@case
def nghttp_cors_preflight(ctx):
    for name, base in (("h2c", "http://127.0.0.1:%d" % ctx.plain),
                       ("h2-tls", "https://127.0.0.1:%d" % ctx.tls)):
        rc, out, err = nt.run_tool(["nghttp", "-nv", "-H", ":method: OPTIONS", "-H",
                                    "origin: " + ORIGIN, "-H",
                                    "access-control-request-method: POST",
                                    base + "/private?case=nghttp-" + name], timeout=20)
        text = out.decode("utf-8", "replace")
        eq(rc, 0, "%s: nghttp exit code (stderr %s)" % (name, err[-300:]))
        recv = dict(re.findall(r"recv \(stream_id=\d+\) ([^:\s][^:]*|:status): (.*)$", text, re.M))
        eq(recv.get(":status"), "204", "%s: preflight status" % name)
        eq(recv.get("access-control-allow-origin"), ORIGIN, "%s: allowed origin" % name)
        eq(recv.get("access-control-allow-methods"), "GET, POST", "%s: allowed methods" % name)


def setup(opts):
    binary = middleware_binary(opts)
    # One cleartext listener (HTTP/1.1 and h2c), one TLS listener; a limit no case reaches.
    srv = nt.TlsTestServer(binary, "--print-port", "--rate", "100000", "--burst", "100000",
                           "--threads", "2")
    srv.name = "middleware"
    srv.start()
    ctx = type("Ctx", (), {})()
    ctx.srv, ctx.binary, ctx.test_server = srv, binary, opts.server
    ctx.plain, ctx.tls = srv.ports
    return (ctx,), (srv,)


if __name__ == "__main__":
    nt.main(setup)
