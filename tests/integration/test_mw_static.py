#!/usr/bin/env python3
"""nook_use_static through examples/static, over HTTP/1.1, h2c and h2 over TLS: byte-exact
bodies, every path-traversal trick answered 404 (never the target), validators and 304s, byte
ranges (206/416, If-Range), HEAD, media types, directory redirects, and no file descriptor left
open after 50 requests (some cancelled mid-body).

    python3 test_mw_static.py --server PATH/nook_test_server --hello PATH/hello
"""
import email.utils
import hashlib
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nooktest as nt  # noqa: E402
from nooktest import case, eq, expect  # noqa: E402

Resp = nt.Resp
fetch = nt.curl_fetch


def protocols(ctx):
    return nt.protocols(*ctx.srv.ports)

DATA = Path(__file__).resolve().parents[1] / "data"
MTIME = 1600000000  # 2020-09-13 12:26:40 UTC: every served file gets this mtime
SECRETS = (b"TOP-SECRET", b"OUTSIDE-SECRET", b"root:x:0:0")


class StaticExample(nt.ServerProcess):
    """examples/static --root ROOT with a cleartext and a TLS listener on port 0."""

    def __init__(self, binary, root):
        argv = [str(binary), "--root", str(root), "--print-port", "--threads", "2",
                "--listen", "127.0.0.1:0", "--tls-cert", str(DATA / "localhost.crt"),
                "--tls-key", str(DATA / "localhost.key"), "--listen", "127.0.0.1:0"]
        super().__init__(argv, "static")

    def start(self, timeout=10.0):
        self._spawn()
        self.ports = self._wait_lines(r"^port (\d+)$", 2, "stdout", timeout)
        return self


