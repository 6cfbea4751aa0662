"""The ingest baseline: the same server stack as ``kairos serve`` doing the least a collect endpoint can.

Starlette on uvicorn (uvloop, httptools, one worker, no access log, like ``kairos serve``); ``/v1/batch``
reads the body, decodes it into typed msgspec Structs and answers ``{"success": true}``. Nothing is
validated beyond the types, normalized or stored. Run: ``python bench/_bare.py --port 8001``.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["app"]


class Event(msgspec.Struct, kw_only=True):
    type: str
    messageId: str | None = None
    userId: str | int | None = None
    anonymousId: str | int | None = None
    event: str | None = None
    name: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    timestamp: datetime | None = None


class Batch(msgspec.Struct, kw_only=True):
    batch: list[Event]
    sentAt: datetime | None = None
    writeKey: str | None = None


_decoder = msgspec.json.Decoder(Batch)
_ok = msgspec.json.encode({"success": True})


async def batch(request: Request) -> Response:
    try:
        _decoder.decode(await request.body())
    except msgspec.DecodeError as exc:
        return Response(msgspec.json.encode({"success": False, "error": str(exc)}), 400, media_type="application/json")
    return Response(_ok, media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response(_ok, media_type="application/json")


app = Starlette(routes=[Route("/v1/batch", batch, methods=["POST"]), Route("/healthz", healthz)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        log_level="warning",
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
