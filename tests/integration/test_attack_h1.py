#!/usr/bin/env python3
"""HTTP/1.1 resource attacks: slowloris (heads that never end), slow body (a POST body that
trickles in), slow read (a client that never reads a large response), and a connection flood
past NOOK_OPT_MAX_CONNECTIONS. Each attacking connection must be closed by the right limit while
an honest h2load --h1 client keeps its success rate and latency (rules in attack.py).

The server here runs with HEADER_TIMEOUT=1000, WRITE_TIMEOUT=1000 and MAX_CONNECTIONS=64 so the
limits act within the test's time; MIN_BODY_RATE keeps its default (512 bytes/s, judged over
5 s windows).

    python3 test_attack_h1.py --server PATH/nook_test_server --hello PATH/hello
"""
import os
import re
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attack as at  # noqa: E402
import nooktest as nt  # noqa: E402
from nooktest import case  # noqa: E402

RSS_BOUND_MB = 48
MAX_CONNECTIONS = 64
SCENE_SECONDS = 3.0


def status_of(data):
    m = re.match(rb"HTTP/1\.[01] ([0-9]{3}) ", data)
    return int(m.group(1)) if m else None


def read_verdict(s, timeout):
    """Reads until the server closes (EOF or reset) or `timeout`; (closed, status, bytes)."""
    r = nt.recv_until_close(s, timeout)
    return (not r.timed_out), status_of(bytes(r[:64])), len(r)


def conn_result(closed, status, note=""):
    return {"goaway": None, "closed": closed, "status": status, "note": note}


def trickle(port, head, body_piece, count, interval, limit_s):
    """`count` connections that send `head`, then `body_piece` every `interval` s until the
    server closes them or `limit_s` passes. Returns one result per connection."""
    def one(deadline):
        socks = []
        for _ in range(count):
            s = nt.connect(port, timeout=5)
            s.sendall(head)
            socks.append(s)
        t0 = time.monotonic()
        live = list(socks)
        results = {}
        while live and time.monotonic() < t0 + limit_s:
            time.sleep(interval)
            for s in list(live):
                try:
                    s.sendall(body_piece)
                except OSError:
                    live.remove(s)
        for s in socks:
            results[s] = read_verdict(s, max(0.5, t0 + limit_s + 2 - time.monotonic()))
            s.close()
        return {"goaway": None, "closed": all(v[0] for v in results.values()),
                "statuses": sorted(set(v[1] for v in results.values()), key=str),
                "note": "%d connections, %.1f s" % (count, time.monotonic() - t0)}
    return one


class Ctx:
    pass


def run_scene(t, name, attack_fn):
    return at.checked_scene(t.srv, name, attack_fn, RSS_BOUND_MB, h1=True,
                            seconds=SCENE_SECONDS)


def expect_closed_with(log, status):
    bad = [c for c in log.connections if not c["closed"] or c.get("statuses") != [status]]
    nt.expect(log.connections and not bad,
              "every attacking connection answered %s and closed" % status,
              "%d batch(es), these not: %s" % (len(log.connections), bad[:3]))


@case
def slowloris_gets_408_and_close(t):
    # 30 connections each adding one header byte every 200 ms: the head never completes.
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: "
    v = run_scene(t, "slowloris", trickle(t.srv.port, head, b"a", 30, 0.2, 4.0))
    expect_closed_with(v.log, 408)
    at.still_serving(t.srv.port, h1=True)


@case
def slow_body_gets_408_and_close(t):
    # 20 uploads that send 10 bytes every 200 ms (50 bytes/s, under the 512 bytes/s minimum);
    # each byte would reset BODY_TIMEOUT, the rate check still ends it within ~5-6 s.
    head = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n"
    v = run_scene(t, "slow body", trickle(t.srv.port, head, b"x" * 10, 20, 0.2, 8.0))
    expect_closed_with(v.log, 408)
    at.still_serving(t.srv.port, h1=True)


def slow_reader(port):
    """Asks for a 16 MiB streamed response with a tiny receive buffer and never reads."""
    def one(deadline):
        socks = []
        for _ in range(5):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /stream?n=1024&size=16384 HTTP/1.1\r\nHost: a\r\n\r\n")
            socks.append(s)
        time.sleep(3.0)  # WRITE_TIMEOUT is 1 s: the server must give up meanwhile
        closed = []
        for s in socks:
            r = nt.recv_until_close(s, 5)
            closed.append(not r.timed_out and len(r) < 16 * 1024 * 1024)
            s.close()
        return {"goaway": None, "closed": all(closed), "statuses": [200],
                "note": "%d of 5 closed early" % sum(closed)}
    return one


