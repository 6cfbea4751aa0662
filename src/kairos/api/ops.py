"""Operations: ``/healthz``, ``/metrics`` (Prometheus), ``/openapi.json`` and ``/docs``."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from kairos import __version__
from kairos.activate.worker import DeliveryWorker
from kairos.api._common import json_response, runtime
from kairos.api.openapi import spec
from kairos.metrics import PROCESSOR_LAG, PROCESSOR_UP, REGISTRY
from kairos.pipeline.worker import Worker
from kairos.runtime import Kairos

__all__ = ["routes"]


def _positions(kairos: Kairos) -> tuple[int, int]:
    """The end of the log and what the processor has applied of it."""
    return kairos.store.log.last_seq(), kairos.store.state.checkpoint().seq


def _processor(request: Request) -> dict[str, Any]:
    worker: Worker = request.app.state.processor
    return worker.status()


async def healthz(request: Request) -> Response:
    kairos = runtime(request)
    processor = _processor(request)
    try:
        last, checkpoint = await run_in_threadpool(_positions, kairos)
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
            "delivery": request.app.state.delivery.status(),
        }
    )


async def metrics(request: Request) -> Response:
    kairos = runtime(request)
    last, checkpoint = await run_in_threadpool(_positions, kairos)
    PROCESSOR_LAG.set(max(0, last - checkpoint))
    PROCESSOR_UP.set(1 if _processor(request)["state"] == "running" else 0)
    # The delivery worker's registry: its own (thread) or what its process last sent.
    delivery: DeliveryWorker = request.app.state.delivery
    return Response(generate_latest(REGISTRY) + delivery.metrics_text(), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return json_response(spec())


def _swagger_ui_assets() -> Path:
    """Swagger UI's files, from the swagger-ui-py package (see docs/decisions.md), located without importing
    it: only its static files are used. Served from here, /docs works without internet access."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing; reinstall kairos")
    return Path(spec.submodule_search_locations[0]) / "static"


# Relative URLs, so that the page also works behind a proxy that serves Kairos under a path prefix.
_INIT = 'SwaggerUIBundle({url: "openapi.json", dom_id: "#ui", validatorUrl: null});'
_DOCS = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Kairos API</title>
<link rel="stylesheet" href="docs/assets/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script>{_INIT}</script>
<noscript>The API description is at <a href="openapi.json">openapi.json</a>.</noscript>
</body></html>"""
# Only this origin, and of inline script only the initializer above (by its hash). Swagger UI's icons are
# data: URIs, and its "try it out" calls this origin.
_CSP = "; ".join(
    [
        "default-src 'none'",
        f"script-src 'self' 'sha256-{base64.b64encode(hashlib.sha256(_INIT.encode()).digest()).decode()}'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)


async def docs(request: Request) -> Response:
    return HTMLResponse(_DOCS, headers={"Content-Security-Policy": _CSP})


async def livez(request: Request) -> Response:
    """Liveness only: the process answers HTTP. Reads nothing (``/healthz`` reads the store and the processor),
    so it is also the bare endpoint the decide benchmark compares ``POST /v1/decide`` with."""
    return Response(b'{"status":"ok"}', media_type="application/json")


routes: list[BaseRoute] = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/livez", livez, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
    Mount("/docs/assets", StaticFiles(directory=_swagger_ui_assets()), name="docs-assets"),
]
