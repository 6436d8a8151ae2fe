#!/usr/bin/env python3
"""HTTP/1.1 resource attacks: slowloris (heads that never end), slow body (a POST body that
trickles in), slow read (a client that never reads a large response), and a connection flood
past NOOK_OPT_MAX_CONNECTIONS (also across two workers). Each attacking connection must be
closed by the right limit, which the server's log names, while an honest h2load --h1 client
keeps its success rate and latency (rules in attack.py).

The server here runs with HEADER_TIMEOUT=1000, WRITE_TIMEOUT=1000 and MAX_CONNECTIONS=64 so the
limits act within the test's time; MIN_BODY_RATE keeps its default (512 bytes/s, judged over
5 s windows).

    python3 test_attack_h1.py --server PATH/nook_test_server --hello PATH/hello
"""
import os
import re
import select
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attack as at  # noqa: E402
import nooktest as nt  # noqa: E402
from nooktest import case  # noqa: E402

RSS_BOUND_MB = 8             # peak growth allowed during one attack scene (release build)
SANITIZER_RSS_BOUND_MB = 32  # the same under ASan (its quarantine is 16 MiB here)
MAX_CONNECTIONS = 64
HEADER_TIMEOUT_S = 1.0
SCENE_SECONDS = at.HONEST_SECONDS
REFUSED_WITHIN_S = 0.2       # a connection over the limit is closed this soon after connecting


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
        ports = [s.getsockname()[1] for s in socks]
        for s in socks:
            results[s] = read_verdict(s, max(0.5, t0 + limit_s + 2 - time.monotonic()))
            s.close()
        return {"goaway": None, "closed": all(v[0] for v in results.values()),
                "statuses": sorted(set(v[1] for v in results.values()), key=str),
                "ports": ports, "sent": count * len(head),
                "note": "%d connections, %.1f s" % (count, time.monotonic() - t0)}
    return one


class Ctx:
    pass


def run_scene(t, name, attack_fn):
    return at.scene(t.srv, name, attack_fn, h1=True, seconds=SCENE_SECONDS)


def finish(t, v, status, defence):
    """The checks of the scenes here: every attacking connection answered `status` and closed,
    the server's log naming `defence` (a regex) for each, the honest client's rules, and the
    server still serving."""
    bad = [c for c in v.log.connections if not c["closed"] or c.get("statuses") != [status]]
    nt.expect(v.log.connections and not bad,
              "every attacking connection answered %s and closed" % status,
              "%d batch(es), these not: %s" % (len(v.log.connections), bad[:3]))
    at.expect_defence(v, defence)
    v.check(RSS_BOUND_MB, SANITIZER_RSS_BOUND_MB)
    at.still_serving(t.srv.port, h1=True)


@case
def slowloris_gets_408_and_close(t):
    # 30 connections each adding one header byte every 200 ms: the head never completes.
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: "
    v = run_scene(t, "slowloris", trickle(t.srv.port, head, b"a", 30, 0.2, 4.0))
    finish(t, v, 408, r"^request timed out$")


@case
def slow_body_gets_408_and_close(t):
    # 20 uploads that send 10 bytes every 200 ms (50 bytes/s, under the 512 bytes/s minimum);
    # each byte would reset BODY_TIMEOUT, the rate check still ends it within ~5-6 s.
    head = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n"
    v = run_scene(t, "slow body", trickle(t.srv.port, head, b"x" * 10, 20, 0.2, 8.0))
    finish(t, v, 408, r"^request body below the minimum rate$")


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
        ports = [s.getsockname()[1] for s in socks]
        time.sleep(3.0)  # WRITE_TIMEOUT is 1 s: the server must give up meanwhile
        closed = []
        for s in socks:
            r = nt.recv_until_close(s, 5)
            closed.append(not r.timed_out and len(r) < 16 * 1024 * 1024)
            s.close()
        return {"goaway": None, "closed": all(closed), "statuses": [200], "ports": ports,
                "note": "%d of 5 closed early" % sum(closed)}
    return one


@case
def slow_read_is_closed_by_write_timeout(t):
    v = run_scene(t, "slow read", slow_reader(t.srv.port))
    finish(t, v, 200, r"^write timed out$")


def watch_until_closed(conns, timeout):
    """conns: [(socket, time it connected)]. Reads all of them until each is closed by the
    server (EOF or reset) or `timeout` s pass. Returns, per connection, [seconds from its
    connect to the close (None if still open), bytes received]."""
    poller = select.poll()
    index = {}
    for i, (s, _) in enumerate(conns):
        s.setblocking(False)
        poller.register(s.fileno(), select.POLLIN)
        index[s.fileno()] = i
    out = [[None, 0] for _ in conns]
    deadline = time.monotonic() + timeout
    while index and time.monotonic() < deadline:
        for fd, _ in poller.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            i = index.get(fd)
            if i is None:
                continue
            s, connected = conns[i]
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""  # a reset closes it too
            if data:
                out[i][1] += len(data)
                continue
            out[i][0] = time.monotonic() - connected
            poller.unregister(fd)
            del index[fd]
    return out


def refused_at_accept(result):
    closed_after, nbytes = result
    return closed_after is not None and closed_after < REFUSED_WITHIN_S and nbytes == 0