@case
def slow_read_is_closed_by_write_timeout(t):
    v = run_scene(t, "slow read", slow_reader(t.srv.port))
    expect_closed_with(v.log, 200)
    at.still_serving(t.srv.port, h1=True)


def flood(port):
    """Opens 3 x MAX_CONNECTIONS idle connections: the ones past the limit must be closed at
    once, the others by HEADER_TIMEOUT; nothing may crash."""
    def one(deadline):
        time.sleep(0.3)  # the honest client connects first
        socks = []
        for _ in range(3 * MAX_CONNECTIONS):
            try:
                socks.append(nt.connect(port, timeout=5))
            except OSError:
                pass
        t0 = time.monotonic()
        closed = [not nt.recv_until_close(s, max(0.5, t0 + 4 - time.monotonic())).timed_out
                  for s in socks]
        for s in socks:
            s.close()
        return {"goaway": None, "closed": all(closed), "statuses": [None],
                "note": "%d connections, %d closed" % (len(socks), sum(closed))}
    return one


@case
def connection_flood_past_max_connections(t):
    v = run_scene(t, "connection flood", flood(t.srv.port))
    bad = [c for c in v.log.connections if not c["closed"]]
    nt.expect(v.log.connections and not bad, "every flooding connection closed",
              [c["note"] for c in v.log.connections])
    nt.expect("connection limit (%d) reached" % MAX_CONNECTIONS in t.srv.stderr(),
              "the server to log that it reached the connection limit", "no such line")
    at.still_serving(t.srv.port, h1=True)


@case
def body_above_the_minimum_rate_is_served(t):
    # The edge of MIN_BODY_RATE from the honest side: 1500 bytes/s (three times the 512 bytes/s
    # default) for 6 s, across one 5 s window, gets its answer.
    with nt.TestServer(t.opts.server) as srv:
        with nt.connect(srv.port, timeout=10) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 9000\r\n\r\n")
            for _ in range(30):
                time.sleep(0.2)
                s.sendall(b"y" * 300)
            r = nt.Reader(s, timeout=5).read_response()
        nt.eq((r.status, len(r.body)), (200, 9000), "status and body length")


@case
def silent_body_gets_408(t):
    # Ten of a hundred announced body bytes, then silence: BODY_TIMEOUT (500 ms here) → 408.
    with nt.TestServer(t.opts.server, "--opt", "BODY_TIMEOUT=500") as srv:
        with nt.connect(srv.port) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" +
                      b"x" * 10)
            closed, status, _ = read_verdict(s, 5)
        nt.expect(closed and status == 408, "408 and a close", (closed, status))


@case
def per_address_limit_closes_extra_connections(t):
    # MAX_CONNECTIONS_PER_IP=8: a ninth connection from 127.0.0.1 is closed at once, without a
    # byte; once one of the eight goes, a new one is served again.
    with nt.TestServer(t.opts.server, "--opt", "MAX_CONNECTIONS_PER_IP=8") as srv:
        held = [nt.connect(srv.port) for _ in range(8)]
        try:
            with nt.connect(srv.port) as extra:
                r = nt.recv_until_close(extra, 3)
            nt.expect(r.eof and len(r) == 0, "the ninth connection closed with no bytes",
                      "%s after %.1f s (%d bytes)" % ("EOF" if r.eof else "still open",
                                                      r.elapsed, len(r)))
            held.pop().close()
            deadline = time.monotonic() + 3
            while True:  # the server notices the close on its next loop turn
                try:
                    resp = nt.http(srv.port, "GET", "/")
                    break
                except (nt.ProtocolError, OSError, AssertionError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            nt.eq(resp.status, 200, "status of a request once a slot is free")
        finally:
            for s in held:
                s.close()
        nt.expect("per-address connection limit (8) reached" in srv.stderr(),
                  "a log line for the refused connection", "none")


def setup(opts):
    t = Ctx()
    t.opts = opts
    t.srv = nt.TestServer(opts.server, *at.server_opts(
        "HEADER_TIMEOUT=1000", "WRITE_TIMEOUT=1000",
        "MAX_CONNECTIONS=%d" % MAX_CONNECTIONS)).start()
    return (t,), [t.srv]


if __name__ == "__main__":
    nt.main(setup)
