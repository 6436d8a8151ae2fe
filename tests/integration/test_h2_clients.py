#!/usr/bin/env python3
"""HTTP/2 with real clients: the same routes over HTTP/1.1 (cleartext), HTTP/1.1 over TLS,
HTTP/2 over TLS (ALPN h2) and h2c (prior knowledge) give the same answers; what nghttp sees on
the wire (lower-case names, no connection-specific headers, the server's SETTINGS); h2load
load over h2, h2c and HTTP/1.1; a graceful stop while an HTTP/2 download is in flight.

    python3 test_h2_clients.py --server PATH/nook_test_server --hello PATH/hello
"""
import hashlib
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nooktest as nt  # noqa: E402
from nooktest import case, eq, expect  # noqa: E402

PROTOS = ("h1", "h1-tls", "h2-tls", "h2c")
WANT_VERSION = {"h1": "1.1", "h1-tls": "1.1", "h2-tls": "2", "h2c": "2"}
CONNECTION_SPECIFIC = ("connection", "transfer-encoding", "keep-alive", "proxy-connection",
                       "upgrade")
CRT, _KEY = nt.cert_files("localhost")


# ---------------------------------------------------------------------------------------------
# curl over the four protocols
# ---------------------------------------------------------------------------------------------

class Fetched:
    def __init__(self, proto, version, status, header_list, body):
        self.proto = proto
        self.version = version
        self.status = status
        self.header_list = header_list  # [(name as received, value)]
        self.body = body

    def header(self, name):
        vals = [v for n, v in self.header_list if n.lower() == name.lower()]
        return ", ".join(vals) if vals else None

    def names(self):
        return [n for n, _ in self.header_list]


def parse_header_dump(text):
    """The last response head in a curl -D file: (status, [(name, value)])."""
    blocks = [b for b in re.split(r"\r?\n\r?\n", text) if b.strip()]
    expect(blocks, "a response head in curl's -D output", text)
    lines = blocks[-1].splitlines()
    m = re.match(r"HTTP/[0-9.]+ (\d{3})", lines[0])
    expect(m, "a status line in curl's -D output", lines[0])
    headers = []
    for line in lines[1:]:
        n, _, v = line.partition(":")
        headers.append((n, v.strip()))
    return int(m.group(1)), headers


def fetch(srv, proto, path, *extra, head=False):
    """curl one request over `proto`; returns a Fetched (fails on a curl error)."""
    if proto == "h1":
        url, flags = "http://127.0.0.1:%d%s" % (srv.clear_port, path), ["--http1.1"]
    elif proto == "h1-tls":
        url, flags = ("https://127.0.0.1:%d%s" % (srv.tls_port, path),
                      ["--http1.1", "--cacert", CRT])
    elif proto == "h2-tls":
        url, flags = "https://127.0.0.1:%d%s" % (srv.tls_port, path), ["--http2", "--cacert", CRT]
    else:
        url, flags = "http://127.0.0.1:%d%s" % (srv.clear_port, path), ["--http2-prior-knowledge"]
    with tempfile.TemporaryDirectory(prefix="nook-h2-") as d:
        hfile, bfile = os.path.join(d, "head"), os.path.join(d, "body")
        args = ["-sS", "--max-time", "10"] + flags + ["-D", hfile, "-o", bfile, "-w",
                                                       "%{http_version}"]
        if head:
            args.append("-I")
        rc, out, err = nt.curl(*(args + list(extra) + [url]), timeout=30)
        expect(rc == 0, "curl (%s %s) to succeed" % (proto, path), "rc %d: %s" % (rc, err.strip()))
        with open(hfile, "r", encoding="latin-1", newline="") as f:
            status, headers = parse_header_dump(f.read())
        body = b""
        if not head and os.path.exists(bfile):
            with open(bfile, "rb") as f:
                body = f.read()
    r = Fetched(proto, out.decode().strip(), status, headers, body)
    eq(r.version, WANT_VERSION[proto], "curl %%{http_version} over %s" % proto)
    return r


