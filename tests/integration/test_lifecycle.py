#!/usr/bin/env python3
"""Server lifecycle: the hello example, IPv6 and Unix-socket listeners, several worker threads,
graceful stop while a transfer is in flight, and stopping an idle server.

    python3 test_lifecycle.py --server PATH/nook_test_server --hello PATH/hello
"""
import os
import signal
import socket
import sys
import threading
import time
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nooktest as nt  # noqa: E402
from nooktest import case, eq, expect  # noqa: E402


@case
def hello_ipv4(opts):
    with nt.HelloServer(opts.hello, threads=2) as srv:
        rc, out, err = nt.curl("-s", "http://127.0.0.1:%d/" % srv.port)
        eq((rc, out), (0, b"Hello, World!"), "curl rc and body from hello")
        r = nt.http(srv.port, "GET", "/")
        eq((r.status, r.header("Content-Type"), r.body), (200, "text/plain", b"Hello, World!"),
           "status, Content-Type and body")
        eq(nt.http(srv.port, "GET", "/nope").status, 404, "status for /nope on hello")


@case
def ipv6_listener(opts):
    if not nt.have_ipv6_loopback():
        raise nt.Skip("this machine has no IPv6 loopback (::1)")
    with nt.TestServer(opts.server, listen="[::1]:0") as srv:
        rc, out, err = nt.curl("-s", "-g", "http://[::1]:%d/" % srv.port)
        eq((rc, out), (0, b"Hello, World!"), "curl rc and body over IPv6")
        r = nt.http(("::1", srv.port), "GET", "/peer")
        expect(r.status == 200 and r.body.startswith(b"[::1]:"), "200 and a peer '[::1]:PORT'",
               (r.status, r.body))


@case
def unix_socket_listener(opts):
    path = "/tmp/nook-it-%d-%s.sock" % (os.getpid(), uuid.uuid4().hex[:8])
    # leave a stale socket file at the path: the listener must replace it
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()
    try:
        with nt.TestServer(opts.server, listen="unix:" + path) as srv:
            eq(srv.ports, [0], "the 'port' line for a Unix socket")
            rc, out, err = nt.curl("-s", "--unix-socket", path, "http://localhost/")
            eq((rc, out), (0, b"Hello, World!"), "curl --unix-socket rc and body")
            r = nt.http(path, "GET", "/peer")
            eq((r.status, r.body), (200, b"unix"), "status and peer over a Unix socket")
    finally:
        if os.path.exists(path):
            os.unlink(path)


