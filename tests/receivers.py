"""Webhook receivers on loopback for delivery tests: each records what it got and answers as told."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec

from kairos.activate.signing import verify


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: bytes

    @property
    def message(self) -> dict[str, object]:
        out: dict[str, object] = msgspec.json.decode(self.body)
        return out


# (attempt number for this id, starting at 1) → (status, extra headers, seconds to wait before answering)
Behaviour = Callable[[int], tuple[int, dict[str, str], float]]


def ok(_attempt: int) -> tuple[int, dict[str, str], float]:
    return 200, {}, 0.0


@dataclass
class Receiver:
    url: str
    behaviour: Behaviour
    secret: str
    got: list[Received] = field(default_factory=list)
    accepted: dict[str, Received] = field(default_factory=dict)  # id → the first accepted delivery
    attempts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def signatures_verify(self) -> bool:
        return all(verify(self.secret, r.body, r.headers["kairos-signature"], int(time.time())) for r in self.got)


@contextmanager
def receiver(secret: str, behaviour: Behaviour = ok, port: int = 0) -> Iterator[Receiver]:
    rec = Receiver("", behaviour, secret)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            got = Received(time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body)
            key = got.headers.get("idempotency-key", "")
            with rec.lock:
                rec.got.append(got)
                rec.attempts[key] = n = rec.attempts.get(key, 0) + 1
            status, headers, delay = rec.behaviour(n)
            if delay:
                time.sleep(delay)
            if 200 <= status < 300:
                with rec.lock:
                    rec.accepted.setdefault(key, got)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    """A loopback port where nothing listens (connection refused) until someone binds it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