def check_h2_names(r):
    if WANT_VERSION[r.proto] != "2":
        return
    upper = [n for n in r.names() if n != n.lower()]
    expect(not upper, "only lower-case header names over %s" % r.proto, upper)
    bad = [n for n in r.names() if n.lower() in CONNECTION_SPECIFIC]
    expect(not bad, "no connection-specific header over %s" % r.proto, bad)


def same_on_all(srv, path, status, body, headers=None, absent=(), extra=(), head=False,
                h1_absent=()):
    """Fetches `path` over every protocol; checks status, body (exact bytes), each header in
    `headers` (name: exact value, name compared case-insensitively) and the absence of every
    header in `absent`. Returns {proto: Fetched}."""
    out = {}
    errors = []
    for proto in PROTOS:  # every protocol is tried, so a failure names all that differ
        try:
            r = fetch(srv, proto, path, *extra, head=head)
            eq(r.status, status, "status of %s over %s" % (path, proto))
            nt.same_bytes(r.body, body, "body of %s over %s" % (path, proto))
            for n, v in (headers or {}).items():
                eq(r.header(n), v, "header %s of %s over %s" % (n, path, proto))
            for n in absent:
                eq(r.header(n), None, "no header %s on %s over %s" % (n, path, proto))
            if WANT_VERSION[proto] == "1.1":
                for n in h1_absent:
                    eq(r.header(n), None, "no header %s on %s over %s" % (n, path, proto))
            check_h2_names(r)
            out[proto] = r
        except AssertionError as e:
            errors.append("[%s] %s" % (proto, e))
    if errors:
        raise AssertionError("; ".join(errors))
    return out


# ---------------------------------------------------------------------------------------------
# Same routes, four protocols
# ---------------------------------------------------------------------------------------------

@case
def root_all_protocols(srv, opts):
    same_on_all(srv, "/", 200, b"Hello, World!",
                {"content-type": "text/plain", "content-length": "13"})


@case
def users_percent_decoded_all_protocols(srv, opts):
    same_on_all(srv, "/users/a%20b", 200, b"user:a b", {"content-type": "text/plain"})


@case
def files_rest_all_protocols(srv, opts):
    same_on_all(srv, "/files/a/b", 200, b"a/b", {"content-type": "text/plain"})


@case
def query_plus_decoded_all_protocols(srv, opts):
    same_on_all(srv, "/query?q=a+b", 200, b"a b", {"content-type": "text/plain"})


@case
def post_echo_300k_binary_all_protocols(srv, opts):
    data = os.urandom(300 * 1024)
    want = hashlib.md5(data).hexdigest()
    with tempfile.NamedTemporaryFile(prefix="nook-h2-body-") as f:
        f.write(data)
        f.flush()
        for proto in PROTOS:
            r = fetch(srv, proto, "/echo", "--data-binary", "@" + f.name,
                      "-H", "Content-Type: application/x-nook-test")
            eq(r.status, 200, "status of POST /echo over %s" % proto)
            eq((len(r.body), hashlib.md5(r.body).hexdigest()), (len(data), want),
               "length and md5 of the echoed body over %s" % proto)
            eq(r.header("content-type"), "application/x-nook-test",
               "echoed Content-Type over %s" % proto)
            eq(r.header("content-length"), str(len(data)), "Content-Length over %s" % proto)
            check_h2_names(r)


@case
def stream_1mb_all_protocols(srv, opts):
    res = same_on_all(srv, "/stream?n=100&size=10000", 200, nt.pattern(10000) * 100,
                      {"content-type": "application/octet-stream"}, absent=("content-length",))
    for proto in ("h1", "h1-tls"):
        eq(res[proto].header("transfer-encoding"), "chunked",
           "Transfer-Encoding of /stream over %s" % proto)


