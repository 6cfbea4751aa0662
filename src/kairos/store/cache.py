"""The hot profile cache: an interface and the embedded, in-process implementation.

Redis implements the same interface in the scale-out shape. Entries are whole profile views keyed by the
canonical profile id; the processor invalidates what each batch changed, and a TTL bounds staleness when
another process (``kairos import``) changed the store.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Protocol

from cachetools import TTLCache

__all__ = ["Cache", "MemoryCache"]


class Cache(Protocol):
    def get(self, key: str) -> Any | None: ...

    def put(self, key: str, value: Any) -> None: ...

    def invalidate(self, keys: Iterable[str]) -> None: ...


class MemoryCache:
    def __init__(self, size: int, ttl: float) -> None:
        self._data: TTLCache[str, Any] | None = TTLCache(maxsize=size, ttl=ttl) if size and ttl else None
        self._lock = threading.Lock()  # the processor thread invalidates while request threads read

    def get(self, key: str) -> Any | None:
        if self._data is None:
            return None
        with self._lock:
            return self._data.get(key)

    def put(self, key: str, value: Any) -> None:
        if self._data is not None:
            with self._lock:
                self._data[key] = value

    def invalidate(self, keys: Iterable[str]) -> None:
        if self._data is not None:
            with self._lock:
                for key in keys:
                    self._data.pop(key, None)
