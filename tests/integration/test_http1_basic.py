#!/usr/bin/env python3
"""HTTP/1.1 behaviour of nook_test_server, driven by curl and raw sockets.

    python3 test_http1_basic.py --server PATH/nook_test_server --hello PATH/hello
"""
import datetime
import os
import re
import socket
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nooktest as nt  # noqa: E402
from nooktest import case, eq, expect  # noqa: E402

IMF_FIXDATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
                         r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
                         r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT$")


class Ctx:
    def __init__(self, srv):
        self.srv = srv
        self.port = srv.port
        self.base = "http://127.0.0.1:%d" % srv.port

    def url(self, path):
        return self.base + path


def get(t, path, **kw):
    return nt.http(t.port, "GET", path, **kw)


def header_of(headers, name):
    for n, v in headers:
        if n.lower() == name.lower():
            return v
    return None


# ---------------------------------------------------------------------------------------------

@case
def root_via_curl(t):
    rc, out, err = nt.curl("-sv", t.url("/"))
    eq(rc, 0, "curl exit code")
    eq(out, b"Hello, World!", "body")
    heads = nt.curl_verbose_responses(err)
    eq(len(heads), 1, "number of responses")
    status, headers = heads[0]
    eq(status, 200, "status")
    eq(header_of(headers, "Content-Length"), "13", "Content-Length")
    eq(header_of(headers, "Content-Type"), "text/plain", "Content-Type")
    date = header_of(headers, "Date")
    expect(date is not None and IMF_FIXDATE.match(date), "a Date header in IMF-fixdate format",
           date)
    when = datetime.datetime.strptime(date, "%a, %d %b %Y %H:%M:%S GMT")
    # strptime does not cross-check the weekday: do it here
    eq(when.strftime("%a"), date[:3], "weekday matching the date in %r" % date)
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    expect(abs((now - when).total_seconds()) < 120, "a Date within 2 minutes of now (%s)" % now,
           date)


@case
def curl_reuses_connection(t):
    rc, out, err = nt.curl("-sv", t.url("/"), t.url("/users/2"))
    eq(rc, 0, "curl exit code")
    eq(out, b"Hello, World!user:2", "both bodies")
    expect("Re-using existing connection" in err or "Reusing existing connection" in err,
           "curl to report re-using the connection", err[-600:])


@case
def two_sequential_requests_one_socket(t):
    with nt.connect(t.port) as s:
        rd = nt.Reader(s)
        s.sendall(nt.request_bytes("GET", "/"))
        r1 = rd.read_response()
        eq((r1.status, r1.body), (200, b"Hello, World!"), "first response")
        s.sendall(nt.request_bytes("GET", "/users/77"))
        r2 = rd.read_response()
        eq((r2.status, r2.body), (200, b"user:77"), "second response")


PIPELINE = b"".join(nt.request_bytes("GET", "/users/%d" % i) for i in (1, 2, 3))


def check_pipeline(t, one_byte):
    with nt.connect(t.port) as s:
        if one_byte:
            for i in range(len(PIPELINE)):
                s.sendall(PIPELINE[i:i + 1])
        else:
            s.sendall(PIPELINE)
        rd = nt.Reader(s)
        bodies = [rd.read_response().body for _ in range(3)]
        eq(bodies, [b"user:1", b"user:2", b"user:3"], "bodies in request order")


@case
def pipelining_one_sendall(t):
    check_pipeline(t, False)


@case
def pipelining_one_byte_at_a_time(t):
    check_pipeline(t, True)


@case
def head_has_no_body(t):
    with nt.connect(t.port) as s:
        s.sendall(nt.request_bytes("HEAD", "/") + nt.request_bytes("GET", "/users/5"))
        rd = nt.Reader(s)
        r = rd.read_response("HEAD")
        eq(r.status, 200, "HEAD status")
        eq(r.header("Content-Length"), "13", "HEAD Content-Length")
        # the very next bytes must be the next response's status line, not body bytes
        while rd.available() < 9 and rd.fill():
            pass
        nxt = bytes(rd.buf[rd.pos:rd.pos + 9])
        eq(nxt, b"HTTP/1.1 ", "the bytes after the HEAD response's head")
        r2 = rd.read_response()
        eq((r2.status, r2.body), (200, b"user:5"), "the response after HEAD")


