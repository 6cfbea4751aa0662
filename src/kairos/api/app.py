"""The ASGI application: routes, CORS, error envelope, lifecycle of the writer and processor threads."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response

from kairos.api import collect, ops, profiles
from kairos.api._common import AccessLog, json_response
from kairos.api._writer import LogWriter
from kairos.runtime import Kairos

__all__ = ["create_app"]

log = logging.getLogger("kairos.http")


def create_app(kairos: Kairos, *, run_processor: bool | None = None) -> Starlette:
    """Build the app around a :class:`Kairos`; the processor runs in a thread unless disabled."""
    settings = kairos.settings
    if run_processor is None:
        run_processor = settings.processor.enabled

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.kairos = kairos
        app.state.writer = LogWriter(
            kairos.store.log.append_many,
            max_pending=settings.collect.max_pending_events,
            store_errors=kairos.store.driver_errors,
        )
        thread = None
        if run_processor:
            thread = threading.Thread(
                target=kairos.processor.run_forever,
                args=(settings.processor.poll_interval_ms / 1000, kairos.cache.invalidate),
                name="kairos-processor",
                daemon=True,
            )
            thread.start()
        log.info("kairos started", extra={"store": kairos.store.d.name, "processor": run_processor})
        try:
            yield
        finally:
            app.state.writer.close()
            kairos.processor.stop()
            if thread is not None:
                thread.join(timeout=30)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return json_response({"error": {"code": code, "message": exc.detail}}, exc.status_code)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", extra={"method": request.method, "route": _route(request)})
        return json_response({"error": {"code": "internal", "message": "internal error; see server logs"}}, 500)

    app = Starlette(
        routes=[*collect.routes, *profiles.routes, *ops.routes],
        middleware=[
            Middleware(AccessLog),
            Middleware(
                CORSMiddleware,
                allow_origins=settings.server.cors_origins,
                allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "Content-Encoding"],
                max_age=86400,
            ),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.kairos = kairos

    return app


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", "?")
