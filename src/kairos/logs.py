"""Structured logs: one JSON object per line on stderr, and never personal data in clear.

Log calls pass only ids Kairos made (profile ids, seqs, source names) and counts. Anything that could be a
person's identifier goes through :func:`redact` first: a short keyed hash that lets an operator correlate
lines without reading the value. An exception is logged as its type and its stack (files, lines, functions),
never its message: a driver's or a parser's message may quote the data it failed on (a NUL in an e-mail
address, a trait value)::

    >>> try:
    ...     raise ValueError("bad value 'jane@example.com'")
    ... except ValueError:
    ...     text = JsonFormatter().format(logging.LogRecord("x", 40, "f", 1, "failed", None, sys.exc_info()))
    >>> "jane" in text, "ValueError" in text
    (False, True)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["JsonFormatter", "redact", "setup_logging"]

_SALT = os.urandom(16)  # per process: hashes correlate lines of one run, not values across runs
_STD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}


def redact(value: object) -> str:
    return "h:" + hashlib.blake2b(str(value).encode(), key=_SALT, digest_size=6).hexdigest()


class JsonFormatter(logging.Formatter):
    converter = time.gmtime  # type: ignore[assignment]  # UTC timestamps

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _STD})
        if record.exc_info:
            out["exc"] = _without_messages(record.exc_info)
        return json.dumps(out, default=str)


def _without_messages(exc_info: Any) -> str:
    """The exception chain as types and stack frames; messages withheld (they may hold personal data)."""
    _, exc, _ = exc_info
    parts: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        frames = traceback.extract_tb(exc.__traceback__)
        stack = "".join(f"  {Path(f.filename).name}:{f.lineno} in {f.name}\n" for f in frames)
        parts.append(f"{type(exc).__module__}.{type(exc).__qualname__} (message withheld)\n{stack}")
        exc = exc.__cause__ or exc.__context__
    return "caused by\n".join(parts)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # uvicorn's access log prints request paths, and paths hold identities (/v1/profiles/email:...).
    logging.getLogger("uvicorn.access").disabled = True
