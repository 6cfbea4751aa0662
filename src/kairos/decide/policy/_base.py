"""The one interface every learning policy implements, and the snapshot envelope they share.

A policy is configured entirely by its constructor arguments (River style) and holds no randomness of its own:
exploration draws only from the ``rng`` handed to :meth:`Policy.rank`, so a decision is reproducible from the
model state and that generator, and :meth:`Policy.estimate` / :meth:`Policy.rank` never change the model (an
API process ranking with a loaded snapshot stays identical to the snapshot).

Snapshots (:meth:`Policy.dumps`) are msgpack: an envelope ``{"format", "version", "name", "learned", "config",
"state"}`` whose arrays are ``{"dtype", "shape", "data"}`` with raw little-endian bytes. Nothing is pickled, so
loading a blob from the store cannot run code; a blob that is not a policy snapshot raises
:class:`PolicySnapshotError`.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar

import msgspec
import numpy as np
import numpy.typing as npt

from kairos.decide.features import without
from kairos.decide.records import Action, Features, Ranked
from kairos.errors import StoreError

__all__ = [
    "FORMAT",
    "VERSION",
    "Policy",
    "PolicySnapshotError",
    "Scoring",
    "clean_weights",
    "pack_array",
    "unpack_array",
]

FORMAT = "kairos.policy"
VERSION = 1
_ARRAY_DTYPES = frozenset({"<f8", "<i4", "<i8"})


class PolicySnapshotError(StoreError):
    """A blob that is not a readable policy snapshot (corrupt, truncated, foreign or from a newer format).

    Terminal: reading the same bytes again gives the same answer.
    """

    code = "invalid_policy_snapshot"


class Policy(ABC):
    """Ranks the eligible actions of one decision and learns from the rewards that come back later.

    Invariants every implementation keeps (``tests/decide/test_policy_conformance.py`` checks them):
    ``rank`` returns ``min(limit, len(actions))`` distinct indexes with propensities in (0, 1], the
    propensity of slot ``i`` being the probability of that pick given the earlier slots; ``estimate`` and
    ``rank`` do not change the model; the same constructor arguments and the same stream of calls give the
    same rankings and the same ``dumps()`` bytes; unknown, vanished or hostile features (NaN, inf, huge values,
    odd names) never raise and never give a non-finite estimate.
    """

    name: ClassVar[str]
    learned: int

    def __init__(self, *, seed: int = 0) -> None:
        # The seed is kept for the configuration's sake (and for learners that would need it to initialise);
        # exploration never draws from it, see the module docstring.
        self.seed = seed
        self.learned = 0

    @abstractmethod
    def estimate(self, shared: Features, actions: Sequence[Action]) -> list[float]:
        """The predicted expected reward of each action (exploitation only, no exploration bonus)."""

    @abstractmethod
    def rank(
        self,
        shared: Features,
        actions: Sequence[Action],
        limit: int,
        *,
        rng: random.Random,
        weights: Sequence[float] | None = None,
    ) -> Ranked:
        """Order up to ``limit`` actions: greedy by score * weight, exploring around it with exact propensities."""

    @abstractmethod
    def learn(self, shared: Features, action: Action, reward: float, propensity: float) -> None:
        """Learn one reward for ``action`` shown in the context ``shared``; rewards may arrive in any order."""

    def relabel(self, corrections: Sequence[tuple[Features, Action, float]]) -> None:
        """The reward of (shared, action) pairs already learned changes by ``delta``: learned first with the
        default reward when shown, an item's real reward arrives later. For a learner that regresses on
        rewards, ``learn(s, a, d)`` then ``relabel([(s, a, r - d)])`` must equal ``learn(s, a, r)``. Learners
        that keep nothing (the baselines) ignore it."""
        return None

    def learn_many(self, rewards: Sequence[tuple[Features, Action, float, float]]) -> None:
        """Learn several (shared, action, reward, propensity) at once, as if one by one in that order (a
        learner may do it faster, e.g. one matrix update for the batch)."""
        for shared, action, reward, propensity in rewards:
            self.learn(shared, action, reward, propensity)

    @abstractmethod
    def explain(self, shared: Features, action: Action, top: int = 3) -> list[tuple[str, float]]:
        """The features that weighed most in this action's estimate, largest absolute contribution first."""

    def scoring(self, shared: Features, actions: Sequence[Action]) -> Scoring:
        """Everything one decision asks about ``(shared, actions)``: see :class:`Scoring`."""
        return Scoring(self, shared, actions)

    def warm(self, previous: Policy) -> None:
        """Get ready for the decisions ``previous`` was making (this policy, a newer snapshot, replaces it),
        so that what a scoring remembers is not worked out again on the decisions' path. Nothing by default."""
        return None

    @abstractmethod
    def _config(self) -> dict[str, Any]:
        """The constructor arguments (all of them, ``seed`` included)."""

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """Everything learned, as msgpack-able values (arrays through :func:`pack_array`)."""

    @abstractmethod
    def _restore(self, state: Mapping[str, Any]) -> None:
        """Set the learned state from :meth:`_state`'s output; raise ``ValueError``/``KeyError`` if malformed."""

    def dumps(self) -> bytes:
        """A versioned, self-describing snapshot: :func:`kairos.decide.policy.load_policy` reads it back."""
        envelope = {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "learned": self.learned,
            "config": self._config(),
            "state": self._state(),
        }
        return msgspec.msgpack.encode(envelope)

    @classmethod
    def _from_envelope(cls, envelope: Mapping[str, Any]) -> Policy:
        config = envelope["config"]
        if not isinstance(config, dict):
            raise ValueError("config is not a map")
        policy = cls(**config)
        policy.learned = int(envelope["learned"])
        policy._restore(envelope["state"])
        return policy


