#!/usr/bin/env python3
"""Response trailers (nook_res_trailer): a chunked trailer section over HTTP/1.1, a trailing
HEADERS frame over HTTP/2 (what gRPC needs), and dropped when the body is length-delimited.

    python3 test_trailers.py --server PATH/nook_test_server --hello PATH/hello
"""
import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nooktest as nt  # noqa: E402
from nooktest import case, eq, expect  # noqa: E402



@case
def h1_chunked_trailer_section(ctx):
    raw = nt.send_raw(ctx.h1, nt.request_bytes("GET", "/trailers",
                                                headers=[("Connection", "close")]))
    head, _, rest = bytes(raw).partition(b"\r\n\r\n")
    expect(b"Transfer-Encoding: chunked" in head, "a chunked response", head)
    eq(rest, b"4\r\nbody\r\n0\r\ngrpc-status: 0\r\nX-Checksum: abc\r\n\r\n", "chunked body + trailers")


@case
def h1_trailers_over_one_request_then_keep_alive(ctx):
    # The trailer section must end the message exactly: a second request on the connection works.
    raw = nt.send_raw(ctx.h1, nt.request_bytes("GET", "/trailers") +
                      nt.request_bytes("GET", "/", headers=[("Connection", "close")]))
    eq(raw.count(b"HTTP/1.1 200 OK"), 2, "responses on the connection")
    expect(raw.endswith(b"Hello, World!"), "the second response last", raw[-60:])


def nghttp(url):
    p = subprocess.run(["nghttp", "-nv", url], capture_output=True, timeout=30, text=True)
    return p.returncode, p.stdout


@case
def h2_trailers_frame(ctx):
    for url in ("https://127.0.0.1:%d/trailers" % ctx.tls, "http://127.0.0.1:%d/trailers" % ctx.h1):
        rc, out = nghttp(url)
        eq(rc, 0, "nghttp exit code for %s" % url)
        lines = out.splitlines()
        # The trailer fields arrive in a HEADERS frame that carries END_STREAM, after the DATA.
        data_at = next((i for i, l in enumerate(lines) if "recv DATA frame" in l), None)
        status_at = next((i for i, l in enumerate(lines) if "grpc-status: 0" in l), None)
        expect(data_at is not None and status_at is not None and status_at > data_at,
               "grpc-status after the DATA frame (%s)" % url, out[-1500:])
        expect("x-checksum: abc" in out, "x-checksum trailer, lower-case", out[-1500:])
        last_headers = [l for l in lines if "recv HEADERS frame" in l][-1]
        expect("END_STREAM" in out[out.index(last_headers):], "the trailer HEADERS ends the stream",
               last_headers)


@case
def h2_trailers_after_large_data_frames(ctx):
    # 64 KiB of body goes out in DATA frames whose payload nook writes itself (NO_COPY); the
    # trailers still follow the last of them and end the stream.
    for url in ("https://127.0.0.1:%d/trailers?big" % ctx.tls,
                "http://127.0.0.1:%d/trailers?big" % ctx.h1):
        rc, out = nghttp(url)
        eq(rc, 0, "nghttp exit code for %s" % url)
        lines = out.splitlines()
        sizes = [int(re.search(r"length=(\d+)", l).group(1)) for l in lines
                 if "recv DATA frame" in l]
        eq(sum(sizes), 4 + 65536, "body bytes in DATA frames (%s)" % url)
        expect(max(sizes) >= 1024, "large DATA frames", sizes)
        status_at = next((i for i, l in enumerate(lines) if "grpc-status: 0" in l), None)
        last_data = max(i for i, l in enumerate(lines) if "recv DATA frame" in l)
        expect(status_at is not None and status_at > last_data,
               "grpc-status after the last DATA frame (%s)" % url, out[-1500:])
        data_lines = [l for l in lines if "recv DATA frame" in l]
        expect(all("flags=0x00" in l for l in data_lines), "no DATA frame ends the stream",
               data_lines)
        last_headers = [l for l in lines if "recv HEADERS frame" in l][-1]
        expect("END_STREAM" in out[out.index(last_headers):], "the trailer HEADERS ends the stream",
               last_headers)


def setup(opts):
    srv = nt.plain_and_tls_server(opts.server)
    ctx = type("Ctx", (), {})()
    ctx.h1, ctx.tls = srv.ports
    return (ctx,), (srv,)


if __name__ == "__main__":
    nt.main(setup)
