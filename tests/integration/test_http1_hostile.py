#!/usr/bin/env python3
"""Hostile and malformed HTTP/1.1 input: each gets the RFC status, the connection is closed, and
the server keeps serving honest clients. Plus limits and timeouts.

    python3 test_http1_hostile.py --server PATH/nook_test_server --hello PATH/hello
"""
import os
import re
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nooktest as nt  # noqa: E402
from nooktest import case, eq, expect  # noqa: E402

H = b"Host: a\r\n"


def post(extra, body=b""):
    return b"POST /echo HTTP/1.1\r\n" + H + extra + b"\r\n" + body


# (name, request bytes, expected status)
ROWS = [
    ("CL and TE both", post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                            b"0\r\n\r\n"), 400),
    ("two different Content-Length", post(b"Content-Length: 5\r\nContent-Length: 6\r\n",
                                          b"hello!"), 400),
    ("Content-Length: abc", post(b"Content-Length: abc\r\n", b"abc"), 400),
    ("Content-Length: -1", post(b"Content-Length: -1\r\n", b"x"), 400),
    ("Transfer-Encoding: gzip", post(b"Transfer-Encoding: gzip\r\n", b"x"), 400),
    ("Transfer-Encoding: foo, chunked", post(b"Transfer-Encoding: foo, chunked\r\n",
                                             b"0\r\n\r\n"), 501),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
    ("bare LF line endings", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ("bare CR", b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400),
    ("space before colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    ("NUL in a header value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    ("control byte 0x01 in a header value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
     400),
    ("bad chunk size zz", post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n"),
     400),
    ("chunk size overflow", post(b"Transfer-Encoding: chunked\r\n",
                                 b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"), 400),
    ("missing Host on HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("HTTP/2.0 request line", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ("request line over 8192 bytes",
     b"GET /files/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    ("header section over 16384 bytes",
     b"GET / HTTP/1.1\r\nHost: a\r\n" +
     b"".join(b"X-Fill-%02d: %s\r\n" % (i, b"v" * 1000) for i in range(17)) + b"\r\n", 431),
    ("101 header fields",
     b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(100)) +
     b"\r\n", 431),
]


class Ctx:
    def __init__(self, srv, body_srv):
        self.srv = srv
        self.port = srv.port
        self.body_port = body_srv.port


def status_of(data):
    m = re.match(rb"HTTP/1\.[01] ([0-9]{3}) ", data)
    return int(m.group(1)) if m else None


# How long to wait for the server to close after its error response. The server should close
# at once; 5 s is the brief's bound. Once three cases have shown that it does not close at all,
# later ones wait 1 s (still far more than a prompt close needs) so that a server with that bug
# does not push this file toward ctest's 300 s limit.
_eof_failures = [0]


def eof_wait():
    return 5.0 if _eof_failures[0] < 3 else 1.0


def hostile(port, req, want, one_byte, honest_port=None):
    """Sends req; expects exactly one response with status `want`, then EOF (within 5 s); then
    an honest GET / on a new connection must get 200."""
    wait = eof_wait()
    got = nt.send_raw(port, req, one_byte_at_a_time=one_byte, timeout=wait)
    expect(len(got) > 0, "a %d response" % want,
           "%s after %.1f s with no bytes%s" % ("a reset" if got.reset else
                                                 "EOF" if got.eof else "a timeout",
                                                 got.elapsed,
                                                 "" if got.unsent in (0, None) else
                                                 " (%s request bytes unsent)" % got.unsent))
    eq(status_of(got), want, "status (response %s)" % nt.short(bytes(got[:200])))
    try:
        responses = nt.parse_responses(bytes(got))
    except AssertionError as e:
        raise AssertionError("expected one well-formed response, got %s (%s)"
                             % (nt.short(bytes(got), 400), e))
    eq(len(responses), 1, "number of responses")
    r = nt.http(honest_port or port, "GET", "/")
    eq((r.status, r.body), (200, b"Hello, World!"), "an honest GET / afterwards")
    if not got.eof:
        _eof_failures[0] += 1
    expect(got.eof, "the server to close the connection after its %d response (waited %.0f s)"
           % (want, wait), "still open (response %s)" % nt.short(bytes(got[:200])))


def make_row_case(name, req, want, one_byte):
    def fn(t):
        hostile(t.port, req, want, one_byte)
    fn.__name__ = "%s -> %d (%s)" % (name, want, "one byte at a time" if one_byte else "whole")
    return fn


for _name, _req, _want in ROWS:
    for _one in (False, True):
        case(make_row_case(_name, _req, _want, _one))


# ---- limits: the boundary values are still accepted -----------------------------------------

@case
def exactly_100_header_fields_accepted(t):
    headers = [("X-H%d" % i, "v") for i in range(99)]  # + Host = 100
    r = nt.http(t.port, "GET", "/", headers=headers)
    eq((r.status, r.body), (200, b"Hello, World!"), "status and body with 100 header fields")


@case
def long_request_line_under_limit_accepted(t):
    path = "/files/" + "a" * 8000
    r = nt.http(t.port, "GET", path)
    eq((r.status, len(r.body)), (200, 8000), "status and body length for an 8 KB path")


@case
def body_at_limit_accepted(t):
    r = nt.http(t.body_port, "POST", "/echo", body=b"b" * 1000)
    eq((r.status, r.body), (200, b"b" * 1000), "status and body for a 1000-byte body "
       "(MAX_BODY=1000)")


def _body_rows():
    big = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n" + b"b" * 2000
    chunked = (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
               b"200\r\n" + b"c" * 512 + b"\r\n" + b"200\r\n" + b"c" * 512 + b"\r\n0\r\n\r\n")
    return [("Content-Length: 2000 over MAX_BODY=1000", big),
            ("chunked body of 1024 bytes over MAX_BODY=1000", chunked)]


for _name, _req in _body_rows():
    for _one in (False, True):
        def _fn(t, req=_req, one=_one):
            hostile(t.body_port, req, 413, one)
        _fn.__name__ = "%s -> 413 (%s)" % (_name, "one byte at a time" if _one else "whole")
        case(_fn)


# ---- timeouts and per-connection limits (servers of their own) ------------------------------

@case
def header_timeout_408(t):
    with nt.TestServer(t.opts.server, "--opt", "HEADER_TIMEOUT=500") as srv:
        with nt.connect(srv.port) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")  # no blank line: the head never ends
            t0 = time.monotonic()
            got = nt.recv_until_close(s, 5)
            dt = time.monotonic() - t0
        eq(status_of(got), 408, "status (response %s)" % nt.short(bytes(got[:200])))
        expect(got.eof, "the server to close the connection after its 408",
               "still open 5 s later")
        expect(0.3 <= dt <= 2.5, "408 and close 0.5 s after the partial head (at most ~2 s)",
               "%.2f s" % dt)
        r = nt.http(srv.port, "GET", "/")
        eq(r.status, 200, "an honest GET / afterwards")


@case
def paused_upload_outlives_body_timeout(t):
    # The handler holds the body for 1.5 s after each piece, longer than BODY_TIMEOUT; bytes
    # that arrive meanwhile must not start a body timeout the pause would then overrun.
    with nt.TestServer(t.opts.server, "--opt", "BODY_TIMEOUT=800") as srv:
        body = bytes(range(256)) * 4
        with nt.connect(srv.port, timeout=15) as s:
            s.sendall(b"POST /upload?pause_ms=1500 HTTP/1.1\r\nHost: a\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body[:100])
            time.sleep(0.3)  # the first piece is held now; the rest arrives during the pause
            s.sendall(body[100:])
            t0 = time.monotonic()
            r = nt.Reader(s).read_response()
            dt = time.monotonic() - t0
        fnv = 2166136261
        for b in body:
            fnv = ((fnv ^ b) * 16777619) & 0xffffffff
        eq((r.status, r.body), (200, b"bytes=%d fnv=%08x" % (len(body), fnv)),
           "the held upload's answer (after %.2f s)" % dt)


@case
def idle_timeout_closes_silently(t):
    with nt.TestServer(t.opts.server, "--opt", "IDLE_TIMEOUT=500") as srv:
        with nt.connect(srv.port) as s:
            s.sendall(nt.request_bytes("GET", "/"))
            rd = nt.Reader(s)
            r = rd.read_response()
            eq(r.status, 200, "first response")
            t0 = time.monotonic()
            closed = rd.at_eof(5)  # raises if any byte arrives
            dt = time.monotonic() - t0
        expect(closed, "the idle connection closed without a response",
               "still open after 5 s")
        expect(0.3 <= dt <= 2.5, "close about 0.5 s after the response (at most ~2 s)",
               "%.2f s" % dt)


@case
def max_requests_per_conn(t):
    with nt.TestServer(t.opts.server, "--opt", "MAX_REQUESTS_PER_CONN=2") as srv:
        with nt.connect(srv.port) as s:
            rd = nt.Reader(s)
            s.sendall(nt.request_bytes("GET", "/users/1"))
            r1 = rd.read_response()
            eq((r1.status, r1.body), (200, b"user:1"), "first response")
            expect((r1.header("Connection") or "").lower() != "close",
                   "no Connection: close on the first response", r1.header_list)
            s.sendall(nt.request_bytes("GET", "/users/2"))
            r2 = rd.read_response()
            eq((r2.status, r2.body), (200, b"user:2"), "second response")
            eq((r2.header("Connection") or "").lower(), "close",
               "Connection header of the second (last allowed) response")
            expect(rd.at_eof(5), "the server to close after the second response",
                   "still open after 5 s")


def setup(opts):
    srv = nt.TestServer(opts.server).start()
    body_srv = nt.TestServer(opts.server, "--opt", "MAX_BODY=1000").start()
    t = Ctx(srv, body_srv)
    t.opts = opts
    return (t,), [srv, body_srv]


if __name__ == "__main__":
    nt.main(setup)