def make_docroot(base):
    """base/root is served; base/secret.txt and base/outside/ lie beside it."""
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    (root / "nodir").mkdir()
    (root / ".git").mkdir()
    (base / "outside").mkdir()
    files = {
        "index.html": b"<!doctype html><title>home</title><p>home page</p>\n",
        "hello.txt": b"hello, static world\n" * 100,
        "empty.txt": b"",
        "big.bin": os.urandom(5 * 1024 * 1024),
        "odd.bin": os.urandom(200003),
        "a b.txt": b"a file with a space\n",
        "x..y.txt": b"dots inside a name are fine\n",
        "UPPER.TXT": b"upper-case extension\n",
        "noext": b"no extension\n",
        "style.css": b"body { color: red }\n",
        "app.js": b"console.log(1);\n",
        "data.json": b'{"a": 1}\n',
        "pic.png": b"\x89PNG\r\n\x1a\n" + os.urandom(100),
        "pic.jpg": os.urandom(100),
        "logo.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>\n",
        "font.woff2": os.urandom(100),
        "arch.zip": os.urandom(100),
        "mod.wasm": b"\0asm" + os.urandom(50),
        "sub/index.html": b"<p>sub index</p>\n",
        "sub/file.txt": b"file in sub\n",
        "sub/.hidden": b"TOP-SECRET hidden\n",
        ".env": b"TOP-SECRET=1\n",
        ".git/config": b"[core] TOP-SECRET\n",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (base / "secret.txt").write_bytes(b"TOP-SECRET beside the root\n")
    (base / "outside" / "secret.txt").write_bytes(b"OUTSIDE-SECRET\n")
    os.symlink("/etc/passwd", root / "link_passwd")
    os.symlink(base / "outside", root / "link_outdir")
    os.symlink("hello.txt", root / "link_inside")
    # Links inside the root: a directory (served through), and names of hidden entries (which
    # the realpath route must still refuse, as it refuses them when asked for directly).
    os.symlink("sub", root / "link_subdir")
    os.symlink(".env", root / "link_env")
    os.symlink(".git", root / "link_gitdir")
    for name in files:
        os.utime(root / name, (MTIME, MTIME))
    return root, files


def md5(b):
    return hashlib.md5(b).hexdigest()


@case
def bodies_are_byte_exact(ctx):
    cases = [("/", "index.html"), ("/hello.txt", "hello.txt"), ("/big.bin", "big.bin"),
             ("/odd.bin", "odd.bin"), ("/empty.txt", "empty.txt"), ("/a%20b.txt", "a b.txt"),
             ("/sub/file.txt", "sub/file.txt"), ("/sub/", "sub/index.html"),
             ("//sub//file.txt", "sub/file.txt"), ("/x..y.txt", "x..y.txt"),
             ("/link_inside", "hello.txt"), ("/link_subdir/file.txt", "sub/file.txt")]
    for name, flags, base in protocols(ctx):
        for path, file in cases:
            r = fetch(flags, base + path)
            want = ctx.files[file]
            eq(r.status, 200, "%s %s: status" % (name, path))
            eq(md5(r.body), md5(want), "%s %s: md5 of %d bytes" % (name, path, len(want)))
            eq(r.h("content-length"), str(len(want)), "%s %s: Content-Length" % (name, path))
            eq(r.h("accept-ranges"), "bytes", "%s %s: Accept-Ranges" % (name, path))


TRAVERSALS = [
    "/../secret.txt", "/sub/../../secret.txt", "/..%2fsecret.txt", "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt", "/%2e%2E%2fsecret.txt", "/%2E./secret.txt", "/.%2e/secret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt", "/..%5csecret.txt", "/sub%5c..%5c..%5csecret.txt",
    "/sub\\..\\..\\secret.txt", "/sub%2ffile.txt", "/sub%2Ffile.txt", "/hello.txt%00",
    "/hello.txt%00.png", "/%00", "/./hello.txt", "/%2e/hello.txt", "/sub/./file.txt",
    "/link_passwd", "/link_outdir/secret.txt", "/link_outdir/", "/link_outdir",
    "/link_env", "/link_gitdir/config", "/link_subdir/.hidden",
    "/.env", "/%2eenv", "/.git/config", "/.git/", "/.git", "/sub/.hidden", "/sub/%2ehidden",
    "/hello.txt/", "/%zz", "/%2",
]


@case
def traversal_is_404_never_the_target(ctx):
    for name, flags, base in protocols(ctx):
        for path in TRAVERSALS:
            r = fetch(flags, base + path)
            eq(r.status, 404, "%s %s: status" % (name, path))
            expect(not any(s in r.body for s in SECRETS), "%s %s: no secret in the body"
                   % (name, path), r.body[:200])


@case
def traversal_raw_http1_bytes(ctx):
    # The same requests with exact bytes on the wire (no client normalisation at all).
    for path in TRAVERSALS + ["/sub/..%2f..%2fsecret.txt", "/..", "/sub/.."]:
        r = nt.http(ctx.srv.ports[0], "GET", path)
        expect(r.status in (400, 404), "GET %s: 404 (or 400 from the parser)" % path, r.status)
        expect(not any(s in r.body for s in SECRETS), "GET %s: no secret" % path, r.body[:200])


@case
def missing_files_fall_through_to_routes(ctx):
    for name, flags, base in protocols(ctx):
        r = fetch(flags, base + "/version")
        eq(r.status, 200, "%s: the route answers a path with no file" % name)
        expect(r.body[:1].isdigit(), "%s: a version string" % name, r.body)
        eq(fetch(flags, base + "/missing.txt").status, 404, "%s: no file, no route" % name)
        eq(fetch(flags, base + "/nodir/").status, 404, "%s: a directory without index" % name)
        eq(fetch(flags, base + "/hello.txt", "-X", "POST").status, 404,
           "%s: POST is not for static files" % name)


@case
def media_types(ctx):
    types = {"/hello.txt": "text/plain; charset=utf-8", "/UPPER.TXT": "text/plain; charset=utf-8",
             "/": "text/html; charset=utf-8", "/style.css": "text/css; charset=utf-8",
             "/app.js": "text/javascript; charset=utf-8", "/data.json": "application/json",
             "/pic.png": "image/png", "/pic.jpg": "image/jpeg", "/logo.svg": "image/svg+xml",
             "/font.woff2": "font/woff2", "/arch.zip": "application/zip",
             "/mod.wasm": "application/wasm", "/noext": "application/octet-stream",
             "/big.bin": "application/octet-stream"}
    for name, flags, base in protocols(ctx):
        for path, ct in types.items():
            eq(fetch(flags, base + path).h("content-type"), ct, "%s %s: Content-Type"
               % (name, path))


@case
def directory_redirects_and_index(ctx):
    for name, flags, base in protocols(ctx):
        for path, loc in [("/sub", "/sub/"), ("/sub?x=1&y", "/sub/?x=1&y"), ("//sub", "/sub/"),
                          ("///sub", "/sub/")]:
            r = fetch(flags, base + path)
            eq((r.status, r.h("location")), (301, loc), "%s %s: redirect" % (name, path))
        r = fetch(flags, base + "/sub/")
        eq((r.status, r.body), (200, ctx.files["sub/index.html"]), "%s: index" % name)
        eq(r.h("content-type"), "text/html; charset=utf-8", "%s: index type" % name)


@case
def validators_and_if_none_match(ctx):
    lm = email.utils.formatdate(MTIME, usegmt=True)
    for name, flags, base in protocols(ctx):
        r = fetch(flags, base + "/hello.txt")
        etag = r.h("etag")
        expect(etag and etag.startswith('"') and etag.endswith('"'), "%s: a quoted strong ETag"
               % name, etag)
        eq(r.h("last-modified"), lm, "%s: Last-Modified (IMF-fixdate)" % name)
        eq(fetch(flags, base + "/big.bin").h("etag") != etag, True, "%s: ETags differ" % name)
        for inm in [etag, "W/" + etag, '"nope", ' + etag, '"a",W/%s' % etag, "*"]:
            r = fetch(flags, base + "/hello.txt", "-H", "If-None-Match: " + inm)
            eq((r.status, r.body), (304, b""), "%s If-None-Match %s" % (name, inm))
            eq(r.h("etag"), etag, "%s: 304 carries the ETag" % name)
        for inm in ['"nope"', etag[:-2] + '"', "W/\"x\""]:
            r = fetch(flags, base + "/hello.txt", "-H", "If-None-Match: " + inm)
            eq(r.status, 200, "%s If-None-Match %s: no match" % (name, inm))
        # If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
        r = fetch(flags, base + "/hello.txt", "-H", 'If-None-Match: "nope"',
                  "-H", "If-Modified-Since: " + lm)
        eq(r.status, 200, "%s: a failing If-None-Match ignores If-Modified-Since" % name)
        r = fetch(flags, base + "/hello.txt", "-H", 'If-Match: "nope"')
        eq(r.status, 412, "%s: If-Match that fails" % name)
        eq(fetch(flags, base + "/hello.txt", "-H", "If-Match: " + etag).status, 200,
           "%s: If-Match that holds" % name)
        for ius, status in [(email.utils.formatdate(MTIME - 1, usegmt=True), 412), (lm, 200)]:
            r = fetch(flags, base + "/hello.txt", "-H", "If-Unmodified-Since: " + ius)
            eq(r.status, status, "%s If-Unmodified-Since %s" % (name, ius))


@case
def if_modified_since(ctx):
    same = [email.utils.formatdate(MTIME, usegmt=True), "Sunday, 13-Sep-20 12:26:40 GMT",
            "Sun Sep 13 12:26:40 2020", email.utils.formatdate(MTIME + 3600, usegmt=True)]
    older = [email.utils.formatdate(MTIME - 1, usegmt=True), "not a date",
             email.utils.formatdate(time.time() + 86400 * 400, usegmt=True)]  # future: ignored
    for name, flags, base in protocols(ctx):
        for d in same:
            r = fetch(flags, base + "/hello.txt", "-H", "If-Modified-Since: " + d)
            eq((r.status, r.body), (304, b""), "%s If-Modified-Since %s" % (name, d))
        for d in older:
            r = fetch(flags, base + "/hello.txt", "-H", "If-Modified-Since: " + d)
            eq(r.status, 200, "%s If-Modified-Since %s" % (name, d))


@case
def single_ranges(ctx):
    big = ctx.files["big.bin"]
    n = len(big)
    forms = [("bytes=0-99", 0, 99), ("bytes=100-", 100, n - 1), ("bytes=-500", n - 500, n - 1),
             ("bytes=0-0", 0, 0), ("bytes=%d-" % (n - 1), n - 1, n - 1),
             ("bytes=10-99999999999999999999999", 10, n - 1), ("bytes=-99999999", 0, n - 1),
             ("bytes=1000000-3999999", 1000000, 3999999), ("BYTES= 5-9", 5, 9)]
    for name, flags, base in protocols(ctx):
        for spec, a, b in forms:
            r = fetch(flags, base + "/big.bin", "-H", "Range: " + spec)
            eq(r.status, 206, "%s %s: status" % (name, spec))
            eq(r.h("content-range"), "bytes %d-%d/%d" % (a, b, n), "%s %s: Content-Range"
               % (name, spec))
            eq(r.h("content-length"), str(b - a + 1), "%s %s: Content-Length" % (name, spec))
            eq(md5(r.body), md5(big[a:b + 1]), "%s %s: body md5" % (name, spec))


@case
def ranges_served_whole_or_refused(ctx):
    n = len(ctx.files["hello.txt"])
    for name, flags, base in protocols(ctx):
        # Several ranges, another unit, nonsense: the whole file (documented).
        for spec in ["bytes=0-1,5-6", "items=0-5", "bytes=abc", "bytes=5-2", "bytes=--5"]:
            r = fetch(flags, base + "/hello.txt", "-H", "Range: " + spec)
            eq((r.status, r.body), (200, ctx.files["hello.txt"]), "%s %s: whole file"
               % (name, spec))
        for path, spec, size in [("/hello.txt", "bytes=%d-" % n, n),
                                 ("/hello.txt", "bytes=%d-%d" % (n + 10, n + 20), n),
                                 ("/hello.txt", "bytes=-0", n), ("/empty.txt", "bytes=0-", 0),
                                 ("/empty.txt", "bytes=-5", 0)]:
            r = fetch(flags, base + path, "-H", "Range: " + spec)
            eq(r.status, 416, "%s %s %s: status" % (name, path, spec))
            eq(r.h("content-range"), "bytes */%d" % size, "%s %s: Content-Range" % (name, spec))


@case
def if_range(ctx):
    body = ctx.files["hello.txt"]
    lm = email.utils.formatdate(MTIME, usegmt=True)
    for name, flags, base in protocols(ctx):
        etag = fetch(flags, base + "/hello.txt").h("etag")
        for ir, status in [(etag, 206), (lm, 206), ('"other"', 200), ("W/" + etag, 200),
                           (email.utils.formatdate(MTIME - 60, usegmt=True), 200)]:
            r = fetch(flags, base + "/hello.txt", "-H", "Range: bytes=2-5", "-H", "If-Range: " + ir)
            eq(r.status, status, "%s If-Range %s" % (name, ir))
            eq(r.body, body[2:6] if status == 206 else body, "%s If-Range %s: body" % (name, ir))


@case
def head_is_the_get_head(ctx):
    for name, flags, base in protocols(ctx):
        for path in ["/hello.txt", "/big.bin", "/empty.txt", "/"]:
            g = fetch(flags, base + path)
            h = fetch(flags, base + path, head=True)
            eq(h.status, 200, "%s HEAD %s: status" % (name, path))
            for k in ("content-length", "content-type", "etag", "last-modified"):
                eq(h.h(k), g.h(k), "%s HEAD %s: %s as for GET" % (name, path, k))
    # HTTP/1.1 framing stays right: HEAD then GET on one connection.
    with nt.connect(ctx.srv.ports[0]) as s:
        s.sendall(nt.request_bytes("HEAD", "/hello.txt") + nt.request_bytes("GET", "/hello.txt"))
        rd = nt.Reader(s)
        h = rd.read_response("HEAD")
        g = rd.read_response("GET")
        eq((h.status, g.status, g.body), (200, 200, ctx.files["hello.txt"]), "HEAD then GET")


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def cancelled_download(port, path):
    """Starts a large download and leaves after the first bytes."""
    with nt.connect(port) as s:
        s.sendall(nt.request_bytes("GET", path))
        expect(len(s.recv(65536)) > 0, "the first bytes of %s" % path)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST on close


# Every way a request can end, each expected status; (None: the client leaves mid-body).
FD_REQUESTS = [
    ("GET", "/big.bin", [], None), ("GET", "/odd.bin", [("Range", "bytes=5-10")], 206),
    ("HEAD", "/big.bin", [], 200), ("GET", "/hello.txt", [], 200),
    ("GET", "/hello.txt/", [], 404), ("GET", "/sub", [], 301), ("GET", "/nodir/", [], 404),
    ("GET", "/.env", [], 404), ("GET", "/hello.txt", [("If-None-Match", "*")], 304),
    ("GET", "/hello.txt", [("Range", "bytes=99999-")], 416),
    ("GET", "/hello.txt", [("If-Match", '"x"')], 412), ("GET", "/missing", [], 404),
]


@case
def no_file_descriptor_leaks(ctx):
    pid, plain = ctx.srv.proc.pid, ctx.srv.ports[0]
    fetch(["--http1.1"], "http://127.0.0.1:%d/hello.txt" % plain)  # warm up
    time.sleep(0.2)
    before = open_fds(pid)
    for i in range(50):
        method, path, headers, status = FD_REQUESTS[i % len(FD_REQUESTS)]
        if status is None:
            cancelled_download(plain, path)
        elif i % 3 == 0:  # the same over HTTP/2 now and then
            name, flags, base = protocols(ctx)[1 + i % 2]
            extra = [a for n, v in headers for a in ("-H", "%s: %s" % (n, v))]
            eq(fetch(flags, base + path, *extra, head=method == "HEAD").status, status,
               "%s %s %s %s" % (name, method, path, headers))
        else:
            eq(nt.http(plain, method, path, headers=headers).status, status,
               "%s %s %s" % (method, path, headers))
    deadline = time.monotonic() + 5
    while open_fds(pid) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    eq(open_fds(pid), before, "open descriptors in the server after 50 requests")


@case
def no_file_left_open_by_earlier_cases(ctx):
    # Served files are open only while their response is: none may be open now.
    time.sleep(0.2)
    fds = "/proc/%d/fd" % ctx.srv.proc.pid
    served = [os.readlink(os.path.join(fds, f)) for f in os.listdir(fds)]
    served = [p for p in served if p.startswith(str(ctx.root))]
    eq(served, [], "files under the root still open in the server")


def setup(opts):
    binary = Path(opts.hello).resolve().parent / "static"
    base = Path(tempfile.mkdtemp(prefix="nook-static-"))
    nt.atexit.register(shutil.rmtree, base, True)
    ctx = type("Ctx", (), {})()
    ctx.root, ctx.files = make_docroot(base)
    ctx.srv = StaticExample(binary, ctx.root).start()
    return (ctx,), (ctx.srv,)


if __name__ == "__main__":
    nt.main(setup)
