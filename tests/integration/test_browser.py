#!/usr/bin/env python3
"""A real browser: headless Chromium loads pages from the test server's TLS port and, as its
NetLog shows, gets them over HTTP/2 (ALPN h2); with HTTP/2 off on either side, over HTTP/1.1
(Alt-Svc only when the server could do h2). Skipped (with a note) where Chromium is missing.

    python3 test_browser.py --server PATH/nook_test_server --hello PATH/hello
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nooktest as nt  # noqa: E402
from nooktest import case, eq, expect  # noqa: E402

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"),
                             shutil.which("chromium-browser"), shutil.which("google-chrome"))
                 if p and os.path.exists(p)), None)


class Load:
    """What one headless Chromium run saw: .dom (the --dump-dom text), .events [(type name,
    params)] from the NetLog, .rc."""

    def __init__(self, rc, dom, events, stderr):
        self.rc = rc
        self.dom = dom
        self.events = events
        self.stderr = stderr

    def params(self, type_name):
        return [p for t, p in self.events if t == type_name]

    def next_protos(self, port):
        """The ALPN result of every TLS connection Chromium made to 127.0.0.1:port."""
        return [p.get("next_proto") for p in self.params("SSL_CONNECT") if "next_proto" in p]

    def h2_sessions(self):
        return [p.get("host") for p in self.params("HTTP2_SESSION")]

    def response_headers(self):
        """Every response head Chromium read: lists of 'name: value' strings (h1 or h2)."""
        return [p.get("headers", []) for p in self.params("HTTP_TRANSACTION_READ_RESPONSE_HEADERS")]

    def body_text(self):
        """The <pre> text Chromium renders for a text/plain page."""
        m = re.search(r"<pre[^>]*>(.*?)</pre>", self.dom, re.S)
        return m.group(1) if m else None


def load_netlog(path):
    """The NetLog as [(type name, params)]; tolerates a log cut short (Chromium killed)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    try:
        d = json.loads(text)
    except ValueError:
        # events are written one per line, each followed by ",": close the array ourselves
        d = json.loads(text.rstrip().rstrip(",") + "]}")
    names = {v: k for k, v in d["constants"]["logEventTypes"].items()}
    return [(names.get(e.get("type"), str(e.get("type"))), e.get("params") or {})
            for e in d.get("events", [])]


def chromium(url, *extra, page_timeout_ms=15000):
    """Loads url in a fresh headless Chromium profile; returns a Load."""
    if CHROMIUM is None:
        raise nt.Skip("chromium is not installed (the CI installs it)")
    with tempfile.TemporaryDirectory(prefix="nook-chromium-") as d:
        netlog = os.path.join(d, "net.json")
        argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--user-data-dir=" + os.path.join(d, "profile"), "--ignore-certificate-errors",
                "--log-net-log=" + netlog, "--net-log-capture-mode=Default",
                "--timeout=%d" % page_timeout_ms] + list(extra) + ["--dump-dom", url]
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                               env=dict(os.environ, HOME=d))
        except subprocess.TimeoutExpired:
            raise AssertionError("expected chromium to finish within 60 s, got a timeout: %s"
                                 % " ".join(argv))
        events = load_netlog(netlog)
    return Load(p.returncode, p.stdout.decode("utf-8", "replace"), events,
                p.stderr.decode("utf-8", "replace"))


def expect_loaded(ld, what):
    expect(ld.rc == 0, "chromium to exit 0 (%s)" % what,
           "rc %d, stderr tail %s" % (ld.rc, nt.short(ld.stderr[-600:], 600)))
    expect(ld.events, "a NetLog from chromium (%s)" % what, ld.stderr[-400:])


def expect_h2(ld, port, path):
    protos = ld.next_protos(port)
    expect(protos and all(p == "h2" for p in protos),
           "every TLS connection to negotiate h2 (SSL_CONNECT next_proto)", protos)
    host = "127.0.0.1:%d" % port
    expect(host in ld.h2_sessions(), "an HTTP2_SESSION with host %s" % host, ld.h2_sessions())
    sent = [h for p in ld.params("HTTP2_SESSION_SEND_HEADERS") for h in p.get("headers", [])]
    expect(":path: %s" % path in sent, "an HTTP/2 request for %s" % path, sent)
    recv = [p.get("headers", []) for p in ld.params("HTTP2_SESSION_RECV_HEADERS")]
    expect(any(":status: 200" in h for h in recv), "an HTTP/2 response head with :status 200",
           recv)


@case
def chromium_loads_root_over_h2(srv, opts):
    ld = chromium("https://127.0.0.1:%d/" % srv.tls_port)
    expect_loaded(ld, "GET /")
    expect("Hello, World!" in ld.dom, "'Hello, World!' in the DOM", ld.dom[:400])
    expect_h2(ld, srv.tls_port, "/")


