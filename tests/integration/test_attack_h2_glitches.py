#!/usr/bin/env python3
"""HTTP/2 attacks that slipped past the earlier defences:
  - timeouts any input restarted: a client that trickles a byte now and then must not keep
    unread output (WRITE_TIMEOUT), a header block (HEADER_TIMEOUT), a silent request
    (BODY_TIMEOUT) or an idle connection (IDLE_TIMEOUT) alive;
  - frames nghttp2 drops without telling anyone (unknown types, DATA on closed streams) and
    WINDOW_UPDATE floods spend the glitch budget → GOAWAY(ENHANCE_YOUR_CALM);
  - trailers count against the header-list limits (an HPACK bomb in trailers → GOAWAY
    (ENHANCE_YOUR_CALM); trailers over the limit → the stream is reset);
  - responses discarded because the client does not read cost glitches;
  - request bodies buffered per connection are bounded (NOOK_OPT_H2_MAX_CONN_INPUT);
  - a client's GOAWAY with an error cancels its requests (NOOK_ON_CANCEL).
The floods run beside an honest h2load client (rules in attack.py).

    python3 test_attack_h2_glitches.py --server PATH/nook_test_server --hello PATH/hello
"""
import os
import socket
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attack as at  # noqa: E402
import nooktest as nt  # noqa: E402
from nooktest import case  # noqa: E402

RSS_BOUND_MB = 48  # growth allowed across one attack scene (sanitizer builds included)
NO_ERROR, INTERNAL_ERROR, CANCEL = 0, 2, 8
UNKNOWN_TYPE = 0xFA
CONN_INPUT = 8 << 20  # NOOK_OPT_H2_MAX_CONN_INPUT's default
SANITIZER_SLACK_MB = 16  # ASan keeps freed blocks in quarantine (attack.py sets it to 16 MiB)


class Ctx:
    pass


def glitches(last):
    """The server's log line when the glitch budget ran out on a frame described as `last`."""
    return r"^h2: too many useless frames \(the last: %s\): GOAWAY\(ENHANCE_YOUR_CALM\)$" % last


def expect_defence(v, pattern):
    """The server logged, for each attacking connection, the line of the defence under test
    (checked where this attack.py can tell connections apart in the server's log)."""
    if hasattr(at, "expect_defence"):
        at.expect_defence(v, pattern)


def scene(srv, name, attack_fn, defence):
    v = at.checked_scene(srv, name, attack_fn, RSS_BOUND_MB)
    at.expect_all_closed_with(v.log, at.ENHANCE_YOUR_CALM)
    expect_defence(v, defence)
    at.still_serving(srv.port)


def cancelled(port):
    """The test server's count of NOOK_ON_CANCEL hooks run (/mw/* requests)."""
    rc, out, err = nt.curl("-s", "--http1.1", "http://127.0.0.1:%d/mw/cancelled" % port,
                           timeout=10)
    nt.eq(rc, 0, "curl exit code for /mw/cancelled")
    return int(out)


def trickle(a, data, every_s, until):
    """Sends data one byte every `every_s` seconds, reading between bytes, until all is sent,
    the server closes, or `until` (monotonic) passes. Returns the time the close was seen."""
    for i in range(len(data)):
        if a.closed or time.monotonic() >= until:
            break
        if not a.send(data[i:i + 1]):
            break
        a.pump(every_s)
    return time.monotonic() if a.closed else None


# ---------------------------------------------------------------------------------------------
# 1. Timeouts that input without progress does not restart
# ---------------------------------------------------------------------------------------------

WRITE_TIMEOUT_MS = 1500


