#!/usr/bin/env python3
"""nook_use_compress through examples/static (compression in front of the file server), over
HTTP/1.1, h2c and h2 over TLS: gzip bodies inflate to the original, br decodes (checked with
curl's own decoder), Accept-Encoding q-values decide, small files, images and HEAD stay
uncompressed with their Content-Length, Vary: Accept-Encoding is there, 304/206 are left alone,
and a large body is compressed piece by piece (each piece flushed as it is written). nghttp
gets a gzip file; a stream written in pieces over time (the test server's /gz/pieces) reaches an
HTTP/2 client piece by piece, each inflating whole before the next is written.

    python3 test_mw_compress.py --server PATH/nook_test_server --hello PATH/hello
"""
import hashlib
import os
import random
import re
import shutil
import socket
import sys
import tempfile
import zlib
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
MIN_SIZE = 256  # the default min_size the example uses
PIECE = 65536   # the file server writes the body in pieces of this size


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


def text_lines(n_bytes, seed):
    """Text that compresses like real text does (words, not one repeated byte)."""
    rnd = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"nook", b"server", b"stream", b"piece",
             b"window", b"flush", b"header", b"body"]
    out = bytearray()
    while len(out) < n_bytes:
        out += b" ".join(rnd.choice(words) for _ in range(rnd.randint(3, 12))) + b"\n"
    return bytes(out[:n_bytes])


