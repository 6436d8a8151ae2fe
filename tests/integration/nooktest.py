"""
nooktest — the shared harness of nook's integration tests (not a test itself).

Every test_*.py is run as `python3 test_x.py --server PATH --hello PATH` (see CMakeLists.txt).
It registers cases with @case, starts the servers it needs, and calls run_cases(); finish()
prints "N passed, M failed" and exits 1 if anything failed.

Pieces:
  parse_args()              the --server / --hello flags (unknown extra args are ignored)
  TestServer / HelloServer  a server process; a context manager that always stops it and then
                            checks it: exit code 0, no sanitizer report in stderr
  connect / send_raw        raw sockets (always with a timeout)
  Reader / Response         a strict HTTP/1.1 response reader (Content-Length, chunked, EOF)
  H2Client / H2Stream       an HTTP/2 client (python3-h2) over any socket: GETs on one or more
                            streams, every stream's status, headers, body, end or reset
  curl()                    /usr/bin/curl with a timeout
  case / check / run_cases / finish   the tiny test registry

Nothing here may hang: every socket has a timeout (5 s unless told otherwise), every subprocess
and every wait has a deadline.
"""
import argparse
import atexit
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

DEFAULT_TIMEOUT = 5.0
CURL = "/usr/bin/curl" if os.path.exists("/usr/bin/curl") else "curl"
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                     "WARNING: ThreadSanitizer")


def parse_args(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True, help="path to nook_test_server")
    p.add_argument("--hello", required=True, help="path to the hello example")
    opts, _unknown = p.parse_known_args(argv)
    return opts


def short(v, limit=300):
    """repr() of a value, cut to a readable length for failure messages."""
    r = repr(v)
    if len(r) > limit:
        r = r[:limit] + "...(%d chars)" % len(r)
    return r


# ---------------------------------------------------------------------------------------------
# Assertions
# ---------------------------------------------------------------------------------------------

class Skip(Exception):
    """Raised by a case that cannot run here (e.g. no IPv6 loopback)."""


def expect(cond, what, got=None):
    """Fails with 'expected <what>, got <got>' unless cond is true."""
    if not cond:
        raise AssertionError("expected %s, got %s" % (what, short(got)))


def eq(got, want, what="value"):
    if got != want:
        raise AssertionError("expected %s %s, got %s" % (what, short(want), short(got)))


# ---------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------

_live_servers = []


def _kill_leftovers():
    for s in list(_live_servers):
        s.kill()


atexit.register(_kill_leftovers)


