#!/usr/bin/env python3
"""HTTP/2 attacks that make the server reset streams or decode headers for nothing: Rapid Reset,
MadeYouReset, CONTINUATION flood, HPACK bomb, zero-length header flood. Each attacking
connection must end with GOAWAY(ENHANCE_YOUR_CALM) (NOOK_OPT_H2_MAX_GLITCHES, default 1000,
or the header-block bound) while an honest h2load client keeps its success rate and latency
(the rules are in attack.py).

    python3 test_attack_h2_resets.py --server PATH/nook_test_server --hello PATH/hello
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


def rapid_reset(port):
    """CVE-2023-44487: HEADERS immediately followed by RST_STREAM(CANCEL), in batches."""
    def one(deadline):
        a = at.H2Attacker(port)
        block = at.request_block("GET", "/")
        sid = 1
        while not a.closed and time.monotonic() < deadline + at.GRACE:
            batch = b"".join(at.headers_frame(s, block) +
                             at.frame(at.RST_STREAM, 0, s, struct.pack(">I", 8))
                             for s in range(sid, sid + 200, 2))
            sid += 200
            a.send(batch)
            a.pump()
        a.wait_closed(3)
        a.close()
        return at.h2_result(a, "%d streams opened" % (sid // 2))
    return one


def await_resets(a, n, limit_s=1.0):
    """Pumps until the server has reset n more streams (or closed, or limit_s passed)."""
    want = sum(a.rst.values()) + n
    t0 = time.monotonic()
    while sum(a.rst.values()) < want and not a.closed and time.monotonic() < t0 + limit_s:
        a.pump(0.05)


def made_you_reset(port):
    """CVE-2025-8671: frames that make the server reset the stream itself. A streaming upload
    stays open; WINDOW_UPDATE(2^31-1) then overflows its window → RST_STREAM
    (FLOW_CONTROL_ERROR); every other stream sends an upper-case header name instead →
    RST_STREAM(PROTOCOL_ERROR)."""
    def one(deadline):
        a = at.H2Attacker(port)
        upload = at.request_block("POST", "/upload")
        bad = at.request_block("GET", "/") + at.literal("X-Upper", "1")
        sid = 1
        while not a.closed and time.monotonic() < deadline + at.GRACE:
            out = bytearray()
            for s in range(sid, sid + 40, 2):
                if s % 4 == 1:
                    out += at.headers_frame(s, upload, end_stream=False)
                    out += at.frame(at.WINDOW_UPDATE, 0, s, struct.pack(">I", 0x7FFFFFFF))
                else:
                    out += at.headers_frame(s, bad)
            sid += 40
            a.send(bytes(out))
            # Stay under MAX_CONCURRENT_STREAMS as the exploit does: the streams the server
            # resets no longer count, so wait for those resets before the next batch.
            await_resets(a, 20)
        a.wait_closed(3)
        a.close()
        return at.h2_result(a)
    return one


def continuation_flood(port):
    """CVE-2024-27316 family: one HEADERS without END_HEADERS, then CONTINUATION frames that
    never end the block (each full of small, valid header fields)."""
    field = at.literal("x-flood", "v" * 100)
    piece = field * (16000 // len(field))  # whole fields only: the block stays valid HPACK

    def one(deadline):
        a = at.H2Attacker(port)
        a.handshake()
        a.send(at.headers_frame(1, at.request_block("GET", "/"), end_stream=True,
                                end_headers=False))
        sent = 0
        while not a.closed and time.monotonic() < deadline + at.GRACE and sent < 10000:
            a.send(at.frame(at.CONTINUATION, 0, 1, piece) * 4)
            sent += 4
            a.pump()
        a.wait_closed(3)
        a.close()
        return at.h2_result(a, "%d CONTINUATION frames" % sent)
    return one


def hpack_bomb(port):
    """One 4000-byte header enters the HPACK dynamic table. A request that refers to it 60
    times (240 KB decoded, over the 64 KB limit) must get 431; one that refers to it 2000 times
    (2 KB on the wire, 8 MB decoded) is a bomb: GOAWAY(ENHANCE_YOUR_CALM) without the server
    decoding it all."""
    def one(deadline):
        a = at.H2Attacker(port)
        first = at.request_block("GET", "/") + at.literal("x-bomb", "A" * 4000, indexed=True)
        a.send(at.headers_frame(1, first))
        ref = at.request_block("GET", "/")  # the dynamic table's newest entry is index 62
        a.send(at.headers_frame(3, ref + b"\xbe" * 60))
        t0 = time.monotonic()
        while 431 not in a.statuses and not a.closed and time.monotonic() < t0 + 3:
            a.pump(0.1)
        sid = 5
        while not a.closed and time.monotonic() < deadline + at.GRACE:
            a.send(b"".join(at.headers_frame(s, ref + b"\xbe" * 2000)
                            for s in range(sid, sid + 40, 2)))
            sid += 40
            a.pump()
        a.wait_closed(3)
        a.close()
        return at.h2_result(a, "%d requests" % (sid // 2))
    return one


def zero_length_headers(port):
    """HEADERS frames with an empty header block, and blocks of empty header fields
    (zero-length name and value), on ever new streams."""
    empties = b"\x00\x00\x00" * 3000

    def one(deadline):
        a = at.H2Attacker(port)
        sid = 1
        while not a.closed and time.monotonic() < deadline + at.GRACE:
            out = bytearray()
            for s in range(sid, sid + 40, 2):
                out += at.headers_frame(s, b"" if s % 4 == 1 else empties)
            sid += 40
            a.send(bytes(out))
            await_resets(a, 20)  # under MAX_CONCURRENT_STREAMS, as in made_you_reset
        a.wait_closed(3)
        a.close()
        return at.h2_result(a)
    return one


class Ctx:
    pass


def make_case(name, attack_fn, defence, check_extra=None):
    """A case: the attack beside the honest client, every attacking connection ended by
    GOAWAY(ENHANCE_YOUR_CALM) with the server's log line for `defence` (a regex)."""
    def fn(t):
        v = at.scene(t.srv, name, attack_fn(t.srv.port))
        at.expect_all_closed_with(v.log, at.ENHANCE_YOUR_CALM)
        at.expect_defence(v, defence)
        if check_extra:
            check_extra(v.log)
        v.check(RSS_BOUND_MB, SANITIZER_RSS_BOUND_MB)
        at.still_serving(t.srv.port)
    fn.__name__ = name
    return case(fn)


