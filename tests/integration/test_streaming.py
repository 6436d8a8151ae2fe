#!/usr/bin/env python3
"""Streaming with bounded memory: a 1 GiB upload to a streaming route and a 1 GiB download to a
slow reader, over HTTP/1.1 and HTTP/2 (h2c), while the server's RSS is sampled. The growth must
stay under a small bound — the body is never buffered whole — and the figures are printed.

    python3 test_streaming.py --server PATH/nook_test_server --hello PATH/hello
"""
import os
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nooktest as nt  # noqa: E402
from nooktest import case, eq, expect  # noqa: E402

GIB = 1 << 30
RSS_GROWTH_LIMIT = 64 << 20  # generous for ASan builds; release builds stay far below


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
        expect(peak - base < RSS_GROWTH_LIMIT, "%s: RSS growth under %d MiB"
               % (proto, RSS_GROWTH_LIMIT >> 20), "%d MiB" % ((peak - base) >> 20))


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


def slow_read(port, path, chunk, pause):
    """Reads an HTTP/1.1 response slowly; returns the body length."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        total = 0
        while True:
            d = s.recv(chunk)
            if not d:
                return total
            total += len(d)
            if pause:
                time.sleep(pause)


@case
def download_1gib_to_slow_reader_keeps_rss_flat(ctx):
    n = GIB // 65536
    s = Sampler(ctx.srv.pid)
    t0 = time.monotonic()
    # ~256 KiB per 1 ms pause: a reader slower than the server can write
    got = slow_read(ctx.port, "/stream?n=%d&size=65536" % n, 262144, 0.001)
    base, peak = s.finish()
    expect(got > GIB, "the whole chunked body (> 1 GiB with framing)", got)
    print("measure: download 1 GiB to a slow reader (HTTP/1.1) in %.1f s: server RSS %.1f MiB "
          "-> peak %.1f MiB" % (time.monotonic() - t0, base / 2**20, peak / 2**20))
    expect(peak - base < RSS_GROWTH_LIMIT, "RSS growth under %d MiB" % (RSS_GROWTH_LIMIT >> 20),
           "%d MiB" % ((peak - base) >> 20))


@case
def download_1gib_over_h2_keeps_rss_flat(ctx):
    n = GIB // 65536
    s = Sampler(ctx.srv.pid)
    t0 = time.monotonic()
    p = subprocess.run([nt.CURL, "-sS", "--http2-prior-knowledge", "--limit-rate", "400M", "-o",
                        "/dev/null", "-w", "%{size_download}",
                        "http://127.0.0.1:%d/stream?n=%d&size=65536" % (ctx.port, n)],
                       capture_output=True, timeout=240)
    base, peak = s.finish()
    eq((p.returncode, p.stdout.decode()), (0, str(GIB)), "curl exit code and bytes (h2c)")
    print("measure: download 1 GiB over h2c (rate-limited reader) in %.1f s: server RSS %.1f MiB "
          "-> peak %.1f MiB" % (time.monotonic() - t0, base / 2**20, peak / 2**20))
    expect(peak - base < RSS_GROWTH_LIMIT, "RSS growth under %d MiB" % (RSS_GROWTH_LIMIT >> 20),
           "%d MiB" % ((peak - base) >> 20))


def setup(opts):
    srv = nt.TestServer(opts.server).start()
    ctx = type("Ctx", (), {})()
    ctx.srv, ctx.port = srv, srv.port
    ctx.srv.pid = srv.proc.pid
    return (ctx,), (srv,)


if __name__ == "__main__":
    nt.main(setup)
