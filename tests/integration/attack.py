"""
attack — helpers for the attack tests (tests/integration/test_attack_*.py; not a test itself).

Each attack test runs the same scene:
  1. baseline: an honest client (h2load) alone against the server, rate-limited, so its
     latencies are those of an idle server;
  2. attack: the attacker (a thread of this process speaking raw HTTP/2 or HTTP/1.1) and the
     same honest client at the same time;
  3. verdict (Verdict.check):
       - honest success >= 99 % of the requests it made;
       - honest p99 latency <= 2 x the baseline p99 + LATENCY_SLACK_MS. The slack absorbs
         scheduler noise: the machine has 2 cores and during the attack three busy processes
         (server, attacker, h2load) share them, and a sanitizer build multiplies every cost;
       - server RSS growth across the attack < the bound the test states;
       - the attacker's connections were closed with the error the test expects;
       - the server still serves afterwards (a fresh honest request answers 200).

Every socket has a timeout, every subprocess a deadline, every attack a time budget; only
127.0.0.1 is used, with ports the server picked.
"""
import os
import socket
import struct
import subprocess
import tempfile
import threading
import time

import nooktest as nt

H2LOAD = "/usr/bin/h2load"
LATENCY_SLACK_MS = 20.0
HONEST_CLIENTS = 2
HONEST_RPS = 100          # per client: 200 requests/s in all
HONEST_SECONDS = 2.0
GRACE = 3.0               # an attacking connection may go on this long past the honest run,
                          # so that one started late still meets the limit that ends it

# A sanitizer build keeps freed memory in quarantine (256 MiB by default), which would read as
# RSS growth; a small quarantine keeps the RSS bound meaningful and still catches reuse bugs.
if "quarantine_size_mb" not in os.environ.get("ASAN_OPTIONS", ""):
    os.environ["ASAN_OPTIONS"] = (os.environ.get("ASAN_OPTIONS", "") +
                                  ":quarantine_size_mb=16").lstrip(":")

# ---------------------------------------------------------------------------------------------
# HTTP/2 frames, built by hand so they can be as wrong as an attacker wants
# ---------------------------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
ERRORS = ["NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
          "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL",
          "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY",
          "HTTP_1_1_REQUIRED"]
ENHANCE_YOUR_CALM = 11
S_INITIAL_WINDOW_SIZE = 4


def errname(code):
    return ERRORS[code] if code is not None and 0 <= code < len(ERRORS) else repr(code)


def frame(ftype, flags, stream_id, payload=b""):
    n = len(payload)
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, ftype, flags, stream_id) + payload


def settings_frame(pairs=(), ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0,
                 b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name, value, indexed=False):
    """One header field as an HPACK literal with a new name (no Huffman). indexed: 'with
    incremental indexing' (it enters the dynamic table, index 62)."""
    n = name.encode("latin-1") if isinstance(name, str) else name
    v = value.encode("latin-1") if isinstance(value, str) else value
    return (b"\x40" if indexed else b"\x00") + hpack_int(len(n), 7) + n + \
        hpack_int(len(v), 7) + v


def request_block(method="GET", path="/"):
    return b"".join(literal(n, v) for n, v in ((":method", method), (":scheme", "http"),
                                                (":path", path), (":authority", "127.0.0.1")))


def headers_frame(stream_id, block, end_stream=True, end_headers=True):
    return frame(HEADERS, (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0),
                 stream_id, block)


