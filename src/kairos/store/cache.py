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

    def token(self) -> int:
        """Taken before reading the store; :meth:`put` with it is ignored if anything was invalidated since."""
        ...

    def put(self, key: str, value: Any, token: int) -> None: ...

    def invalidate(self, keys: Iterable[str]) -> None: ...

    def clear(self) -> None:
        """Invalidate everything: what changed is unknown (a processor process died mid-report)."""
        ...


class MemoryCache:
    def __init__(self, size: int, ttl: float) -> None:
        self._data: TTLCache[str, Any] | None = TTLCache(maxsize=size, ttl=ttl) if size and ttl else None
        self._lock = threading.Lock()  # the processor thread invalidates while request threads read
        self._generation = 0

    def get(self, key: str) -> Any | None:
        if self._data is None:
            return None
        with self._lock:
            return self._data.get(key)

    def token(self) -> int:
        return self._generation

    def put(self, key: str, value: Any, token: int) -> None:
        # A reader that loaded before a processor commit must not cache what that commit replaced.
        if self._data is not None:
            with self._lock:
                if token == self._generation:
                    self._data[key] = value

    def invalidate(self, keys: Iterable[str]) -> None:
        if self._data is not None:
            with self._lock:
                self._generation += 1
                for key in keys:
                    self._data.pop(key, None)

    def clear(self) -> None:
        if self._data is not None:
            with self._lock:
                self._generation += 1
                self._data.clear()
