#!/usr/bin/env python3
"""The examples as a user runs them: router (path params, JSON, 404/405), async (answers from
worker threads), sse (a clock event stream) — each over HTTP/1.1, h2c and h2 over TLS.

    python3 test_examples.py --server PATH/nook_test_server --hello PATH/hello
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nooktest as nt  # noqa: E402
from nooktest import case, eq, expect  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"


class Example(nt.ServerProcess):
    """examples/NAME with a cleartext and a TLS listener on free ports (--print-port)."""

    def __init__(self, binary, *extra):
        argv = [str(binary), "--print-port", "--listen", "127.0.0.1:0", "--tls-cert",
                str(DATA / "localhost.crt"), "--tls-key", str(DATA / "localhost.key"),
                "--listen", "127.0.0.1:0", *extra]
        super().__init__(argv, Path(binary).name)

    def start(self, timeout=10.0):
        self._spawn()
        self.ports = self._wait_lines(r"^port (\d+)$", 2, "stdout", timeout)
        return self


def urls(ex, path):
    plain, tls = ex.ports
    return [("h1", ["--http1.1"], "http://127.0.0.1:%d%s" % (plain, path)),
            ("h2c", ["--http2-prior-knowledge"], "http://127.0.0.1:%d%s" % (plain, path)),
            ("h2-tls", ["--http2", "-k"], "https://127.0.0.1:%d%s" % (tls, path))]


def curl(flags, url, *extra):
    rc, out, err = nt.curl("-s", "-w", "\n%{http_code}", *flags, *extra, url)
    eq(rc, 0, "curl exit code for %s" % url)
    out = out if isinstance(out, str) else out.decode()
    body, _, code = out.rpartition("\n")
    return int(code), body


@case
def router_json_api(ctx):
    ex = ctx.router
    for name, flags, url in urls(ex, '/users/4%222'):
        code, body = curl(flags, url)
        eq((code, json.loads(body)), (200, {"id": '4"2', "name": 'user 4"2'}),
           "%s: decoded, JSON-escaped parameter" % name)
    for name, flags, url in urls(ex, "/files/a/b/c.txt"):
        eq(curl(flags, url), (200, '{"path":"a/b/c.txt"}'), "%s: wildcard" % name)
    for name, flags, url in urls(ex, "/users"):
        code, body = curl(flags, url, "-H", "Content-Type: application/json", "-d", '{"n":1}')
        eq((code, body), (201, '{"n":1}'), "%s: POST /users" % name)
    for name, flags, url in urls(ex, "/users/1"):
        eq(curl(flags, url, "-X", "PATCH")[0], 405, "%s: PATCH → 405" % name)
        eq(curl(flags, url, "-X", "DELETE")[0], 204, "%s: DELETE → 204" % name)
    for name, flags, url in urls(ex, "/nothing"):
        eq(curl(flags, url)[0], 404, "%s: 404" % name)


@case
def async_answers_from_workers(ctx):
    for name, flags, url in urls(ctx.async_, "/slow?ms=150"):
        t0 = time.monotonic()
        eq(curl(flags, url), (200, "done after 150 ms"), "%s: late answer" % name)
        expect(time.monotonic() - t0 >= 0.14, "%s: answered after the delay" % name)
    # Many at once: the workers run them in parallel; the loop is never blocked.
    plain = ctx.async_.ports[0]
    p = subprocess.run(["h2load", "-n", "400", "-c", "4", "-m", "100",
                        "http://127.0.0.1:%d/slow?ms=50" % plain],
                       capture_output=True, text=True, timeout=60)
    expect("400 succeeded, 0 failed, 0 errored" in p.stdout, "h2load: 400 late answers",
           p.stdout[-400:])


@case
def sse_clock_stream(ctx):
    for name, flags, url in urls(ctx.sse, "/events?count=3"):
        rc, out, err = nt.curl("-s", "-N", "-D", "-", *flags, url, timeout=20)
        eq(rc, 0, "%s: curl exit code" % name)
        out = out if isinstance(out, str) else out.decode()
        head, _, body = out.partition("\r\n\r\n")
        expect("text/event-stream" in head.lower(), "%s: event-stream content type" % name, head)
        events = [l for l in body.split("\n") if l.startswith("data: ")]
        eq(len(events), 3, "%s: events before the stream ends" % name)
        expect(all(e.endswith("Z") and "T" in e for e in events), "%s: UTC times" % name, events)


@case
def sse_subscriber_leaving_is_dropped(ctx):
    # A client that leaves mid-stream: the server notices (CANCEL) and keeps serving others.
    plain = ctx.sse.ports[0]
    with nt.connect(plain) as s:
        s.sendall(nt.request_bytes("GET", "/events"))
        s.settimeout(5)
        expect(b"data: " in s.recv(4096) + s.recv(4096), "a first event")
    time.sleep(0.3)
    code, body = curl(["--http1.1"], "http://127.0.0.1:%d/" % plain)
    eq(code, 200, "the page still served")
    expect("EventSource" in body, "the page subscribes with EventSource", body[:200])


def setup(opts):
    bindir = Path(opts.hello).resolve().parent
    ctx = type("Ctx", (), {})()
    ctx.router = Example(bindir / "router").start()
    ctx.async_ = Example(bindir / "async").start()
    ctx.sse = Example(bindir / "sse", "--interval-ms", "100").start()
    return (ctx,), (ctx.router, ctx.async_, ctx.sse)


if __name__ == "__main__":
    nt.main(setup)