@case
def head_via_curl(t):
    rc, out, err = nt.curl("-sI", t.url("/"))
    eq(rc, 0, "curl -I exit code")
    expect(out.startswith(b"HTTP/1.1 200"), "a 200 head", out)
    expect(b"\r\nContent-Length: 13\r\n" in out, "Content-Length: 13 in the HEAD response", out)


@case
def route_params(t):
    for path, want in [("/users/42", b"user:42"), ("/users/a%20b", b"user:a b"),
                       ("/users/7/posts/9", b"7/9"), ("/files/a/b/c.txt", b"a/b/c.txt"),
                       ("/files/", b"")]:
        r = get(t, path)
        eq((r.status, r.body), (200, want), "status and body for GET %s" % path)


@case
def not_found(t):
    r = get(t, "/nope")
    eq(r.status, 404, "status for GET /nope")
    rc, out, err = nt.curl("-s", "-o", "/dev/null", "-w", "%{http_code}", t.url("/nope"))
    eq(out, b"404", "curl http_code for /nope")


@case
def method_not_allowed(t):
    for method in ("DELETE", "GET"):
        r = nt.http(t.port, method, "/echo")
        eq(r.status, 405, "status for %s /echo" % method)
        eq(r.header("Allow"), "POST, PUT", "Allow header for %s /echo" % method)


@case
def any_method(t):
    rc, out, err = nt.curl("-s", "-X", "PATCH", t.url("/any"))
    eq((rc, out), (0, b"PATCH"), "curl rc and body for PATCH /any")
    r = nt.http(t.port, "PATCH", "/any")
    eq((r.status, r.body), (200, b"PATCH"), "raw PATCH /any")


@case
def query_params(t):
    for path, want in [("/query?q=hello%20world", b"hello world"), ("/query?q=a+b", b"a b"),
                       ("/query", b"<absent>")]:
        r = get(t, path)
        eq((r.status, r.body), (200, want), "status and body for GET %s" % path)


@case
def request_header_lookup(t):
    for name in ("X-Test", "x-TEST"):
        r = get(t, "/headers", headers=[(name, "abc")])
        eq((r.status, r.body), (200, b"abc"), "body for %s: abc" % name)
    rc, out, err = nt.curl("-s", "-H", "X-Test: abc", t.url("/headers"))
    eq(out, b"abc", "curl body for X-Test: abc")


@case
def response_header_case_on_wire(t):
    r = get(t, "/headers")
    expect(b"\r\nX-Mixed-Case: Yes\r\n" in r.head, "'X-Mixed-Case: Yes' as sent", r.head)
    expect(b"\r\nx-lower: yes\r\n" in r.head, "'x-lower: yes' as sent", r.head)


@case
def all_headers_in_order_trimmed(t):
    req = (b"GET /allheaders HTTP/1.1\r\nHost: h\r\nA:  1 \r\nB:\t2\t\r\nA: 3\r\n"
           b"Empty:\r\nMiddle: x  y\r\n\r\n")
    with nt.connect(t.port) as s:
        s.sendall(req)
        r = nt.Reader(s).read_response()
    eq(r.status, 200, "status")
    eq(r.body, b"Host: h\nA: 1\nB: 2\nA: 3\nEmpty: \nMiddle: x  y\n", "headers in order, trimmed")


@case
def post_echo_content_length(t):
    rc, out, err = nt.curl("-s", "--data-binary", "hello body", "-H", "Content-Type: text/x-nook",
                           "-D", "-", t.url("/echo"))
    eq(rc, 0, "curl exit code")
    head, _, body = out.partition(b"\r\n\r\n")
    eq(body, b"hello body", "echoed body")
    expect(b"\r\nContent-Type: text/x-nook\r\n" in head, "the request Content-Type echoed", head)
    r = nt.http(t.port, "POST", "/echo", body=b"")
    eq((r.status, r.body), (200, b""), "empty POST body")
    r = nt.http(t.port, "PUT", "/echo", body=b"put!")
    eq((r.status, r.body), (200, b"put!"), "PUT /echo")


def _random_file(size):
    data = os.urandom(size)
    f = tempfile.NamedTemporaryFile(prefix="nook-it-body-", delete=False)
    f.write(data)
    f.close()
    return f.name, data