@case
def declared_length_all_protocols(srv, opts):
    same_on_all(srv, "/declared?n=5000", 200, b"x" * 5000, {"content-length": "5000"},
                h1_absent=("transfer-encoding",))


@case
def big_5mb_all_protocols(srv, opts):
    same_on_all(srv, "/big?size=5000000", 200, nt.pattern(5000000),
                {"content-type": "application/octet-stream", "content-length": "5000000"})


@case
def not_found_all_protocols(srv, opts):
    for proto in PROTOS:
        r = fetch(srv, proto, "/nope/nothing")
        eq(r.status, 404, "status of /nope/nothing over %s" % proto)
        check_h2_names(r)


@case
def method_not_allowed_all_protocols(srv, opts):
    res = same_on_all(srv, "/echo", 405, fetch(srv, "h1", "/echo").body,
                      {"allow": "POST, PUT"})
    for proto in ("h2-tls", "h2c"):
        expect("allow" in res[proto].names(), "a header named exactly 'allow' over %s" % proto,
               res[proto].header_list)


@case
def head_all_protocols(srv, opts):
    same_on_all(srv, "/", 200, b"", {"content-length": "13", "content-type": "text/plain"},
                head=True)


@case
def status_204_all_protocols(srv, opts):
    same_on_all(srv, "/status/204", 204, b"", absent=("content-length", "transfer-encoding"))


@case
def request_and_response_headers_all_protocols(srv, opts):
    res = same_on_all(srv, "/headers", 200, b"h2-or-not", {"x-mixed-case": "Yes",
                                                          "x-lower": "yes"},
                      extra=("-H", "X-Test: h2-or-not"))
    for proto in ("h1", "h1-tls"):
        names = res[proto].names()
        expect("X-Mixed-Case" in names and "x-lower" in names,
               "header names X-Mixed-Case and x-lower as set, over %s" % proto, names)
    for proto in ("h2-tls", "h2c"):
        names = res[proto].names()
        expect("x-mixed-case" in names and "x-lower" in names,
               "header names x-mixed-case and x-lower over %s" % proto, names)


# ---------------------------------------------------------------------------------------------
# nghttp: the frames on the wire
# ---------------------------------------------------------------------------------------------

def nghttp(url, *args, timeout=30):
    rc, out, err = nt.run_tool(["nghttp", "-nv", "-t", "20"] + list(args) + [url],
                               timeout=timeout)
    text = out.decode("utf-8", "replace")
    expect(rc == 0, "nghttp -nv %s to succeed" % url, "rc %d: %s %s" % (rc, err.strip(),
                                                                       text[-2000:]))
    return text


def recv_headers(text):
    """[(stream_id, name, value)] from nghttp -v 'recv (stream_id=N) name: value' lines."""
    return [(int(m.group(1)), m.group(2), m.group(3)) for m in
            re.finditer(r"recv \(stream_id=(\d+)\) (:?[^:\s]+): ?(.*)$", text, re.M)]


def urls(srv, path):
    return (("h2-tls", "https://127.0.0.1:%d%s" % (srv.tls_port, path)),
            ("h2c", "http://127.0.0.1:%d%s" % (srv.clear_port, path)))


@case
def nghttp_response_header_names_lower_case(srv, opts):
    for proto, url in urls(srv, "/headers"):
        text = nghttp(url, "-H", "x-test: wire")
        hs = recv_headers(text)
        got = [(n, v) for _, n, v in hs]
        expect(("x-mixed-case", "Yes") in got and ("x-lower", "yes") in got,
               "'recv (stream_id=N) x-mixed-case: Yes' and 'x-lower: yes' over %s" % proto, got)
        upper = [n for n, _ in got if n != n.lower()]
        expect(not upper, "only lower-case header names on the wire over %s" % proto, upper)
        expect((":status", "200") in got, ":status 200 over %s" % proto, got)


