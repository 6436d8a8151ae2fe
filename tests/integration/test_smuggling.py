#!/usr/bin/env python3
"""Request smuggling corpus: malformed HTTP/1.1 requests, table-driven. Each row is the request
bytes (often with a second, smuggled request behind them), the status the server must answer,
and whether it must then close the connection. Every row is replayed whole and one byte at a
time; the server must give exactly one response (a smuggled request is never answered) and,
where the row says so, close.

    python3 test_smuggling.py --server PATH/nook_test_server --hello PATH/hello
"""
import os
import re
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nooktest as nt  # noqa: E402
from nooktest import case, eq, expect  # noqa: E402

SMUGGLED = b"GET /users/smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
CLOSE = True


def post(headers, body=b""):
    return b"POST /echo HTTP/1.1\r\nHost: a\r\n" + headers + b"\r\n" + body


# (name, request bytes, expected status, the server closes afterwards)
CORPUS = [
    # -- Content-Length / Transfer-Encoding conflicts (CL.TE, TE.CL, TE.TE) --
    ("CL.TE: both headers", post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                                 b"0\r\n\r\nG" + SMUGGLED), 400, CLOSE),
    ("TE.CL: both, TE first", post(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                                   b"8\r\nSMUGGLED\r\n0\r\n\r\n"), 400, CLOSE),
    ("two different Content-Length", post(b"Content-Length: 5\r\nContent-Length: 40\r\n",
                                          b"hello" + SMUGGLED), 400, CLOSE),
    ("Content-Length list 5, 40", post(b"Content-Length: 5, 40\r\n", b"hello"), 400, CLOSE),
    ("Content-Length with a plus sign", post(b"Content-Length: +5\r\n", b"hello"), 400, CLOSE),
    ("Content-Length negative", post(b"Content-Length: -5\r\n", b"hello"), 400, CLOSE),
    ("Content-Length hex", post(b"Content-Length: 0x5\r\n", b"hello"), 400, CLOSE),
    ("Content-Length with inner space", post(b"Content-Length: 1 0\r\n", b"0123456789"), 400,
     CLOSE),
    ("Content-Length empty", post(b"Content-Length: \r\n", b""), 400, CLOSE),
    ("Content-Length overflowing 64 bits",
     post(b"Content-Length: 18446744073709551617\r\n", b"x"), 400, CLOSE),
    ("Content-Length with a NUL", post(b"Content-Length: 5\x00\r\n", b"hello"), 400, CLOSE),
    ("Content-Length name with trailing space", post(b"Content-Length : 5\r\n", b"hello"),
     400, CLOSE),
    ("Transfer-Encoding name with trailing space",
     post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"), 400, CLOSE),
    ("Transfer-Encoding: chunked, chunked", post(b"Transfer-Encoding: chunked, chunked\r\n",
                                                 b"0\r\n\r\n"), 400, CLOSE),
    ("Transfer-Encoding: identity", post(b"Transfer-Encoding: identity\r\n", b"hello"), 400,
     CLOSE),
    ("Transfer-Encoding: xchunked", post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
     400, CLOSE),
    ("Transfer-Encoding: chunked, gzip (chunked not last)",
     post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"), 400, CLOSE),
    ("Transfer-Encoding: foo, chunked (unknown coding)",
     post(b"Transfer-Encoding: foo, chunked\r\n", b"0\r\n\r\n"), 501, CLOSE),
    ("Transfer-Encoding: gzip, chunked (a coding nook does not decode)",
     post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 501, CLOSE),
    ("Transfer-Encoding with a vertical tab", post(b"Transfer-Encoding:\x0bchunked\r\n",
                                                   b"0\r\n\r\n"), 400, CLOSE),
    ("Transfer-Encoding obs-folded", post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"),
     400, CLOSE),
    ("Transfer-Encoding on HTTP/1.0",
     b"POST /echo HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
     CLOSE),
    # -- chunked framing --
    ("chunk size with a 0x prefix", post(b"Transfer-Encoding: chunked\r\n",
                                         b"0x5\r\nhello\r\n0\r\n\r\n"), 400, CLOSE),
    ("chunk size negative", post(b"Transfer-Encoding: chunked\r\n",
                                 b"-5\r\nhello\r\n0\r\n\r\n"), 400, CLOSE),
    ("chunk size with a leading space", post(b"Transfer-Encoding: chunked\r\n",
                                             b" 5\r\nhello\r\n0\r\n\r\n"), 400, CLOSE),
    ("chunk size overflowing 64 bits", post(b"Transfer-Encoding: chunked\r\n",
                                            b"10000000000000005\r\nhello\r\n0\r\n\r\n"),
     400, CLOSE),
    ("chunk data longer than its size", post(b"Transfer-Encoding: chunked\r\n",
                                             b"3\r\nhello\r\n0\r\n\r\n"), 400, CLOSE),
    ("chunk without CRLF after the data", post(b"Transfer-Encoding: chunked\r\n",
                                               b"5\r\nhelloXX0\r\n\r\n"), 400, CLOSE),
    ("chunk size line ending in bare LF", post(b"Transfer-Encoding: chunked\r\n",
                                               b"5\nhello\r\n0\r\n\r\n"), 400, CLOSE),
    ("chunk extension with a bare CR", post(b"Transfer-Encoding: chunked\r\n",
                                            b"5;a=b\rc\r\nhello\r\n0\r\n\r\n"), 400, CLOSE),
    ("chunk size not hex", post(b"Transfer-Encoding: chunked\r\n",
                                b"g\r\nhello\r\n0\r\n\r\n"), 400, CLOSE),
    # -- request line --
    ("request line with two spaces", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, CLOSE),
    ("request line with a tab", b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, CLOSE),
    ("lower-case http version", b"GET / http/1.1\r\nHost: a\r\n\r\n", 400, CLOSE),
    ("HTTP/1.10", b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400, CLOSE),
    ("HTTP/2.0 in a request line", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, CLOSE),
    ("NUL in the target", b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n", 400, CLOSE),
    ("space in the target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400, CLOSE),
    ("method with a control byte", b"G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, CLOSE),
    ("request line ending in bare LF", b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400, CLOSE),
    # -- header section --
    ("missing Host", b"GET / HTTP/1.1\r\n\r\n", 400, CLOSE),
    ("two Host headers", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, CLOSE),
    ("Host with a space inside", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, CLOSE),
    ("whitespace before the first header", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400, CLOSE),
    ("header line without a colon", b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400,
     CLOSE),
    ("empty header name", b"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", 400, CLOSE),
    ("header name with a slash", b"GET / HTTP/1.1\r\nHost: a\r\nX/Y: v\r\n\r\n", 400, CLOSE),
    ("DEL byte in a header value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400,
     CLOSE),
    ("bare CR inside a header value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400,
     CLOSE),
    ("header section ending in LF LF", b"GET / HTTP/1.1\r\nHost: a\n\n" + SMUGGLED, 400, CLOSE),
    # -- limits, with a smuggled request behind --
    ("body over MAX_BODY", post(b"Content-Length: 2000000\r\n", b"x" * 100), 413, CLOSE),
    ("request line over the limit",
     b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n" + SMUGGLED, 414, CLOSE),
    ("header field too large",
     b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 17000 + b"\r\n\r\n" + SMUGGLED, 431, CLOSE),
]


def status_of(data):
    m = re.match(rb"HTTP/1\.[01] ([0-9]{3}) ", data)
    return int(m.group(1)) if m else None


def replay(t, req, want, close, one_byte):
    got = nt.send_raw(t.port, req, one_byte_at_a_time=one_byte, timeout=5.0)
    eq(status_of(got), want, "status (response %s)" % nt.short(bytes(got[:200])))
    try:
        responses = nt.parse_responses(bytes(got))
    except AssertionError as e:
        raise AssertionError("expected one well-formed response, got %s (%s)"
                             % (nt.short(bytes(got), 400), e))
    eq(len(responses), 1, "number of responses (a smuggled request must not be answered)")
    if close:
        expect(got.eof, "the server to close the connection after its %d" % want,
               "still open after 5 s")
    r = nt.http(t.port, "GET", "/")
    eq((r.status, r.body), (200, b"Hello, World!"), "an honest GET / afterwards")


def make_case(name, req, want, close, one_byte):
    def fn(t):
        replay(t, req, want, close, one_byte)
    fn.__name__ = "%s -> %d%s (%s)" % (name, want, " + close" if close else "",
                                        "one byte at a time" if one_byte else "whole")
    return fn


@case
def corpus_has_at_least_40_rows(t):
    expect(len(CORPUS) >= 40, "at least 40 rows", len(CORPUS))


for _row in CORPUS:
    for _one in (False, True):
        case(make_case(*_row, _one))


class Ctx:
    pass


def setup(opts):
    t = Ctx()
    t.srv = nt.TestServer(opts.server, "--quiet").start()
    t.port = t.srv.port
    return (t,), [t.srv]


if __name__ == "__main__":
    nt.main(setup)
