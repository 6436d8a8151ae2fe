#!/usr/bin/env python3
"""TLS and ALPN with real clients (openssl s_client, curl, Python's ssl): protocol selection
by ALPN, Alt-Svc on HTTP/1.1 over TLS, --no-h2 and ALT_SVC=0, TLS 1.0/1.1 refused, ECDHE AEAD
suites only, session resumption, the handshake timeout, and garbage instead of a ClientHello.
(SNI with several certificates is covered by the unit test: the test server loads one pair.)

    python3 test_tls_alpn.py --server PATH/nook_test_server --hello PATH/hello
"""
import os
import re
import socket
import ssl
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attack  # noqa: E402
import nooktest as nt  # noqa: E402
from nooktest import case, eq, expect  # noqa: E402

CRT, _KEY = nt.cert_files("localhost")
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
# old protocol versions need the client's own security level lowered, or OpenSSL 3 refuses
# them before the server is asked (the test must see the server's refusal)
LOW_SECLEVEL = "DEFAULT@SECLEVEL=0"


def tls_socket(port, alpn=None, host="127.0.0.1", timeout=10, server_hostname="127.0.0.1"):
    ctx = ssl.create_default_context(cafile=CRT)
    if alpn is not None:
        ctx.set_alpn_protocols(list(alpn))
    raw = nt.connect((host, port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


def get_over_tls(port, path="/", alpn=None):
    """One HTTP/1.1 GET over TLS with Python's ssl; returns (negotiated ALPN, Response)."""
    with tls_socket(port, alpn) as s:
        proto = s.selected_alpn_protocol()
        expect(proto in (None, "http/1.1"), "an HTTP/1.1 connection for this request", proto)
        s.sendall(nt.request_bytes("GET", path))
        return proto, nt.Reader(s, timeout=10).read_response()


def alpn_of(port, offer, *args):
    """openssl s_client -alpn OFFER: (rc, the 'ALPN protocol' value or None, output)."""
    extra = ["-alpn", offer] if offer else []
    rc, text = nt.openssl_client(port, *(extra + list(args)))
    return rc, nt.ssl_field(text, "ALPN protocol"), text


def curl_https(port, path="/", *args, host="127.0.0.1"):
    """curl -D - over TLS (verifying the certificate); returns (rc, http_version, status,
    [(name, value)], body, stderr)."""
    with tempfile.TemporaryDirectory(prefix="nook-tls-") as d:
        hfile, bfile = os.path.join(d, "h"), os.path.join(d, "b")
        rc, out, err = nt.curl("-sS", "--max-time", "10", "--cacert", CRT, "-D", hfile, "-o",
                               bfile, "-w", "%{http_version}", *args,
                               "https://%s:%d%s" % (host, port, path), timeout=30)
        heads = []
        status = None
        if os.path.exists(hfile):
            with open(hfile, encoding="latin-1") as f:
                lines = [x.rstrip("\r\n") for x in f if x.strip()]
            for line in lines:
                m = re.match(r"HTTP/[0-9.]+ (\d{3})", line)
                if m:
                    status, heads = int(m.group(1)), []
                else:
                    n, _, v = line.partition(":")
                    heads.append((n, v.strip()))
        body = open(bfile, "rb").read() if os.path.exists(bfile) else b""
    return rc, out.decode().strip(), status, heads, body, err


def hdr(headers, name):
    vals = [v for n, v in headers if n.lower() == name.lower()]
    return ", ".join(vals) if vals else None


def still_serves(port):
    """An honest client after something hostile: curl --http2 over TLS gets the root."""
    rc, ver, status, _, body, err = curl_https(port, "/", "--http2")
    eq((rc, ver, status, body), (0, "2", 200, b"Hello, World!"),
       "an honest h2 client to be served afterwards (curl rc, version, status, body; %s)"
       % err.strip())


def client_hello_bytes():
    """A real ClientHello (from Python's ssl, never sent anywhere by ssl itself)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    data = out.read()
    expect(data[:1] == b"\x16" and len(data) > 100, "a TLS handshake record from Python's ssl",
           data[:16])
    return data


# ---------------------------------------------------------------------------------------------
# ALPN
# ---------------------------------------------------------------------------------------------

@case
def alpn_h2_and_http11_offered_selects_h2(srv, opts):
    rc, proto, text = alpn_of(srv.tls_port, "h2,http/1.1")
    eq((rc, proto), (0, "h2"), "openssl -alpn h2,http/1.1 (rc, ALPN protocol)")
    with tls_socket(srv.tls_port, ["h2", "http/1.1"]) as s:
        eq(s.selected_alpn_protocol(), "h2", "ALPN picked for Python's ssl offering h2,http/1.1")


@case
def alpn_server_preference_h2_first(srv, opts):
    # the client lists http/1.1 first; nook's list ("h2,http/1.1", most preferred first) wins
    rc, proto, text = alpn_of(srv.tls_port, "http/1.1,h2")
    eq((rc, proto), (0, "h2"), "openssl -alpn http/1.1,h2 (rc, ALPN protocol)")


@case
def alpn_http11_only_gets_http11_and_alt_svc(srv, opts):
    for port in srv.tls_ports:  # each TLS listener advertises its own port
        rc, proto, text = alpn_of(port, "http/1.1")
        eq((rc, proto), (0, "http/1.1"), "openssl -alpn http/1.1 (rc, ALPN protocol)")
        proto, r = get_over_tls(port, "/", alpn=["http/1.1"])
        eq(proto, "http/1.1", "ALPN picked for Python's ssl offering http/1.1")
        eq((r.version, r.status, r.body), ("1.1", 200, b"Hello, World!"),
           "version, status and body over TLS HTTP/1.1")
        eq(r.header("Alt-Svc"), 'h2=":%d"' % port, "Alt-Svc on HTTP/1.1 over TLS port %d" % port)
        rc, ver, status, heads, body, err = curl_https(port, "/", "--http1.1")
        eq((rc, ver, status), (0, "1.1", 200), "curl --http1.1 (rc, version, status)")
        eq(hdr(heads, "alt-svc"), 'h2=":%d"' % port, "Alt-Svc seen by curl --http1.1")


@case
def no_alpn_gets_http11_with_alt_svc(srv, opts):
    rc, proto, text = alpn_of(srv.tls_port, None)
    expect(rc == 0 and "No ALPN negotiated" in text,
           "openssl without -alpn: a handshake with 'No ALPN negotiated'", (rc, text[-600:]))
    proto, r = get_over_tls(srv.tls_port, "/users/x", alpn=None)
    eq(proto, None, "ALPN for a client offering none")
    eq((r.version, r.status, r.body), ("1.1", 200, b"user:x"), "HTTP/1.1 answer without ALPN")
    eq(r.header("Alt-Svc"), 'h2=":%d"' % srv.tls_port, "Alt-Svc without ALPN")
    rc, ver, status, heads, body, err = curl_https(srv.tls_port, "/", "--http1.1", "--no-alpn")
    eq((rc, ver, status, body), (0, "1.1", 200, b"Hello, World!"),
       "curl --http1.1 --no-alpn (rc, version, status, body; %s)" % err.strip())
    eq(hdr(heads, "alt-svc"), 'h2=":%d"' % srv.tls_port, "Alt-Svc seen by curl --no-alpn")


@case
def alpn_unknown_protocol_refused(srv, opts):
    rc, proto, text = alpn_of(srv.tls_port, "spdy/3")
    expect(rc != 0 and "no application protocol" in text,
           "openssl -alpn spdy/3 to fail with a no_application_protocol alert",
           (rc, text[-600:]))
    try:
        with tls_socket(srv.tls_port, ["spdy/3", "h2c"]) as s:
            got = s.selected_alpn_protocol()
    except ssl.SSLError as e:
        expect(re.search(r"no.application.protocol", str(e), re.I),
               "Python's ssl to see a no_application_protocol alert", str(e))
    else:
        raise AssertionError("expected the handshake offering spdy/3,h2c to fail, got ALPN %r"
                             % got)
    still_serves(srv.tls_port)


@case
def alt_svc_only_on_http11_over_tls(srv, opts):
    r = nt.http(srv.clear_port, "GET", "/")
    eq((r.status, r.header("Alt-Svc")), (200, None), "no Alt-Svc on cleartext HTTP/1.1")
    rc, ver, status, heads, body, err = curl_https(srv.tls_port, "/", "--http2")
    eq((rc, ver, status), (0, "2", 200), "curl --http2 (rc, version, status)")
    eq(hdr(heads, "alt-svc"), None, "no Alt-Svc on an HTTP/2 response")


@case
def no_h2_server_speaks_http11_only(srv, opts):
    with nt.TlsTestServer(opts.server, "--no-h2") as s2:
        rc, ver, status, heads, body, err = curl_https(s2.tls_port, "/", "--http2")
        eq((rc, ver, status, body), (0, "1.1", 200, b"Hello, World!"),
           "curl --http2 against --no-h2 (rc, version, status, body; %s)" % err.strip())
        eq(hdr(heads, "alt-svc"), None, "no Alt-Svc with HTTP/2 off")
        rc, proto, text = alpn_of(s2.tls_port, "h2,http/1.1")
        eq((rc, proto), (0, "http/1.1"), "openssl -alpn h2,http/1.1 against --no-h2")
        rc, proto, text = alpn_of(s2.tls_port, "h2")
        expect(rc != 0 and "no application protocol" in text,
               "openssl -alpn h2 against --no-h2 to fail with no_application_protocol",
               (rc, proto, text[-600:]))
        proto, r = get_over_tls(s2.tls_port, "/", alpn=["http/1.1"])
        eq((r.status, r.header("Alt-Svc")), (200, None), "status and no Alt-Svc (--no-h2)")
        # h2c prior knowledge on the cleartext port is not HTTP/2 any more
        rc, out, err = nt.curl("-sS", "--max-time", "10", "--http2-prior-knowledge", "-o",
                               "/dev/null", "-w", "%{http_version} %{http_code}",
                               "http://127.0.0.1:%d/" % s2.clear_port, timeout=30)
        ver_code = out.decode().split()
        expect(rc != 0 or (ver_code and ver_code[0] != "2"),
               "curl --http2-prior-knowledge against --no-h2 to fail (no HTTP/2)",
               (rc, out, err.strip()))
        res = nt.send_raw(s2.clear_port, H2_PREFACE + EMPTY_SETTINGS, timeout=5)
        expect(len(res) < 9 or res[3:4] != b"\x04",
               "no HTTP/2 SETTINGS frame answering the preface", res[:40])
        expect(res == b"" or re.match(rb"HTTP/1\.1 [45]\d\d ", res),
               "a 4xx/5xx HTTP/1.1 answer (or a close) to the h2 preface", res[:200])
        expect(res.eof, "the connection to be closed after the refused preface", res[:200])


@case
def h2c_prior_knowledge_accepted_by_default(srv, opts):
    res = nt.send_raw(srv.clear_port, H2_PREFACE + EMPTY_SETTINGS, timeout=0.5)
    expect(len(res) >= 9 and res[3:4] == b"\x04" and res[4:5] == b"\x00",
           "a SETTINGS frame answering the h2c preface (HTTP/2 on by default)", res[:40])


@case
def alt_svc_option_off(srv, opts):
    with nt.TlsTestServer(opts.server, "--opt", "ALT_SVC=0") as s2:
        proto, r = get_over_tls(s2.tls_port, "/", alpn=["http/1.1"])
        eq((r.status, r.header("Alt-Svc")), (200, None), "status and no Alt-Svc (ALT_SVC=0)")
        rc, ver, status, heads, body, err = curl_https(s2.tls_port, "/", "--http1.1",
                                                       "--no-alpn")
        eq((rc, ver, status, hdr(heads, "alt-svc")), (0, "1.1", 200, None),
           "curl --no-alpn with ALT_SVC=0 (rc, version, status, Alt-Svc)")
        rc, proto, text = alpn_of(s2.tls_port, "h2,http/1.1")
        eq((rc, proto), (0, "h2"), "h2 still negotiated with ALT_SVC=0")


# ---------------------------------------------------------------------------------------------
# Protocol versions, suites, certificate, resumption
# ---------------------------------------------------------------------------------------------

@case
def tls10_and_tls11_refused_tls12_works(srv, opts):
    for lo, hi in (("--tlsv1.0", "1.0"), ("--tlsv1.0", "1.1"), ("--tlsv1.1", "1.1")):
        rc, out, err = nt.curl("-sS", "--max-time", "10", "--ciphers", LOW_SECLEVEL, lo,
                               "--tls-max", hi, "-k", "-o", "/dev/null",
                               "https://127.0.0.1:%d/" % srv.tls_port, timeout=30)
        expect(rc != 0 and "alert protocol version" in err,
               "curl %s --tls-max %s to be refused by the server (alert protocol version)"
               % (lo, hi), (rc, err.strip()))
    for flag in ("-tls1", "-tls1_1"):
        rc, text = nt.openssl_client(srv.tls_port, flag, "-cipher", LOW_SECLEVEL)
        expect(rc != 0 and "alert protocol version" in text,
               "openssl s_client %s to be refused by the server (alert protocol version)" % flag,
               (rc, text[-600:]))
    rc, out, err = nt.curl("-sS", "--max-time", "10", "--cacert", CRT, "--tlsv1.2",
                           "--tls-max", "1.2", "https://127.0.0.1:%d/" % srv.tls_port,
                           timeout=30)
    eq((rc, out), (0, b"Hello, World!"), "curl --tlsv1.2 --tls-max 1.2 (rc, body; %s)"
       % err.strip())
    rc, text = nt.openssl_client(srv.tls_port, "-tls1_2")
    eq((rc, nt.ssl_field(text, "Protocol")), (0, "TLSv1.2"), "openssl -tls1_2 (rc, Protocol)")
    still_serves(srv.tls_port)


def negotiated(text):
    """(version, suite) from s_client's 'New, TLSv1.x, Cipher is SUITE' line, or (None, None).
    With TLS 1.3 this line is printed at once, the session block only with a ticket."""
    m = re.search(r"^New, (TLSv1\.[23]), Cipher is (\S+)", text, re.M)
    return m.groups() if m else (None, None)


@case
def tls13_where_mbedtls_has_it(srv, opts):
    # mbedTLS 3.x (as Debian 13 builds it) speaks TLS 1.3, and h2 and HTTP/1.1 are served over
    # it; 2.28 refuses a TLS 1.3-only client.
    rc, text = nt.openssl_client(srv.tls_port, "-tls1_3", "-alpn", "h2")
    if nt.mbedtls_major() < 3:
        expect(rc != 0 and re.search(r"alert (protocol version|handshake failure)", text),
               "openssl s_client -tls1_3 refused by nook on mbedTLS 2.x",
               (rc, re.findall(r".*alert.*", text)))
        return
    eq((rc, negotiated(text)[0], nt.ssl_field(text, "ALPN protocol")), (0, "TLSv1.3", "h2"),
       "openssl s_client -tls1_3 -alpn h2 (rc, version, ALPN)")
    for proto in ("--http2", "--http1.1"):
        rc, version, status, heads, body, err = curl_https(srv.tls_port, "/", proto, "--tlsv1.3")
        eq((rc, version, status, body), (0, "2" if proto == "--http2" else "1.1", 200,
                                         b"Hello, World!"),
           "curl %s --tlsv1.3 (rc, HTTP version, status, body; %s)" % (proto, err.strip()))


@case
def negotiated_suite_is_ecdhe_aead(srv, opts):
    rc, text = nt.openssl_client(srv.tls_port, "-alpn", "h2")
    version, cipher = negotiated(text)
    if version == "TLSv1.3":
        # mbedTLS 3.x: every TLS 1.3 suite is an AEAD, and the key exchange is (EC)DHE
        temp_key = nt.ssl_field(text, "Server Temp Key") or ""
        expect(rc == 0 and cipher in ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                      "TLS_CHACHA20_POLY1305_SHA256")
               and temp_key.startswith(("ECDH", "X25519", "X448")),
               "a TLS 1.3 AEAD suite with an ephemeral (EC)DH key", (rc, cipher, temp_key))
    else:
        expect(rc == 0 and version == "TLSv1.2" and cipher and "ECDHE" in cipher
               and ("GCM" in cipher or "CHACHA20" in cipher),
               "an ECDHE AEAD suite by default", (rc, version, cipher))
    # every ECDHE AEAD suite a client may insist on
    for suite in ("ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES256-GCM-SHA384"):
        rc, text = nt.openssl_client(srv.tls_port, "-tls1_2", "-cipher", suite)
        eq((rc, nt.ssl_field(text, "Cipher")), (0, suite), "openssl -cipher %s (rc, Cipher)"
           % suite)
    # CBC (non-AEAD) suites are not offered: a client that only has them is refused
    for suite in ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA"):
        rc, text = nt.openssl_client(srv.tls_port, "-tls1_2", "-cipher",
                                     suite + ":@SECLEVEL=0")
        expect(rc != 0 and "alert handshake failure" in text and
               nt.ssl_field(text, "Cipher") in (None, "0000", "(NONE)"),
               "a client offering only %s to be refused (handshake_failure alert)" % suite,
               (rc, nt.ssl_field(text, "Cipher"), re.findall(r".*alert.*", text)))
    still_serves(srv.tls_port)


@case
def certificate_is_verified_by_name_and_ip(srv, opts):
    rc, text = nt.openssl_client(srv.tls_port)
    expect(re.search(r"^subject=\s*CN\s*=\s*localhost\s*$", text, re.M),
           "the localhost certificate (subject CN = localhost)", text[:800])
    rc, out, err = nt.curl("-sS", "--max-time", "10", "--cacert", CRT, "--resolve",
                           "localhost:%d:127.0.0.1" % srv.tls_port,
                           "https://localhost:%d/" % srv.tls_port, timeout=30)
    eq((rc, out), (0, b"Hello, World!"), "curl https://localhost with --cacert (rc, body; %s)"
       % err.strip())
    with tls_socket(srv.tls_port, ["h2"], server_hostname="localhost") as s:
        eq(s.selected_alpn_protocol(), "h2", "ALPN with SNI localhost")


@case
def sni_unknown_name_gets_default_certificate(srv, opts):
    rc, text = nt.openssl_client(srv.tls_port, "-servername", "unknown.test")
    expect(rc == 0 and re.search(r"^subject=\s*CN\s*=\s*localhost\s*$", text, re.M),
           "a handshake with the default (localhost) certificate for SNI unknown.test",
           (rc, text[:800]))


@case
def session_resumption(srv, opts):
    with tempfile.TemporaryDirectory(prefix="nook-sess-") as d:
        sess = os.path.join(d, "sess.pem")
        # TLS 1.3 (mbedTLS 3.x) sends the ticket after the handshake: s_client must stay for
        # it. -ign_eof keeps it reading until the server closes, which the HTTP/2 preface and
        # a GOAWAY make it do at once; s_client then exits with 1 (the server closed).
        goaway = attack.frame(attack.GOAWAY, 0, 0, bytes(8))  # last stream 0, NO_ERROR
        rc, text1 = nt.openssl_client(srv.tls_port, "-alpn", "h2", "-ign_eof", "-sess_out", sess,
                                      input=H2_PREFACE + EMPTY_SETTINGS + goaway)
        expect(rc in (0, 1) and re.search(r"^New, ", text1, re.M) and os.path.exists(sess)
               and os.path.getsize(sess) > 0,
               "a new session saved by the first handshake", (rc, text1[-600:]))
        rc, text2 = nt.openssl_client(srv.tls_port, "-alpn", "h2", "-sess_in", sess)
        expect(rc == 0 and re.search(r"^Reused, ", text2, re.M),
               "'Reused' in the second handshake's output", (rc, text2[-900:]))
        eq(nt.ssl_field(text2, "ALPN protocol"), "h2", "ALPN on the resumed session")


def bio_context(alpn):
    ctx = ssl.create_default_context(cafile=CRT)
    ctx.set_alpn_protocols([alpn])
    return ctx


class BioTls:
    """TLS through memory BIOs over a plain socket, so that the test decides which records go
    out together in one send. recv() and settimeout() let nooktest's Reader read through it."""

    def __init__(self, port, ctx, session=None):
        self.sock = nt.connect(("127.0.0.1", port), timeout=10)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname="127.0.0.1",
                                session=session)

    def handshake(self, hold_last_flight=False):
        """Runs the handshake. With hold_last_flight, the client's last flight (after a
        resumed handshake: ChangeCipherSpec and Finished) is kept for the next flush()."""
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                data = self.sock.recv(65536)
                expect(data, "the server's handshake records", data)
                self.inc.write(data)
        if not hold_last_flight:
            self.flush()

    def flush(self, piece=None):
        """Sends what the client wrote; with piece=N, N bytes per segment (TCP_NODELAY, a
        pause between segments) so that the server reads them one by one."""
        data = self.out.read()
        if data and piece:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(0, len(data), piece):
                self.sock.sendall(data[i:i + piece])
                time.sleep(0.002)
        elif data:
            self.sock.sendall(data)

    def settimeout(self, t):
        self.sock.settimeout(t)

    def recv(self, n):
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                data = self.sock.recv(65536)
                if not data:
                    return b""
                self.inc.write(data)
            except ssl.SSLZeroReturnError:
                return b""

    def close(self):
        self.sock.close()


@case
def client_hello_in_small_segments_is_served(srv, opts):
    # nook screens a client's first bytes (a handshake record holding a ClientHello that fits
    # one record) across reads: a ClientHello that arrives a few bytes at a time passes it.
    for piece in (1, 4):
        t = BioTls(srv.tls_port, bio_context("http/1.1"))
        try:
            try:
                t.obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            t.flush(piece=piece)
            t.handshake()
            t.obj.write(nt.request_bytes("GET", "/"))
            t.flush()
            res = nt.Reader(t, timeout=10).read_response()
            eq((res.status, res.body), (200, b"Hello, World!"),
               "the answer after a ClientHello sent %d byte(s) per segment" % piece)
        finally:
            t.close()


@case
def records_read_together_are_all_answered(srv, opts):
    # nook reads the socket ahead of mbedTLS: two records that arrive in one segment are both
    # decrypted from what one recv brought, and the second is served without a socket event.
    t = BioTls(srv.tls_port, bio_context("http/1.1"))
    try:
        t.handshake()
        t.obj.write(nt.request_bytes("GET", "/"))
        t.obj.write(nt.request_bytes("GET", "/query?q=second"))
        t.flush()  # both records in one send
        r = nt.Reader(t, timeout=10)
        first, second = r.read_response(), r.read_response()
        eq((first.status, first.body), (200, b"Hello, World!"), "the first pipelined answer")
        eq((second.status, second.body), (200, b"second"), "the second, from the same read")
    finally:
        t.close()


@case
def application_data_in_the_handshakes_last_segment_is_served(srv, opts):
    # On a resumed TLS 1.2 handshake the client speaks last: its Finished and its first request
    # can arrive in one segment, so the request is read with the end of the handshake. Both
    # protocols must then serve it without waiting for another socket event.
    for alpn in ("http/1.1", "h2"):
        ctx = bio_context(alpn)  # a session resumes only through the context that made it
        first = BioTls(srv.tls_port, ctx)
        try:
            first.handshake()
            first.obj.write(nt.request_bytes("GET", "/") if alpn == "http/1.1"
                            else H2_PREFACE + EMPTY_SETTINGS)
            first.flush()
            first.recv(4096)  # an answer: the session (and its ticket) is complete
            session = first.obj.session
        finally:
            first.close()
        t = BioTls(srv.tls_port, ctx, session=session)
        try:
            t.handshake(hold_last_flight=True)
            expect(t.obj.session_reused, "a resumed session (%s)" % alpn, t.obj.session_reused)
            if alpn == "http/1.1":
                t.obj.write(nt.request_bytes("GET", "/"))
                t.flush()  # ChangeCipherSpec, Finished and the request in one send
                resp = nt.Reader(t, timeout=5).read_response()
                eq((resp.status, resp.body[:13]), (200, b"Hello, World!"),
                   "the request sent with the resumed handshake's Finished")
            else:
                t.obj.write(H2_PREFACE + EMPTY_SETTINGS)
                t.flush()
                t.settimeout(5)
                data = t.recv(4096)
                expect(len(data) >= 9 and data[3:4] == b"\x04",
                       "the server's SETTINGS after a preface sent with the Finished", data[:40])
        finally:
            t.close()


@case
def ipv6_tls_h2(srv, opts):
    if not nt.have_ipv6_loopback():
        raise nt.Skip("this machine has no IPv6 loopback (::1)")
    with nt.TlsTestServer(opts.server, cleartext=0, host="::1") as s2:
        rc, out, err = nt.curl("-sS", "-g", "--max-time", "10", "--cacert", CRT, "--http2",
                               "-w", " %{http_version}", "https://[::1]:%d/" % s2.tls_port,
                               timeout=30)
        eq((rc, out), (0, b"Hello, World! 2"), "curl --http2 https://[::1] (rc, body + version;"
           " %s)" % err.strip())


# ---------------------------------------------------------------------------------------------
# Hostile handshakes
# ---------------------------------------------------------------------------------------------

@case
def handshake_timeout_silent_client(srv, opts):
    with nt.TlsTestServer(opts.server, "--opt", "TLS_HANDSHAKE_TIMEOUT=500", cleartext=0) as s2:
        with nt.connect(s2.tls_port, timeout=5) as s:
            res = nt.recv_until_close(s, timeout=5)
        expect(res.eof and res.elapsed <= 2.0,
               "a silent TCP client closed within 2 s (TLS_HANDSHAKE_TIMEOUT=500)",
               "eof=%s after %.2f s, %d bytes" % (res.eof, res.elapsed, len(res)))
        # a ClientHello cut short is no better than silence
        hello = client_hello_bytes()
        with nt.connect(s2.tls_port, timeout=5) as s:
            s.sendall(hello[:len(hello) // 2])
            res = nt.recv_until_close(s, timeout=5)
        expect(res.eof and res.elapsed <= 2.0, "half a ClientHello closed within 2 s",
               "eof=%s after %.2f s" % (res.eof, res.elapsed))
        still_serves(s2.tls_port)


@case
def handshake_timeout_does_not_cut_established_connections(srv, opts):
    with nt.TlsTestServer(opts.server, "--opt", "TLS_HANDSHAKE_TIMEOUT=500", cleartext=0) as s2:
        with tls_socket(s2.tls_port, ["http/1.1"]) as s:
            time.sleep(1.5)  # 3x the handshake timeout, well under the idle timeout
            s.sendall(nt.request_bytes("GET", "/"))
            r = nt.Reader(s, timeout=5).read_response()
            eq((r.status, r.body), (200, b"Hello, World!"),
               "a request 1.5 s after a completed handshake (HTTP/1.1)")
        with tls_socket(s2.tls_port, ["h2"]) as s:
            time.sleep(1.5)
            s.sendall(H2_PREFACE + EMPTY_SETTINGS)
            s.settimeout(5)
            data = b""
            try:
                while len(data) < 9:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except socket.timeout:
                pass
            expect(len(data) >= 9 and data[3:4] == b"\x04",
                   "a SETTINGS frame 1.5 s after a completed h2 handshake", data[:40])


@case
def garbage_instead_of_client_hello(srv, opts):
    res = nt.send_raw(srv.tls_port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
    expect(res.eof and res.elapsed <= 2.0, "plain HTTP on the TLS port closed within 2 s",
           "eof=%s after %.2f s, got %s" % (res.eof, res.elapsed, bytes(res[:60])))
    expect(not res.startswith(b"HTTP/"), "no cleartext HTTP answer on the TLS port", res[:60])
    # The last two announce a ClientHello of 16 MiB and one of 16 KiB + 1 byte, more than
    # one record holds: refused on their header (mbedTLS 3.6 alone would wait for the rest).
    for junk in (b"\x16\x03\x01\x00\x05hello", b"\x00" * 64, os.urandom(512),
                 b"\x16\x03\x01\x00\x05\x01\xff\xff\xff\x03",
                 b"\x16\x03\x01\x40\x00\x01\x00\x40\x01" + b"\x03" * 100):
        res = nt.send_raw(srv.tls_port, junk, timeout=5)
        expect(res.eof and res.elapsed <= 2.0, "junk on the TLS port closed within 2 s",
               "eof=%s after %.2f s" % (res.eof, res.elapsed))
    # a client that connects and leaves at once
    for _ in range(5):
        nt.connect(srv.tls_port).close()
    still_serves(srv.tls_port)


def setup(opts):
    srv = nt.TlsTestServer(opts.server, cleartext=1, tls=2).start()
    return (srv, opts), (srv,)


if __name__ == "__main__":
    nt.main(setup)