@case
def nghttp_response_heads_small_and_large(srv, opts):
    # nook keeps a small response head's text in the stream and lets nghttp2 point at it, and
    # has nghttp2 copy a larger one: both must reach the wire whole, names lower-cased.
    for size in (1, 40, 100, 200, 600):
        value = "".join(chr(ord("a") + i % 26) for i in range(size))
        for proto, url in urls(srv, "/headers?echo=1"):
            got = [(n, v) for _, n, v in recv_headers(nghttp(url, "-H", "x-test: " + value))]
            expect(("x-echo-of-the-test-header", value) in got,
                   "the %d-byte echo header, name lower-cased, over %s" % (size, proto), got)
            expect(("x-mixed-case", "Yes") in got and (":status", "200") in got,
                   "the other fields with a %d-byte echo over %s" % (size, proto), got)


@case
def nghttp_no_connection_specific_headers_on_stream(srv, opts):
    for proto, url in urls(srv, "/stream?n=100&size=10000"):
        text = nghttp(url)
        hs = recv_headers(text)
        names = [n.lower() for _, n, _ in hs]
        expect(":status" in names, "response headers over %s" % proto, text[-1500:])
        bad = [n for n in names if n in CONNECTION_SPECIFIC]
        expect(not bad, "no connection-specific header in the h2 response over %s" % proto, bad)
        total = sum(int(m.group(1)) for m in
                    re.finditer(r"recv DATA frame <length=(\d+), flags=0x[0-9a-f]+, "
                                r"stream_id=13>", text))
        eq(total, 1000000, "DATA bytes on stream 13 over %s" % proto)
        expect("recv RST_STREAM" not in text, "no RST_STREAM over %s" % proto, text[-1500:])
        expect(re.search(r"recv DATA frame <[^>]*stream_id=13>\s*\n\s*; END_STREAM", text),
               "a DATA frame with END_STREAM over %s" % proto, text[-1500:])


@case
def nghttp_server_settings(srv, opts):
    for proto, url in urls(srv, "/"):
        text = nghttp(url)
        m = re.search(r"recv SETTINGS frame <length=\d+, flags=0x00, stream_id=0>\n"
                      r"((?:\s+[\[(].*\n)+)", text)
        expect(m, "a SETTINGS frame from the server over %s" % proto, text[:1500])
        expect("[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100]" in m.group(1),
               "SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100 in the server's SETTINGS over %s"
               % proto, m.group(1))
        expect("[SETTINGS_ENABLE_PUSH(0x02):1]" not in m.group(1),
               "no SETTINGS_ENABLE_PUSH 1 from a server over %s" % proto, m.group(1))
        expect(re.search(r"recv SETTINGS frame <length=0, flags=0x01, stream_id=0>", text),
               "the server to ACK our SETTINGS over %s" % proto, text[:2000])


@case
def nghttp_many_streams_one_connection(srv, opts):
    # 20 requests multiplexed on one connection (nghttp -m 20), each a 100 KB body
    for proto, url in urls(srv, "/big?size=100000"):
        text = nghttp(url, "-m", "20")
        statuses = [v for _, n, v in recv_headers(text) if n == ":status"]
        eq(statuses, ["200"] * 20, ":status of 20 multiplexed streams over %s" % proto)
        ids = set(int(m.group(1)) for m in re.finditer(r"recv DATA frame <length=\d+, "
                                                         r"flags=0x01, stream_id=(\d+)>", text))
        eq(len(ids), 20, "streams ended with END_STREAM over %s" % proto)
        total = sum(int(m.group(1)) for m in
                    re.finditer(r"recv DATA frame <length=(\d+),", text))
        eq(total, 20 * 100000, "DATA bytes over %s" % proto)


