#!/usr/bin/env python3
"""HTTP/2 limits that bound what one connection may hold: the SETTINGS acknowledgement timeout,
the concurrent-stream limit (extra streams refused, handlers never above it), and the cap on
response bytes queued per connection (a client that opens its window to nobody cannot make the
server buffer more than NOOK_OPT_H2_MAX_CONN_OUTPUT). Each runs beside an honest h2load client
where it matters (rules in attack.py).

    python3 test_attack_h2_limits.py --server PATH/nook_test_server --hello PATH/hello
"""
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attack as at  # noqa: E402
import nooktest as nt  # noqa: E402
from nooktest import case  # noqa: E402

SETTINGS_TIMEOUT = 4  # RFC 9113 error code
REFUSED_STREAM = 7
PROTOCOL_ERROR = 1
INTERNAL_ERROR = 2
CONN_OUTPUT = 1000000
RSS_BOUND_MB = 8             # peak growth allowed during the attack scene (release build)
SANITIZER_RSS_BOUND_MB = 32  # the same under ASan (its quarantine is 16 MiB here)


class Ctx:
    pass


@case
def settings_never_acknowledged_gets_settings_timeout(t):
    with nt.TestServer(t.opts.server, "--quiet", "--opt", "H2_SETTINGS_TIMEOUT=500") as srv:
        a = at.H2Attacker(srv.port, ack=False)
        t0 = time.monotonic()
        closed = a.wait_closed(5)
        dt = time.monotonic() - t0
        a.close()
        nt.expect(closed and a.goaway == SETTINGS_TIMEOUT,
                  "GOAWAY(SETTINGS_TIMEOUT) and a close",
                  "%s, closed=%s" % (at.errname(a.goaway), closed))
        nt.expect(0.3 <= dt <= 3.0, "the close about 0.5 s after the preface", "%.2f s" % dt)
        # An honest client (which acknowledges) is not affected.
        at.still_serving(srv.port)


@case
def streams_past_the_limit_are_refused(t):
    # MAX_CONCURRENT_STREAMS=4 and six slow requests at once. Before the client has
    # acknowledged the SETTINGS, nghttp2 refuses the extra ones with RST_STREAM(REFUSED_STREAM);
    # after, it treats them as a connection error (PROTOCOL_ERROR, which RFC 9113 §5.1.2 and
    # §5.4.1 allow). Either way no more than four handlers run.
    with nt.TestServer(t.opts.server, "--quiet", "--opt",
                       "H2_MAX_CONCURRENT_STREAMS=4") as srv:
        a = at.H2Attacker(srv.port, ack=False)
        block = at.request_block("GET", "/async?ms=300")
        a.send(b"".join(at.headers_frame(s, block) for s in range(1, 13, 2)))
        deadline = time.monotonic() + 3
        while sum(a.rst.values()) < 2 and not a.closed and time.monotonic() < deadline:
            a.pump(0.1)
        a.send(at.settings_frame(ack=True))
        t0 = time.monotonic()
        while a.statuses.get(200, 0) < 4 and not a.closed and time.monotonic() < t0 + 3:
            a.pump(0.1)
        nt.eq(a.rst.get(REFUSED_STREAM, 0), 2, "RST_STREAM(REFUSED_STREAM) count")
        nt.eq(a.statuses.get(200, 0), 4, "200 answers for the four admitted streams")
        a.ack = True
        a.send(b"".join(at.headers_frame(s, block) for s in range(13, 25, 2)))
        a.wait_closed(3)
        a.close()
        nt.expect(a.goaway == PROTOCOL_ERROR or a.rst.get(REFUSED_STREAM, 0) > 2,
                  "after the ACK: GOAWAY(PROTOCOL_ERROR) or more REFUSED_STREAM",
                  "GOAWAY %s, resets %s" % (at.errname(a.goaway), a.rst))
        at.still_serving(srv.port)


