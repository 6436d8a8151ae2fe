"""
attack — helpers for the attack tests (tests/integration/test_attack_*.py; not a test itself).

Each attack test runs the same scene, ROUNDS (2) rounds of:
  1. baseline: an honest client (h2load, HONEST_CLIENTS connections at a fixed request rate,
     3,000 requests in 3 s) alone against the server: the latencies of an idle server;
  2. attack: the attacker (a thread of this process speaking raw HTTP/2 or HTTP/1.1) and the
     same honest run at the same time, while the server's peak RSS is recorded.
Then the verdict (Verdict.check), the same rule every time, with no second try:
  - honest success >= 99 % of the requests made (200 answers), in every round;
  - honest p99 latency under attack <= LATENCY_FACTOR (2) x the baseline p99 +
    LATENCY_SLACK_MS (1 ms). A p99 is the nearest-rank percentile (the ceil(0.99 n)-th smallest)
    of h2load's per-request times (its --log-file, in microseconds) over one run of
    n >= MIN_SAMPLES (2,000) requests: the 30th-worst of 3,000, not one outlier. Each side of
    the rule takes the lower p99 of its rounds: the machine's own noise (other processes, the
    hypervisor taking a CPU away for a few milliseconds) only ever adds latency, so the lower
    of two runs is the better estimate of the server's, and both sides are treated alike. The
    rounds alternate (baseline, attack, baseline, attack), so slow changes in that noise reach
    both. The 1 ms absorbs what 2 x cannot scale: an idle p99 on loopback is 0.1-0.3 ms, and
    on a 2-CPU machine a woken process may wait for a CPU that the server, h2load and the
    attacker share. The attacking thread runs at nice ATTACKER_NICE: an attacker on another
    machine would not take the server's CPU either. Under a sanitizer (detected from the
    server's mappings) the server does the same work 3-10 times slower, so what a request
    waits behind one attacking batch is that much longer: there the slack is
    SANITIZER_LATENCY_SLACK_MS (5 ms). The release run is the one that measures speed; the
    sanitizer run checks memory safety under the same attacks;
  - server RSS growth, from just before each attack to its peak during it (VmHWM after resetting
    it through /proc/PID/clear_refs, and VmRSS sampled every 50 ms), below the bound the test
    states, in every round (a looser bound under a sanitizer, detected from the server's
    mappings: ASan's quarantine and shadow memory are not nook's);
  - the attacker's connections were closed with the error the test expects, and the server's
    log names the defence that fired for each of them (expect_defence);
  - the server still serves afterwards (a fresh honest run answers 200 every time).

NOOK_ATTACK_ROUNDS=N in the environment changes the number of rounds (1 for a quick run).
Every socket has a timeout, every subprocess a deadline, every attack a time budget; only
127.0.0.1 is used, with ports the server picked.
"""
import math
import os
import re
import socket
import struct
import subprocess
import tempfile
import threading
import time

import nooktest as nt

H2LOAD = "/usr/bin/h2load"
HONEST_CLIENTS = 4
HONEST_RPS = 250          # per client: 1,000 requests/s in all
HONEST_SECONDS = 3.0      # 3,000 requests per run
MIN_SAMPLES = 2000        # fewer latencies than this make a p99 that means little
ROUNDS = int(os.environ.get("NOOK_ATTACK_ROUNDS", "2"))  # (baseline, attack) pairs per scene
LATENCY_FACTOR = 2.0
LATENCY_SLACK_MS = 1.0
SANITIZER_LATENCY_SLACK_MS = 5.0
ATTACKER_NICE = 10        # the attacking thread's nice value (see the module comment)
RSS_SAMPLE_S = 0.05
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
        self.port = self.sock.getsockname()[1]  # how the server's log names this connection
        self.sent = 0            # bytes sent
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
            self.sent += len(data)
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
    """What a repeated attack saw: one entry per attacking connection (or batch of them)."""

    def __init__(self):
        self.connections = []  # dicts: goaway, closed, rst, statuses, frames, ports, sent, note
        self.error = None

    def summary(self):
        out = {}
        for c in self.connections:
            k = "GOAWAY(%s)" % errname(c["goaway"]) if c["goaway"] is not None else \
                ("closed" if c["closed"] else "still open")
            out[k] = out.get(k, 0) + 1
        return out

    def sent_mb(self):
        return sum(c.get("sent", 0) for c in self.connections) / 1048576.0