@case
def nghttp_big_body_with_large_client_windows(srv, opts):
    # Stream and connection windows of 2^30-1 (curl uses 32 MB ones): the server never waits
    # for a WINDOW_UPDATE, so only its own output path paces the 5 MB response.
    errors = []
    for proto, url in urls(srv, "/big?size=5000000"):
        rc, out, err = nt.run_tool(["nghttp", "-nv", "-t", "5", "-w", "30", "-W", "30", url],
                                   timeout=30)
        text = out.decode("utf-8", "replace")
        total = sum(int(m.group(1)) for m in
                    re.finditer(r"recv DATA frame <length=(\d+),", text))
        ended = re.search(r"recv DATA frame <length=\d+, flags=0x01, stream_id=13>", text)
        if (total, bool(ended)) != (5000000, True):
            errors.append("expected nghttp -nv -w 30 -W 30 %s (%s) to receive 5000000 DATA bytes "
                          "and END_STREAM, got %d bytes, END_STREAM %s, rc %d"
                          % (url, proto, total, bool(ended), rc))
    expect(not errors, "the whole body", "; ".join(errors))


# ---------------------------------------------------------------------------------------------
# h2load
# ---------------------------------------------------------------------------------------------

def h2load(*args):
    rc, out, err = nt.run_tool(["h2load"] + [str(a) for a in args], timeout=120)
    text = out.decode("utf-8", "replace")
    m = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored", text, re.M)
    expect(m, "a 'requests:' line from h2load %s" % " ".join(map(str, args)),
           "rc %d: %s %s" % (rc, text[-1500:], err[-500:]))
    return rc, text, {k: int(m.group(i + 1)) for i, k in
                      enumerate(("total", "started", "done", "succeeded", "failed", "errored"))}


@case
def h2load_h2_over_tls(srv, opts):
    rc, text, r = h2load("-n", 100000, "-c", 32, "-m", 16, "https://127.0.0.1:%d/" % srv.tls_port)
    eq((r["succeeded"], r["failed"], r["errored"]), (100000, 0, 0),
       "h2load over TLS (succeeded, failed, errored)")
    expect(re.search(r"Application protocol: h2", text), "h2load to use h2", text[-1500:])
    expect(re.search(r"status codes: 100000 2xx", text), "100000 2xx", text[-1500:])


@case
def h2load_h2c_prior_knowledge(srv, opts):
    rc, text, r = h2load("-n", 100000, "-c", 32, "-m", 16,
                         "http://127.0.0.1:%d/" % srv.clear_port)
    eq((r["succeeded"], r["failed"], r["errored"]), (100000, 0, 0),
       "h2load h2c (succeeded, failed, errored)")
    expect(re.search(r"Application protocol: h2c", text), "h2load to use h2c", text[-1500:])


@case
def h2load_http11_cleartext(srv, opts):
    rc, text, r = h2load("--h1", "-n", 20000, "-c", 16, "http://127.0.0.1:%d/" % srv.clear_port)
    eq((r["succeeded"], r["failed"], r["errored"]), (20000, 0, 0),
       "h2load --h1 (succeeded, failed, errored)")
    expect(re.search(r"Application protocol: http/1.1", text), "h2load to use http/1.1",
           text[-1500:])


# ---------------------------------------------------------------------------------------------
# Graceful stop with an HTTP/2 download in flight (a hand-driven client: hyperframe + hpack)
# ---------------------------------------------------------------------------------------------

class H2Wire:
    """A minimal HTTP/2 client connection over a socket: frames in, frames out, no state
    machine (so frames after a GOAWAY are still read)."""

    def __init__(self, sock):
        import hpack  # noqa: F401 (python3-hpack comes with python3-h2)
        self.sock = sock
        self.buf = bytearray()
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()

    def send(self, *frames):
        self.sock.sendall(b"".join(f.serialize() for f in frames))

    def start(self, settings=None):
        from hyperframe.frame import SettingsFrame
        self.sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        self.send(SettingsFrame(0, settings=settings or {}))

    def request(self, stream_id, method, authority, path, scheme):
        from hyperframe.frame import HeadersFrame
        block = self.enc.encode([(":method", method), (":scheme", scheme),
                                 (":authority", authority), (":path", path)])
        f = HeadersFrame(stream_id, block)
        f.flags.add("END_HEADERS")
        f.flags.add("END_STREAM")
        self.send(f)

    def _need(self, n):
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return False
            self.buf += chunk
        return True

    def read_frame(self):
        """The next frame, or None at EOF."""
        from hyperframe.frame import Frame
        if not self._need(9):
            return None
        frame, length = Frame.parse_frame_header(memoryview(bytes(self.buf[:9])))
        if not self._need(9 + length):
            return None
        frame.parse_body(memoryview(bytes(self.buf[9:9 + length])))
        del self.buf[:9 + length]
        return frame


