"""A fault-injecting HTTP proxy on loopback, in front of a real S3 API (the tests' moto server).

It forwards every request (GET with or without a Range, HEAD, PUT, POST, DELETE) to the upstream
endpoint unchanged and relays the answer, except for a share of requests that it fails the way S3
and the networks in front of it fail: ``503 SlowDown`` (S3's throttling answer, with its XML error
body), ``500 InternalError``, a reset connection (the socket closed with an RST, no answer), or a
cut one (the answer's headers and half its body, then an RST: a download that breaks off).

Which requests fail is decided by a seeded hash of the request (method, path, query, range) and of
how many times that same request has been seen, not by the order in which requests arrive: runs
with several clients (Dask workers, GDAL's and boto3's connection pools) fail the same requests
every time, and the retry of a failed request gets a fresh, independent draw, as against a real
service. A faulted request never reaches the upstream, except a cut one (its answer is real).
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# S3's own error bodies for the two error answers (the codes and messages AWS documents).
_ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
    # Not transient, so not among the default kinds: an object that looks gone for a moment (as
    # while it is being replaced) to the client asked.
    "missing": (404, "NoSuchKey", "The specified key does not exist."),
}
FAULT_KINDS = ("slowdown", "internal", "reset", "cut")
_KINDS = (*FAULT_KINDS, "missing")
# Headers that belong to one hop, not to the request or answer: the proxy sets its own.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}


class FaultProxy:
    """A threaded HTTP server on 127.0.0.1 that forwards to ``upstream`` and fails a share of requests.

    Attributes:
        upstream: The endpoint requests are forwarded to (``http://host:port``).
        share: The probability in [0, 1] that one request is failed.
        kinds: The faults drawn from, evenly.
        url: The proxy's own endpoint, once started.
    """

    def __init__(
        self,
        upstream: str,
        share: float,
        seed: int = 0,
        kinds: tuple[str, ...] = FAULT_KINDS,
        ranged_only: bool = False,
    ) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"a fault share is between 0 and 1, not {share}")
        unknown = set(kinds) - set(_KINDS)
        if unknown or not kinds:
            raise ValueError(f"fault kinds are some of {_KINDS}, not {kinds}")
        target = urlsplit(upstream)
        if target.scheme != "http" or target.hostname is None:
            raise ValueError(f"the upstream is a plain http://host:port endpoint, not {upstream}")
        self.upstream = upstream
        self.share = share
        self.seed = seed
        self.kinds = kinds
        self.ranged_only = ranged_only  # fail only requests for part of an object (GDAL's reads)
        self._target = (target.hostname, target.port or 80)
        self._lock = threading.Lock()
        self._seen: Counter[str] = Counter()
        self._requests: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._faulted_methods: Counter[str] = Counter()
        self._log: list[tuple[str, str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- what a test reads -------------------------------------------------------------------
    @property
    def requests(self) -> int:
        """Requests received so far, failed ones included."""
        with self._lock:
            return sum(self._requests.values())

    @property
    def faults(self) -> int:
        """Requests failed so far."""
        with self._lock:
            return sum(self._faults.values())

    def stats(self) -> dict[str, dict[str, int]]:
        """Requests by method, faults by kind and faults by method, for a test's report."""
        with self._lock:
            return {
                "requests": dict(self._requests),
                "faults": dict(self._faults),
                "faulted": dict(self._faulted_methods),
            }

    def requested(self) -> list[tuple[str, str, str]]:
        """Every request received so far as (method, path with its query, Range header or ""),
        in the order they arrived, failed ones included."""
        with self._lock:
            return list(self._log)

    def describe(self) -> str:
        """One line: the share asked for, and the requests and faults seen."""
        stats = self.stats()
        total, failed = sum(stats["requests"].values()), sum(stats["faults"].values())
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(stats["faults"].items()))
        methods = ", ".join(
            f"{m} {stats['faulted'].get(m, 0)}/{n}" for m, n in sorted(stats["requests"].items())
        )
        return (
            f"fault share {self.share:.0%} (seed {self.seed}): {failed} of {total} requests failed"
            f" ({kinds or 'none'}; by method {methods or 'none'})"
        )

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> str:
        """Listen on a free loopback port; returns the proxy's endpoint URL."""
        proxy = self

        class Handler(_RelayHandler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        """Stop listening and close the server's socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    # -- the decision ----------------------------------------------------------------------------
    def draw(self, method: str, path: str, byte_range: str) -> str | None:
        """Count one request and decide its fate: a fault kind, or None to forward it.

        The draw hashes the seed, the request and the number of times this same request was seen
        before, so it is the same in every run whatever order concurrent requests arrive in.
        """
        signature = f"{method} {path} {byte_range}"
        with self._lock:
            seen = self._seen[signature]
            self._seen[signature] += 1
            self._requests[method] += 1
            self._log.append((method, path, byte_range))
        digest = hashlib.sha256(f"{self.seed}|{signature}|{seen}".encode()).digest()
        chance = int.from_bytes(digest[:8], "big") / 2**64
        if chance >= self.share or (self.ranged_only and not byte_range):
            return None
        kind = self.kinds[digest[8] % len(self.kinds)]
        with self._lock:
            self._faults[kind] += 1
            self._faulted_methods[method] += 1
        return kind

    def forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send one request upstream on a fresh connection; returns status, headers and body."""
        # A generous socket timeout: one that fires only resets this request (a fault the client
        # retries); it exists so that a hung upstream cannot hang a test forever.
        connection = http.client.HTTPConnection(*self._target, timeout=300)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            if body or method in ("PUT", "POST"):
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body or None)
            answer = connection.getresponse()
            content = answer.read()
            return answer.status, answer.getheaders(), content
        finally:
            connection.close()