@case
def chromium_request_headers_over_h2(srv, opts):
    ld = chromium("https://127.0.0.1:%d/allheaders" % srv.tls_port)
    expect_loaded(ld, "GET /allheaders")
    expect_h2(ld, srv.tls_port, "/allheaders")
    text = ld.body_text()
    expect(text is not None, "a text page", ld.dom[:400])
    lines = [x for x in text.split("\n") if x]
    names = [x.split(":", 1)[0] for x in lines if not x.startswith(":")]
    expect(not [x for x in lines if x.startswith(":")],
           "no pseudo-header (':path' ...) among the request headers", lines)
    expect(any(x.startswith("user-agent: ") and "Chrome/" in x for x in lines),
           "the browser's user-agent among the request headers", lines)
    expect("host: 127.0.0.1:%d" % srv.tls_port in lines,
           "a host header made from :authority", lines)
    expect(all(n == n.lower() for n in names), "lower-case request header names", names)


@case
def chromium_large_text_page_over_h2(srv, opts):
    # 2,000,000 bytes, declared length; Chromium's HTTP/2 windows are large (MBs), so only the
    # server's own output path paces the response
    n = 2000000
    ld = chromium("https://127.0.0.1:%d/declared?n=%d" % (srv.tls_port, n),
                  page_timeout_ms=8000)
    expect_loaded(ld, "GET /declared")
    expect_h2(ld, srv.tls_port, "/declared?n=%d" % n)
    # Per stream: Chromium also asks for /favicon.ico on the same session (a 404 with a body).
    sizes, fins = {}, set()
    for p in ld.params("HTTP2_SESSION_RECV_DATA"):
        sid = p.get("stream_id")
        sizes[sid] = sizes.get(sid, 0) + p.get("size", 0)
        if p.get("fin"):
            fins.add(sid)
    page = max(sizes, key=sizes.get) if sizes else None
    eq((sizes.get(page, 0), page in fins), (n, True),
       "HTTP/2 DATA bytes Chromium received on the page's stream and END_STREAM seen")
    text = ld.body_text() or ""
    eq(text.count("x"), n, "'x' characters rendered")


@case
def chromium_large_text_page_over_http11_control(srv, opts):
    n = 2000000
    ld = chromium("https://127.0.0.1:%d/declared?n=%d" % (srv.tls_port, n), "--disable-http2",
                  page_timeout_ms=8000)
    expect_loaded(ld, "GET /declared over HTTP/1.1")
    eq((ld.body_text() or "").count("x"), n, "'x' characters rendered over HTTP/1.1")


@case
def chromium_without_h2_gets_http11_and_alt_svc(srv, opts):
    ld = chromium("https://127.0.0.1:%d/" % srv.tls_port, "--disable-http2")
    expect_loaded(ld, "GET / with --disable-http2")
    expect("Hello, World!" in ld.dom, "'Hello, World!' in the DOM", ld.dom[:400])
    protos = ld.next_protos(srv.tls_port)
    expect(protos and all(p == "http/1.1" for p in protos), "ALPN http/1.1 everywhere", protos)
    eq(ld.h2_sessions(), [], "HTTP/2 sessions")
    heads = ld.response_headers()
    want = 'alt-svc: h2=":%d"' % srv.tls_port
    expect(heads and any(want in [h.lower() for h in hs] for hs in heads),
           "an HTTP/1.1 response carrying %s" % want, heads)


@case
def chromium_against_no_h2_server(srv, opts):
    with nt.TlsTestServer(opts.server, "--no-h2", cleartext=0) as s2:
        ld = chromium("https://127.0.0.1:%d/" % s2.tls_port)
        expect_loaded(ld, "GET / from a --no-h2 server")
        expect("Hello, World!" in ld.dom, "'Hello, World!' in the DOM", ld.dom[:400])
        protos = ld.next_protos(s2.tls_port)
        expect(protos and all(p == "http/1.1" for p in protos),
               "ALPN http/1.1 with the server's HTTP/2 off", protos)
        eq(ld.h2_sessions(), [], "HTTP/2 sessions")
        heads = [h.lower() for hs in ld.response_headers() for h in hs]
        expect(heads and not [h for h in heads if h.startswith("alt-svc:")],
               "no Alt-Svc from a --no-h2 server", heads)


def setup(opts):
    if CHROMIUM is None:
        print("note: chromium is not installed; the browser cases are skipped")
    srv = nt.TlsTestServer(opts.server, cleartext=0).start()
    return (srv, opts), (srv,)


if __name__ == "__main__":
    nt.main(setup)
