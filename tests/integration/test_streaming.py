#!/usr/bin/env python3
"""Streaming with bounded memory, over HTTP/1.1 and HTTP/2 (h2c), while the server's RSS is
sampled: a 1 GiB upload to a streaming route, a 1 GiB download at full speed, and a download to
a reader that is genuinely slow (25 MiB/s through a 64 KiB receive buffer; on HTTP/2 a 64 KiB
window reopened only as it reads), so that the server is held back throughout. The growth must
stay under a small bound — the body is never buffered whole — and the figures are printed.
Also: nghttp reads a server-sent event stream (examples/sse) that ends after a count.

    python3 test_streaming.py --server PATH/nook_test_server --hello PATH/hello
"""
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nooktest as nt  # noqa: E402
from nooktest import case, eq, expect  # noqa: E402

GIB = 1 << 30
# RSS growth allowed while a body streams. Measured: at most 0.6 MiB in a RelWithDebInfo build
# (1 GiB each way, both protocols, slow readers included), 1.2 MiB under ASan. Sanitizer builds
# keep freed memory in quarantine and shadow what they touch, so they get more room.
RSS_GROWTH_LIMIT = 4 << 20
RSS_GROWTH_LIMIT_SANITIZED = 64 << 20


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Sampler:
    """Samples a process's RSS every 50 ms while a transfer runs."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, 0, False
        self.base = rss(pid)
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.05)

    def finish(self):
        self.stop = True
        self.t.join()
        return self.base, self.peak


def zeros_upload(port, proto):
    """curl POSTs 1 GiB of zeros from a pipe (chunked on HTTP/1.1)."""
    flag = "--http1.1" if proto == "h1" else "--http2-prior-knowledge"
    gen = subprocess.Popen(["head", "-c", str(GIB), "/dev/zero"], stdout=subprocess.PIPE)
    p = subprocess.run([nt.CURL, "-sS", flag, "-T", "-", "-X", "POST",
                        "http://127.0.0.1:%d/upload" % port], stdin=gen.stdout,
                       capture_output=True, timeout=240)
    gen.wait()
    return p.returncode, p.stdout.decode(errors="replace")


@case
def upload_1gib_keeps_rss_flat(ctx):
    for proto in ("h1", "h2c"):
        s = Sampler(ctx.srv.pid)
        t0 = time.monotonic()
        rc, out = zeros_upload(ctx.port, proto)
        base, peak = s.finish()
        eq(rc, 0, "curl exit code (%s)" % proto)
        # FNV-1a of 2^30 zero bytes, computed by the same recurrence
        expect(out.startswith("bytes=%d " % GIB), "%s: the handler saw every byte" % proto, out)
        print("measure: upload 1 GiB over %s in %.1f s: server RSS %.1f MiB -> peak %.1f MiB"
              % (proto, time.monotonic() - t0, base / 2**20, peak / 2**20))
        expect(peak - base < ctx.rss_limit, "%s: RSS growth under %d MiB"
               % (proto, ctx.rss_limit >> 20), "%.1f MiB" % ((peak - base) / 2**20))


@case
def throttled_upload_holds_the_client_back(ctx):
    # The handler pauses after every piece for 2 ms: the client is held back by TCP / HTTP/2
    # flow control instead of the server buffering what it sends.
    data = os.urandom(8 << 20)
    for flag in ("--http1.1", "--http2-prior-knowledge"):
        s = Sampler(ctx.srv.pid)
        p = subprocess.run([nt.CURL, "-sS", flag, "--data-binary", "@-",
                            "http://127.0.0.1:%d/upload?pause_ms=2" % ctx.port],
                           input=data, capture_output=True, timeout=120)
        base, peak = s.finish()
        eq(p.returncode, 0, "curl exit code (%s)" % flag)
        expect(p.stdout.decode().startswith("bytes=%d " % len(data)), "every byte", p.stdout)
        expect(peak - base < 16 << 20, "RSS growth under 16 MiB (%s)" % flag,
               "%d MiB" % ((peak - base) >> 20))


def read_h1_fast(port, path):
    """Reads an HTTP/1.1 response as fast as possible; returns the bytes received."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        total = 0
        while True:
            d = s.recv(262144)
            if not d:
                return total
            total += len(d)


@case
def download_1gib_at_full_speed_keeps_rss_flat(ctx):
    n = GIB // 65536
    for proto in ("h1", "h2c"):
        s = Sampler(ctx.srv.pid)
        t0 = time.monotonic()
        if proto == "h1":
            got = read_h1_fast(ctx.port, "/stream?n=%d&size=65536" % n)
            expect(got > GIB, "h1: the whole chunked body (> 1 GiB with framing)", got)
        else:
            p = subprocess.run([nt.CURL, "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w",
                                "%{size_download}",
                                "http://127.0.0.1:%d/stream?n=%d&size=65536" % (ctx.port, n)],
                               capture_output=True, timeout=240)
            eq((p.returncode, p.stdout.decode()), (0, str(GIB)), "h2c: curl exit code and bytes")
        base, peak = s.finish()
        print("measure: download 1 GiB over %s at full speed in %.1f s: server RSS %.1f MiB -> "
              "peak %.1f MiB" % (proto, time.monotonic() - t0, base / 2**20, peak / 2**20))
        expect(peak - base < ctx.rss_limit, "%s: RSS growth under %d MiB"
               % (proto, ctx.rss_limit >> 20), "%.1f MiB" % ((peak - base) / 2**20))