class Scoring:
    """What one decision asks a policy about one ``(shared, actions)``: the ranking, the estimates with some
    shared namespaces left out (how the answer would be for someone else: the decision path's interaction and
    customization flags) and the explanation of each action shown. The answers are those of the policy's own
    methods (the conformance suite checks it); this generic one asks them, a learner may compute them all
    from one pass over its model (:class:`kairos.decide.policy._linear.LinearScoring`).

    The model must not change while a scoring is in use (a decision holds a snapshot that never learns).
    """

    def __init__(self, policy: Policy, shared: Features, actions: Sequence[Action]) -> None:
        self.policy = policy
        self.shared = shared
        self.actions = actions

    def rank(self, limit: int, *, rng: random.Random, weights: Sequence[float] | None = None) -> Ranked:
        """``policy.rank(shared, actions, limit, rng=rng, weights=weights)``."""
        return self.policy.rank(self.shared, self.actions, limit, rng=rng, weights=weights)

    def estimate(self, drop: Collection[str] = ()) -> list[float]:
        """``policy.estimate`` of the actions, the shared namespaces in ``drop`` left out."""
        return self.policy.estimate(without(self.shared, drop) if drop else self.shared, self.actions)

    def explain(self, index: int, top: int = 3) -> list[tuple[str, float]]:
        """``policy.explain(shared, actions[index], top)``."""
        return self.policy.explain(self.shared, self.actions[index], top)

    def explain_many(self, indexes: Sequence[int], top: int = 3) -> list[list[tuple[str, float]]]:
        """:meth:`explain` of each of ``indexes`` (the actions shown)."""
        return [self.explain(index, top) for index in indexes]


def clean_weights(weights: Sequence[float] | None, n: int) -> npt.NDArray[np.float64]:
    """Arbitration weights as an array; a missing, NaN or infinite weight counts as 1.0, a negative one as 0.

    A wrong length is a caller's bug, not a hostile value: it raises.
    """
    if weights is None:
        return np.ones(n)
    if len(weights) != n:
        raise ValueError(f"{len(weights)} weights for {n} actions")
    out = np.array(weights, dtype=np.float64)
    out[~np.isfinite(out)] = 1.0
    return np.clip(out, 0.0, 1e12)


def pack_array(array: npt.NDArray[Any]) -> dict[str, Any]:
    """An array as msgpack-able data, always little-endian so a snapshot reads the same on any machine."""
    dtype = array.dtype.newbyteorder("<")
    data = np.ascontiguousarray(array, dtype=dtype)
    return {"dtype": dtype.str, "shape": list(data.shape), "data": data.tobytes()}


def unpack_array(value: Any) -> npt.NDArray[Any]:
    """The inverse of :func:`pack_array`; a malformed value raises ``ValueError``."""
    if not isinstance(value, dict) or value.get("dtype") not in _ARRAY_DTYPES:
        raise ValueError("not a packed array")
    shape = tuple(int(n) for n in value["shape"])
    data = value["data"]
    if not isinstance(data, bytes):
        raise ValueError("array data is not bytes")
    array = np.frombuffer(data, dtype=np.dtype(value["dtype"])).reshape(shape)
    return array.astype(array.dtype.newbyteorder("="))  # a writable, native-order copy
