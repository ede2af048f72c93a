"""A local webhook receiver for tests: a real HTTP server on 127.0.0.1 in a thread."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _RecordingHandler(BaseHTTPRequestHandler):
    """Records each POST on the server's receiver and answers as the receiver says."""

    server: _ReceiverServer

    def do_POST(self) -> None:
        receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        receiver.received.append({"headers": dict(self.headers), "body": body})
        if receiver.trickle:
            self._trickle(receiver.trickle)
            return
        self.send_response(receiver.status)
        if receiver.location:
            self.send_header("Location", receiver.location)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def _trickle(self, seconds: float) -> None:
        """Answer one byte every 0.2 s for `seconds`: every read of the client's is quick, the
        exchange is not (until the client hangs up)."""
        answer = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000
        ends = time.monotonic() + seconds
        try:
            for byte in answer:
                if time.monotonic() > ends:
                    break
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass  # the client gave up

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read `received`, not the access log."""


class _ReceiverServer(ThreadingHTTPServer):
    def __init__(self, receiver: Receiver) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.receiver = receiver


class Receiver:
    """A local HTTP server that records what it receives and answers with `status` (and a
    `location` header, to redirect), or trickles its answer a byte at a time for `trickle`
    seconds. Each request is served in a thread of its own."""

    def __init__(self, status: int = 200, location: str = "", trickle: float = 0.0) -> None:
        self.status = status
        self.location = location
        self.trickle = trickle
        self.received: list[dict[str, Any]] = []
        self.server = _ReceiverServer(self)
        host, port = self.server.server_address[:2]
        self.url = f"http://{host}:{port}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="webhook-receiver", daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
