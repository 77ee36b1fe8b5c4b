"""A local webhook receiver for the alert tests: records every POST it gets."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Receiver:
    """A local webhook: records every POST (path and JSON body), answers ``status``."""

    server: http.server.ThreadingHTTPServer
    posts: list[tuple[str, Any]] = field(default_factory=list)
    status: int = 200
    answer: str = "no_service"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    @property
    def bodies(self) -> list[Any]:
        return [body for _, body in self.posts]


@contextmanager
def serving() -> Iterator[Receiver]:
    rec: Receiver

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            rec.posts.append((self.path, json.loads(body)))
            self.send_response(rec.status)
            self.end_headers()
            self.wfile.write(b"ok" if rec.status < 400 else rec.answer.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec = Receiver(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