def nice_this_thread(nice=ATTACKER_NICE):
    """Lowers the calling thread's priority (Linux: the nice value is per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (OSError, AttributeError):
        pass  # best effort: the attack still runs, only at the same priority as the server


def run_attack(fn, seconds, log):
    """Runs fn(deadline) -> dict again and again (one attacking connection each) until
    `seconds` have passed; each result goes to log.connections. Exceptions end the attack and
    are kept in log.error. Runs niced (see the module comment)."""
    nice_this_thread()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            result = fn(deadline)
            if result is not None:  # None: too little time was left to attack again
                log.connections.append(result)
    except Exception as e:  # reported by the test, with what was seen so far
        log.error = "%s: %s" % (type(e).__name__, e)


def reader(port, first, batch, handshake=False):
    """An attacking connection (for scene()) that sends `first`, then `batch(i)` again and
    again, reading all the while; handshake: wait for the server's SETTINGS first."""
    def one(deadline):
        a = H2Attacker(port)
        if handshake:
            a.handshake()
        a.send(first)
        i = 0
        while not a.closed and time.monotonic() < deadline + GRACE:
            a.send(batch(i))
            i += 1
            a.pump()
        a.wait_closed(3)
        a.close()
        return h2_result(a, "%d batches" % i)
    return one


def h2_result(a, note=""):
    return {"goaway": a.goaway, "debug": a.goaway_debug[:80], "closed": a.closed,
            "rst": dict(a.rst), "statuses": dict(a.statuses), "frames": a.frames,
            "ports": [a.port], "sent": a.sent, "note": note}


# ---------------------------------------------------------------------------------------------
# The honest client, latency and memory
# ---------------------------------------------------------------------------------------------

def percentile(values, q):
    """Nearest-rank percentile: the ceil(q/100 x n)-th smallest value (inf when empty)."""
    if not values:
        return float("inf")
    v = sorted(values)
    return v[max(0, math.ceil(q / 100.0 * len(v)) - 1)]