# The slow reader: far slower than the server can produce (hundreds of MB/s), so the server is
# held back the whole time (NOOK_AGAIN, then WRITABLE) and must not buffer what it cannot send.
SLOW_SIZE = 256 << 20
SLOW_RATE = 25 << 20      # bytes per second: about 10 s per protocol
SLOW_RCVBUF = 64 << 10    # a small kernel buffer in front of the reader


class RateLimit:
    """Sleeps so that `total` bytes take at least total / rate seconds since the start."""

    def __init__(self, rate):
        self.rate, self.t0 = rate, time.monotonic()

    def wait(self, total):
        ahead = total / self.rate - (time.monotonic() - self.t0)
        if ahead > 0:
            time.sleep(ahead)


def slow_socket(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    return s


def slow_read_h1(port, path):
    """HTTP/1.1 from a raw socket read at SLOW_RATE; returns (bytes received, ends as a chunked
    body should)."""
    with slow_socket(port) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        total, tail, limit = 0, b"", RateLimit(SLOW_RATE)
        while True:
            limit.wait(total)
            d = s.recv(65536)
            if not d:
                return total, tail.endswith(b"\r\n0\r\n\r\n")
            total += len(d)
            tail = (tail + d)[-16:]


def slow_read_h2(port, path):
    """HTTP/2 (h2c) with a 64 KiB window the reader reopens only as it consumes, at SLOW_RATE;
    returns (body bytes, the stream ended cleanly)."""
    body = 0

    def count(_sid, data):
        nonlocal body
        body += len(data)

    with slow_socket(port) as s:
        c = nt.H2Client(s, "http")  # SETTINGS_INITIAL_WINDOW_SIZE stays 65535
        limit = RateLimit(SLOW_RATE)
        sid = c.send_get(path)
        r = c.read([sid], on_data=count, before_recv=limit.wait)[sid]
        return body, r.ended


@case
def download_to_slow_reader_keeps_rss_flat(ctx):
    path = "/stream?n=%d&size=65536" % (SLOW_SIZE // 65536)
    for proto, read in (("h1", slow_read_h1), ("h2c", slow_read_h2)):
        s = Sampler(ctx.srv.pid)
        t0 = time.monotonic()
        got, clean = read(ctx.port, path)
        took = time.monotonic() - t0
        base, peak = s.finish()
        if proto == "h1":
            expect(got > SLOW_SIZE and clean, "h1: the whole chunked body", (got, clean))
        else:
            eq((got, clean), (SLOW_SIZE, True), "h2c: body bytes and a clean end of stream")
        print("measure: download %d MiB to a slow reader (%s, %d MiB/s, %d KiB receive buffer) "
              "in %.1f s (%.1f MiB/s): server RSS %.1f MiB -> peak %.1f MiB (+%.1f MiB)"
              % (SLOW_SIZE >> 20, proto, SLOW_RATE >> 20, SLOW_RCVBUF >> 10, took,
                 SLOW_SIZE / took / 2**20, base / 2**20, peak / 2**20, (peak - base) / 2**20))
        expect(took >= SLOW_SIZE / SLOW_RATE * 0.95, "%s: the reader set the pace" % proto,
               "%.1f s" % took)
        expect(peak - base < ctx.rss_limit, "%s: RSS growth under %d MiB"
               % (proto, ctx.rss_limit >> 20), "%.1f MiB" % ((peak - base) / 2**20))


@case
def nghttp_reads_an_event_stream(ctx):
    # examples/sse answers each subscriber from a ticker thread with nook_token_post; with
    # count=3 the stream ends after the third event.
    srv = nt.TlsTestServer(str(Path(ctx.hello).resolve().parent / "sse"), "--print-port",
                           "--interval-ms", "100")
    srv.name = "sse"
    with srv:
        plain, tls = srv.ports
        for name, base in (("h2c", "http://127.0.0.1:%d" % plain),
                           ("h2-tls", "https://127.0.0.1:%d" % tls)):
            rc, out, err = nt.run_tool(["nghttp", "-nv", base + "/events?count=3"], timeout=20)
            text = out.decode("utf-8", "replace")
            eq(rc, 0, "%s: nghttp -nv exit code (stderr %s)" % (name, err[-300:]))
            recv = dict(re.findall(r"recv \(stream_id=\d+\) ([^:\s][^:]*|:status): (.*)$", text,
                                   re.M))
            eq((recv.get(":status"), recv.get("content-type")), ("200", "text/event-stream"),
               "%s: status and content type" % name)
            rc, out, err = nt.run_tool(["nghttp", base + "/events?count=3"], timeout=20)
            events = re.findall(r"^data: (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)$",
                                out.decode("utf-8", "replace"), re.M)
            eq((rc, len(events)), (0, 3), "%s: exit code and events before the stream ended"
               % name)


def sanitized(pid):
    """Whether the server runs under ASan or TSan (their shadow memory inflates RSS)."""
    with open("/proc/%d/maps" % pid) as f:
        maps = f.read()
    return "libasan" in maps or "libtsan" in maps


def setup(opts):
    srv = nt.TestServer(opts.server).start()
    ctx = type("Ctx", (), {})()
    ctx.srv, ctx.port, ctx.hello = srv, srv.port, opts.hello
    ctx.srv.pid = srv.proc.pid
    ctx.rss_limit = RSS_GROWTH_LIMIT_SANITIZED if sanitized(srv.pid) else RSS_GROWTH_LIMIT
    print("measure: RSS growth limit %d MiB (%s build)" % (ctx.rss_limit >> 20, "sanitizer"
          if ctx.rss_limit == RSS_GROWTH_LIMIT_SANITIZED else "plain"))
    return (ctx,), (srv,)


if __name__ == "__main__":
    nt.main(setup)
