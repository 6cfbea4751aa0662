"""Clients that stall or vanish mid-body, over a real socket: a 408 after the body timeout, and no error log."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import BACKENDS, Server, running_server

pytestmark = pytest.mark.e2e

BODY_TIMEOUT = 1.0


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_unreachable: str | None
) -> Iterator[Server]:
    backend: str = request.param
    settings = {"KAIROS__SERVER__BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT)}
    workdir: Path = tmp_path_factory.mktemp(f"stalls-{backend}")
    with running_server(backend, workdir, pg_unreachable, settings) as s:
        yield s


def _partial_post(server: Server, sent_body: bytes, declared: int = 200) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    head = (
        f"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + sent_body)
    return sock


def _read_to_close(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_stalled_body_is_answered_408_and_the_connection_closed(server: Server) -> None:
    start = time.monotonic()
    with _partial_post(server, b'{"userId": "u-stall", "ev') as sock:
        answer = _read_to_close(sock)  # returns only once the server closes the connection
    elapsed = time.monotonic() - start
    assert BODY_TIMEOUT <= elapsed < BODY_TIMEOUT + 5, elapsed
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in head.lower()
    assert b'"code":"body_timeout"' in body and b'"success":false' in body
    assert server.get("/healthz").status_code == 200


def test_client_gone_mid_body_is_not_logged_as_an_error(server: Server) -> None:
    before = server.log_tail(100_000)
    sock = _partial_post(server, b'{"userId": "u-gone", "ev')
    time.sleep(0.2)
    sock.close()
    time.sleep(0.5)  # let the server notice the disconnect
    assert server.get("/healthz").status_code == 200
    new = server.log_tail(100_000)[len(before) :]
    assert "unhandled error" not in new and "Traceback" not in new and "ClientDisconnect" not in new, new
    assert "u-gone" not in new