def open_h2(port, tls):
    sock = nt.connect(port, timeout=15)
    if tls:
        ctx = ssl.create_default_context(cafile=CRT)
        ctx.set_alpn_protocols(["h2"])
        sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
        eq(sock.selected_alpn_protocol(), "h2", "ALPN protocol of the hand-driven client")
    return sock


def graceful_h2(opts, tls):
    from hyperframe.frame import (DataFrame, GoAwayFrame, HeadersFrame, PingFrame,
                                  RstStreamFrame, SettingsFrame, WindowUpdateFrame)
    n, size = 300, 65536
    total = n * size
    with nt.TlsTestServer(opts.server, "--drain", "10000") as srv:
        port = srv.tls_port if tls else srv.clear_port
        sock = open_h2(port, tls)
        try:
            c = H2Wire(sock)
            c.start({SettingsFrame.INITIAL_WINDOW_SIZE: 65535})
            c.request(1, "GET", "127.0.0.1:%d" % port, "/stream?n=%d&size=%d" % (n, size),
                      "https" if tls else "http")
            body = bytearray()
            status = None
            goaways = []          # (bytes received when it came, last_stream_id, error_code)
            ended = False
            term_at = None
            unacked = 0
            deadline = time.monotonic() + 60
            while True:
                expect(time.monotonic() < deadline, "the download to finish within 60 s",
                       "%d of %d bytes" % (len(body), total))
                f = c.read_frame()
                if f is None:
                    break
                if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                    ack = SettingsFrame(0)
                    ack.flags.add("ACK")
                    c.send(ack)
                elif isinstance(f, PingFrame) and "ACK" not in f.flags:
                    pong = PingFrame(0, f.opaque_data)
                    pong.flags.add("ACK")
                    c.send(pong)
                elif isinstance(f, HeadersFrame) and f.stream_id == 1:
                    hs = dict((k.decode() if isinstance(k, bytes) else k,
                               v.decode() if isinstance(v, bytes) else v)
                              for k, v in c.dec.decode(f.data))
                    status = hs.get(":status")
                    if "END_STREAM" in f.flags:
                        ended = True
                elif isinstance(f, DataFrame) and f.stream_id == 1:
                    body += f.data
                    unacked += f.flow_controlled_length
                    if "END_STREAM" in f.flags:
                        ended = True
                    elif unacked >= 32768:
                        # read slowly: hand the window back in small steps
                        time.sleep(0.01)
                        c.send(WindowUpdateFrame(0, unacked), WindowUpdateFrame(1, unacked))
                        unacked = 0
                    if term_at is None and len(body) >= (1 << 20):
                        term_at = len(body)
                        srv.signal(signal.SIGTERM)
                elif isinstance(f, RstStreamFrame):
                    raise AssertionError("expected no RST_STREAM, got one on stream %d (error "
                                         "%d) after %d bytes" % (f.stream_id, f.error_code,
                                                                 len(body)))
                elif isinstance(f, GoAwayFrame):
                    goaways.append((len(body), f.last_stream_id, f.error_code))
                if ended and goaways:
                    break
            # the server may close the connection after the last stream: wait for that
            sock.settimeout(5)
            try:
                while c.read_frame() is not None:
                    pass
            except (socket.timeout, ssl.SSLError, OSError):
                pass
        finally:
            sock.close()
        expect(term_at is not None, "SIGTERM sent while the download was in flight",
               "%d bytes received" % len(body))
        eq(status, "200", ":status of the drained stream")
        expect(ended, "the stream to end (END_STREAM) after SIGTERM",
               "%d of %d bytes, goaways=%s" % (len(body), total, goaways))
        nt.same_bytes(bytes(body), nt.pattern(size) * n, "the drained /stream body")
        expect(goaways, "a GOAWAY frame from the server after SIGTERM", goaways)
        last = goaways[-1]
        expect(last[1] >= 1 and last[2] == 0,
               "the final GOAWAY to keep stream 1 (last_stream_id >= 1) with NO_ERROR",
               goaways)
        rc = srv.wait(15)
        eq(rc, 0, "server exit code after the drained h2 download")
        print("  (GOAWAY after %s bytes; SIGTERM at %d of %d)"
              % ([g[0] for g in goaways], term_at, total))


