"""Reading log rows written by the first release, whose payloads carried Kairos' own stamps."""

from __future__ import annotations

import contextlib
from datetime import datetime

import msgspec

from kairos.collect.ingest import epoch_ms

__all__ = ["legacy_columns"]


class _Stamp(msgspec.Struct):
    trait_kind: str = "observed"


class _Legacy(msgspec.Struct):
    timestamp: str | None = None
    stamp: _Stamp = msgspec.field(default_factory=_Stamp, name="_kairos")


_decode = msgspec.json.Decoder(_Legacy).decode


def legacy_columns(payload: bytes, received_at: int) -> tuple[int, str]:
    """``(ts, trait_kind)`` of a first-release row: its corrected ``timestamp`` and ``_kairos`` stamp."""
    try:
        old = _decode(payload)
    except msgspec.DecodeError:
        return received_at, "observed"
    ts = received_at
    if old.timestamp:
        with contextlib.suppress(ValueError):
            ts = epoch_ms(datetime.fromisoformat(old.timestamp))
    return ts, old.stamp.trait_kind
