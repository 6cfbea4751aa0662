"""The privacy secret and keyed hashes made with it.

One secret per installation signs preference-centre links and keys the hashes of suppressed identifiers, so
that a stored hash cannot be recomputed from a guessed e-mail address by someone who reads the database but
not the secret. ``privacy.secret`` sets it; unset, Kairos draws one on first use and keeps it in the durable
``meta`` table of the log database, so every process of the installation shares it::

    >>> keyed_hash(b"k" * 32, "email", "jane@example.com") == keyed_hash(b"k" * 32, "email", "jane@example.com")
    True
    >>> keyed_hash(b"k" * 32, "email", "jane@example.com") == keyed_hash(b"x" * 32, "email", "jane@example.com")
    False

A hash is taken of the *normalized* identifier (as the processor stores it), so ``Jane@Example.com`` and
``jane@example.com`` are the same person.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["feature_label", "keyed_hash", "privacy_secret"]

_META_KEY = "privacy_secret"
_lock = threading.Lock()
# Per store object, not per ``id(store)``: a store opened after another was freed can have its address, and
# would read the other installation's secret (a CLI export then named no decision feature in clear).
_cache: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()


def keyed_hash(secret: bytes, kind: str, value: str) -> str:
    """HMAC-SHA256 of ``kind:value`` under ``secret``, hex (the form suppression lists store)."""
    return hmac.new(secret, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def feature_label(secret: bytes) -> Callable[[str, str], str]:
    """Names a decision's text feature ``name=value`` by a keyed hash of both (``plan=#1f0c...``), so that policy
    snapshots and the decision log hold no trait value in clear; the same text always gets the same name.

    >>> label = feature_label(b"k" * 32)
    >>> label("plan", "pro") == label("plan", "pro") != label("plan", "free")
    True
    >>> label("plan", "pro").startswith("plan=#"), "pro" in label("plan", "pro")[5:]
    (True, False)
    """

    @functools.lru_cache(maxsize=100_000)
    def label(name: str, value: str) -> str:
        digest = hmac.new(secret, f"{name}\x00{value}".encode(), hashlib.sha256).hexdigest()[:16]
        return f"{name}=#{digest}"

    return label


def privacy_secret(kairos: Any) -> bytes:
    """The installation's secret: ``privacy.secret`` if set, else the one stored in the log database (drawn
    and stored by the first process that needs it; a concurrent first use keeps the one stored first)."""
    configured = kairos.settings.privacy.secret
    if configured:
        return str(configured).encode()
    key = kairos.store
    with _lock:
        if key in _cache:
            return _cache[key]
        db = kairos.store.admin.db
        with db.tx(write=True) as conn:
            db.d.lock(conn, "meta")
            found = db.rows(conn, "SELECT value FROM meta WHERE key = {p}", (_META_KEY,))
            if found:
                value = str(found[0][0])
            else:
                value = secrets.token_hex(32)
                conn.execute(db.sql("INSERT INTO meta (key, value) VALUES ({p}, {p})"), (_META_KEY, value))
        _cache[key] = bytes.fromhex(value)
        return _cache[key]
