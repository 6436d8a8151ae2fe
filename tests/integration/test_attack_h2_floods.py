#!/usr/bin/env python3
"""HTTP/2 floods and holds: PING and SETTINGS floods from a client that never reads, empty DATA
frames, a PRIORITY flood, and a zero-window hold (a client that asks for large responses and
never opens its flow-control window). The floods spend the glitch budget
(NOOK_OPT_H2_MAX_GLITCHES, default 1000) → GOAWAY(ENHANCE_YOUR_CALM) and close; the hold hits
NOOK_OPT_H2_ZERO_WINDOW_TIMEOUT (1000 ms on this test's server) → GOAWAY(ENHANCE_YOUR_CALM).
Meanwhile an honest h2load client keeps its success rate and latency (rules in attack.py).

    python3 test_attack_h2_floods.py --server PATH/nook_test_server --hello PATH/hello
"""
import os
import struct
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attack as at  # noqa: E402
import nooktest as nt  # noqa: E402
from nooktest import case  # noqa: E402

RSS_BOUND_MB = 8             # peak growth allowed during one attack scene (release build)
SANITIZER_RSS_BOUND_MB = 32  # the same under ASan (its quarantine is 16 MiB here)
ZERO_WINDOW = (r"^h2: response held back by a flow-control window left closed: "
               r"GOAWAY\(ENHANCE_YOUR_CALM\)$")
ZERO_WINDOW_TIMEOUT_MS = 1000


def non_reader(port, make_frames):
    """Floods without ever reading; the server must close the connection anyway. Its answers
    pile up unread, so the GOAWAY may never be written: the verdict is the close plus the
    server's log line saying which defence ended the connection."""
    def one(deadline):
        a = at.H2Attacker(port, ack=False)
        a.send(at.settings_frame(ack=True))
        sent = 0
        while not a.closed and time.monotonic() < deadline and sent < 200000:
            if not a.send(make_frames(sent)):
                break
            sent += 1
        closed_at = time.monotonic()
        # Now read it all: the server must have closed (FIN or reset) within a few seconds.
        a.wait_closed(5)
        a.close()
        return at.h2_result(a, "%d batches sent, read after %.1f s"
                            % (sent, time.monotonic() - closed_at))
    return one


def ping_batch(i):
    return b"".join(at.frame(at.PING, 0, 0, struct.pack(">Q", i * 100 + k)) for k in range(100))


def settings_batch(i):
    return at.settings_frame([(at.S_INITIAL_WINDOW_SIZE, 65535)]) * 100


UPLOAD = at.headers_frame(1, at.request_block("POST", "/upload"), end_stream=False)


def empty_data(i):
    return at.frame(at.DATA, 0, 1) * 200


def priority_batch(i):
    # PRIORITY on idle streams (allowed by the RFC, useless to nook): 5 bytes each.
    return b"".join(at.frame(at.PRIORITY, 0, 2 * (i * 200 + k) + 3, struct.pack(">IB", 0, 15))
                    for k in range(200))


def zero_window_hold(port):
    """INITIAL_WINDOW_SIZE 0, twenty requests for 200 KB bodies, no WINDOW_UPDATE ever; the
    client reads whatever comes (HEADERS) and otherwise waits."""
    def one(deadline):
        a = at.H2Attacker(port, extra_settings=[(at.S_INITIAL_WINDOW_SIZE, 0)])
        block = at.request_block("GET", "/big?size=200000")
        a.send(b"".join(at.headers_frame(s, block) for s in range(1, 41, 2)))
        t0 = time.monotonic()
        a.wait_closed(max(1.0, deadline - time.monotonic()) + ZERO_WINDOW_TIMEOUT_MS / 1000.0
                      + 3)
        held = time.monotonic() - t0
        a.close()
        return at.h2_result(a, "held %.1f s" % held)
    return one


class Ctx:
    pass


def finish(t, v, *defences, goaway=True):
    """The checks of every case here: each attacking connection closed (after
    GOAWAY(ENHANCE_YOUR_CALM) when the attacker reads), the server's log naming one of
    `defences` for each, the honest client's rules, and the server still serving."""
    if goaway:
        at.expect_all_closed_with(v.log, at.ENHANCE_YOUR_CALM)
    else:
        at.expect_all_closed(v.log)
    at.expect_defence(v, *defences)
    v.check(RSS_BOUND_MB, SANITIZER_RSS_BOUND_MB)
    at.still_serving(t.srv.port)


@case
def ping_flood_without_reading_is_closed(t):
    # Either the glitch budget (GOAWAY(ENHANCE_YOUR_CALM), which the attacker may never read)
    # or nghttp2's cap of 1000 queued acknowledgements must be what ended it: not a timeout.
    v = at.scene(t.srv, "ping flood, never reading", non_reader(t.srv.port, ping_batch))
    finish(t, v, at.glitches("PING"), at.NGHTTP2_FLOODED, goaway=False)


@case
def settings_flood_without_reading_is_closed(t):
    v = at.scene(t.srv, "settings flood, never reading", non_reader(t.srv.port, settings_batch))
    finish(t, v, at.glitches("SETTINGS"), at.NGHTTP2_FLOODED, goaway=False)


@case
def empty_data_frames_get_enhance_your_calm(t):
    v = at.scene(t.srv, "empty DATA frames", at.reader(t.srv.port, UPLOAD, empty_data))
    finish(t, v, at.glitches("empty DATA"))


@case
def priority_flood_gets_enhance_your_calm(t):
    v = at.scene(t.srv, "PRIORITY flood", at.reader(t.srv.port, b"", priority_batch))
    finish(t, v, at.glitches("PRIORITY"))


@case
def zero_window_hold_gets_enhance_your_calm(t):
    v = at.scene(t.srv, "zero-window hold", zero_window_hold(t.srv.port))
    finish(t, v, ZERO_WINDOW)


def setup(opts):
    t = Ctx()
    # Info level: nghttp2's flood verdict is logged as an info line ("h2 connection error").
    t.srv = nt.TestServer(opts.server, *at.server_opts(
        "H2_ZERO_WINDOW_TIMEOUT=%d" % ZERO_WINDOW_TIMEOUT_MS)).start()
    return (t,), [t.srv]


if __name__ == "__main__":
    nt.main(setup)