def flood(port):
    """Opens 3 x MAX_CONNECTIONS idle connections while the honest client holds its
    HONEST_CLIENTS: MAX_CONNECTIONS - HONEST_CLIENTS of them fit. Each of the others must be
    closed at accept (EOF without a byte within REFUSED_WITHIN_S of its connect); the ones that
    fit must stay open until HEADER_TIMEOUT ends them (they asked nothing, so they get no 408:
    EOF without a byte)."""
    def one(deadline):
        if time.monotonic() + 0.3 + HEADER_TIMEOUT_S + 0.5 > deadline:
            # Too late for a whole flood while the honest client still holds its connections.
            time.sleep(max(0.0, deadline - time.monotonic()))
            return None
        time.sleep(0.3)  # the honest client connects first
        conns = []
        for _ in range(3 * MAX_CONNECTIONS):
            conns.append((nt.connect(port, timeout=5), time.monotonic()))
        res = watch_until_closed(conns, HEADER_TIMEOUT_S + 3)
        ports = [s.getsockname()[1] for s, _ in conns]
        for s, _ in conns:
            s.close()
        refused = [p for p, r in zip(ports, res) if refused_at_accept(r)]
        held = [p for p, (dt, n) in zip(ports, res)
                if dt is not None and dt >= 0.95 * HEADER_TIMEOUT_S and n == 0]
        other = [(p, dt, n) for p, (dt, n) in zip(ports, res)
                 if p not in refused and p not in held]
        return {"goaway": None, "closed": all(dt is not None for dt, _ in res),
                "statuses": [None], "ports": refused, "held": held, "other": other,
                "note": "%d connections: %d closed at accept, %d held until HEADER_TIMEOUT, "
                        "%d neither" % (len(conns), len(refused), len(held), len(other))}
    return one


@case
def connection_flood_past_max_connections(t):
    v = run_scene(t, "connection flood", flood(t.srv.port))
    fit = MAX_CONNECTIONS - at.HONEST_CLIENTS
    bad = [c["note"] for c in v.log.connections
           if c["other"] or len(c["held"]) != fit or len(c["ports"]) != 3 * MAX_CONNECTIONS - fit]
    nt.expect(v.log.connections and not bad,
              "in each flood of %d: %d connections held until HEADER_TIMEOUT (the limit less the "
              "honest client's %d), the other %d closed at accept without a byte within %.1f s"
              % (3 * MAX_CONNECTIONS, fit, at.HONEST_CLIENTS, 3 * MAX_CONNECTIONS - fit,
                 REFUSED_WITHIN_S), bad[:3])
    # Each refused one was refused by the connection limit, each held one ended by the timeout.
    at.expect_defence(v, r"^connection limit \(%d\) reached; closing$" % MAX_CONNECTIONS)
    at.expect_defence(v, r"^no request in time$", key="held")
    v.check(RSS_BOUND_MB, SANITIZER_RSS_BOUND_MB)
    at.still_serving(t.srv.port, h1=True)


def ask_thread(s):
    """GET /thread on a connection: the id of the worker that served it, or None when the
    server closed the connection without a byte."""
    s.sendall(b"GET /thread HTTP/1.1\r\nHost: a\r\n\r\n")
    try:
        first = s.recv(65536)
    except ConnectionResetError:
        return None
    if not first:
        return None
    r = nt.Reader(s, data=first, timeout=5).read_response()
    nt.eq(r.status, 200, "status of /thread")
    return r.body


@case
def max_connections_holds_across_two_workers(t):
    # MAX_CONNECTIONS counts the connections of all workers together. Two workers, each
    # accepting on its own SO_REUSEPORT socket, and a limit of 16; 48 connections opened one
    # after another, each asking GET /thread and then kept open: the first 16 are served (by
    # both workers between them), each later one is closed without an answer, with a log line.
    limit = 16
    with nt.TestServer(t.opts.server, "--threads", "2", *at.server_opts(
            "MAX_CONNECTIONS=%d" % limit, "HEADER_TIMEOUT=10000")) as srv:
        conns = []
        try:
            answers = []
            for _ in range(3 * limit):
                conns.append(nt.connect(srv.port))
                answers.append(ask_thread(conns[-1]))
            served = [a for a in answers if a is not None]
            nt.eq([a is not None for a in answers], [True] * limit + [False] * (2 * limit),
                  "connections answered (the first %d) and refused (the rest)" % limit)
            nt.eq(len(set(served)), 2, "workers among those that answered")
            # The first 16 are still open and served: the refusals were not their doing.
            nt.eq(sum(ask_thread(s) is not None for s in conns[:limit]), limit,
                  "connections within the limit answering a second request")
            refused = [s.getsockname()[1] for s in conns[limit:]]
        finally:
            for s in conns:
                s.close()
        log = srv.stderr()
        missing = [p for p in refused
                   if not re.search(r"^nook: warn: 127\.0\.0\.1:%d: connection limit \(%d\) "
                                    r"reached; closing$" % (p, limit), log, re.M)]
        nt.expect(not missing, "a connection-limit log line for each refused connection",
                  "none for ports %s" % missing[:5])


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
        "HEADER_TIMEOUT=%d" % (HEADER_TIMEOUT_S * 1000), "WRITE_TIMEOUT=1000",
        "MAX_CONNECTIONS=%d" % MAX_CONNECTIONS)).start()
    return (t,), [t.srv]


if __name__ == "__main__":
    nt.main(setup)
