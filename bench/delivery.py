"""Delivery throughput: segment entries pushed to a loopback receiver (Starlette on uvicorn, own process).

    python bench/delivery.py [--messages 2000] [--concurrency 4 16]

Measures the wall time from starting the delivery worker until every message is acknowledged, and the
worker process's CPU per delivery (planning, building bodies with traits and consent, signing, the POST and
recording the outcome). The receiver runs in a child process so that it does not share our GIL.
"""

from __future__ import annotations

import argparse
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from kairos.activate import destinations
from kairos.activate.worker import run_forever
from kairos.config import load_settings
from kairos.runtime import Kairos

RECEIVER = textwrap.dedent(
    """
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def hook(request):
        await request.body()
        return Response(status_code=204)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    """
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _delivered(state: Path) -> int:
    """Deliveries recorded delivered, counted in SQL on a connection of our own: listing them through the
    store (a Delivery object each, every poll) took as much CPU as the worker's own work per delivery."""
    conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT COUNT(*) FROM deliveries WHERE destination = 'bench' AND status = 'delivered'")
        return int(row.fetchone()[0])
    finally:
        conn.close()


def run(messages: int, concurrency: int, port: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        settings = load_settings(
            store={"url": f"sqlite:///{d}/k.db"},
            delivery={"concurrency": concurrency, "poll_interval_ms": 20},
        )
        k = Kairos(settings)
        try:
            source = k.store.admin.add_source("web", "observed", 0)
            k.store.admin.put_definition("segment", "vip", {"rule": 'traits.plan == "pro"'}, k.clock.now())
            body = {"url": f"http://127.0.0.1:{port}/hook", "secret": "s" * 20, "subscribe": {"segments": ["vip"]}}
            destinations.save(k, "bench", {**body, "traits": ["plan"], "purpose": "analytics"})
            for i in range(0, messages, 500):
                batch = [
                    {"type": "identify", "userId": f"u{j}", "traits": {"plan": "pro"}, "messageId": f"m{j}"}
                    for j in range(i, min(messages, i + 500))
                ]
                k.ingest({"batch": batch}, "batch", source.write_key)
            k.processor.run_until_caught_up()
            stop = threading.Event()
            started, cpu = time.perf_counter(), time.process_time()
            thread = threading.Thread(target=run_forever, args=(k, stop))
            thread.start()
            while _delivered(Path(d) / "k-state.db") < messages:
                time.sleep(0.02)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            stop.set()
            thread.join()
            return wall, cpu
        finally:
            k.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 16])
    args = parser.parse_args()
    port = _port()
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "receiver.py").write_text(RECEIVER)
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "receiver:app", "--port", str(port), "--log-level", "warning"], cwd=d
        )
        try:
            time.sleep(1.5)
            for c in args.concurrency:
                wall, cpu = run(args.messages, c, port)
                print(
                    f"concurrency {c:>3}: {args.messages} deliveries in {wall:.2f} s = {args.messages / wall:,.0f}/s; "
                    f"{cpu / args.messages * 1000:.3f} ms CPU per delivery"
                )
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
