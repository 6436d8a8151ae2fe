#!/usr/bin/env python3
"""Large responses over TLS with the records of one write gathered into one send
(NOOK_OPT_TLS_SEND_BATCH), on HTTP/1.1 and HTTP/2: with the default buffer, with gathering
off (0), and with a buffer that is full after two records (40000), so that one write fills it
several times. The clients read through a small receive buffer and pause, so the server's
socket fills in the middle of a gathered batch: the records held back must go out later, in
order, before anything written after them. Every body must arrive whole.

    python3 test_tls_send.py --server PATH/nook_test_server --hello PATH/hello
"""
import hashlib
import os
import shutil
import socket
import ssl
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nooktest as nt  # noqa: E402
from nooktest import case, eq  # noqa: E402

CRT, _KEY = nt.cert_files("localhost")
BODY = 6 << 20
BATCHES = (None, 0, 40000)  # None: the default


class SlowTls:
    """A TLS client socket with a 4 KiB receive buffer that stops reading for `pause` seconds
    after every `every` bytes it has read: the server's writes block again and again."""

    def __init__(self, port, alpn, every=1 << 20, pause=0.15):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(20)
        raw.connect(("127.0.0.1", port))
        ctx = ssl.create_default_context(cafile=CRT)
        ctx.set_alpn_protocols([alpn])
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        eq(self.sock.selected_alpn_protocol(), alpn, "the negotiated protocol")
        self.every, self.pause, self.until_pause = every, pause, 0

    def settimeout(self, t):
        self.sock.settimeout(t)

    def sendall(self, data):
        self.sock.sendall(data)

    def recv(self, n):
        if self.until_pause <= 0:
            time.sleep(self.pause)
            self.until_pause = self.every
        data = self.sock.recv(min(n, 16384))
        self.until_pause -= len(data)
        return data

    def close(self):
        self.sock.close()


def h1_get(port, path):
    """Two GETs on one keep-alive HTTP/1.1 connection (the second is written after the first
    one's last records): both bodies."""
    s = SlowTls(port, "http/1.1")
    try:
        s.sendall(nt.request_bytes("GET", path) + nt.request_bytes("GET", path))
        r = nt.Reader(s, timeout=20)
        bodies = []
        for _ in range(2):
            res = r.read_response()
            eq(res.status, 200, "status of GET %s" % path)
            bodies.append(res.body)
        return bodies
    finally:
        s.close()


def h2_get(port, path, streams=3):
    """`streams` concurrent GETs on one HTTP/2 connection with wide-open flow control, so the
    server writes as fast as its socket lets it: each stream's body."""
    s = SlowTls(port, "h2")
    try:
        c = nt.H2Client(s, "https", window=(1 << 31) - 1)
        ids = [c.send_get(path) for _ in range(streams)]
        got = c.read(ids)
        eq([(got[i].status, got[i].ended) for i in ids], [(200, True)] * streams,
           "status and end of each stream")
        return [got[i].body for i in ids]
    finally:
        s.close()


def all_whole(ctx, get):
    for batch, port in zip(BATCHES, ctx.ports):
        for i, body in enumerate(get(port, "/static/big.bin")):
            what = "body %d with TLS_SEND_BATCH=%s" % (i + 1, "default" if batch is None
                                                       else batch)
            eq(len(body), BODY, "length of " + what)
            eq(hashlib.sha256(body).hexdigest(), ctx.digest, "SHA-256 of " + what)


@case
def http11_bodies_arrive_whole_through_a_slow_reader(ctx):
    all_whole(ctx, h1_get)


@case
def h2_bodies_arrive_whole_through_a_slow_reader(ctx):
    all_whole(ctx, h2_get)


@case
def fast_clients_get_the_same_bytes(ctx):
    # curl at full speed: whole batches mostly go out in one send.
    for batch, port in zip(BATCHES, ctx.ports):
        for flag in ("--http1.1", "--http2"):
            rc, out, err = nt.run_tool(["curl", "-sS", "--cacert", CRT, flag, "-o", "-",
                                        "https://127.0.0.1:%d/static/big.bin" % port], timeout=60)
            eq(rc, 0, "curl %s exit code (batch %s): %s" % (flag, batch, err))
            eq(hashlib.sha256(out).hexdigest(), ctx.digest,
               "SHA-256 of the body from curl %s (TLS_SEND_BATCH=%s)" % (flag, batch))


@case
def bad_values_are_refused(ctx):
    for bad in ("-1", str((16 << 20) + 1)):
        srv = nt.TlsTestServer(ctx.server, "--opt", "TLS_SEND_BATCH=" + bad, cleartext=0)
        try:
            srv.start()
        except AssertionError:
            continue  # refused at start, as it should be
        finally:
            srv.stop()
        raise AssertionError("expected TLS_SEND_BATCH=%s to be refused, got a running server"
                             % bad)


def setup(opts):
    root = tempfile.mkdtemp(prefix="nook-tls-send-")
    import atexit
    atexit.register(shutil.rmtree, root, True)
    data = os.urandom(BODY)
    with open(os.path.join(root, "big.bin"), "wb") as f:
        f.write(data)
    servers = []
    for batch in BATCHES:
        extra = [] if batch is None else ["--opt", "TLS_SEND_BATCH=%d" % batch]
        servers.append(nt.TlsTestServer(opts.server, "--static", root, *extra,
                                        cleartext=0).start())
    ctx = type("Ctx", (), {})()
    ctx.ports = [s.tls_port for s in servers]
    ctx.digest = hashlib.sha256(data).hexdigest()
    ctx.server = opts.server
    return (ctx,), servers


if __name__ == "__main__":
    nt.main(setup)