class HonestRun:
    """h2load at a fixed request rate; .ok, .total, .latencies_ms (from its per-request log)."""

    def __init__(self, port, h1=False, seconds=HONEST_SECONDS, path="/"):
        self.port, self.h1, self.seconds, self.path = port, h1, seconds, path
        self.total = int(HONEST_CLIENTS * HONEST_RPS * seconds)
        self.proc = None
        self.logf = None
        self.out = ""
        self.ok = 0
        self.latencies_ms = []

    def start(self):
        self.logf = tempfile.NamedTemporaryFile(prefix="nook-h2load-", suffix=".log",
                                                delete=False)
        self.logf.close()
        argv = [H2LOAD, "-n", str(self.total), "-c", str(HONEST_CLIENTS), "-m", "1",
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
        try:
            # One line per request: start (us since the epoch), status, time to the end of the
            # response (us). A request that failed has status -1 or none at all.
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
        return percentile(self.latencies_ms, 99)

    def success(self):
        return self.ok / self.total if self.total else 0.0

    def describe(self):
        return "p50 %.2f / p99 %.2f / max %.1f ms over %d, %d/%d ok" % (
            percentile(self.latencies_ms, 50), self.p99(),
            max(self.latencies_ms) if self.latencies_ms else float("inf"),
            len(self.latencies_ms), self.ok, self.total)


def proc_status_kb(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kb(pid):
    return proc_status_kb(pid, "VmRSS")


def sanitized(pid):
    """The server runs under AddressSanitizer or ThreadSanitizer (their memory is not nook's)."""
    try:
        with open("/proc/%d/maps" % pid) as f:
            maps = f.read()
    except OSError:
        return False
    return "libasan" in maps or "libtsan" in maps


class RssPeak:
    """The server's peak RSS over a stretch of time: VmHWM, reset at start() by writing 5 to
    /proc/PID/clear_refs, and VmRSS sampled every RSS_SAMPLE_S in a thread (the fallback where
    the reset is not allowed, and a cross-check)."""

    def __init__(self, pid):
        self.pid = pid
        self.before_kb = self.peak_kb = 0
        self.hwm_reset = False
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        self.before_kb = self.peak_kb = rss_kb(self.pid)
        try:
            with open("/proc/%d/clear_refs" % self.pid, "w") as f:
                f.write("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(RSS_SAMPLE_S):
            self.peak_kb = max(self.peak_kb, rss_kb(self.pid))

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        self.peak_kb = max(self.peak_kb, rss_kb(self.pid))
        if self.hwm_reset:
            self.peak_kb = max(self.peak_kb, proc_status_kb(self.pid, "VmHWM"))
        return self

    def growth_mb(self):
        return (self.peak_kb - self.before_kb) / 1024.0


class Round:
    """One baseline run, then one attack run beside the same honest client."""

    def __init__(self, base, under, rss, log):
        self.base, self.under, self.rss, self.log = base, under, rss, log

    def describe(self):
        return ("baseline %s; under attack %s; RSS %.1f -> peak %.1f MiB (%+.1f); attacker sent "
                "%.1f MiB on %d connection(s): %s"
                % (self.base.describe(), self.under.describe(), self.rss.before_kb / 1024.0,
                   self.rss.peak_kb / 1024.0, self.rss.growth_mb(), self.log.sent_mb(),
                   len(self.log.connections), self.log.summary()))


class Verdict:
    """The numbers of one attack scene (ROUNDS rounds), and the checks every attack test makes.
    .log holds the attacking connections of every round."""

    def __init__(self, srv, name, rounds, log_from):
        self.srv, self.name, self.rounds = srv, name, rounds
        self.log_from = log_from  # offset of the server's stderr when the first attack began
        self.sanitized = sanitized(srv.proc.pid)
        self.log = AttackLog()
        for r in rounds:
            self.log.connections += r.log.connections
            self.log.error = self.log.error or r.log.error

    def base_p99(self):
        return min(r.base.p99() for r in self.rounds)

    def under_p99(self):
        return min(r.under.p99() for r in self.rounds)

    def slack_ms(self):
        return SANITIZER_LATENCY_SLACK_MS if self.sanitized else LATENCY_SLACK_MS

    def latency_limit(self):
        return LATENCY_FACTOR * self.base_p99() + self.slack_ms()

    def describe(self):
        lines = ["%s%s: honest p99 under attack %.2f ms, limit %.0f x %.2f + %.1f = %.2f ms"
                 % (self.name, " [sanitizer build]" if self.sanitized else "",
                    self.under_p99(), LATENCY_FACTOR, self.base_p99(), self.slack_ms(),
                    self.latency_limit())]
        lines += ["     round %d: %s" % (i + 1, r.describe()) for i, r in enumerate(self.rounds)]
        return "\n".join(lines)

    def server_log(self):
        """What the server logged since the first attack began."""
        return self.srv.stderr()[self.log_from:]

    def check(self, rss_bound_mb, sanitizer_rss_bound_mb=None):
        """The rules every attack scene must meet (see the module comment); one AssertionError
        naming every rule missed. sanitizer_rss_bound_mb (default 3 x rss_bound_mb) replaces
        rss_bound_mb when the server runs under a sanitizer."""
        missed = []

        def rule(ok, what, got):
            if not ok:
                missed.append("expected %s, got %s" % (what, got))

        rule(self.log.error is None, "the attacker to run without a client-side error",
             self.log.error)
        bound = (sanitizer_rss_bound_mb or 3 * rss_bound_mb) if self.sanitized else rss_bound_mb
        for i, r in enumerate(self.rounds):
            for run, what in ((r.base, "baseline"), (r.under, "under attack")):
                rule(len(run.latencies_ms) >= MIN_SAMPLES,
                     ">= %d latency samples (round %d, %s)" % (MIN_SAMPLES, i + 1, what),
                     "%d; h2load said: %s" % (len(run.latencies_ms), run.out[-400:]))
            rule(r.under.success() >= 0.99, "honest success >= 99 %% (round %d)" % (i + 1),
                 "%d of %d; h2load said: %s" % (r.under.ok, r.under.total, r.under.out[-600:]))
            rule(r.rss.growth_mb() < bound,
                 "server peak RSS growth below %d MiB%s (round %d)"
                 % (bound, " (sanitizer build)" if self.sanitized else "", i + 1),
                 "%.1f MiB (%.1f -> %.1f)" % (r.rss.growth_mb(), r.rss.before_kb / 1024.0,
                                              r.rss.peak_kb / 1024.0))
        rule(self.under_p99() <= self.latency_limit(),
             "honest p99 (the lower of the rounds') <= %.0f x baseline %.2f ms + %.1f ms = "
             "%.2f ms" % (LATENCY_FACTOR, self.base_p99(), self.slack_ms(),
                          self.latency_limit()),
             "%.2f ms" % self.under_p99())
        if missed:
            raise AssertionError("%s: %s" % (self.name, "; ".join(missed)))


def scene(srv, name, attack_fn, h1=False, seconds=HONEST_SECONDS, path="/", rounds=None):
    """ROUNDS rounds of: a baseline run, then the attack and the same honest run together.
    Returns a Verdict (printed). attack_fn(deadline) is one attacking connection (see
    run_attack)."""
    done = []
    log_from = None
    for _ in range(rounds or ROUNDS):
        base = HonestRun(srv.port, h1=h1, seconds=seconds, path=path).run()
        nt.expect(base.success() >= 0.99, "an honest baseline of >= 99 % success",
                  "%d of %d: %s" % (base.ok, base.total, base.out[-600:]))
        if log_from is None:
            log_from = len(srv.stderr())
        rss = RssPeak(srv.proc.pid).start()
        log = AttackLog()
        honest = HonestRun(srv.port, h1=h1, seconds=seconds, path=path).start()
        t = threading.Thread(target=run_attack, args=(attack_fn, seconds, log), daemon=True)
        t.start()
        honest.wait()
        t.join(seconds + 15)
        rss.stop()
        nt.expect(not t.is_alive(), "the attacker to stop within its time budget",
                  "still running")
        done.append(Round(base, honest, rss, log))
    v = Verdict(srv, name, done, log_from)
    print("   " + v.describe())
    return v


def checked_scene(srv, name, attack_fn, rss_bound_mb, sanitizer_rss_bound_mb=None, **kw):
    """scene() + Verdict.check(): one verdict over the scene's rounds, no second try."""
    v = scene(srv, name, attack_fn, **kw)
    v.check(rss_bound_mb, sanitizer_rss_bound_mb)
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
    which may never see the GOAWAY: pair it with expect_defence)."""
    bad = [c for c in log.connections if not c["closed"]]
    nt.expect(len(log.connections) >= at_least and not bad,
              "every attacking connection (>= %d) closed by the server" % at_least,
              "%d connection(s), these not: %s" % (len(log.connections), bad[:3]))


def log_lines_by_port(text):
    """Every message the server logged about a client connection from 127.0.0.1, by the
    client's port: one pass over the log (an attack may have made tens of thousands of
    connections, too many to search the whole log once for each)."""
    by_port = {}
    for m in re.finditer(r"^nook: \w+: 127\.0\.0\.1:(\d+): (.*)$", text, re.M):
        by_port.setdefault(int(m.group(1)), []).append(m.group(2))
    return by_port


def expect_defence(v, *patterns, key="ports"):
    """For every port of every attacking connection (the result's `key` list), the server
    logged (since the attack began) a line matching one of `patterns` (regular expressions,
    searched in the message after 'ADDR:PORT: '): the defence that fired is the one the test is
    about."""
    by_port = log_lines_by_port(v.server_log())
    rx = [re.compile(p) for p in patterns]
    missing = []
    ports = 0
    for c in v.log.connections:
        for port in c.get(key, []):
            ports += 1
            lines = by_port.get(port, [])
            if not any(r.search(line) for line in lines for r in rx):
                missing.append((port, lines[:3]))
    nt.expect(ports > 0 and not missing,
              "a log line matching %s for each of the %d attacking connection(s)"
              % (" or ".join(repr(p) for p in patterns), ports),
              "%d without one (port, its lines): %s" % (len(missing), missing[:3]))


# The server's log lines that name each defence (lib/h2/conn.c, lib/h1/conn.c, lib/core).
GLITCHES = r"^h2: too many useless frames \(the last: %s\): GOAWAY\(ENHANCE_YOUR_CALM\)$"
NGHTTP2_FLOODED = r"^h2 connection error: Flooding was detected"


def glitches(last):
    """The glitch budget ran out, on a frame described as `last` (a regex)."""
    return GLITCHES % last


def server_opts(*pairs):
    args = []
    for p in pairs:
        args += ["--opt", p]
    return args
