#!/usr/bin/env python3
"""nook_res_sendfile: a file range as the body, byte-exact over HTTP/1.1 (zero-copy sendfile),
h2c, h2 over TLS and HTTP/1.1 over TLS (the core's bounded read-and-write path), and HEAD.
The test server counts the library's sendfile(2) calls (it interposes sendfile): a route's file
and a static file (nook_use_static) go out with sendfile on cleartext HTTP/1.1 and never on TLS
or HTTP/2.

    python3 test_sendfile.py --server PATH/nook_test_server --hello PATH/hello
"""
import hashlib
import os
import shutil
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nooktest as nt  # noqa: E402
from nooktest import case, eq, expect  # noqa: E402


def fetch(flags, url, *extra):
    rc, out, _ = nt.curl("-s", "-k", *flags, *extra, url, timeout=60)
    eq(rc, 0, "curl exit code for %s" % url)
    return out if isinstance(out, bytes) else out.encode("latin-1")


@case
def ranges_on_every_protocol(ctx):
    plain, tls = ctx.ports
    protos = [("h1", ["--http1.1"], "http://127.0.0.1:%d" % plain),
              ("h2c", ["--http2-prior-knowledge"], "http://127.0.0.1:%d" % plain),
              ("h2-tls", ["--http2"], "https://127.0.0.1:%d" % tls),
              ("h1-tls", ["--http1.1"], "https://127.0.0.1:%d" % tls)]
    for off, length in ((0, len(ctx.data)), (1000, 100000), (len(ctx.data) - 1, 1), (0, 0)):
        want = hashlib.md5(ctx.data[off:off + length]).hexdigest()
        for name, flags, base in protos:
            got = fetch(flags, "%s/sendfile?path=%s&off=%d&len=%d" % (base, ctx.path, off, length),
                        "-o", "-")
            eq(hashlib.md5(got).hexdigest(), want, "%s: bytes [%d, +%d)" % (name, off, length))


@case
def head_gets_the_length_only(ctx):
    plain = ctx.ports[0]
    rc, out, err = nt.curl("-s", "-I", "http://127.0.0.1:%d/sendfile?path=%s&off=0&len=12345"
                           % (plain, ctx.path))
    out = out if isinstance(out, str) else out.decode()
    eq(rc, 0, "curl exit code")
    nt.expect("Content-Length: 12345" in out, "the range's length in the head", out)


def sendfile_counters(ctx):
    """(calls, bytes) of sendfile(2) made by the server so far."""
    body = fetch(["--http1.1"], "http://127.0.0.1:%d/stats" % ctx.ports[0]).decode()
    st = dict(line.split("=") for line in body.split())
    return int(st["sendfile_calls"]), int(st["sendfile_bytes"])


@case
def sendfile_is_used_on_cleartext_h1_only(ctx):
    plain, tls = ctx.ports
    protos = [("h1", ["--http1.1"], "http://127.0.0.1:%d" % plain, True),
              ("h2c", ["--http2-prior-knowledge"], "http://127.0.0.1:%d" % plain, False),
              ("h2-tls", ["--http2"], "https://127.0.0.1:%d" % tls, False),
              ("h1-tls", ["--http1.1"], "https://127.0.0.1:%d" % tls, False)]
    size = len(ctx.data)
    paths = [("static file", "/static/data.bin"),
             ("route", "/sendfile?path=%s&off=0&len=%d" % (ctx.path, size))]
    for name, flags, base, zero_copy in protos:
        for what, path in paths:
            calls, sent = sendfile_counters(ctx)
            got = fetch(flags, base + path, "-o", "-")
            eq(hashlib.md5(got).hexdigest(), hashlib.md5(ctx.data).hexdigest(),
               "%s %s: body" % (name, what))
            calls2, sent2 = sendfile_counters(ctx)
            if zero_copy:
                expect(calls2 > calls, "%s %s: sendfile(2) calls" % (name, what), calls2 - calls)
                eq(sent2 - sent, size, "%s %s: bytes sent by sendfile(2)" % (name, what))
            else:
                eq((calls2 - calls, sent2 - sent), (0, 0),
                   "%s %s: sendfile(2) calls and bytes (never over TLS or HTTP/2)" % (name, what))
            print("measure: %s %s: %d sendfile(2) calls, %d bytes" % (name, what, calls2 - calls,
                                                                       sent2 - sent))
    # HEAD has no body: nothing to send.
    calls, sent = sendfile_counters(ctx)
    fetch(["--http1.1", "-I"], "http://127.0.0.1:%d/static/data.bin" % plain)
    eq(sendfile_counters(ctx), (calls, sent), "sendfile(2) counters after a HEAD")


def setup(opts):
    fd, path = tempfile.mkstemp(prefix="nook-sendfile-")
    data = os.urandom(3 << 20)
    os.write(fd, data)
    os.close(fd)
    root = tempfile.mkdtemp(prefix="nook-sendfile-static-")
    shutil.copy(path, os.path.join(root, "data.bin"))
    srv = nt.plain_and_tls_server(opts.server, "--static", root)
    ctx = type("Ctx", (), {})()
    ctx.ports, ctx.path, ctx.data = srv.ports, path, data
    import atexit
    atexit.register(os.unlink, path)
    atexit.register(shutil.rmtree, root, True)
    return (ctx,), (srv,)


if __name__ == "__main__":
    nt.main(setup)
