"""Opens many idle TLS connections to one server and holds them (bench/run.sh).

    python3 bench/idle.py HOST PORT COUNT [--alpn h2|http/1.1] [--deadline SECONDS]

With ALPN "h2" (the default) each connection completes its TLS handshake, sends the client
preface and an empty SETTINGS frame as a real client does before its first request, waits for
the server's SETTINGS and acknowledges them — the connection is then set up on both sides. With
"http/1.1" it makes one request (GET /) and reads the whole answer, as a browser's keep-alive
connection does before it goes quiet. Then it stays silent. When all COUNT are
open the script prints "open COUNT" and holds them until it is terminated; if they are not all open
by the deadline it prints why and exits 1. Certificates are not checked: the server is local.
"""

import argparse
import asyncio
import signal
import ssl
import sys

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # length 0, type SETTINGS, no flags, stream 0
SETTINGS_TYPE = 4
SETTINGS_ACK = bytes([0, 0, 0, 4, 1, 0, 0, 0, 0])  # length 0, type SETTINGS, ACK, stream 0
HANDSHAKES_AT_ONCE = 64


def client_context(alpn):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # what nook speaks; the same for every server
    ctx.set_alpn_protocols([alpn])
    return ctx


async def open_one(host, port, ctx, want, gate, held):
    async with gate:
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
        alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        if alpn != want:
            raise RuntimeError(f"server chose ALPN {alpn!r}, not {want}")
        if want == "h2":
            writer.write(PREFACE + EMPTY_SETTINGS)
            await writer.drain()
            head = await reader.readexactly(9)
            if head[3] != SETTINGS_TYPE:
                raise RuntimeError(f"first frame from the server has type {head[3]}, not SETTINGS")
            await reader.readexactly(int.from_bytes(head[:3], "big"))
            writer.write(SETTINGS_ACK)
        else:
            writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"answer {head[:40]!r}")
            length = [int(l.split(b":", 1)[1]) for l in head.lower().split(b"\r\n")
                      if l.startswith(b"content-length:")]
            if not length:
                raise RuntimeError("an answer without Content-Length")
            await reader.readexactly(length[0])
        await writer.drain()
        held.append(writer)  # keeps the connection open


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--alpn", default="h2", choices=["h2", "http/1.1"])
    ap.add_argument("--deadline", type=float, default=20.0, help="seconds to open them all")
    args = ap.parse_args()

    ctx = client_context(args.alpn)
    gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
    held = []
    tasks = [asyncio.ensure_future(open_one(args.host, args.port, ctx, args.alpn, gate, held))
             for _ in range(args.count)]
    done, pending = await asyncio.wait(tasks, timeout=args.deadline)
    errors = [t.exception() for t in done if t.exception()]
    if pending or errors:
        for t in pending:
            t.cancel()
        why = f"{len(pending)} still opening at the deadline" if pending else ""
        if errors:
            why += f"{'; ' if why else ''}{len(errors)} failed, first: {errors[0]!r}"
        print(f"idle: only {len(held)} of {args.count} connections open: {why}", flush=True)
        return 1
    print(f"open {len(held)}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for w in held:
        w.transport.abort()  # no close_notify round trips: the measurement is over
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
