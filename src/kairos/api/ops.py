"""Operations: ``/healthz``, ``/metrics`` (Prometheus), ``/openapi.json`` and ``/docs``."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from kairos import __version__
from kairos.api._common import json_response, runtime
from kairos.api.openapi import spec
from kairos.metrics import PROCESSOR_LAG, PROCESSOR_UP, REGISTRY
from kairos.pipeline.worker import Worker

__all__ = ["routes"]


def _processor(request: Request) -> dict[str, Any]:
    worker: Worker = request.app.state.processor
    return worker.status()


async def healthz(request: Request) -> Response:
    kairos = runtime(request)
    processor = _processor(request)
    try:
        last, checkpoint = await run_in_threadpool(
            lambda: (kairos.store.log.last_seq(), kairos.store.state.checkpoint().seq)
        )
    except Exception as exc:  # the store is down: say so instead of failing with a 500
        return json_response({"status": "unavailable", "store": type(exc).__name__, "processor": processor}, 503)
    # A paused or restarting processor leaves ingest working: still 200, so that a load balancer keeps
    # sending events to this server; "degraded" and the processor's state are for monitoring.
    degraded = processor["state"] in ("paused", "restarting")
    return json_response(
        {
            "status": "degraded" if degraded else "ok",
            "version": __version__,
            "store": kairos.store.name,
            "log_seq": last,
            "processed_seq": checkpoint,
            "lag": last - checkpoint,
            "processor": processor,
        }
    )


async def metrics(request: Request) -> Response:
    kairos = runtime(request)
    last, checkpoint = await run_in_threadpool(
        lambda: (kairos.store.log.last_seq(), kairos.store.state.checkpoint().seq)
    )
    PROCESSOR_LAG.set(max(0, last - checkpoint))
    PROCESSOR_UP.set(1 if _processor(request)["state"] == "running" else 0)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return json_response(spec())


_DOCS = """<!doctype html>
<html><head><meta charset="utf-8"><title>Kairos API</title>
<link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="https://unpkg.com/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
<noscript>The API description is at <a href="/openapi.json">/openapi.json</a>.</noscript>
</body></html>"""


async def docs(request: Request) -> Response:
    return HTMLResponse(_DOCS)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
]
