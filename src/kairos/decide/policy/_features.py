"""From namespaced features to the sparse interaction vector a linear learner sees.

The design vector of (shared, action) is the outer product of two small sparse vectors: the shared side
(a constant 1 plus every feature of every namespace other than ``offer``) and the action side (a bias 1 plus
every feature of the action). Its entries are therefore the intercept, the action's own features (constant
x offer feature), the shared features' main effects (shared x bias, which do not change an order but keep
estimates calibrated) and every pairwise interaction shared x offer ("context:daypart=evening x
offer:category=shoes"), i.e. VW's ``-q ::`` between each shared namespace and the offer namespace.

Optionally, ``cells`` names shared namespaces whose categorical features (value 1.0, ``name=value``) are
joined into one extra shared feature (``cell:channel=web&daypart=evening&...``); crossed with the offer side
it gives the tabular model of each context cell x offer, which captures effects no pairwise term can, at the
price of many more parameters. Only worth it over a handful of low-cardinality namespaces.

Bounded memory: each side has a vocabulary of at most ``cap`` features (first come, first served); beyond
it, a feature shares the id of an existing one chosen by a stable hash (crc32, not Python's salted ``hash``,
so every process agrees). Likewise pairs get a parameter slot in order of first learning up to ``max_dim``
slots, after which a new pair shares a slot by hash. Collisions degrade estimates gracefully; nothing grows
without bound. Looking a feature up never adds it: only learning does, so ranking leaves the model unchanged.

Values: anything that is not a finite number is ignored (NaN, inf, strings), finite values are clipped to
``[-CLIP, CLIP]`` (the decide path is expected to transform numeric traits to about unit scale), zero
values carry no information and are dropped.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

from kairos.decide.records import ACTION_NAMESPACE, Features

__all__ = ["CLIP", "Interactions", "Side", "Vocab", "clean_value"]

CLIP = 10.0
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
# ids, values and (namespace, name) of one side's features; index 0 is the constant / bias
Side = tuple[list[int], list[float], list[tuple[str, str]]]


def clean_value(value: object) -> float:
    """A finite float in ``[-CLIP, CLIP]``, or 0.0 (ignored) for anything else."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return 0.0
    if not math.isfinite(number):
        return 0.0
    return max(-CLIP, min(CLIP, number))


def stable_hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


class Vocab:
    """(namespace, name) -> id, id 0 reserved for the constant; at most ``cap`` ids, hashed beyond."""

    def __init__(self, cap: int) -> None:
        if cap < 2:
            raise ValueError("a vocabulary needs room for the constant and one feature")
        self.cap = cap
        self.ids: dict[str, dict[str, int]] = {}
        self.names: list[tuple[str, str]] = [("", "")]

    def get(self, namespace: str, name: str) -> int:
        """The id, or -1 for a feature never learned (while there is still room for it to get its own)."""
        known = self.ids.get(namespace)
        if known is not None and (found := known.get(name)) is not None:
            return found
        if len(self.names) >= self.cap:
            return 1 + stable_hash(f"{namespace}\x00{name}") % (self.cap - 1)
        return -1

    def add(self, namespace: str, name: str) -> int:
        found = self.get(namespace, name)
        if found >= 0:
            return found
        self.names.append((namespace, name))
        self.ids.setdefault(namespace, {})[name] = len(self.names) - 1
        return len(self.names) - 1

    def load(self, names: Iterable[tuple[str, str]]) -> None:
        for namespace, name in names:
            self.add(namespace, name)


