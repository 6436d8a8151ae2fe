#!/usr/bin/env python3
"""Soak: 10,000 concurrent connections on one worker.

The test raises its descriptor limit (the server inherits it), opens CONNS cleartext
connections, makes one keep-alive request on each and holds them all open while the server
sleeps them (NOOK_OPT_IDLE_SLEEP). It prints the server's RSS growth per connection, asserts it
stays under BUDGET_KB in a release build, then makes a second request on every connection (all
must be answered) and checks that an honest request on a new connection is still served
meanwhile. Under a sanitizer RSS is not asserted (shadow memory, quarantine).

    python3 test_soak.py --server PATH/nook_test_server --hello PATH/hello
"""
import os
import resource
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nooktest as nt  # noqa: E402
from nooktest import case, eq, expect  # noqa: E402

CONNS = 10000
BUDGET_KB = 6  # per idle cleartext connection, server side (measured about 2)
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
ANSWER_END = b"Hello, World!"


def raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        raise nt.Skip("the hard descriptor limit is %d, the soak needs %d" % (hard, want))
    if soft == resource.RLIM_INFINITY or soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def sanitized(pid):
    with open("/proc/%d/maps" % pid) as f:
        maps = f.read()
    return "libasan" in maps or "libtsan" in maps


def answer(s):
    data = b""
    while not data.endswith(ANSWER_END):
        chunk = s.recv(4096)
        if not chunk:
            return False
        data += chunk
    return data.startswith(b"HTTP/1.1 200")


@case
def ten_thousand_idle_connections(opts):
    raise_fd_limit(CONNS + 1024)
    srv = nt.TestServer(opts.server, "--threads", "1", "--opt", "MAX_CONNECTIONS=%d" % (CONNS + 100),
                        "--opt", "IDLE_SLEEP=200", "--quiet").start()
    conns = []
    with srv:
        try:
            pid = srv.proc.pid
            with nt.connect(srv.port) as warm:
                warm.sendall(REQUEST)
                expect(answer(warm), "warm-up answer")
            time.sleep(0.5)
            base = rss_kb(pid)
            started = time.monotonic()
            for i in range(CONNS):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                s.sendall(REQUEST)
                if not answer(s):
                    raise AssertionError("connection %d: no answer" % i)
                conns.append(s)
            opened = time.monotonic() - started
            time.sleep(1.0)
            per = (rss_kb(pid) - base) * 1024 / CONNS
            eq(srv.alive(), True, "server alive with %d connections" % CONNS)
            with nt.connect(srv.port) as honest:
                honest.sendall(REQUEST)
                expect(answer(honest), "an honest request on a new connection")
            ok = 0
            for s in conns:
                s.sendall(REQUEST)
                ok += answer(s)
            eq(ok, CONNS, "connections answering their second request")
            asan = sanitized(pid)
            print("measure: %d concurrent connections (opened in %.1f s): server RSS grew %.0f "
                  "bytes per connection%s" % (CONNS, opened, per,
                                              " [sanitizer build: not asserted]" if asan else ""))
            if not asan:
                expect(per < BUDGET_KB * 1024, "RSS per idle connection under %d KiB" % BUDGET_KB,
                       "%.0f bytes" % per)
        finally:
            for s in conns:
                s.close()


def setup(opts):
    return (opts,), ()


if __name__ == "__main__":
    nt.main(setup)
