"""A local webhook receiver for tests: a real HTTP server on 127.0.0.1 in a thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any


class _RecordingHandler(BaseHTTPRequestHandler):
    """Records each POST on the server's receiver and answers as the receiver says."""

    server: _ReceiverServer

    def do_POST(self) -> None:
        receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        receiver.received.append({"headers": dict(self.headers), "body": body})
        self.send_response(receiver.status)
        if receiver.location:
            self.send_header("Location", receiver.location)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read `received`, not the access log."""


class _ReceiverServer(HTTPServer):
    def __init__(self, receiver: Receiver) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.receiver = receiver


class Receiver:
    """A local HTTP server that records what it receives and answers with `status` (and a
    `location` header, to redirect)."""

    def __init__(self, status: int = 200, location: str = "") -> None:
        self.status = status
        self.location = location
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
