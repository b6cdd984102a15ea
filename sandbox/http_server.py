"""The HTTP plumbing of the sandbox: a threading server that stops completely.

HTTP/1.1 with keep-alive (clients reuse connections, as they do against the
real services), Nagle's algorithm off (it adds ~40 ms per answer otherwise),
one daemon thread per connection. ``SandboxHttpServer.stop`` ends the accept
loop, closes every open connection and joins every thread it started.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from requests.structures import CaseInsensitiveDict

from sandbox.app import HttpRequest, SandboxApp, parse_query

log = logging.getLogger(__name__)

THREAD_JOIN_TIMEOUT = 5.0
# An idle keep-alive connection is closed after this long.
IDLE_CONNECTION_TIMEOUT = 30.0
MAX_BODY_BYTES = 16 * 1024 * 1024
# How often the accept loop checks for shutdown: bounds how long stop() waits.
ACCEPT_POLL_SECONDS = 0.05


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = IDLE_CONNECTION_TIMEOUT
    server: SandboxHttpServer
    server_version = "lfx-sandbox"

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet by default: one debug line per request instead of stderr spam.
        log.debug("sandbox http", extra={"request": format % args})

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Trailer section ends with an empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        try:
            body = self._read_body()
        except ValueError:
            self.send_error(400, "bad request body")
            self.close_connection = True
            return
        request = HttpRequest(
            method=self.command,
            path=parts.path,
            query=parse_query(parts.query),
            headers=CaseInsensitiveDict(dict(self.headers.items())),
            body=body,
        )
        response = self.server.app.handle(request)
        if response.drop_connection:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.body and self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_DELETE = _serve
    do_PATCH = _serve


class SandboxHttpServer(ThreadingHTTPServer):
    """Serves ``app`` on ``host:port`` from a background thread; see ``stop``."""

    daemon_threads = True
    # socketserver's default backlog of 5 drops connections when dozens of worker
    # threads connect at once; real services listen with a large backlog.
    request_queue_size = 128
    # Joining happens in ``stop`` (after the connections are shut down), not in
    # ``server_close``, which would wait on idle keep-alive connections.
    block_on_close = False

    def __init__(self, app: SandboxApp, host: str, port: int) -> None:
        super().__init__((host, port), _Handler)
        self.app = app
        self._connections_lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._serve_thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when asked for port 0)."""
        return int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer is normal here: log it at debug, not stderr."""
        log.debug("sandbox connection error", exc_info=True)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve one accepted connection in its own tracked daemon thread."""
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name=f"sandbox-http-conn-{self.port}",
            daemon=True,
        )
        with self._connections_lock:
            self._connections[request] = thread
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(request, None)

    def start(self) -> None:
        """Run the accept loop in a daemon thread."""
        self._serve_thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": ACCEPT_POLL_SECONDS},
            name=f"sandbox-http-{self.port}",
            daemon=True,
        )
        self._serve_thread.start()

    def stop(self) -> None:
        """Stop accepting, close open connections, join every thread."""
        if self._serve_thread is not None:
            self.shutdown()
            self._serve_thread.join(THREAD_JOIN_TIMEOUT)
            self._serve_thread = None
        self.server_close()
        with self._connections_lock:
            open_connections = dict(self._connections)
        for connection in open_connections:
            # OSError: the peer closed it already.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for thread in open_connections.values():
            if thread is not threading.current_thread():
                thread.join(THREAD_JOIN_TIMEOUT)