class ServerProcess:
    """A server process whose stdout/stderr go to temporary files (so a chatty server never
    blocks on a full pipe). Use as a context manager, or call start() and stop_and_check()."""

    def __init__(self, argv, name):
        self.argv = list(argv)
        self.name = name
        self.proc = None
        self.ports = []
        self.returncode = None
        self._out = None
        self._err = None
        self._saved = {}
        self._term_sent = False

    # -- output files (deleted once the process is gone; their text is kept) --
    def _read(self, which):
        f = self._out if which == "out" else self._err
        if f is None:
            return self._saved.get(which, "")
        try:
            f.flush()
            with open(f.name, "rb") as g:
                return g.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return self._saved.get(which, "")

    def stdout(self):
        return self._read("out")

    def stderr(self):
        return self._read("err")

    # -- lifecycle --
    def _spawn(self):
        self._out = tempfile.NamedTemporaryFile(prefix="nook-it-out-", delete=False)
        self._err = tempfile.NamedTemporaryFile(prefix="nook-it-err-", delete=False)
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, close_fds=True)
        _live_servers.append(self)

    def _wait_lines(self, pattern, count, source, timeout=10.0):
        """Waits until `count` lines matching `pattern` appear in stdout/stderr; returns the
        first groups. Raises if the process exits first or the deadline passes."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            text = self.stdout() if source == "stdout" else self.stderr()
            found = [int(m.group(1)) for m in rx.finditer(text)]
            if len(found) >= count:
                return found[:count]
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError("expected %s to print %d %r line(s), got exit code %s; "
                                     "stdout=%s stderr=%s" % (self.name, count, pattern, rc,
                                                              short(self.stdout()),
                                                              short(self.stderr(), 2000)))
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("expected %s to print %d %r line(s) within %.0f s, got "
                                     "stdout=%s stderr=%s" % (self.name, count, pattern, timeout,
                                                              short(self.stdout()),
                                                              short(self.stderr(), 2000)))
            time.sleep(0.02)

    @property
    def port(self):
        return self.ports[0]

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig=signal.SIGTERM):
        if self.alive():
            self.proc.send_signal(sig)
            if sig == signal.SIGTERM:
                self._term_sent = True

    def wait(self, timeout):
        """Waits up to timeout seconds; returns the exit code or None if still running."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self in _live_servers:
            _live_servers.remove(self)
        if self.proc is not None and self.proc.poll() is not None:
            self.cleanup_files()

    def stop(self, timeout=10.0):
        """SIGTERM, wait up to `timeout` s, then SIGKILL. Returns a list of problems (empty when
        the server exited 0 with no sanitizer report)."""
        problems = []
        if self.proc is None:
            return ["%s was never started" % self.name]
        if self.proc.poll() is None:
            # One SIGTERM only: a test that already sent one is waiting for the drain, and a
            # second signal racing with the server's own exit is a different test.
            if not self._term_sent:
                self.signal(signal.SIGTERM)
            rc = self.wait(timeout)
            if rc is None:
                problems.append("expected %s to exit within %.0f s of SIGTERM, got still running "
                                "(killed)" % (self.name, timeout))
                self.kill()
        self.returncode = self.proc.poll()
        if self in _live_servers:
            _live_servers.remove(self)
        problems += self.check_exit()
        if self.returncode is not None:
            self.cleanup_files()
        return problems

    def check_exit(self):
        problems = []
        rc = self.proc.poll()
        if rc is not None and rc != 0:
            problems.append("expected %s exit code 0, got %s" % (self.name, rc))
        err = self.stderr()
        for marker in SANITIZER_MARKERS:
            if marker in err:
                problems.append("expected no %r in %s stderr, got one" % (marker, self.name))
        return problems

    def report(self, problems):
        """Prints the problems and the server's stderr (for a failure message)."""
        if problems:
            err = self.stderr()
            sys.stdout.write("---- %s stderr (%d bytes, last 8000 shown) ----\n%s\n---- end ----\n"
                             % (self.name, len(err), err[-8000:]))
            sys.stdout.flush()

    def stop_and_check(self):
        """Stops the server; raises AssertionError naming every problem (after printing
        stderr)."""
        problems = self.stop()
        if problems:
            self.report(problems)
            raise AssertionError("; ".join(problems))

    def cleanup_files(self):
        """Keeps the output text in memory and deletes the files (idempotent)."""
        for which in ("out", "err"):
            f = self._out if which == "out" else self._err
            if f is None:
                continue
            self._saved[which] = self._read(which)
            if which == "out":
                self._out = None
            else:
                self._err = None
            try:
                f.close()
                os.unlink(f.name)
            except OSError:
                pass

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        problems = self.stop()
        if problems:
            self.report(problems)
            if exc_type is None:
                raise AssertionError("; ".join(problems))
            # the body already failed: keep its exception, but say what else went wrong
            sys.stdout.write("(also: %s)\n" % "; ".join(problems))
        return False


class TestServer(ServerProcess):
    """nook_test_server [--listen ADDR]... [other args]; reads one 'port P' line per listener."""

    __test__ = False

    def __init__(self, binary, *args, listen=("127.0.0.1:0",)):
        if isinstance(listen, str):
            listen = (listen,)
        argv = [binary]
        for a in listen:
            argv += ["--listen", a]
        argv += list(args)
        super().__init__(argv, "nook_test_server")
        self.nlisten = len(listen)

    def start(self, timeout=10.0):
        self._spawn()
        self.ports = self._wait_lines(r"^port (\d+)$", self.nlisten, "stdout", timeout)
        return self


