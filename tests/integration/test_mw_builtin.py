#!/usr/bin/env python3
"""The built-in middleware (access log, CORS, request id, rate limit) as the middleware example
wires them, over HTTP/1.1, h2c and HTTP/2 over TLS: the same behaviour on each.

    python3 test_mw_builtin.py --server PATH/nook_test_server --hello PATH/hello

The example is found next to hello (PATH/middleware).
"""
import json
import os
import re
import socket
import sys
import tempfile
import time
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


def setup(opts):
    binary = middleware_binary(opts)
    # One cleartext listener (HTTP/1.1 and h2c), one TLS listener; a limit no case reaches.
    srv = nt.TlsTestServer(binary, "--print-port", "--rate", "100000", "--burst", "100000",
                           "--threads", "2")
    srv.name = "middleware"
    srv.start()
    ctx = type("Ctx", (), {})()
    ctx.srv, ctx.binary = srv, binary
    ctx.plain, ctx.tls = srv.ports
    return (ctx,), (srv,)


if __name__ == "__main__":
    nt.main(setup)
