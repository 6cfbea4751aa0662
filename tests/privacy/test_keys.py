"""The privacy secret: one per installation, read from its own store, never from another store's cache entry."""

from __future__ import annotations

import gc
from pathlib import Path

from kairos.privacy import keys
from kairos.runtime import Kairos
from tests.conftest import make_settings


def _open(path: Path) -> Kairos:
    return Kairos(make_settings({"url": f"sqlite:///{path}"}))


def test_each_installation_keeps_its_own_secret_and_a_reopened_one_reads_it_back(tmp_path: Path) -> None:
    a, b = _open(tmp_path / "a.db"), _open(tmp_path / "b.db")
    secret_a, secret_b = keys.privacy_secret(a), keys.privacy_secret(b)
    assert secret_a != secret_b and len(secret_a) == 32
    a.close()
    b.close()
    again = _open(tmp_path / "a.db")
    assert keys.privacy_secret(again) == secret_a  # stored in the installation's meta table
    again.close()


def test_a_closed_store_leaves_no_entry_behind(tmp_path: Path) -> None:
    """The cache is keyed by the store object: an entry keyed by ``id(store)`` outlived its store, and a store
    opened later at the same address read the old installation's secret (a CLI export then named no decision
    feature in clear)."""
    gc.collect()
    before = len(keys._cache)
    k = _open(tmp_path / "a.db")
    keys.privacy_secret(k)
    assert k.store in keys._cache and len(keys._cache) == before + 1
    k.close()
    del k
    gc.collect()
    assert len(keys._cache) == before