@case
def write_timeout_holds_against_a_trickling_non_reader(t):
    # The client opens every window wide, asks for 8 MB and reads none of it, but keeps the
    # connection "busy" with one byte of a PING every 200 ms. Only bytes the socket takes are
    # write progress: the server closes about WRITE_TIMEOUT after its output stopped moving.
    with nt.TestServer(t.opts.server, "--quiet", "--opt",
                       "WRITE_TIMEOUT=%d" % WRITE_TIMEOUT_MS) as srv:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: stays small
        s.settimeout(5)
        s.connect(("127.0.0.1", srv.port))
        try:
            block = at.request_block("GET", "/big?size=4000000")
            s.sendall(at.PREFACE + at.settings_frame([(at.S_INITIAL_WINDOW_SIZE, 0x7FFFFFFF)]) +
                      at.settings_frame(ack=True) +
                      at.frame(at.WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF - 65535)) +
                      at.headers_frame(1, block) + at.headers_frame(3, block))
            t0 = time.monotonic()
            pings = at.frame(at.PING, 0, 0, b"trickle!") * 10
            closed_at = None
            for i in range(len(pings)):
                if time.monotonic() > t0 + 10:
                    break
                try:
                    s.sendall(pings[i:i + 1])
                except OSError:  # EPIPE / ECONNRESET: the server has closed
                    closed_at = time.monotonic()
                    break
                time.sleep(0.2)
        finally:
            s.close()
        nt.expect(closed_at is not None, "the server to close the connection while the client "
                  "trickled bytes without reading", "still open after %.1f s"
                  % (time.monotonic() - t0))
        dt = closed_at - t0
        nt.expect(dt <= WRITE_TIMEOUT_MS / 1000.0 + 2.5,
                  "the close about WRITE_TIMEOUT (%.1f s) after the output stalled"
                  % (WRITE_TIMEOUT_MS / 1000.0), "%.2f s" % dt)
        at.still_serving(srv.port)


@case
def trickled_header_block_meets_the_header_timeout(t):
    # A HEADERS frame sent one byte every 100 ms (about 8 s in all): the block must be whole
    # within HEADER_TIMEOUT (1 s here) of its frame header, however its bytes trickle.
    with nt.TestServer(t.opts.server, "--quiet", "--opt", "HEADER_TIMEOUT=1000") as srv:
        a = at.H2Attacker(srv.port)
        a.handshake()
        block = at.request_block("GET", "/") + at.literal("x-slow", "s" * 40)
        t0 = time.monotonic()
        closed_at = trickle(a, at.headers_frame(1, block), 0.1, t0 + 12)
        a.close()
        nt.expect(closed_at is not None, "the server to close the connection before the "
                  "trickled header block was complete", "still open after %.1f s"
                  % (time.monotonic() - t0))
        nt.expect(closed_at - t0 <= 4.0, "the close about 1 s after the frame header (0.9 s)",
                  "%.2f s" % (closed_at - t0))
        at.still_serving(srv.port)


@case
def trickled_frame_does_not_hold_an_idle_connection(t):
    # No stream open; a frame of an unknown type (49 bytes) trickles in one byte per 100 ms.
    # Bytes that make no request are no activity: GOAWAY(NO_ERROR) at IDLE_TIMEOUT (1 s).
    with nt.TestServer(t.opts.server, "--quiet", "--opt", "IDLE_TIMEOUT=1000") as srv:
        a = at.H2Attacker(srv.port)
        a.handshake()
        t0 = time.monotonic()
        closed_at = trickle(a, at.frame(UNKNOWN_TYPE, 0, 0, b"u" * 40), 0.1, t0 + 10)
        a.close()
        nt.expect(closed_at is not None and a.goaway == NO_ERROR,
                  "GOAWAY(NO_ERROR) and a close while the frame still trickled",
                  "GOAWAY %s, closed=%s" % (at.errname(a.goaway), a.closed))
        nt.expect(closed_at - t0 <= 3.0, "the close about 1 s after the handshake",
                  "%.2f s" % (closed_at - t0))


@case
def trickled_bytes_do_not_hold_a_silent_request(t):
    # An upload whose body never comes, while PING bytes trickle in: they are not request
    # bytes, so BODY_TIMEOUT (1 s here) still ends the silence.
    with nt.TestServer(t.opts.server, "--quiet", "--opt", "BODY_TIMEOUT=1000") as srv:
        a = at.H2Attacker(srv.port)
        a.handshake()
        a.send(at.headers_frame(1, at.request_block("POST", "/upload"), end_stream=False))
        t0 = time.monotonic()
        closed_at = trickle(a, at.frame(at.PING, 0, 0, b"12345678") * 5, 0.1, t0 + 10)
        a.close()
        nt.expect(closed_at is not None and a.goaway is not None,
                  "a GOAWAY and a close while PING bytes trickled",
                  "GOAWAY %s, closed=%s" % (at.errname(a.goaway), a.closed))
        nt.expect(closed_at - t0 <= 3.0, "the close about 1 s after the request began",
                  "%.2f s" % (closed_at - t0))
        at.still_serving(srv.port)