class HelloServer(ServerProcess):
    """hello --listen 127.0.0.1:PORT --threads N, on a port picked here (hello cannot be told to
    use port 0 and report it to us on stdout, so we pick a free one and retry on a clash)."""

    def __init__(self, binary, threads=2, host="127.0.0.1"):
        super().__init__([binary], "hello")
        self.binary = binary
        self.threads = threads
        self.host = host

    def start(self, timeout=10.0, attempts=5):
        last = None
        for _ in range(attempts):
            port = free_port(self.host)
            self.argv = [self.binary, "--listen", "%s:%d" % (self.host, port),
                         "--threads", str(self.threads)]
            self._spawn()
            try:
                self.ports = self._wait_lines(r"hello: listening on port (\d+)", 1, "stderr",
                                              timeout)
            except AssertionError as e:  # e.g. the port was taken meanwhile: try another
                last = e
                self.kill()
                continue
            if self.ports[0] != port:
                raise AssertionError("expected hello to listen on port %d, got %d"
                                     % (port, self.ports[0]))
            return self
        raise last


def free_port(host="127.0.0.1"):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def have_ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# Raw sockets
# ---------------------------------------------------------------------------------------------

def connect(addr, timeout=DEFAULT_TIMEOUT):
    """addr: a port (127.0.0.1), a (host, port) tuple, or a Unix socket path (str)."""
    if isinstance(addr, int):
        addr = ("127.0.0.1", addr)
    if isinstance(addr, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(addr)
        return s
    fam = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(addr)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def connect_h2(port, tls, timeout=DEFAULT_TIMEOUT):
    """A socket for an HTTP/2 client to 127.0.0.1:port: cleartext (h2c), or TLS offering only
    ALPN h2 (the test certificate is not verified)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if not tls:
        return s
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    return ctx.wrap_socket(s, server_hostname="localhost")


class H2Stream:
    """What came back on one HTTP/2 stream: status (int, 0 before the head), headers (dict of
    str), body (bytes; empty when an on_data callback took it), ended (END_STREAM seen), reset
    (the RST_STREAM error code, or None)."""

    def __init__(self):
        self.status, self.headers, self.body, self.ended, self.reset = 0, {}, b"", False, None


class H2Client:
    """One HTTP/2 client connection driven with python3-h2 over `sock` (a socket, a TLS socket,
    or anything with sendall, recv and close; connect_h2 makes one).

    window: None keeps the default 65,535-byte windows, handed back as DATA is read (the reader
    sets the pace); a number opens the connection's and every stream's window that wide at the
    start (the server writes as fast as its socket lets it)."""

    def __init__(self, sock, scheme, window=None):
        import h2.config
        import h2.connection
        import h2.settings
        self.sock, self.scheme = sock, scheme
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        if window:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
            self.conn.increment_flow_control_window(window - 65535)
        self.flush()

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def send_get(self, path, headers=(), authority="127.0.0.1"):
        """Opens a stream with GET path (END_STREAM on the HEADERS); returns its id."""
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "GET"), (":path", path),
                                     (":scheme", self.scheme), (":authority", authority)]
                               + list(headers), end_stream=True)
        self.flush()
        return sid

    def read(self, ids, on_data=None, before_recv=None):
        """Reads until every stream in ids has ended or been reset; returns {id: H2Stream}.
        on_data(id, bytes) takes each DATA payload instead of the body; before_recv(n) runs
        before each recv with the bytes read from the socket so far. A connection that closes
        or says GOAWAY first is a failure (AssertionError)."""
        import h2.events as ev
        got = {sid: H2Stream() for sid in ids}
        bodies = {sid: bytearray() for sid in ids}
        todo, received = set(ids), 0
        while todo:
            if before_recv:
                before_recv(received)
            data = self.sock.recv(65536)
            expect(data, "the HTTP/2 connection to stay open until streams %s are answered"
                   % sorted(todo))
            received += len(data)
            for e in self.conn.receive_data(data):
                if isinstance(e, ev.ConnectionTerminated):
                    raise AssertionError("expected streams %s to be answered, got GOAWAY %s"
                                         % (sorted(todo), e.error_code))
                if isinstance(e, ev.DataReceived):  # whichever stream: the window reopens
                    self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                st = got.get(getattr(e, "stream_id", None))
                if st is None:
                    continue
                if isinstance(e, ev.ResponseReceived):
                    st.headers = dict(e.headers)
                    st.status = int(st.headers.get(":status", 0))
                elif isinstance(e, ev.DataReceived):
                    if on_data:
                        on_data(e.stream_id, e.data)
                    else:
                        bodies[e.stream_id] += e.data
                elif isinstance(e, ev.StreamEnded):
                    st.ended = True
                    todo.discard(e.stream_id)
                elif isinstance(e, ev.StreamReset):
                    st.reset = e.error_code
                    todo.discard(e.stream_id)
            self.flush()
        for sid, st in got.items():
            st.body = bytes(bodies[sid])
        return got

    def get(self, path, headers=()):
        """One GET, answered before anything else is asked: its H2Stream."""
        sid = self.send_get(path, headers)
        return self.read([sid])[sid]

    def close(self):
        self.sock.close()


class RawResult(bytes):
    """The bytes send_raw received, plus how the exchange ended: .eof (the server closed:
    FIN or RST), .reset (RST seen), .timed_out (no EOF before the deadline), .elapsed (s),
    .unsent (request bytes never sent because the server answered or closed first)."""


def _send_bytes(s, data, one_byte_at_a_time):
    """Sends data; returns how many bytes were NOT sent because the server had already answered
    or closed (one-byte mode stops as soon as something is readable)."""
    try:
        if not one_byte_at_a_time:
            s.sendall(data)
            return 0
        for i in range(len(data)):
            r, _, _ = select.select([s], [], [], 0)
            if r:  # the server answered (or closed) early: stop feeding it
                return len(data) - i
            s.sendall(data[i:i + 1])
        return 0
    except (BrokenPipeError, ConnectionResetError):
        return -1


def recv_until_close(s, timeout=DEFAULT_TIMEOUT, initial=b""):
    """Reads until EOF/RST or until `timeout` seconds pass without EOF. Returns RawResult."""
    buf = bytearray(initial)
    reset = timed_out = False
    deadline = time.monotonic() + timeout
    t0 = time.monotonic()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        s.settimeout(left)
        try:
            chunk = s.recv(262144)
        except socket.timeout:
            timed_out = True
            break
        except ConnectionResetError:
            reset = True
            break
        if not chunk:
            break
        buf += chunk
    r = RawResult(bytes(buf))
    r.eof = not timed_out
    r.reset = reset
    r.timed_out = timed_out
    r.elapsed = time.monotonic() - t0
    return r


def send_raw(addr, data, one_byte_at_a_time=False, timeout=DEFAULT_TIMEOUT):
    """Connects, sends `data` (whole, or one byte per send()), and returns every byte received
    until the server closes the connection or `timeout` seconds pass (a RawResult)."""
    with connect(addr, timeout) as s:
        unsent = _send_bytes(s, data, one_byte_at_a_time)
        r = recv_until_close(s, timeout)
        r.unsent = unsent
        return r


# ---------------------------------------------------------------------------------------------
# A strict HTTP/1.1 response reader
# ---------------------------------------------------------------------------------------------

class ProtocolError(AssertionError):
    """The server's bytes are not a valid HTTP/1.1 response."""


class Response:
    def __init__(self):
        self.version = None
        self.status = None
        self.reason = None
        self.header_list = []  # [(name, value)] as sent
        self.headers = {}      # lower-case name -> value (repeated fields joined with ", ")
        self.head = b""        # the raw head, status line to the blank line
        self.body = b""
        self.chunked = False
        self.chunk_sizes = []
        self.trailers = []

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def has(self, name):
        return name.lower() in self.headers

    def __repr__(self):
        return "<Response %s %s %s body=%s>" % (self.status, self.reason, self.header_list,
                                               short(self.body, 80))


_STATUS_RX = re.compile(rb"^HTTP/(1\.[01]) ([0-9]{3}) ([\x20-\x7e\t]*)$")
_TOKEN_RX = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class Reader:
    """Reads HTTP/1.1 responses from a socket (or from bytes already received). Strict: CRLF line
    endings, valid status line, header names are tokens, framing as RFC 9112 section 6."""

    def __init__(self, sock=None, data=b"", timeout=DEFAULT_TIMEOUT):
        self.sock = sock
        self.buf = bytearray(data)
        self.pos = 0
        self.eof = sock is None
        self.reset = False
        self.timeout = timeout
        self.recv_size = 262144
        self.before_recv = None  # optional hook(reader), e.g. to read slowly
        self.received = len(data)
        if sock is not None:
            sock.settimeout(timeout)

    # -- buffer --
    def available(self):
        return len(self.buf) - self.pos

    def _compact(self):
        if self.pos > (1 << 20):
            del self.buf[:self.pos]
            self.pos = 0

    def fill(self):
        """Receives more bytes; False at EOF/RST."""
        if self.eof:
            return False
        if self.before_recv is not None:
            self.before_recv(self)
        try:
            chunk = self.sock.recv(self.recv_size)
        except socket.timeout:
            raise AssertionError("expected more response bytes within %.0f s, got a timeout "
                                 "(%d bytes buffered: %s)" % (self.timeout, self.available(),
                                                              short(bytes(self.buf[self.pos:]), 200)))
        except ConnectionResetError:
            self.eof = self.reset = True
            return False
        if not chunk:
            self.eof = True
            return False
        self._compact()
        self.buf += chunk
        self.received += len(chunk)
        return True

    def read_line(self, limit=65536):
        """One CRLF-terminated line without the CRLF."""
        while True:
            i = self.buf.find(b"\n", self.pos)
            if i >= 0:
                line = bytes(self.buf[self.pos:i + 1])
                self.pos = i + 1
                if not line.endswith(b"\r\n"):
                    raise ProtocolError("expected a CRLF line ending from the server, got %s"
                                        % short(line))
                return line[:-2]
            if self.available() > limit:
                raise ProtocolError("expected a line under %d bytes, got more" % limit)
            if not self.fill():
                raise ProtocolError("expected a complete line, got EOF after %s"
                                    % short(bytes(self.buf[self.pos:]), 200))

    def read_exact(self, n):
        while self.available() < n:
            if not self.fill():
                raise ProtocolError("expected %d more body bytes, got EOF after %d"
                                    % (n, self.available()))
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def read_to_eof(self):
        while self.fill():
            pass
        out = bytes(self.buf[self.pos:])
        self.pos = len(self.buf)
        return out

    def at_eof(self, timeout=DEFAULT_TIMEOUT):
        """True if the server closes the connection (FIN or RST) with nothing more sent within
        `timeout`; raises if bytes arrive; False on timeout."""
        if self.available():
            raise AssertionError("expected the connection to close with nothing more, got %s"
                                 % short(bytes(self.buf[self.pos:]), 200))
        if self.eof:
            return True
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(4096)
        except socket.timeout:
            return False
        except ConnectionResetError:
            self.eof = self.reset = True
            return True
        finally:
            self.sock.settimeout(old)
        if chunk:
            raise AssertionError("expected the connection to close with nothing more, got %s"
                                 % short(chunk, 200))
        self.eof = True
        return True

    # -- responses --
    def read_head(self):
        start = self.pos
        # a response must start here: check for garbage right away
        line = self.read_line()
        m = _STATUS_RX.match(line)
        if not m:
            raise ProtocolError("expected a status line 'HTTP/1.x NNN reason', got %s" % short(line))
        r = Response()
        r.version = m.group(1).decode()
        r.status = int(m.group(2))
        r.reason = m.group(3).decode("latin-1")
        while True:
            line = self.read_line()
            if line == b"":
                break
            name, sep, value = line.partition(b":")
            if not sep or not _TOKEN_RX.match(name):
                raise ProtocolError("expected a header line 'name: value', got %s" % short(line))
            value = value.strip(b" \t")
            n, v = name.decode("latin-1"), value.decode("latin-1")
            r.header_list.append((n, v))
            k = n.lower()
            r.headers[k] = r.headers[k] + ", " + v if k in r.headers else v
        r.head = bytes(self.buf[start:self.pos])
        return r

    def read_response(self, method="GET", allow_1xx=False):
        """The next response. With allow_1xx False, interim (1xx) responses are returned like
        any other (with no body); the caller decides. HEAD / 1xx / 204 / 304 have no body."""
        r = self.read_head()
        te = r.header("transfer-encoding")
        cl = r.header("content-length")
        if 100 <= r.status < 200 or r.status in (204, 304) or method == "HEAD":
            if r.status in (204,) or 100 <= r.status < 200:
                if te is not None or cl is not None:
                    raise ProtocolError("expected no Content-Length/Transfer-Encoding on a %d "
                                        "response, got %s" % (r.status, r.header_list))
            return r
        if te is not None:
            if cl is not None:
                raise ProtocolError("expected Content-Length or Transfer-Encoding, got both: %s"
                                    % r.header_list)
            if te.lower() != "chunked":
                raise ProtocolError("expected Transfer-Encoding: chunked, got %r" % te)
            r.chunked = True
            r.body = self._read_chunked(r)
        elif cl is not None:
            if not re.fullmatch(r"[0-9]+", cl):
                raise ProtocolError("expected a numeric Content-Length, got %r" % cl)
            r.body = self.read_exact(int(cl))
        else:
            r.body = self.read_to_eof()
        return r

    def _read_chunked(self, r):
        parts = []
        while True:
            line = self.read_line()
            size_txt = line.split(b";", 1)[0].strip(b" \t")
            if not re.fullmatch(rb"[0-9A-Fa-f]+", size_txt):
                raise ProtocolError("expected a hex chunk size, got %s" % short(line))
            size = int(size_txt, 16)
            if size == 0:
                break
            r.chunk_sizes.append(size)
            parts.append(self.read_exact(size))
            crlf = self.read_exact(2)
            if crlf != b"\r\n":
                raise ProtocolError("expected CRLF after chunk data, got %s" % short(crlf))
        while True:
            line = self.read_line()
            if line == b"":
                break
            r.trailers.append(line)
        return b"".join(parts)


def parse_responses(data, methods=None):
    """Every response in a byte string (e.g. from send_raw). methods: the request methods in
    order (for HEAD), default all GET."""
    rd = Reader(data=data)
    out = []
    i = 0
    while rd.available():
        m = methods[i] if methods and i < len(methods) else "GET"
        out.append(rd.read_response(m))
        i += 1
    return out


def request_bytes(method, path, headers=None, body=None, version="HTTP/1.1", host="127.0.0.1"):
    """Builds a request. headers: list of (name, value); Host is added first unless present or
    host is None; Content-Length is added for a body unless a framing header is present."""
    headers = list(headers or [])
    names = [n.lower() for n, _ in headers]
    if host is not None and "host" not in names:
        headers.insert(0, ("Host", host))
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        headers.append(("Content-Length", str(len(body))))
    out = "%s %s %s\r\n" % (method, path, version)
    out = out.encode("latin-1")
    for n, v in headers:
        out += (n if isinstance(n, bytes) else n.encode("latin-1")) + b": " + \
               (v if isinstance(v, bytes) else v.encode("latin-1")) + b"\r\n"
    out += b"\r\n"
    if body is not None:
        out += body
    return out


def http(addr, method, path, headers=None, body=None, timeout=DEFAULT_TIMEOUT):
    """One request on a fresh connection; returns the Response (the connection is closed)."""
    with connect(addr, timeout) as s:
        s.sendall(request_bytes(method, path, headers, body))
        return Reader(s, timeout=timeout).read_response(method)


# ---------------------------------------------------------------------------------------------
# curl
# ---------------------------------------------------------------------------------------------

def curl(*args, timeout=60):
    """Runs curl with the given arguments; returns (rc, stdout bytes, stderr str)."""
    argv = [CURL] + [str(a) for a in args]
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("expected curl to finish within %d s, got a timeout: %s"
                             % (timeout, " ".join(argv)))
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def curl_verbose_responses(stderr):
    """From `curl -v` stderr: a list of (status, [(name, value)]) for every response head."""
    out = []
    for line in stderr.splitlines():
        if not line.startswith("< "):
            continue
        line = line[2:].rstrip("\r")
        m = re.match(r"HTTP/[0-9.]+ (\d{3})", line)
        if m:
            out.append((int(m.group(1)), []))
        elif line and out:
            n, _, v = line.partition(":")
            out[-1][1].append((n, v.strip()))
    return out


def pattern(n):
    """n bytes of 'a'..'z' cycling, as the test server's /stream chunks and /big bodies."""
    alphabet = b"abcdefghijklmnopqrstuvwxyz"
    return (alphabet * (n // 26 + 1))[:n]


def first_diff(a, b):
    n = min(len(a), len(b))
    for i in range(0, n, 65536):
        if a[i:i + 65536] != b[i:i + 65536]:
            for j in range(i, min(i + 65536, n)):
                if a[j] != b[j]:
                    return j
    return n if len(a) != len(b) else -1


def same_bytes(got, want, what="body"):
    if got != want:
        i = first_diff(got, want)
        raise AssertionError("expected %s of %d bytes, got %d bytes (first difference at offset "
                             "%d: want %s, got %s)" % (what, len(want), len(got), i,
                                                       short(want[i:i + 20]), short(got[i:i + 20])))


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

_cases = []
_passed = 0
_failed = 0


def case(fn):
    """Registers a test case; cases run in definition order."""
    _cases.append(fn)
    return fn


def check(name, fn, *args):
    """Runs one check now and records it: prints 'ok name' or 'FAIL name: message'."""
    global _passed, _failed
    t0 = time.monotonic()
    try:
        fn(*args)
    except Skip as e:
        _passed += 1
        print("ok %s (skipped: %s)" % (name, e))
    except AssertionError as e:
        _failed += 1
        print("FAIL %s: %s" % (name, e))
    except Exception as e:  # an unexpected error is a failure too, with its traceback
        _failed += 1
        print("FAIL %s: expected no exception, got %s: %s" % (name, type(e).__name__, e))
        traceback.print_exc(file=sys.stdout)
    else:
        _passed += 1
        dt = time.monotonic() - t0
        print("ok %s%s" % (name, " (%.1f s)" % dt if dt >= 1 else ""))
    sys.stdout.flush()


def run_cases(*args, watch=()):
    """Runs every @case in order with *args. `watch`: servers that must stay up; if one has
    died after a case, that case fails and the rest are reported as not run."""
    dead = None
    for fn in _cases:
        name = fn.__name__
        if dead is not None:
            check(name, _fail_now, "expected %s to be running, got it exited (code %s) earlier"
                  % (dead.name, dead.proc.poll()))
            continue
        check(name, fn, *args)
        for srv in watch:
            if not srv.alive():
                dead = srv
                check(name + " (server still running)", _fail_now,
                      "expected %s to keep running, got exit code %s" % (srv.name, srv.proc.poll()))
                srv.report(["died"])


def _fail_now(msg):
    raise AssertionError(msg)


def finish():
    """Stops any server still running, prints the summary line, exits 1 on any failure."""
    for s in list(_live_servers):
        check("%s stops cleanly" % s.name, s.stop_and_check)
    print("%d passed, %d failed" % (_passed, _failed))
    sys.stdout.flush()
    sys.exit(1 if _failed else 0)


def main(cases_args_fn):
    """The usual test file body: parse flags, let cases_args_fn(opts) start shared servers and
    return (args, watch), run the cases, stop the shared servers (each stop is a check), and
    exit with the summary."""
    opts = parse_args()
    try:
        args, watch = cases_args_fn(opts)
    except AssertionError as e:
        check("setup", _fail_now, str(e))
        finish()
    run_cases(*args, watch=watch)
    for srv in watch:
        check("%s stops cleanly" % srv.name, srv.stop_and_check)
    finish()


# ---------------------------------------------------------------------------------------------
# TLS servers and external tools (openssl, nghttp, h2load, chromium)
# ---------------------------------------------------------------------------------------------

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


def cert_files(name="localhost"):
    """(cert path, key path) of tests/data/NAME.crt/.key."""
    return (os.path.join(DATA_DIR, name + ".crt"), os.path.join(DATA_DIR, name + ".key"))


class TlsTestServer(TestServer):
    """nook_test_server with `cleartext` cleartext listeners first, then --tls-cert/--tls-key and
    `tls` TLS listeners (all on `host`, port 0), then `args`. .clear_ports / .tls_ports (and
    .clear_port / .tls_port, the first of each) are known after start()."""

    __test__ = False

    def __init__(self, binary, *args, cleartext=1, tls=1, cert="localhost", host="127.0.0.1"):
        addr = "[%s]:0" % host if ":" in host else "%s:0" % host
        super().__init__(binary, listen=())
        crt, key = cert_files(cert)
        self.argv = [binary]
        for _ in range(cleartext):
            self.argv += ["--listen", addr]
        self.argv += ["--tls-cert", crt, "--tls-key", key]
        for _ in range(tls):
            self.argv += ["--listen", addr]
        self.argv += list(args)
        self.nlisten = cleartext + tls
        self.ncleartext = cleartext

    @property
    def clear_ports(self):
        return self.ports[:self.ncleartext]

    @property
    def tls_ports(self):
        return self.ports[self.ncleartext:]

    @property
    def clear_port(self):
        return self.clear_ports[0]

    @property
    def tls_port(self):
        return self.tls_ports[0]


def run_tool(argv, timeout=30, input=None):
    """Runs an external program; returns (rc, stdout bytes, stderr str). stdin is `input`
    (bytes) or /dev/null. A timeout is a failure naming the command."""
    argv = [str(a) for a in argv]
    try:
        p = subprocess.run(argv, input=input,
                           stdin=None if input is not None else subprocess.DEVNULL,
                           capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("expected %s to finish within %s s, got a timeout"
                             % (" ".join(argv), timeout))
    except FileNotFoundError:
        raise Skip("%s is not installed" % argv[0])
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def openssl_client(port, *args, host="127.0.0.1", timeout=15, input=b""):
    """`openssl s_client -connect HOST:PORT ARGS` with `input` on stdin (default: none, so it
    ends after the handshake). Returns (rc, combined stdout+stderr text)."""
    rc, out, err = run_tool(["openssl", "s_client", "-connect", "%s:%d" % (host, port)]
                            + list(args), timeout=timeout, input=input)
    return rc, out.decode("utf-8", "replace") + "\n" + err


def mbedtls_major():
    """The major version of the mbedTLS the library was built against, from
    NOOK_MBEDTLS_VERSION (set by CMake for each test; unset: 2)."""
    v = os.environ.get("NOOK_MBEDTLS_VERSION", "").split(".")[0]
    return int(v) if v.isdigit() else 2


def ssl_field(text, label):
    """A 'Label: value' line of openssl s_client output (e.g. 'ALPN protocol', 'Cipher'), or
    None."""
    m = re.search(r"^\s*%s\s*:\s*(.*?)\s*$" % re.escape(label), text, re.M)
    return m.group(1) if m else None


def plain_and_tls_server(binary, *args):
    """The test server with a cleartext listener and then a TLS one (TLS flags apply to the
    listeners after them), started; .ports is [cleartext, tls]."""
    from pathlib import Path
    data = Path(__file__).resolve().parents[1] / "data"
    srv = TestServer(binary, "--listen", "127.0.0.1:0", "--tls-cert", str(data / "localhost.crt"),
                     "--tls-key", str(data / "localhost.key"), "--listen", "127.0.0.1:0", *args,
                     listen=())
    srv.nlisten = 2
    return srv.start()


def protocols(plain_port, tls_port):
    """(name, curl flags, base URL) for HTTP/1.1 and h2c on the cleartext port and h2 on TLS."""
    return [("h1", ["--http1.1"], "http://127.0.0.1:%d" % plain_port),
            ("h2c", ["--http2-prior-knowledge"], "http://127.0.0.1:%d" % plain_port),
            ("h2-tls", ["--http2", "-k"], "https://127.0.0.1:%d" % tls_port)]


class Resp:
    """A response fetched with curl_fetch: status, lower-case headers, body bytes."""

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def h(self, name):
        return self.headers.get(name.lower())


def curl_fetch(flags, url, *extra, head=False):
    """One request with curl (the path sent as is, the body as it came: still encoded unless
    extra has --compressed); repeated header fields are joined with ', '."""
    from pathlib import Path
    with tempfile.NamedTemporaryFile(prefix="nook-fetch-") as out:
        args = ["-s", "--path-as-is", "-D", "-", "-o", out.name] + (["-I"] if head else [])
        rc, text, err = curl(*(args + list(flags) + list(extra) + [url]), timeout=30)
        eq(rc, 0, "curl exit code for %s %s (stderr %s)" % (url, extra, err.strip()))
        body = Path(out.name).read_bytes()
    lines = text.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if not line:
            break
        n, _, v = line.partition(":")
        k = n.strip().lower()
        headers[k] = headers[k] + ", " + v.strip() if k in headers else v.strip()
    return Resp(int(lines[0].split()[1]), headers, b"" if head else body)
