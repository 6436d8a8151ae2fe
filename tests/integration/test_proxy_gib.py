"""1 GiB up and 1 GiB down through the reverse proxy, with the proxy's RSS sampled: bodies are
streamed both ways with flow control and backpressure, so memory stays flat however large the
transfer (issue: the proxy must keep RSS flat for a 1 GiB upload and download).

examples/proxy forwards to the nook test server over h2c:// (clients over HTTP/1.1 and h2c),
over http:// (a client over h2c) and over h2:// (TLS; a client over h2c). Each transfer checks
every byte arrived (the upload's byte count and FNV-1a as the upstream computed them; the
download's size) and that the proxy's peak RSS stayed within its growth limit of where it
started: RSS_GROWTH_LIMIT, or RSS_GROWTH_LIMIT_SANITIZED for a sanitizer build (ASan keeps
freed memory in quarantine and its shadow memory grows with what was touched).

    python3 test_proxy_gib.py --server PATH/nook_test_server --hello PATH/hello
"""
import subprocess
import threading
import time
from pathlib import Path

import nooktest as nt
from nooktest import case, eq, expect

GIB = 1 << 30
CHUNK = 65536
RSS_GROWTH_LIMIT = 16 << 20  # release builds measure about 1 MiB (docs/proxy.md)
RSS_GROWTH_LIMIT_SANITIZED = 32 << 20  # ASan measures under 4 MiB; its quarantine varies
DATA = Path(__file__).resolve().parents[1] / "data"


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def sanitized(pid):
    with open("/proc/%d/maps" % pid) as f:
        maps = f.read()
    return "libasan" in maps or "libtsan" in maps


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


class Proxy(nt.ServerProcess):
    def __init__(self, binary, upstream, *extra):
        super().__init__([str(binary), "--print-port", "--threads", "1", "--upstream", upstream,
                          "--listen", "127.0.0.1:0"] + list(extra),
                         "proxy (%s)" % upstream.split(":")[0])

    def start(self, timeout=10.0):
        self._spawn()
        self.ports = self._wait_lines(r"^port (\d+)$", 1, "stdout", timeout)
        return self


def client_flag(proto):
    return "--http1.1" if proto == "h1" else "--http2-prior-knowledge"


def measured(px, what, run):
    s = Sampler(px.proc.pid)
    t0 = time.monotonic()
    result = run()
    base, peak = s.finish()
    print("measure: %s through %s in %.1f s: proxy RSS %.1f MiB -> peak %.1f MiB"
          % (what, px.name, time.monotonic() - t0, base / 2**20, peak / 2**20))
    limit = RSS_GROWTH_LIMIT_SANITIZED if sanitized(px.proc.pid) else RSS_GROWTH_LIMIT
    expect(peak - base < limit, "%s through %s: RSS growth under %d MiB"
           % (what, px.name, limit >> 20), "%.1f MiB" % ((peak - base) / 2**20))
    return result


def upload(px, proto):
    gen = subprocess.Popen(["head", "-c", str(GIB), "/dev/zero"], stdout=subprocess.PIPE)
    p = subprocess.run([nt.CURL, "-sS", client_flag(proto), "-T", "-", "-X", "POST",
                        "http://127.0.0.1:%d/upload" % px.ports[0]], stdin=gen.stdout,
                       capture_output=True, timeout=300)
    gen.wait()
    return p.returncode, p.stdout.decode(errors="replace")


def download(px, proto):
    p = subprocess.run([nt.CURL, "-sS", client_flag(proto), "-o", "/dev/null", "-w",
                        "%{http_code} %{size_download}",
                        "http://127.0.0.1:%d/stream?n=%d&size=%d" % (px.ports[0], GIB // CHUNK,
                                                                      CHUNK)],
                       capture_output=True, timeout=300)
    return p.returncode, p.stdout.decode(errors="replace")


def fnv_of_zeros(n):
    h = 0x811C9DC5
    # x ^ 0 == x: each zero byte only multiplies; 2^30 of them by squaring the multiplier.
    mult, k = 0x01000193, n
    while k:
        if k & 1:
            h = (h * mult) & 0xFFFFFFFF
        mult = (mult * mult) & 0xFFFFFFFF
        k >>= 1
    return "%08x" % h


@case
def one_gib_each_way_keeps_the_proxy_flat(ctx):
    want_up = "bytes=%d fnv=%s" % (GIB, fnv_of_zeros(GIB))
    for px, protos in ((ctx.p_h2c, ("h1", "h2c")), (ctx.p_h1, ("h2c",)), (ctx.p_tls, ("h2c",))):
        for proto in protos:
            rc, out = measured(px, "1 GiB upload from an %s client" % proto,
                               lambda: upload(px, proto))
            eq((rc, out), (0, want_up), "upload via %s from %s" % (px.name, proto))
            rc, out = measured(px, "1 GiB download to an %s client" % proto,
                               lambda: download(px, proto))
            eq((rc, out), (0, "200 %d" % GIB), "download via %s to %s" % (px.name, proto))


def setup(opts):
    ctx = type("Ctx", (), {})()
    proxy_bin = Path(opts.hello).resolve().parent / "proxy"
    ctx.up = nt.TestServer(opts.server, "--quiet").start()
    up = "127.0.0.1:%d" % ctx.up.port
    ctx.p_h2c = Proxy(proxy_bin, "h2c://" + up).start()
    ctx.p_h1 = Proxy(proxy_bin, "http://" + up).start()
    ctx.up_tls = nt.TlsTestServer(opts.server, "--quiet", cleartext=0, tls=1).start()
    ctx.p_tls = Proxy(proxy_bin, "h2://localhost:%d" % ctx.up_tls.tls_port,
                      "--ca-file", str(DATA / "localhost.crt")).start()
    return (ctx,), (ctx.p_h2c, ctx.p_h1, ctx.p_tls, ctx.up, ctx.up_tls)


if __name__ == "__main__":
    nt.main(setup)