class H2Attacker:
    """A raw h2c connection. It sends the preface and SETTINGS (plus `extra` settings) and, when
    `ack` is true, acknowledges the server's SETTINGS as it reads them. It keeps reading in
    `pump()`, remembering GOAWAY and RST_STREAM frames and whether the server closed."""

    def __init__(self, port, extra_settings=(), ack=True, timeout=5.0):
        self.sock = nt.connect(port, timeout=timeout)
        self.buf = bytearray()
        self.closed = False
        self.goaway = None       # error code of the first GOAWAY
        self.goaway_debug = b""  # and its debug data
        self.rst = {}            # error code -> count
        self.statuses = {}       # :status bytes of HEADERS (first byte of an HPACK block) -> n
        self.frames = 0
        self.ack = ack
        self.send(PREFACE + settings_frame(extra_settings))

    def send(self, data):
        """Sends; returns False once the server has closed (EPIPE / reset)."""
        if self.closed:
            return False
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
            self.closed = True
            return False

    def pump(self, wait=0.0):
        """Reads whatever is there (waiting up to `wait` s for the first byte)."""
        if self.closed and not self.buf:
            return
        deadline = time.monotonic() + wait
        while True:
            left = max(0.0, deadline - time.monotonic())
            self.sock.settimeout(left if left > 0 else 0.0001)
            try:
                chunk = self.sock.recv(262144)
            except (socket.timeout, BlockingIOError):
                break
            except (ConnectionResetError, OSError):
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            self.buf += chunk
            self._parse()
            deadline = time.monotonic()  # got something: drain without waiting any more
        self._parse()

    def _parse(self):
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[0:3], "big")
            if len(self.buf) < 9 + length:
                return
            ftype, flags = self.buf[3], self.buf[4]
            sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload = bytes(self.buf[9:9 + length])
            del self.buf[:9 + length]
            self.frames += 1
            if ftype == SETTINGS and not flags & ACK and self.ack:
                self.send(settings_frame(ack=True))
            elif ftype == GOAWAY and self.goaway is None and len(payload) >= 8:
                self.goaway = struct.unpack(">I", payload[4:8])[0]
                self.goaway_debug = payload[8:200]
            elif ftype == RST_STREAM and len(payload) == 4:
                code = struct.unpack(">I", payload)[0]
                self.rst[code] = self.rst.get(code, 0) + 1
            elif ftype == HEADERS and payload:
                st = status_of_block(payload)
                self.statuses[st] = self.statuses.get(st, 0) + 1

    def handshake(self, timeout=3.0):
        """Waits for the server's SETTINGS (acknowledged by _parse): an attacker that sends a
        header block in pieces must not have the ACK land in the middle of it."""
        deadline = time.monotonic() + timeout
        while self.frames == 0 and not self.closed and time.monotonic() < deadline:
            self.pump(0.1)

    def wait_closed(self, timeout):
        """Reads until the server closes or `timeout` s pass; True if it closed."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.pump(min(0.2, max(0.0, deadline - time.monotonic())))
        return self.closed

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def status_of_block(block):
    """The :status of a response header block, which nghttp2 puts first: an indexed static
    entry (RFC 7541 Appendix A: 0x88 is 200) or a literal with the value's digits in clear."""
    static = {0x88: 200, 0x89: 204, 0x8a: 206, 0x8b: 304, 0x8c: 400, 0x8d: 404, 0x8e: 500}
    if block[0] in static:
        return static[block[0]]
    for code in (b"408", b"413", b"431", b"503", b"429"):
        if code in block[:8]:
            return int(code)
    return "0x%02x" % block[0]


# ---------------------------------------------------------------------------------------------
# The attacker's loop
# ---------------------------------------------------------------------------------------------

class AttackLog:
    """What a repeated attack saw: one entry per attacking connection."""

    def __init__(self):
        self.connections = []  # dicts: goaway, closed, rst, statuses, frames, note
        self.error = None

    def summary(self):
        out = {}
        for c in self.connections:
            k = "GOAWAY(%s)" % errname(c["goaway"]) if c["goaway"] is not None else \
                ("closed" if c["closed"] else "still open")
            out[k] = out.get(k, 0) + 1
        return out


def run_attack(fn, seconds, log):
    """Runs fn(deadline) -> dict again and again (one attacking connection each) until
    `seconds` have passed; each result goes to log.connections. Exceptions end the attack and
    are kept in log.error."""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            log.connections.append(fn(deadline))
    except Exception as e:  # reported by the test, with what was seen so far
        log.error = "%s: %s" % (type(e).__name__, e)


def h2_result(a, note=""):
    return {"goaway": a.goaway, "debug": a.goaway_debug[:80], "closed": a.closed,
            "rst": dict(a.rst),
            "statuses": dict(a.statuses), "frames": a.frames, "note": note}


# ---------------------------------------------------------------------------------------------
# The honest client, latency and memory
# ---------------------------------------------------------------------------------------------