# ---------------------------------------------------------------------------------------------
# 2. Frames nghttp2 ignores, and WINDOW_UPDATE floods, spend the glitch budget
# ---------------------------------------------------------------------------------------------

def unknown_frames(i):
    return at.frame(UNKNOWN_TYPE, 0, 0, b"12345678") * 200


def data_on_a_forgotten_stream(port):
    """nghttp2 remembers the last MAX_CONCURRENT_STREAMS closed streams, and answers DATA on one
    of them with GOAWAY(STREAM_CLOSED); DATA on a stream closed longer ago it drops without a
    word (and credits its window back). So: an upload cancelled at once, two requests to push
    it out of nghttp2's memory (the server admits one stream at a time: at the default 100 it
    takes 100 more), then DATA frames on it (not empty: empty DATA has its own count)."""
    get = at.request_block("GET", "/")
    flood = at.frame(at.DATA, 0, 1, b"x" * 10) * 200

    def one(deadline):
        a = at.H2Attacker(port)
        a.handshake()
        a.send(at.headers_frame(1, at.request_block("POST", "/upload"), end_stream=False) +
               at.frame(at.RST_STREAM, 0, 1, struct.pack(">I", CANCEL)))
        for n, sid in enumerate((3, 5), 1):
            a.send(at.headers_frame(sid, get))
            t0 = time.monotonic()
            while a.statuses.get(200, 0) < n and not a.closed and time.monotonic() < t0 + 3:
                a.pump(0.05)
        i = 0
        while not a.closed and time.monotonic() < deadline + at.GRACE:
            a.send(flood)
            i += 1
            a.pump()
        a.wait_closed(3)
        a.close()
        return at.h2_result(a, "%d answers, %d batches" % (a.statuses.get(200, 0), i))
    return one


def window_updates(i):
    # Connection-level increments of 1: the window never overflows, so nghttp2 never objects.
    return at.frame(at.WINDOW_UPDATE, 0, 0, struct.pack(">I", 1)) * 200


@case
def unknown_frame_flood_gets_enhance_your_calm(t):
    scene(t.srv, "unknown frame type flood",
          at.reader(t.srv.port, b"", unknown_frames, handshake=True), glitches("unknown frame type"))


@case
def data_flood_on_a_closed_stream_gets_enhance_your_calm(t):
    with nt.TestServer(t.opts.server, "--quiet", "--opt", "H2_MAX_CONCURRENT_STREAMS=1") as srv:
        scene(srv, "DATA flood on a closed stream", data_on_a_forgotten_stream(srv.port),
              glitches("DATA on a closed stream"))


@case
def window_update_flood_gets_enhance_your_calm(t):
    scene(t.srv, "WINDOW_UPDATE flood",
          at.reader(t.srv.port, b"", window_updates, handshake=True), glitches("WINDOW_UPDATE"))


# ---------------------------------------------------------------------------------------------
# 3. Trailers count like a head
# ---------------------------------------------------------------------------------------------

BIG_ENTRY = at.literal("x-bomb", "A" * 4000, indexed=True)  # enters the table: index 62


def upload_with_trailers(refs):
    """An upload whose head puts a 4000-byte field in the HPACK table, one DATA frame, then
    trailers that refer to that field `refs` times (4038 bytes each, as RFC 9113 counts)."""
    head = at.headers_frame(1, at.request_block("POST", "/upload") + BIG_ENTRY, end_stream=False)
    return head + at.frame(at.DATA, 0, 1, b"abc") + at.headers_frame(1, b"\xbe" * refs)


def trailer_bomb(port):
    """2000 references: 2 KB on the wire, 8 MB decoded, far past 16 x the 64 KB limit. The
    bomb ends its connection, so each one needs a new connection: at most 100 a second, as
    reconnecting as fast as possible would measure connection churn, not the bomb."""
    def one(deadline):
        t0 = time.monotonic()
        a = at.H2Attacker(port)
        a.handshake()
        a.send(upload_with_trailers(2000))
        a.wait_closed(max(1.0, deadline - time.monotonic()) + 2)
        a.close()
        time.sleep(max(0.0, t0 + 0.01 - time.monotonic()))
        return at.h2_result(a)
    return one


