"""The ASGI application: routes, CORS on the collect routes, error envelope, rate limits, lifecycle of the
writer thread and the processor."""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from kairos.activate.worker import create_delivery_worker
from kairos.api import (
    audit,
    centre,
    collect,
    consents,
    decide,
    definitions,
    destinations,
    microsegments,
    ops,
    privacy,
    profiles,
)
from kairos.api._common import JSON, AccessLog, Disconnects, json_response, key_cache
from kairos.api._writer import GroupWriter, LogWriter
from kairos.api.ratelimit import RateLimits
from kairos.collect import EVENT_TYPES, SHORT_PATHS
from kairos.config import ProcessorMode
from kairos.decide.engine import Decider
from kairos.decide.learning import LearnerThread, Trainer
from kairos.pipeline.worker import ProcessWorker, create_worker
from kairos.privacy.training import training_gate
from kairos.runtime import Kairos

__all__ = ["COLLECT_PATHS", "CollectCORS", "create_app"]

log = logging.getLogger("kairos.http")

# The routes a browser calls from other sites' pages (analytics.js): the only ones that answer CORS.
COLLECT_PATHS = frozenset(
    {f"/v1/{name}" for name in (*EVENT_TYPES, "batch")} | {f"/v1/{short}" for short in SHORT_PATHS}
)


class CollectCORS:
    """CORS on the collect routes only. Everything else (profiles, definitions, keys' data, the audit log) is
    for servers: a browser preflight there gets no ``Access-Control-Allow-Origin`` (405), so no web page can
    read or change it with a visitor's browser, even one that holds a key."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Content-Encoding"],
            max_age=86400,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in COLLECT_PATHS:
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def create_app(
    kairos: Kairos, *, run_processor: bool | None = None, processor_mode: ProcessorMode | None = None
) -> Starlette:
    """Build the app around a :class:`Kairos`.

    The processor runs as ``processor.mode`` says (its own process by default), and the delivery worker as
    ``delivery.mode`` says; ``run_processor=False`` runs neither (in-process tests drive them themselves),
    ``processor_mode`` overrides the setting.
    """
    settings = kairos.settings
    mode = processor_mode or settings.processor.serve_mode()
    if run_processor is False:
        mode = "off"
    worker = create_worker(kairos, mode)
    decider = Decider(kairos)
    learner: LearnerThread | ProcessWorker | None = None
    if run_processor is not False and settings.decide.learner_mode == "thread":
        learner = LearnerThread(
            Trainer(
                kairos.store.decisions,
                settings.decide,
                kairos.clock,
                decider.holder,
                kairos.store.outbox,
                gate=training_gate(kairos),
            )
        )
    elif run_processor is not False and settings.decide.learner_mode == "process":
        from kairos.decide import _child as learner_child

        learner = ProcessWorker(
            settings, kairos.cache, target=learner_child.run, name="kairos-learner", stop_timeout=15.0
        )
    delivery = create_delivery_worker(kairos, "off" if run_processor is False else settings.delivery.serve_mode())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.kairos = kairos
        app.state.writer = LogWriter(
            kairos.store.log.append_many,
            max_pending=settings.collect.max_pending_events,
            store_errors=kairos.store.driver_errors,
        )
        app.state.decision_writer = GroupWriter(
            kairos.store.decisions.record_many,
            max_pending=settings.collect.max_pending_events,
            max_group=1000,
            store_errors=kairos.store.driver_errors,
            what="decisions",
            name="kairos-decision-writer",
        )
        worker.start()
        delivery.start()
        decider.start()
        if learner is not None:
            learner.start()
        log.info("kairos started", extra={"store": kairos.store.name, "processor": worker.status()})
        try:
            yield
        finally:
            if learner is not None:
                learner.stop()
            app.state.writer.close()
            app.state.decision_writer.close()
            decider.close()
            delivery.stop()
            worker.stop()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code, field = {404: ("not_found", "path"), 405: ("method_not_allowed", "method")}.get(
            exc.status_code, ("http_error", None)
        )
        # The routing's headers (405's Allow) are part of the answer.
        error = {"code": code, "field": field, "message": exc.detail}
        return JSON({"error": error}, exc.status_code, headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        # The exception's type and where it was raised, not its message: a message can quote the data that
        # caused it (an identifier, a trait value), and logs must hold no personal data.
        where = [
            f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in traceback.extract_tb(exc.__traceback__)
        ]
        log.error(
            "unhandled error",
            extra={"method": request.method, "route": _route(request), "error": type(exc).__name__, "where": where},
        )
        return json_response({"error": {"code": "internal", "message": "internal error; see server logs"}}, 500)

    app = Starlette(
        routes=[
            # Routes are matched in order, one regular expression each: the busiest first (no path of one
            # of these matches another's pattern, so the order only decides how many are tried).
            *collect.routes,
            *decide.routes,
            *consents.routes,  # before profiles: /v1/profiles/{ref:path} takes any path
            *profiles.routes,
            *definitions.routes,
            *destinations.routes,
            *microsegments.routes,
            *audit.routes,
            *privacy.routes,
            *ops.routes,
            *centre.routes,
        ],
        middleware=[
            Middleware(Disconnects),
            Middleware(AccessLog),
            Middleware(CollectCORS, origins=settings.server.cors_origins),
            Middleware(profiles.ProfileRefs),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.kairos = kairos
    app.state.api_keys = key_cache()
    app.state.limits = RateLimits(settings.limits)
    app.state.processor = worker
    app.state.delivery = delivery
    app.state.decider = decider
    app.state.learner = learner
    return app


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", "?")