class _RelayHandler(BaseHTTPRequestHandler):
    """One client connection: keep-alive HTTP/1.1, each request forwarded or failed."""

    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._relay()

    def do_HEAD(self) -> None:
        self._relay()

    def do_PUT(self) -> None:
        self._relay()

    def do_POST(self) -> None:
        self._relay()

    def do_DELETE(self) -> None:
        self._relay()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a test reports the counts, not a line per request."""

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _relay(self) -> None:
        # The whole request is read before deciding, so that the connection stays in step
        # (a failed PUT's body is not taken for the next request).
        body = self._read_body()
        fault = self.owner.draw(self.command, self.path, self.headers.get("Range", ""))
        if fault == "reset":
            self._reset()
            return
        if fault in _ERRORS:
            status, code, message = _ERRORS[fault]
            content = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message>"
                f"<RequestId>fault-proxy</RequestId></Error>"
            ).encode()
            self._answer(status, [("Content-Type", "application/xml")], content)
            return
        # The proxy has already answered any "Expect: 100-continue" and sets the length itself.
        dropped = _HOP_BY_HOP | {"content-length", "expect"}
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in dropped]
        try:
            status, answer_headers, content = self.owner.forward(self.command, self.path, headers, body)
        except OSError:
            self._reset()  # the upstream failed: the client sees what a broken proxy gives
            return
        kept = [(k, v) for k, v in answer_headers if k.lower() not in _HOP_BY_HOP | {"content-length"}]
        if fault == "cut":
            if self.command == "HEAD" or len(content) < 2:
                self._reset()  # nothing to cut short: a plain reset
                return
            self._answer(status, kept, content, cut=True)
        elif self.command == "HEAD":
            # A HEAD answer carries the object's length and no body.
            length = next((v for k, v in answer_headers if k.lower() == "content-length"), "0")
            self._answer(status, [*kept, ("Content-Length", length)], b"", length_given=True)
        else:
            self._answer(status, kept, content)

    def _answer(
        self,
        status: int,
        headers: list[tuple[str, str]],
        content: bytes,
        length_given: bool = False,
        cut: bool = False,
    ) -> None:
        """Send one answer; ``cut`` sends its full length but half its body, then resets."""
        self.send_response_only(status)
        for name, value in headers:
            self.send_header(name, value)
        if not length_given:
            self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if cut:
            self.wfile.write(content[: len(content) // 2])
            self._reset()
        elif content and self.command != "HEAD":
            self.wfile.write(content)

    def _reset(self) -> None:
        """Close the connection with an RST and no answer, as a reset by a network device looks.

        SO_LINGER with a zero timeout makes close() send RST instead of FIN. The socket is closed
        for real only once its file object is closed too (it holds a reference).
        """
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass


@contextmanager
def fault_proxy(
    upstream: str,
    share: float,
    seed: int = 0,
    kinds: tuple[str, ...] = FAULT_KINDS,
    ranged_only: bool = False,
) -> Iterator[FaultProxy]:
    """A started FaultProxy in front of ``upstream`` for the block; stopped after it."""
    proxy = FaultProxy(upstream, share, seed, kinds, ranged_only)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