@case
def trailer_hpack_bomb_gets_enhance_your_calm(t):
    scene(t.srv, "HPACK bomb in trailers", trailer_bomb(t.srv.port), r"^h2: HPACK bomb")


@case
def oversized_trailers_reset_the_stream(t):
    # 25 references: 100 KB of trailers, over the 64 KB limit but no bomb: that stream is reset
    # (RST_STREAM(ENHANCE_YOUR_CALM)), the connection goes on serving.
    a = at.H2Attacker(t.srv.port)
    a.handshake()
    a.send(upload_with_trailers(25))
    deadline = time.monotonic() + 3
    while not a.rst and not a.closed and time.monotonic() < deadline:
        a.pump(0.1)
    a.send(at.headers_frame(3, at.request_block("GET", "/")))
    while a.statuses.get(200, 0) < 1 and not a.closed and time.monotonic() < deadline + 2:
        a.pump(0.1)
    a.close()
    nt.eq(a.rst, {at.ENHANCE_YOUR_CALM: 1}, "resets (code: count) for the oversized trailers")
    nt.expect(a.goaway is None and a.statuses.get(200, 0) == 1,
              "no GOAWAY, and stream 3 answered 200 on the same connection",
              "GOAWAY %s, statuses %s" % (at.errname(a.goaway), a.statuses))


# ---------------------------------------------------------------------------------------------
# 4. Responses thrown away for want of room cost glitches
# ---------------------------------------------------------------------------------------------