class Interactions:
    """The vocabularies of both sides and the pair -> slot table of one linear model."""

    def __init__(self, *, max_features: int, max_dim: int, cells: tuple[str, ...] = ()) -> None:
        self.shared = Vocab(max_features)
        self.offer = Vocab(max_features)
        self.max_dim = max_dim
        self.cells = cells
        self.table = np.full((16, 16), -1, dtype=np.int64)
        self.dim = 0  # slots handed out so far (at most max_dim)

    def side(self, features: Features, *, shared: bool, add: bool) -> Side:
        """One side's ids and values; with ``add`` (learning) new features get ids, else they are -1."""
        vocab = self.shared if shared else self.offer
        ids, values, keys = [0], [1.0], [("", "")]
        for namespace, mapping in features.items():
            if (
                (namespace == ACTION_NAMESPACE) == shared
                or not isinstance(mapping, Mapping)
                or not isinstance(namespace, str)
            ):
                continue
            known = vocab.ids.get(namespace)
            for name, value in mapping.items():
                # Fast path for the common case; NaN fails the comparison and takes the careful one.
                number = value if type(value) is float and -CLIP <= value <= CLIP else clean_value(value)
                if number == 0.0 or not isinstance(name, str):
                    continue
                found = known.get(name) if known is not None else None
                if found is None:
                    found = vocab.add(namespace, name) if add else vocab.get(namespace, name)
                    known = vocab.ids.get(namespace)
                ids.append(found)
                values.append(number)
                keys.append((namespace, name))
        if shared and self.cells:
            parts = sorted(
                f"{namespace}:{name}"
                for namespace in self.cells
                for name, value in features.get(namespace, {}).items()
                if isinstance(name, str) and "=" in name and clean_value(value) == 1.0
            )
            cell = "&".join(parts)
            ids.append(vocab.add("cell", cell) if add else vocab.get("cell", cell))
            values.append(1.0)
            keys.append(("cell", cell))
        return ids, values, keys

    def slots(self, shared_ids: IntArray, offer_ids: IntArray) -> IntArray:
        """The slot of each (shared, offer) pair, broadcast; -1 for a pair never learned."""
        shared_ids, offer_ids = np.broadcast_arrays(shared_ids, offer_ids)
        rows, cols = self.table.shape
        valid = (shared_ids >= 0) & (offer_ids >= 0) & (shared_ids < rows) & (offer_ids < cols)
        out = np.full(shared_ids.shape, -1, dtype=np.int64)
        out[valid] = self.table[shared_ids[valid], offer_ids[valid]]
        return out

    def assign(self, shared_ids: list[int], offer_ids: list[int]) -> IntArray:
        """The slots of every pair of one (shared, action), handing out slots to new pairs (learning only)."""
        rows, cols = self.table.shape
        need_rows, need_cols = max(shared_ids) + 1, max(offer_ids) + 1
        if need_rows > rows or need_cols > cols:
            grown = np.full((max(rows, 2 * need_rows), max(cols, 2 * need_cols)), -1, dtype=np.int64)
            grown[:rows, :cols] = self.table
            self.table = grown
        s = np.asarray(shared_ids, dtype=np.int64)[:, None]
        o = np.asarray(offer_ids, dtype=np.int64)[None, :]
        slots = self.table[s, o]
        for i, j in zip(*np.nonzero(slots < 0), strict=True):
            if self.table[shared_ids[i], offer_ids[j]] < 0:  # the same pair may occur twice
                self.table[shared_ids[i], offer_ids[j]] = self._new_slot(shared_ids[i], offer_ids[j])
            slots[i, j] = self.table[shared_ids[i], offer_ids[j]]
        return slots.reshape(-1)

    def _new_slot(self, shared_id: int, offer_id: int) -> int:
        if self.dim < self.max_dim:
            self.dim += 1
            return self.dim - 1
        return stable_hash(f"{shared_id}x{offer_id}") % self.max_dim

    @staticmethod
    def offer_arrays(offers: list[Side]) -> tuple[IntArray, FloatArray]:
        """The offers' ids and values as arrays (actions, features), padded with id -1 and value 0."""
        width = max(len(ids) for ids, _, _ in offers)
        offer_ids = np.full((len(offers), width), -1, dtype=np.int64)
        offer_values = np.zeros((len(offers), width))
        for row, (ids, values, _) in enumerate(offers):
            offer_ids[row, : len(ids)] = ids
            offer_values[row, : len(values)] = values
        return offer_ids, offer_values