@case
def four_threads_200_requests_20_connections(opts):
    nconn, per_conn = 20, 10
    errors = []
    done = [0]
    lock = threading.Lock()

    def client(k, port):
        try:
            with nt.connect(port, timeout=10) as s:
                rd = nt.Reader(s, timeout=10)
                for i in range(per_conn):
                    n = k * 1000 + i
                    s.sendall(nt.request_bytes("GET", "/users/%d" % n))
                    r = rd.read_response()
                    if (r.status, r.body) != (200, b"user:%d" % n):
                        raise AssertionError("expected 200 user:%d, got %d %r"
                                             % (n, r.status, r.body[:80]))
                    with lock:
                        done[0] += 1
        except Exception as e:  # collected and reported by the main thread
            with lock:
                errors.append("connection %d: %s: %s" % (k, type(e).__name__, e))

    with nt.TestServer(opts.server, "--threads", "4") as srv:
        threads = [threading.Thread(target=client, args=(k, srv.port)) for k in range(nconn)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        expect(not any(th.is_alive() for th in threads), "every client thread to finish in 30 s",
               "some still running")
        expect(not errors, "no client errors", errors[:3])
        eq(done[0], nconn * per_conn, "successful requests")
        # The workers share the port: new connections spread over more than one of them.
        served_by = set()
        for _ in range(40):
            r = nt.http(srv.port, "GET", "/thread")
            eq(r.status, 200, "status of GET /thread")
            served_by.add(r.body)
        expect(len(served_by) >= 2, "40 new connections served by at least 2 of the 4 workers",
               "all by thread %s" % sorted(served_by))


@case
def grace_deadline_closes_what_is_still_running(opts):
    # A response that cannot finish (its client never reads) holds the server only for the
    # drain period given to nook_server_stop(): then its connection is closed and the server
    # exits.
    with nt.TestServer(opts.server, "--drain", "500") as srv:
        with nt.connect(srv.port, timeout=10) as s:
            s.sendall(nt.request_bytes("GET", "/stream?n=4096&size=65536"))  # 256 MiB
            time.sleep(0.5)  # the response is under way and blocked on this reader
            expect(srv.alive(), "the server to be running before SIGTERM", "it exited")
            t0 = time.monotonic()
            srv.signal(signal.SIGTERM)
            rc = srv.wait(10)
            dt = time.monotonic() - t0
            eq(rc, 0, "exit code after SIGTERM (None: still running after 10 s)")
            expect(0.4 <= dt <= 3.0, "exit about 0.5 s (the drain) after SIGTERM", "%.2f s" % dt)
            # The connection was closed, not left open: reading drains what was sent, then EOF.
            got, closed = 0, False
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    b = s.recv(1 << 20)
                except (ConnectionResetError, socket.timeout):
                    closed = True
                    break
                if not b:
                    closed = True
                    break
                got += len(b)
            expect(closed, "the unfinished response's connection to be closed",
                   "still open after %d bytes" % got)
            expect(got < 256 << 20, "the response to be cut short", "%d bytes" % got)


@case
def graceful_stop_finishes_transfer(opts):
    n, size = 200, 65536
    state = {"received": 0, "error": None, "response": None}

    with nt.TestServer(opts.server, "--drain", "10000") as srv:
        sock = nt.connect(srv.port, timeout=10)

        def reader():
            try:
                rd = nt.Reader(sock, timeout=10)
                rd.recv_size = 65536

                def pace(r):
                    state["received"] = r.received
                    time.sleep(0.01)

                state["reader"] = rd

                rd.before_recv = pace
                state["response"] = rd.read_response()
            except Exception as e:  # reported by the main thread
                state["error"] = "%s: %s (after %d of about %d bytes)" % (
                    type(e).__name__, e, state["received"], n * size)
            finally:
                sock.close()

        sock.sendall(nt.request_bytes("GET", "/stream?n=%d&size=%d" % (n, size)))
        th = threading.Thread(target=reader)
        th.start()
        deadline = time.monotonic() + 10
        while state["received"] < (1 << 20) and th.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        expect(th.is_alive() and state["received"] >= (1 << 20),
               "the transfer to be under way (>= 1 MB read, not finished) before SIGTERM",
               "%d bytes, finished=%s, error=%s" % (state["received"], not th.is_alive(),
                                                    state["error"]))
        srv.signal(signal.SIGTERM)
        # new connections must be refused once the listener has closed (allow ~2 s for that)
        refused = False
        accepted = 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                c = nt.connect(srv.port, timeout=1)
            except ConnectionRefusedError:
                refused = True
                break
            except OSError:
                pass
            else:
                accepted += 1
                c.close()
            time.sleep(0.05)
        th.join(60)
        expect(not th.is_alive(), "the slow transfer to finish within 60 s", "still running")
        if "reader" in state:
            state["received"] = state["reader"].received
        expect(state["error"] is None, "the whole %d-byte transfer to complete after SIGTERM "
               "(drain 10 s)" % (n * size), state["error"])
        r = state["response"]
        eq(r.status, 200, "status of the drained response")
        eq(len(r.body), n * size, "bytes received after SIGTERM")
        nt.same_bytes(r.body, nt.pattern(size) * n, "drained body")
        expect(refused, "a new connection to be refused within 2 s of SIGTERM",
               "%d connection(s) accepted and never refused" % accepted)
        rc = srv.wait(10)
        eq(rc, 0, "server exit code within 10 s after the transfer (None: still running)")


def idle_stop(server_factory, what, with_idle_conn):
    with server_factory() as srv:
        s = None
        if with_idle_conn:
            s = nt.connect(srv.port)
            s.sendall(nt.request_bytes("GET", "/"))
            rd = nt.Reader(s)
            eq(rd.read_response().status, 200, "status before going idle")
        else:
            eq(nt.http(srv.port, "GET", "/").status, 200, "status of a request before stopping")
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        rc = srv.wait(10)
        dt = time.monotonic() - t0
        eq(rc, 0, "%s exit code after SIGTERM (None: still running after 10 s)" % what)
        expect(dt <= 2.0, "%s to exit within 2 s of SIGTERM" % what, "%.2f s" % dt)
        if s is not None:
            expect(rd.at_eof(1), "the idle keep-alive connection to be closed", "still open")
            s.close()


@case
def sigterm_idle_test_server(opts):
    idle_stop(lambda: nt.TestServer(opts.server), "nook_test_server", False)


@case
def sigterm_test_server_with_idle_keepalive(opts):
    idle_stop(lambda: nt.TestServer(opts.server), "nook_test_server", True)


@case
def sigterm_idle_hello(opts):
    idle_stop(lambda: nt.HelloServer(opts.hello, threads=2), "hello", True)


def repeated_sigterm(server_factory, what):
    """SIGTERM every ~2 ms until the process exits (an impatient operator, or a supervisor
    resending the signal): the server must still exit 0, promptly, with no sanitizer report."""
    with server_factory() as srv:
        eq(nt.http(srv.port, "GET", "/").status, 200, "status of a request before stopping")
        t0 = time.monotonic()
        sent = 0
        while srv.proc.poll() is None and time.monotonic() - t0 < 3.0:
            try:
                os.kill(srv.proc.pid, signal.SIGTERM)
                sent += 1
            except ProcessLookupError:
                break
            time.sleep(0.002)
        srv._term_sent = True
        rc = srv.wait(1)
        if rc is None:
            srv.kill()
        eq(rc, 0, "%s exit code within 3 s of %d SIGTERMs (None: hung, killed)" % (what, sent))


@case
def repeated_sigterm_test_server(opts):
    repeated_sigterm(lambda: nt.TestServer(opts.server), "nook_test_server")


@case
def repeated_sigterm_hello(opts):
    repeated_sigterm(lambda: nt.HelloServer(opts.hello, threads=2), "hello")


def setup(opts):
    return (opts,), []


if __name__ == "__main__":
    nt.main(setup)