@case
def discarded_responses_get_enhance_your_calm(t):
    # The client keeps every window at 0 and asks for 100 KB responses, more than the 64 KB
    # the connection may queue: each is reset (INTERNAL_ERROR) before it is sent, and each
    # reset costs a glitch. H2_MAX_GLITCHES=50: the GOAWAY comes after about 50 of them (the
    # zero-window timeout is set far beyond the test).
    with nt.TestServer(t.opts.server, "--quiet", *at.server_opts(
            "H2_MAX_CONN_OUTPUT=65536", "H2_MAX_GLITCHES=50",
            "H2_ZERO_WINDOW_TIMEOUT=60000")) as srv:
        a = at.H2Attacker(srv.port, extra_settings=[(at.S_INITIAL_WINDOW_SIZE, 0)])
        a.handshake()
        block = at.request_block("GET", "/big?size=100000")
        sid = 1
        deadline = time.monotonic() + 8
        while not a.closed and a.goaway is None and time.monotonic() < deadline:
            a.send(b"".join(at.headers_frame(s, block) for s in range(sid, sid + 20, 2)))
            sid += 20
            want = sum(a.rst.values()) + 10
            t0 = time.monotonic()
            while sum(a.rst.values()) < want and not a.closed and time.monotonic() < t0 + 1:
                a.pump(0.05)
        a.wait_closed(3)
        a.close()
        nt.expect(a.goaway == at.ENHANCE_YOUR_CALM and a.closed,
                  "GOAWAY(ENHANCE_YOUR_CALM) and a close after the discarded responses",
                  "GOAWAY %s, closed=%s, resets %s after %d requests"
                  % (at.errname(a.goaway), a.closed, a.rst, sid // 2))
        n = a.rst.get(INTERNAL_ERROR, 0)
        nt.expect(20 <= n <= 60, "about 50 responses reset (INTERNAL_ERROR) before it",
                  "%d; resets %s" % (n, a.rst))
        at.still_serving(srv.port)


# ---------------------------------------------------------------------------------------------
# 5. Request bodies buffered per connection
# ---------------------------------------------------------------------------------------------

class H2Client:
    """An h2 client (python3-h2) that keeps to flow control and reads everything."""

    def __init__(self, port):
        import h2.config
        import h2.connection
        self.sock = nt.connect(port, timeout=5)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.status, self.body, self.ended, self.reset = {}, {}, set(), {}
        self.goaway = None
        self.closed = False
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True

    def pump(self, wait):
        import h2.events as ev
        deadline = time.monotonic() + wait
        while not self.closed:
            self.sock.settimeout(max(0.0001, deadline - time.monotonic()))
            try:
                data = self.sock.recv(262144)
            except (socket.timeout, BlockingIOError):
                break
            except OSError:
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            for e in self.conn.receive_data(data):
                if isinstance(e, ev.ResponseReceived):
                    self.status[e.stream_id] = int(dict(e.headers)[":status"])
                elif isinstance(e, ev.DataReceived):
                    self.body[e.stream_id] = self.body.get(e.stream_id, 0) + len(e.data)
                    self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                elif isinstance(e, ev.StreamEnded):
                    self.ended.add(e.stream_id)
                elif isinstance(e, ev.StreamReset):
                    self.reset[e.stream_id] = e.error_code
                elif isinstance(e, ev.ConnectionTerminated):
                    self.goaway = e.error_code
            self.flush()
            deadline = time.monotonic()  # got something: drain without waiting any more

    def request(self, sid, method, path, end_stream):
        self.conn.send_headers(sid, [(":method", method), (":path", path), (":scheme", "http"),
                                     (":authority", "127.0.0.1")], end_stream=end_stream)
        self.flush()

    def upload(self, sent, goal, stall_s=2.0, limit_s=30.0):
        """Sends body bytes on every stream in `sent` (sid -> bytes so far) as the windows allow,
        until each has `goal` bytes or nothing moved for stall_s. Returns the bytes sent."""
        chunk = b"x" * 16384
        last = time.monotonic()
        end = last + limit_s
        while not self.closed and time.monotonic() < end and time.monotonic() - last < stall_s:
            moved = False
            for sid in sent:
                room = min(self.conn.local_flow_control_window(sid),
                           self.conn.max_outbound_frame_size, goal - sent[sid])
                if room > 0:
                    self.conn.send_data(sid, chunk[:room])
                    sent[sid] += room
                    moved = True
            self.flush()
            self.pump(0 if moved else 0.05)
            if moved:
                last = time.monotonic()
        return sum(sent.values())

    def wait_for(self, cond, limit_s):
        end = time.monotonic() + limit_s
        while not cond() and not self.closed and time.monotonic() < end:
            self.pump(0.1)
        return cond()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def sanitized(srv):
    """The server runs under a sanitizer: its quarantine of freed memory counts in RSS."""
    try:
        with open("/proc/%d/maps" % srv.proc.pid) as f:
            return "libasan" in f.read()
    except OSError:
        return False


class RssSampler:
    """The server's peak RSS while it runs (every 50 ms), from the moment of start()."""

    def __init__(self, pid):
        self.pid, self.stop_ev = pid, threading.Event()
        self.before = self.peak = at.rss_kb(pid)
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop_ev.wait(0.05):
            self.peak = max(self.peak, at.rss_kb(self.pid))

    def start(self):
        self.thread.start()
        return self

    def growth_mb(self):
        self.stop_ev.set()
        self.thread.join(5)
        self.peak = max(self.peak, at.rss_kb(self.pid))
        return (self.peak - self.before) / 1024.0


@case
def buffered_uploads_are_held_to_the_connection_budget(t):
    # 50 uploads of 1 MB each to a buffering route (POST /echo: the handler runs only when the
    # body is whole), none finished: 50 MB if every byte were credited. The connection window
    # stops opening once the buffered bodies pass H2_MAX_CONN_INPUT (8 MiB): the client can send
    # at most that plus one window, and the server's memory stays near it. Requests without a
    # body still get answers on that connection; when the uploads end and their answers go out,
    # the window opens again and a new upload goes through whole.
    c = H2Client(t.srv.port)
    try:
        sids = list(range(1, 101, 2))
        for sid in sids:
            c.request(sid, "POST", "/echo", end_stream=False)
        rss = RssSampler(t.srv.proc.pid).start()
        sent = {sid: 0 for sid in sids}
        total = c.upload(sent, 1000000)
        growth = rss.growth_mb()
        print("   sent %.2f MiB before the window stayed shut; server RSS %+.1f MiB"
              % (total / 1048576.0, growth))
        nt.expect(not c.closed and c.goaway is None, "the connection to stay open",
                  "closed=%s, GOAWAY %s" % (c.closed, c.goaway))
        nt.expect(CONN_INPUT * 0.9 <= total <= CONN_INPUT + 256 * 1024,
                  "the client held back at about 8 MiB of buffered bodies",
                  "%d bytes sent" % total)
        bound = 2 * CONN_INPUT / 1048576.0 + (SANITIZER_SLACK_MB if sanitized(t.srv) else 0)
        nt.expect(growth < bound, "server RSS growth below %.0f MiB (twice the 8 MiB budget%s)"
                  % (bound, ", plus the sanitizer's quarantine" if sanitized(t.srv) else ""),
                  "%.1f MiB" % growth)
        c.request(101, "GET", "/", end_stream=True)
        nt.expect(c.wait_for(lambda: c.status.get(101) == 200, 5),
                  "a request without a body answered 200 meanwhile", c.status.get(101))
        # End the uploads (an empty DATA with END_STREAM needs no window): each is echoed back.
        for sid in sids:
            c.conn.end_stream(sid)
        c.flush()
        nt.expect(c.wait_for(lambda: all(s in c.ended for s in sids), 30),
                  "all 50 uploads answered once they ended",
                  "%d of 50; resets %s" % (len([s for s in sids if s in c.ended]), c.reset))
        wrong = [(s, c.status.get(s), c.body.get(s, 0), sent[s]) for s in sids
                 if c.status.get(s) != 200 or c.body.get(s, 0) != sent[s]]
        nt.expect(not wrong, "every upload echoed whole (200)", wrong[:3])
        c.request(103, "POST", "/echo", end_stream=False)
        one = {103: 0}
        c.upload(one, 1000000)
        nt.eq(one[103], 1000000, "bytes of a new upload sent once the budget was free")
        c.conn.end_stream(103)
        c.flush()
        nt.expect(c.wait_for(lambda: 103 in c.ended, 10) and c.status.get(103) == 200 and
                  c.body.get(103) == 1000000, "the new upload echoed whole (200)",
                  (c.status.get(103), c.body.get(103)))
    finally:
        c.close()
    at.still_serving(t.srv.port)


# ---------------------------------------------------------------------------------------------
# 6. The client's GOAWAY
# ---------------------------------------------------------------------------------------------

def goaway(code):
    return at.frame(at.GOAWAY, 0, 0, struct.pack(">II", 0, code))


@case
def client_goaway_with_an_error_cancels_its_requests(t):
    # /mw/late answers 20 ms later from another thread; GOAWAY(INTERNAL_ERROR) arrives first,
    # on a socket the client keeps open: the request is cancelled (NOOK_ON_CANCEL runs), no
    # answer comes, and the server closes the connection.
    before = cancelled(t.mw.port)
    a = at.H2Attacker(t.mw.port)
    a.handshake()
    a.send(at.headers_frame(1, at.request_block("GET", "/mw/late")) + goaway(INTERNAL_ERROR))
    closed = a.wait_closed(3)
    a.close()
    time.sleep(0.1)  # the late answer's post (which now finds no request) has come and gone
    nt.eq(cancelled(t.mw.port) - before, 1, "CANCEL hooks run after the client's GOAWAY(error)")
    nt.expect(closed and not a.statuses, "the connection closed without an answer",
              "closed=%s, statuses %s" % (closed, a.statuses))


@case
def client_goaway_without_error_lets_requests_finish(t):
    # RFC 9113 §6.8: after GOAWAY(NO_ERROR) the streams already opened are still served.
    before = cancelled(t.mw.port)
    a = at.H2Attacker(t.mw.port)
    a.handshake()
    a.send(at.headers_frame(1, at.request_block("GET", "/mw/late")) + goaway(NO_ERROR))
    deadline = time.monotonic() + 3
    while a.statuses.get(200, 0) < 1 and not a.closed and time.monotonic() < deadline:
        a.pump(0.1)
    closed = a.wait_closed(3)
    a.close()
    nt.eq(a.statuses.get(200, 0), 1, "the late answer (200) after the client's GOAWAY(NO_ERROR)")
    nt.eq(cancelled(t.mw.port) - before, 0, "CANCEL hooks run")
    nt.expect(closed, "the connection closed once its last stream was done", closed)


def setup(opts):
    t = Ctx()
    t.opts = opts
    t.srv = nt.TestServer(opts.server, "--quiet").start()
    # One worker: the /mw counters are the loop thread's.
    t.mw = nt.TestServer(opts.server, "--quiet", "--threads", "1").start()
    return (t,), [t.srv, t.mw]


if __name__ == "__main__":
    nt.main(setup)