class HonestRun:
    """h2load at a fixed request rate; .ok, .total, .latencies_ms (from its per-request log)."""

    def __init__(self, port, h1=False, seconds=HONEST_SECONDS, path="/"):
        self.port, self.h1, self.seconds, self.path = port, h1, seconds, path
        self.proc = None
        self.logf = None
        self.out = ""

    def start(self):
        n = int(HONEST_CLIENTS * HONEST_RPS * self.seconds)
        self.logf = tempfile.NamedTemporaryFile(prefix="nook-h2load-", suffix=".log",
                                                delete=False)
        self.logf.close()
        argv = [H2LOAD, "-n", str(n), "-c", str(HONEST_CLIENTS), "-m", "1",
                "--rps", str(HONEST_RPS), "-T", "5", "-N", "5", "--log-file", self.logf.name]
        if self.h1:
            argv.append("--h1")
        argv.append("http://127.0.0.1:%d%s" % (self.port, self.path))
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        return self

    def wait(self):
        try:
            out, _ = self.proc.communicate(timeout=self.seconds + 20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            raise AssertionError("expected h2load to finish within %.0f s, got a timeout"
                                 % (self.seconds + 20))
        self.out = out.decode("utf-8", "replace")
        self.total = int(HONEST_CLIENTS * HONEST_RPS * self.seconds)
        self.latencies_ms = []
        self.ok = 0
        try:
            with open(self.logf.name) as f:
                for line in f:
                    cols = line.split()
                    if len(cols) >= 3:
                        if cols[1] == "200":
                            self.ok += 1
                        self.latencies_ms.append(int(cols[2]) / 1000.0)
        finally:
            os.unlink(self.logf.name)
        return self

    def run(self):
        return self.start().wait()

    def p99(self):
        if not self.latencies_ms:
            return float("inf")
        v = sorted(self.latencies_ms)
        return v[min(len(v) - 1, int(len(v) * 0.99))]

    def success(self):
        return self.ok / self.total if self.total else 0.0


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class LatencyError(AssertionError):
    """Only the latency rule failed: checked_scene measures once more."""


class Verdict:
    """The numbers of one attack scene, and the checks every attack test makes."""

    def __init__(self, name, base, under, rss_before, rss_after, log):
        self.name, self.base, self.under, self.log = name, base, under, log
        self.rss_growth_mb = (rss_after - rss_before) / 1024.0

    def describe(self):
        return ("%s: baseline p99 %.1f ms; under attack p99 %.1f ms, %d/%d ok; RSS %+.1f MiB; "
                "attacker connections %s" % (self.name, self.base.p99(), self.under.p99(),
                                             self.under.ok, self.under.total,
                                             self.rss_growth_mb, self.log.summary()))

    def check(self, rss_bound_mb):
        print("   " + self.describe())
        nt.expect(self.log.error is None, "the attacker to run without a client-side error",
                  self.log.error)
        nt.expect(self.under.success() >= 0.99, "honest success >= 99 %% (%s)" % self.name,
                  "%d of %d; h2load said: %s" % (self.under.ok, self.under.total,
                                                 self.under.out[-600:]))
        nt.expect(self.rss_growth_mb < rss_bound_mb,
                  "server RSS growth below %d MiB" % rss_bound_mb,
                  "%.1f MiB" % self.rss_growth_mb)
        limit = 2 * self.base.p99() + LATENCY_SLACK_MS
        if self.under.p99() > limit:
            raise LatencyError("expected honest p99 <= 2 x baseline %.1f ms + %.0f ms = %.1f ms, "
                               "got %.1f ms" % (self.base.p99(), LATENCY_SLACK_MS, limit,
                                                self.under.p99()))


def scene(srv, name, attack_fn, h1=False, seconds=HONEST_SECONDS, path="/"):
    """Baseline, then attack + honest client together; returns a Verdict. attack_fn(deadline)
    is one attacking connection (see run_attack)."""
    base = HonestRun(srv.port, h1=h1, seconds=seconds, path=path).run()
    nt.expect(base.success() >= 0.99, "an honest baseline of >= 99 % success",
              "%d of %d: %s" % (base.ok, base.total, base.out[-600:]))
    rss0 = rss_kb(srv.proc.pid)
    log = AttackLog()
    honest = HonestRun(srv.port, h1=h1, seconds=seconds, path=path).start()
    t = threading.Thread(target=run_attack, args=(attack_fn, seconds, log), daemon=True)
    t.start()
    honest.wait()
    t.join(seconds + 15)
    nt.expect(not t.is_alive(), "the attacker to stop within its time budget", "still running")
    rss1 = rss_kb(srv.proc.pid)
    return Verdict(name, base, honest, rss0, rss1, log)


def checked_scene(srv, name, attack_fn, rss_bound_mb, **kw):
    """scene() + Verdict.check(). On a 2-core machine another test or the kernel can stall the
    honest client for a few ms at the wrong moment; a latency miss alone therefore gets one more
    full measurement (baseline and attack again), and the test fails only if that misses too.
    Every other check counts the first time."""
    v = scene(srv, name, attack_fn, **kw)
    try:
        v.check(rss_bound_mb)
        return v
    except LatencyError as e:
        print("   latency over the limit once (%s); measuring again" % e)
    v = scene(srv, name, attack_fn, **kw)
    v.check(rss_bound_mb)
    return v


def still_serving(port, h1=False):
    r = HonestRun(port, h1=h1, seconds=0.5).run()
    nt.expect(r.success() == 1.0, "the server to still serve honest requests afterwards",
              "%d of %d: %s" % (r.ok, r.total, r.out[-400:]))


def expect_all_closed_with(log, code, at_least=1):
    """Every attacking connection ended with GOAWAY(code) and was closed."""
    bad = [c for c in log.connections if c["goaway"] != code or not c["closed"]]
    nt.expect(len(log.connections) >= at_least and not bad,
              "every attacking connection (>= %d) closed after GOAWAY(%s)"
              % (at_least, errname(code)),
              "%d connection(s), these not: %s" % (len(log.connections), bad[:3]))


def expect_all_closed(log, at_least=1):
    """Every attacking connection was closed by the server (for attackers that never read,
    which may never see the GOAWAY)."""
    bad = [c for c in log.connections if not c["closed"]]
    nt.expect(len(log.connections) >= at_least and not bad,
              "every attacking connection (>= %d) closed by the server" % at_least,
              "%d connection(s), these not: %s" % (len(log.connections), bad[:3]))


def server_opts(*pairs):
    args = []
    for p in pairs:
        args += ["--opt", p]
    return args
