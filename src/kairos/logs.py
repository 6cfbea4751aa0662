"""Structured logs: one JSON object per line on stderr, and never personal data in clear.

Log calls pass only ids Kairos made (profile ids, seqs, source names) and counts. Anything that could be a
person's identifier goes through :func:`redact` first: a short keyed hash that lets an operator correlate
lines without reading the value.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
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
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


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