@case
def glitch_budget_holds_exactly_its_value(t):
    # H2_MAX_GLITCHES=10: the client's SETTINGS and 9 PINGs are 10 glitches (answered, no
    # GOAWAY); the next PING is one too many. (The budget refills at 10 per minute: under a
    # second of refill is less than one glitch.)
    with nt.TestServer(t.opts.server, "--quiet", "--opt", "H2_MAX_GLITCHES=10") as srv:
        a = at.H2Attacker(srv.port)
        a.handshake()
        a.send(at.frame(at.PING, 0, 0, b"12345678") * 9)
        deadline = time.monotonic() + 3
        while a.frames < 2 + 9 and not a.closed and time.monotonic() < deadline:
            a.pump(0.1)
        a.pump(0.2)
        nt.expect(a.goaway is None and not a.closed, "no GOAWAY after 10 glitches",
                  "GOAWAY %s, closed=%s" % (at.errname(a.goaway), a.closed))
        a.send(at.frame(at.PING, 0, 0, b"12345678"))
        closed = a.wait_closed(3)
        a.close()
        nt.expect(closed and a.goaway == at.ENHANCE_YOUR_CALM,
                  "GOAWAY(ENHANCE_YOUR_CALM) and a close at the 11th glitch",
                  "GOAWAY %s, closed=%s" % (at.errname(a.goaway), closed))


@case
def idle_connection_gets_goaway_and_close(t):
    with nt.TestServer(t.opts.server, "--quiet", "--opt", "IDLE_TIMEOUT=500") as srv:
        a = at.H2Attacker(srv.port)
        a.handshake()
        t0 = time.monotonic()
        closed = a.wait_closed(5)
        dt = time.monotonic() - t0
        a.close()
        nt.expect(closed and a.goaway == 0, "GOAWAY(NO_ERROR) and a close",
                  "GOAWAY %s, closed=%s" % (at.errname(a.goaway), closed))
        nt.expect(0.3 <= dt <= 3.0, "the GOAWAY about 0.5 s after the handshake", "%.2f s" % dt)


@case
def silent_request_stream_times_out(t):
    # A request whose body never comes holds a stream and its exchange: BODY_TIMEOUT bounds the
    # silence (the connection says GOAWAY and closes).
    with nt.TestServer(t.opts.server, "--quiet", "--opt", "BODY_TIMEOUT=500") as srv:
        a = at.H2Attacker(srv.port)
        a.send(at.headers_frame(1, at.request_block("POST", "/echo"), end_stream=False))
        t0 = time.monotonic()
        closed = a.wait_closed(5)
        dt = time.monotonic() - t0
        a.close()
        nt.expect(closed and a.goaway is not None, "a GOAWAY and a close",
                  "GOAWAY %s, closed=%s" % (at.errname(a.goaway), closed))
        nt.expect(0.3 <= dt <= 3.0, "the close about 0.5 s after the silence began",
                  "%.2f s" % dt)
        at.still_serving(srv.port)


def window_closed_big_responses(port):
    """INITIAL_WINDOW_SIZE 0 and ten whole 200 KB responses: 2 MB that cannot leave. The
    connection cap (1 MB here) takes the first ones; the others are reset
    (INTERNAL_ERROR) instead of queued."""
    def one(deadline):
        a = at.H2Attacker(port, extra_settings=[(at.S_INITIAL_WINDOW_SIZE, 0)])
        block = at.request_block("GET", "/big?size=200000")
        a.send(b"".join(at.headers_frame(s, block) for s in range(1, 21, 2)))
        a.wait_closed(max(0.5, deadline - time.monotonic()) + 4)
        a.close()
        return at.h2_result(a)
    return one


@case
def connection_output_is_capped(t):
    v = at.scene(t.srv, "responses held by a closed window",
                 window_closed_big_responses(t.srv.port))
    short = [c for c in v.log.connections if c["rst"].get(INTERNAL_ERROR, 0) < 5]
    nt.expect(not short, "at least 5 of 10 responses reset for want of room (1 MB cap, 200 KB "
              "each)", short[:3])
    at.expect_all_closed_with(v.log, at.ENHANCE_YOUR_CALM)  # then the zero-window timeout
    at.expect_defence(v, r"^h2: response held back by a flow-control window left closed: "
                         r"GOAWAY\(ENHANCE_YOUR_CALM\)$")
    v.check(RSS_BOUND_MB, SANITIZER_RSS_BOUND_MB)
    at.still_serving(t.srv.port)


def setup(opts):
    t = Ctx()
    t.opts = opts
    t.srv = nt.TestServer(opts.server, "--quiet", *at.server_opts(
        "H2_MAX_CONN_OUTPUT=%d" % CONN_OUTPUT, "H2_ZERO_WINDOW_TIMEOUT=1000")).start()
    return (t,), [t.srv]


if __name__ == "__main__":
    nt.main(setup)