def saw_resets(code, what):
    def check(log):
        n = sum(c["rst"].get(code, 0) for c in log.connections)
        nt.expect(n > 0, "RST_STREAM(%s) for %s before the GOAWAY" % (at.errname(code), what),
                  "none; connections: %s" % log.connections[:2])
    return check


def saw_431(log):
    bad = [c for c in log.connections if c["statuses"].get(431, 0) != 1]
    nt.expect(not bad, "one 431 per connection (the request over the limit) before the GOAWAY",
              "these: %s" % bad[:3])


make_case("rapid_reset_gets_enhance_your_calm", rapid_reset,
          at.glitches("RST_STREAM from the client"))
make_case("made_you_reset_gets_enhance_your_calm", made_you_reset,
          at.glitches("(a stream reset the client caused|an invalid frame)"),
          saw_resets(3, "the window overflow"))
make_case("continuation_flood_gets_enhance_your_calm", continuation_flood,
          r"^h2: header block too long \(CONTINUATION flood\): GOAWAY\(ENHANCE_YOUR_CALM\)$")
make_case("hpack_bomb_431_then_enhance_your_calm", hpack_bomb,
          r"^h2: HPACK bomb \(a header list decoding far past the limit\): "
          r"GOAWAY\(ENHANCE_YOUR_CALM\)$", saw_431)
make_case("zero_length_header_flood_gets_enhance_your_calm", zero_length_headers,
          # Invalid fields are charged as they are decoded: the first block of 3,000 empty
          # fields ends the connection part-way, before any reset is sent.
          at.glitches("(empty HEADERS|an invalid header field|a stream reset the client caused"
                      "|an invalid frame)"))


def setup(opts):
    t = Ctx()
    # Default limits; a log line per rejected request would only slow the server down.
    t.srv = nt.TestServer(opts.server, "--quiet").start()
    return (t,), [t.srv]


if __name__ == "__main__":
    nt.main(setup)