@case
def post_echo_200k_binary(t):
    path, data = _random_file(200 * 1024)
    out_path = path + ".out"
    try:
        for extra in ([], ["-H", "Transfer-Encoding: chunked"]):
            rc, out, err = nt.curl("-s", "-o", out_path, "-w", "%{http_code}",
                                   "-H", "Content-Type: application/octet-stream",
                                   *extra, "--data-binary", "@" + path, t.url("/echo"))
            what = "chunked" if extra else "Content-Length"
            eq((rc, out), (0, b"200"), "curl rc and status (%s body)" % what)
            with open(out_path, "rb") as f:
                nt.same_bytes(f.read(), data, "echoed %s body" % what)
    finally:
        for p in (path, out_path):
            if os.path.exists(p):
                os.unlink(p)


@case
def post_echo_chunked_raw(t):
    req = (b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n")
    with nt.connect(t.port) as s:
        s.sendall(req + nt.request_bytes("GET", "/users/9"))
        rd = nt.Reader(s)
        r = rd.read_response()
        eq((r.status, r.body), (200, b"hello 0123456789"), "chunked echo")
        r2 = rd.read_response()
        eq(r2.body, b"user:9", "the request after the chunked body")


@case
def expect_100_continue(t):
    body = b"0123456789"
    with nt.connect(t.port) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        rd = nt.Reader(s)
        r = rd.read_response()
        eq((r.status, r.version), (100, "1.1"), "an interim 'HTTP/1.1 100 Continue' first")
        expect(rd.available() == 0, "nothing after 100 Continue before the body is sent",
               bytes(rd.buf[rd.pos:]))
        s.sendall(body)
        r = rd.read_response()
        eq((r.status, r.body), (200, body), "final response")


@case
def expect_100_continue_refused_for_unrouted_paths(t):
    # No route (404) or not this method (405): the answer comes at once, without a 100 Continue
    # that would make the client send a body nobody reads; the body is unread, so it closes.
    for path, status in (("/no/such/path", 404), ("/users/1", 405)):
        with nt.connect(t.port) as s:
            s.sendall(b"POST %s HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n"
                      b"Expect: 100-continue\r\n\r\n" % path.encode())
            rd = nt.Reader(s)
            r = rd.read_response()
            eq(r.status, status, "final status for POST %s, with no 100 Continue first" % path)
            if status == 405:
                expect(r.header("Allow"), "an Allow header on the 405", r.header_list)
            expect(rd.at_eof(), "the connection closed (its body was never read)", "still open")
    r = nt.http(t.port, "GET", "/")
    eq(r.status, 200, "an honest GET / afterwards")


@case
def http10_curl(t):
    rc, out, err = nt.curl("-s", "-0", t.url("/"))
    eq((rc, out), (0, b"Hello, World!"), "curl -0 rc and body")


@case
def http10_closes_by_default(t):
    with nt.connect(t.port) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        rd = nt.Reader(s)
        r = rd.read_response()
        eq((r.status, r.body), (200, b"Hello, World!"), "HTTP/1.0 response")
        expect(rd.at_eof(), "the server to close the HTTP/1.0 connection", "still open after 5 s")


@case
def http10_keep_alive(t):
    with nt.connect(t.port) as s:
        rd = nt.Reader(s)
        req = b"GET /users/1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        s.sendall(req)
        r = rd.read_response()
        eq((r.status, r.body), (200, b"user:1"), "first HTTP/1.0 keep-alive response")
        expect(r.has("Content-Length"), "a Content-Length (an HTTP/1.0 keep-alive body needs it)",
               r.header_list)
        expect((r.header("Connection") or "").lower() == "keep-alive",
               "Connection: keep-alive in the response to an HTTP/1.0 keep-alive request",
               r.header_list)
        s.sendall(req.replace(b"/users/1", b"/users/2"))
        r = rd.read_response()
        eq((r.status, r.body), (200, b"user:2"), "second response on the same connection")


@case
def client_connection_close(t):
    with nt.connect(t.port) as s:
        s.sendall(nt.request_bytes("GET", "/", headers=[("Connection", "close")]))
        rd = nt.Reader(s)
        r = rd.read_response()
        eq(r.status, 200, "status")
        eq((r.header("Connection") or "").lower(), "close", "Connection header")
        expect(rd.at_eof(), "the server to close after Connection: close", "still open after 5 s")


@case
def no_response_is_500(t):
    r = get(t, "/noresponse")
    eq(r.status, 500, "status for a handler that never responds")


@case
def status_204_304_no_body(t):
    for code in (204, 304):
        with nt.connect(t.port) as s:
            s.sendall(nt.request_bytes("GET", "/status/%d" % code) +
                      nt.request_bytes("GET", "/users/3"))
            rd = nt.Reader(s)
            r = rd.read_response()
            eq(r.status, code, "status")
            if code == 204:
                expect(not r.has("Content-Length"), "no Content-Length on 204", r.header_list)
            expect(not r.has("Transfer-Encoding"), "no Transfer-Encoding on %d" % code,
                   r.header_list)
            r2 = rd.read_response()
            eq(r2.body, b"user:3", "the response right after the %d (no body bytes between)"
               % code)


@case
def peer_address(t):
    r = get(t, "/peer")
    expect(r.status == 200 and r.body.startswith(b"127.0.0.1:"), "200 and '127.0.0.1:PORT'",
           (r.status, r.body))
    port = r.body.split(b":")[1]
    expect(port.isdigit() and 0 < int(port) < 65536, "a port number after the colon", r.body)


@case
def stream_chunked_1mb(t):
    with nt.connect(t.port) as s:
        s.sendall(nt.request_bytes("GET", "/stream?n=100&size=10000"))
        r = nt.Reader(s, timeout=10).read_response()
    eq(r.status, 200, "status")
    expect(r.chunked, "a chunked response", r.header_list)
    eq(len(r.body), 1000000, "body length")
    nt.same_bytes(r.body, nt.pattern(10000) * 100, "streamed body")
    rc, out, err = nt.curl("-s", t.url("/stream?n=100&size=10000"))
    eq(rc, 0, "curl exit code")
    nt.same_bytes(out, nt.pattern(10000) * 100, "streamed body via curl")


@case
def declared_length_stream(t):
    r = get(t, "/declared?n=5000")
    eq(r.status, 200, "status")
    eq(r.header("Content-Length"), "5000", "Content-Length")
    expect(not r.chunked, "no chunked framing", r.header_list)
    eq(r.body, b"x" * 5000, "body")


@case
def short_response_is_cut(t):
    # The handler declares Content-Length: 10, writes 5 and ends: the client must see the
    # connection close before 10 body bytes (curl: 18 partial file, or 52 empty reply if the
    # server drops the head as well).
    rc, out, err = nt.curl("-s", t.url("/short"))
    expect(rc != 0, "a non-zero curl exit code (18, partial file)", (rc, out))
    expect(len(out) < 10, "fewer than 10 body bytes", out)
    with nt.connect(t.port) as s:
        s.sendall(nt.request_bytes("GET", "/short"))
        got = nt.recv_until_close(s, 5)
    expect(got.eof, "the connection closed", "still open after 5 s with %r" % bytes(got))
    head, sep, body = bytes(got).partition(b"\r\n\r\n")
    if sep:
        expect(b"\r\nContent-Length: 10\r\n" in head + b"\r\n", "the declared Content-Length: 10", head)
        expect(len(body) < 10, "fewer than 10 body bytes before the close", body)
    else:
        expect(not got.startswith(b"HTTP/") or b"\r\n\r\n" not in got,
               "no complete response", bytes(got))
    # and the server is fine afterwards
    eq(get(t, "/").status, 200, "status of a GET / after the broken response")


@case
def big_whole_response(t):
    fd, path = tempfile.mkstemp(prefix="nook-it-big-")
    os.close(fd)
    try:
        rc, out, err = nt.curl("-s", "-o", path, "-w", "%{http_code}",
                               t.url("/big?size=10000000"))
        eq((rc, out), (0, b"200"), "curl rc and status")
        eq(os.path.getsize(path), 10000000, "downloaded size")
        with open(path, "rb") as f:
            nt.same_bytes(f.read(), nt.pattern(10000000), "10 MB body")
    finally:
        os.unlink(path)


@case
def slow_reader_backpressure(t):
    n, size = 400, 65536
    with nt.connect(t.port, timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(nt.request_bytes("GET", "/stream?n=%d&size=%d" % (n, size)))
        rd = nt.Reader(s, timeout=10)
        rd.recv_size = 65536
        slow_until = time.monotonic() + 2.0

        def pace(reader):
            if time.monotonic() < slow_until:
                time.sleep(0.01)
            else:
                reader.recv_size = 1 << 20

        rd.before_recv = pace
        r = rd.read_response()
    eq(r.status, 200, "status")
    eq(len(r.body), n * size, "body length")
    nt.same_bytes(r.body, nt.pattern(size) * n, "slowly read body")


def setup(opts):
    srv = nt.TestServer(opts.server).start()
    return (Ctx(srv),), [srv]


if __name__ == "__main__":
    nt.main(setup)