@case
def graceful_stop_h2_tls_download_completes(srv, opts):
    graceful_h2(opts, tls=True)


@case
def graceful_stop_h2c_download_completes(srv, opts):
    graceful_h2(opts, tls=False)


@case
def graceful_stop_nghttp_download_completes(srv, opts):
    # nghttp writes the body to stdout; by not reading its pipe for a while we make it stop
    # reading the socket (so the server holds the rest), SIGTERM the server, then read on
    # slowly: nghttp must get every DATA byte, END_STREAM and the server's GOAWAY.
    n, size = 300, 65536
    with nt.TlsTestServer(opts.server, "--drain", "10000") as s2:
        url = "https://127.0.0.1:%d/stream?n=%d&size=%d" % (s2.tls_port, n, size)
        p = subprocess.Popen(["nghttp", "-v", "-t", "30", url], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = bytearray()
        fd = p.stdout.fileno()
        term_at = None
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                r, _, _ = select.select([fd], [], [], 1.0)
                if not r:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                out += chunk
                if term_at is None and len(out) >= (1 << 20):
                    time.sleep(0.5)  # nghttp blocks on its full pipe: the transfer stalls
                    term_at = len(out)
                    s2.signal(signal.SIGTERM)
                elif term_at is not None:
                    time.sleep(0.003)
            rc = p.wait(timeout=max(1, deadline - time.monotonic()))
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(10)
            err = p.stderr.read().decode("utf-8", "replace")
            p.stdout.close()
            p.stderr.close()
        text = out.decode("latin-1")
        expect(term_at is not None, "SIGTERM while nghttp was downloading", len(out))
        eq(rc, 0, "nghttp exit code (stderr %s)" % err.strip()[-300:])
        total = sum(int(m.group(1)) for m in
                    re.finditer(r"recv DATA frame <length=(\d+), flags=0x0[01], stream_id=13>",
                                text))
        eq(total, n * size, "DATA bytes nghttp received on the drained stream")
        expect(re.search(r"recv DATA frame <length=\d+, flags=0x01, stream_id=13>", text),
               "END_STREAM on the drained stream", text[-800:])
        expect("recv RST_STREAM" not in text, "no RST_STREAM", text[-800:])
        m = re.search(r"recv GOAWAY frame <[^>]*>\s*\n?\s*\(last_stream_id=(\d+), "
                      r"error_code=([A-Z_]+)", text)
        expect(m, "nghttp -v to print 'recv GOAWAY' from the server after SIGTERM",
               re.findall(r"(?:send|recv) GOAWAY[^\n]*\n[^\n]*", text))
        expect(int(m.group(1)) >= 13 and m.group(2) == "NO_ERROR",
               "GOAWAY keeping stream 13 with NO_ERROR", m.group(0))
        eq(s2.wait(15), 0, "server exit code after the drained nghttp download")


def setup(opts):
    srv = nt.TlsTestServer(opts.server, "--threads", "2").start()
    return (srv, opts), (srv,)


if __name__ == "__main__":
    nt.main(setup)