def make_docroot(root):
    files = {
        "big.txt": text_lines(1_500_000, 1),
        "page.html": b"<!doctype html>" + text_lines(4000, 2),
        "data.json": b'{"items": "' + text_lines(3000, 3).replace(b"\n", b" ") + b'"}',
        "logo.svg": b"<svg xmlns='http://www.w3.org/2000/svg'>" + b"<g/>" * 300 + b"</svg>",
        "small.txt": text_lines(100, 4),
        "edge255.txt": text_lines(MIN_SIZE - 1, 5),
        "edge256.txt": text_lines(MIN_SIZE, 6),
        "photo.png": b"\x89PNG\r\n\x1a\n" + bytes(5000),  # compressible bytes, but an image
        "photo.jpg": bytes(5000),
        "bundle.zip": bytes(5000),
        "blob.bin": bytes(5000),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


def ae(value):
    """curl flags that send Accept-Encoding: value (None: the field with an empty value)."""
    return ("-H", "Accept-Encoding;") if value is None else ("-H", "Accept-Encoding: " + value)


def md5(b):
    return hashlib.md5(b).hexdigest()


def has_vary(r):
    return "accept-encoding" in [v.strip().lower() for v in (r.h("vary") or "").split(",")]


@case
def gzip_inflates_to_the_original(ctx):
    for name, flags, base in protocols(ctx):
        for f in ["big.txt", "page.html", "data.json", "logo.svg", "edge256.txt"]:
            r = fetch(flags, base + "/" + f, *ae("gzip"))
            what = "%s %s" % (name, f)
            eq((r.status, r.h("content-encoding")), (200, "gzip"), "%s: gzip" % what)
            eq(r.h("content-length"), None, "%s: no Content-Length" % what)
            eq(r.h("accept-ranges"), None, "%s: no Accept-Ranges for the encoded body" % what)
            expect(has_vary(r), "%s: Vary: Accept-Encoding" % what, r.headers)
            expect((r.h("etag") or "").startswith('W/"'), "%s: a weak ETag" % what, r.h("etag"))
            expect(len(r.body) < len(ctx.files[f]), "%s: smaller than the original" % what,
                   len(r.body))
            eq(md5(zlib.decompress(r.body, 31)), md5(ctx.files[f]), "%s: inflated md5" % what)


@case
def br_decodes_to_the_original(ctx):
    r = fetch(protocols(ctx)[0][1], protocols(ctx)[0][2] + "/big.txt", *ae("br"))
    if r.h("content-encoding") is None:
        raise nt.Skip("the library was built without Brotli")
    # Python has no Brotli decoder; curl (built with brotli) decodes it with --compressed.
    for name, flags, base in protocols(ctx):
        for f in ["big.txt", "page.html", "logo.svg"]:
            raw = fetch(flags, base + "/" + f, *ae("br"))
            eq(raw.h("content-encoding"), "br", "%s %s: br" % (name, f))
            expect(len(raw.body) < len(ctx.files[f]), "%s %s: smaller" % (name, f),
                   len(raw.body))
            dec = fetch(flags, base + "/" + f, "--compressed", *ae("br"))
            eq(md5(dec.body), md5(ctx.files[f]), "%s %s: decoded md5" % (name, f))


@case
def accept_encoding_q_values(ctx):
    br = fetch(protocols(ctx)[0][1], protocols(ctx)[0][2] + "/page.html", *ae("br"))
    best = "br" if br.h("content-encoding") == "br" else "gzip"
    cases = [("gzip", "gzip"), ("GZIP", "gzip"), ("x-gzip", "gzip"), ("gzip, br", best),
             ("br, gzip", best), ("br;q=0.5, gzip", "gzip"), ("br;q=0.5, gzip;q=0.6", "gzip"),
             ("gzip;q=1.0, br;q=1", best), ("gzip;q=0", None), ("gzip;q=0.000", None),
             ("gzip; q=0, *", "br" if best == "br" else None), ("*", best),
             ("*;q=0.1, gzip;q=0", "br" if best == "br" else None), ("identity", None),
             ("identity;q=0", None), ("*;q=0", None), ("deflate, zstd", None),
             ("gzip;q=0.5, identity;q=1", None), (None, None), ("gzip;q=2", None),
             ("gzip;q=abc, br;q=0", None)]
    for name, flags, base in protocols(ctx):
        for value, want in cases:
            r = fetch(flags, base + "/page.html", *ae(value))
            eq(r.h("content-encoding"), want, "%s Accept-Encoding %r: coding" % (name, value))
            expect(has_vary(r), "%s %r: Vary" % (name, value), r.headers)
            if want is None:
                eq((r.status, r.body), (200, ctx.files["page.html"]),
                   "%s %r: identity body" % (name, value))
                eq(r.h("content-length"), str(len(ctx.files["page.html"])),
                   "%s %r: Content-Length kept" % (name, value))
        r = fetch(flags, base + "/page.html")
        eq((r.h("content-encoding"), r.body), (None, ctx.files["page.html"]),
           "%s: no Accept-Encoding, no compression" % name)
        expect(has_vary(r), "%s: Vary without Accept-Encoding" % name, r.headers)


@case
def small_files_keep_their_length(ctx):
    for name, flags, base in protocols(ctx):
        for f in ["small.txt", "edge255.txt"]:
            r = fetch(flags, base + "/" + f, *ae("gzip, br"))
            eq(r.h("content-encoding"), None, "%s %s: below min_size" % (name, f))
            eq(r.h("content-length"), str(len(ctx.files[f])), "%s %s: Content-Length" % (name, f))
            eq(r.body, ctx.files[f], "%s %s: body" % (name, f))
            expect(has_vary(r), "%s %s: Vary for a compressible type" % (name, f), r.headers)
        r = fetch(flags, base + "/edge256.txt", *ae("gzip"))
        eq(r.h("content-encoding"), "gzip", "%s: min_size itself is compressed" % name)


@case
def images_and_archives_are_not_compressed(ctx):
    for name, flags, base in protocols(ctx):
        for f in ["photo.png", "photo.jpg", "bundle.zip", "blob.bin"]:
            r = fetch(flags, base + "/" + f, *ae("gzip, br"))
            eq(r.h("content-encoding"), None, "%s %s: not compressed" % (name, f))
            eq(r.h("content-length"), str(len(ctx.files[f])), "%s %s: Content-Length" % (name, f))
            eq(r.h("vary"), None, "%s %s: no Vary for a type never compressed" % (name, f))
            eq(r.body, ctx.files[f], "%s %s: body" % (name, f))


@case
def head_304_and_ranges_are_left_alone(ctx):
    for name, flags, base in protocols(ctx):
        h = fetch(flags, base + "/big.txt", *ae("gzip"), head=True)
        eq((h.status, h.h("content-encoding")), (200, None), "%s HEAD: not compressed" % name)
        eq(h.h("content-length"), str(len(ctx.files["big.txt"])), "%s HEAD: length" % name)
        g = fetch(flags, base + "/page.html", *ae("gzip"))
        r = fetch(flags, base + "/page.html", *ae("gzip"), "-H", "If-None-Match: " + g.h("etag"))
        eq((r.status, r.h("content-encoding"), r.body), (304, None, b""),
           "%s: the weak ETag of the gzip body revalidates" % name)
        r = fetch(flags, base + "/big.txt", *ae("gzip"), "-H", "Range: bytes=100-199")
        eq((r.status, r.h("content-encoding")), (206, None), "%s: 206 not compressed" % name)
        eq(r.body, ctx.files["big.txt"][100:200], "%s: 206 body" % name)


@case
def streamed_body_is_flushed_piece_by_piece(ctx):
    """Over HTTP/1.1 the compressed body arrives as chunks; every piece the file server wrote
    was flushed, so the first chunks alone inflate to exactly the first pieces."""
    big = ctx.files["big.txt"]
    with nt.connect(ctx.srv.ports[0], timeout=10) as s:
        s.sendall(nt.request_bytes("GET", "/big.txt", [("Accept-Encoding", "gzip")]))
        r = nt.Reader(s, timeout=10).read_response()
    eq((r.status, r.header("content-encoding"), r.chunked), (200, "gzip", True),
       "status, coding, chunked")
    expect(len(r.chunk_sizes) >= len(big) // PIECE, "a chunk or more per 64 KiB piece",
           r.chunk_sizes)
    eq(md5(zlib.decompress(r.body, 31)), md5(big), "whole body inflated")
    # Feed the stream chunk by chunk: output must come out in whole pieces as it goes.
    d = zlib.decompressobj(31)
    out, pos, boundaries = b"", 0, set()
    for size in r.chunk_sizes:
        out += d.decompress(r.body[pos:pos + size])
        pos += size
        boundaries.add(len(out))
    for k in range(1, len(big) // PIECE):
        expect(k * PIECE in boundaries, "the first %d KiB inflated from the chunks before the "
               "next piece" % (k * 64), sorted(boundaries)[:8])
    eq(out + d.flush(), big, "incremental inflate")


@case
def cancelled_compressed_downloads_free_their_encoders(ctx):
    # LeakSanitizer checks at exit that every encoder was freed; here clients leave mid-body.
    for i in range(20):
        with nt.connect(ctx.srv.ports[0]) as s:
            s.sendall(nt.request_bytes("GET", "/big.txt",
                                       [("Accept-Encoding", "br" if i % 2 else "gzip")]))
            expect(len(s.recv(4096)) > 0, "the first bytes")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    for name, flags, base in protocols(ctx)[1:]:
        # HTTP/2: a slow reader that gives up after half a second resets its stream.
        rc, _, _ = nt.curl("-s", "-o", "/dev/null", "--limit-rate", "20k", "-m", "0.5", *flags,
                           *ae("gzip"), base + "/big.txt")
        eq(rc, 28, "%s: curl gave up mid-body (timeout)" % name)
        r = fetch(flags, base + "/page.html", *ae("gzip"))
        eq(zlib.decompress(r.body, 31), ctx.files["page.html"], "%s: still serving" % name)


@case
def nghttp_gets_a_gzip_static_file(ctx):
    # nghttp asks for "gzip, deflate" and inflates what it receives.
    plain, tls = ctx.srv.ports
    for name, base in (("h2c", "http://127.0.0.1:%d" % plain),
                       ("h2-tls", "https://127.0.0.1:%d" % tls)):
        rc, out, err = nt.run_tool(["nghttp", "-nv", base + "/page.html"], timeout=20)
        text = out.decode("utf-8", "replace")
        eq(rc, 0, "%s: nghttp exit code (stderr %s)" % (name, err[-300:]))
        recv = dict(re.findall(r"recv \(stream_id=\d+\) ([^:\s][^:]*|:status): (.*)$", text, re.M))
        eq((recv.get(":status"), recv.get("content-encoding")), ("200", "gzip"),
           "%s: status and coding" % name)
        rc, out, err = nt.run_tool(["nghttp", base + "/page.html"], timeout=20)
        eq((rc, md5(out)), (0, md5(ctx.files["page.html"])), "%s: inflated body" % name)


# ---------------------------------------------------------------------------------------------
# A compressed stream over HTTP/2: every piece is flushed when it is written (the test server's
# /gz/pieces writes a piece, waits, writes the next, from callbacks posted by another thread)
# ---------------------------------------------------------------------------------------------

def piece_text(k, size):
    """Piece k of /gz/pieces, as the test server builds it."""
    head = b"piece %d\n" % k
    words = b"nook streams compressed pieces "
    return head + (words * (size // len(words) + 1))[:size - len(head)]


def h2_timed_get(port, tls, path, headers=()):
    """One GET over h2c or h2 over TLS with the h2 library. Returns (response headers,
    [(seconds since the request, inflated bytes so far)] per DATA frame, seconds at the end of
    the stream, the raw body)."""
    import time
    raw, arrivals, inflater, inflated = bytearray(), [], zlib.decompressobj(31), 0

    def on_data(_sid, data):
        nonlocal inflated
        raw.extend(data)
        inflated += len(inflater.decompress(data))
        arrivals.append((time.monotonic() - t0, inflated))

    with nt.connect_h2(port, tls, timeout=10) as s:
        c = nt.H2Client(s, "https" if tls else "http")
        t0 = time.monotonic()
        sid = c.send_get(path, headers)
        r = c.read([sid], on_data=on_data)[sid]
        t_end = time.monotonic() - t0
        expect(r.ended, "the stream to end, not to be reset", r.reset)
        return r.headers, arrivals, t_end, bytes(raw)


@case
def compressed_stream_over_h2_is_flushed_piece_by_piece(ctx):
    n, size, ms = 4, 3000, 300
    want = b"".join(piece_text(k, size) for k in range(n))
    plain, tls = ctx.ts.ports
    for name, port, is_tls in (("h2c", plain, False), ("h2-tls", tls, True)):
        hdrs, arrivals, t_end, raw = h2_timed_get(
            port, is_tls, "/gz/pieces?n=%d&size=%d&ms=%d" % (n, size, ms),
            [("accept-encoding", "gzip")])
        eq((hdrs.get(":status"), hdrs.get("content-encoding")), ("200", "gzip"),
           "%s: status and coding" % name)
        expect("accept-encoding" in hdrs.get("vary", "").lower(), "%s: Vary" % name, hdrs)
        eq(zlib.decompress(raw, 31), want, "%s: the whole body inflated" % name)
        # What has arrived inflates to exactly k whole pieces, for each k in turn, about one
        # interval apart: each piece was flushed when it was written, none waited for the next.
        reached = {got: t for t, got in reversed(arrivals)}  # inflated total -> first time
        times = []
        for k in range(1, n + 1):
            expect(k * size in reached, "%s: the bytes received inflate to exactly %d piece(s) "
                   "at some point" % (name, k), [got for _, got in arrivals])
            times.append(reached[k * size])
        for k in range(1, n):
            expect(times[k] - times[k - 1] >= ms / 1000.0 * 0.5,
                   "%s: piece %d whole about %d ms after piece %d" % (name, k, ms, k - 1),
                   ["%.3f" % t for t in times])
        t_first = times[0]
        expect(t_end - t_first >= (n - 1) * ms / 1000.0 * 0.8,
               "%s: the first piece %.2f s or more before the end" % (name, (n - 1) * ms / 1000.0),
               "first at %.3f s, end at %.3f s" % (t_first, t_end))
        print("measure: %s compressed stream: first piece inflated at %.3f s, end at %.3f s, "
              "%d DATA frames, %d bytes for %d" % (name, t_first, t_end, len(arrivals), len(raw),
                                                   len(want)))


def setup(opts):
    binary = Path(opts.hello).resolve().parent / "static"
    base = Path(tempfile.mkdtemp(prefix="nook-compress-"))
    nt.atexit.register(shutil.rmtree, base, True)
    ctx = type("Ctx", (), {})()
    ctx.files = make_docroot(base)
    ctx.srv = StaticExample(binary, base).start()
    ctx.ts = nt.plain_and_tls_server(opts.server, "--threads", "2")
    return (ctx,), (ctx.srv, ctx.ts)


if __name__ == "__main__":
    nt.main(setup)
