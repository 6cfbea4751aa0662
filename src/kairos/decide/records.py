"""The types the decision path, the learners and the reports share.

A decision sees *shared* features (the request, the derived context, the profile) and one :class:`Action`
per eligible offer (its id and attributes); a learner turns them into a ranking (:class:`Ranked`), and the
decision log keeps what was decided (:class:`DecisionRecord`) so that rewards can be joined to it, policies
evaluated off-line (the logged propensities make that unbiased) and the experience measured.

Features are namespaced: ``{"context": {"daypart=evening": 1.0, "weekend": 1.0}, "profile": {"tier=gold":
1.0, "orders_30d": 1.386}}``. A categorical value is the feature ``name=value`` with value 1.0; a number is
the feature ``name`` with its (transformed) value. The namespaces are fixed (:data:`SHARED_NAMESPACES`,
:data:`ACTION_NAMESPACE`) so that a learner can interact every shared namespace with the offer's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "ACTION_NAMESPACE",
    "SHARED_NAMESPACES",
    "STATED_NAMESPACE",
    "Action",
    "Closed",
    "DecisionItem",
    "DecisionRecord",
    "Features",
    "Group",
    "Ranked",
    "RewardSource",
]

Features = Mapping[str, Mapping[str, float]]
# request: the decision request's own context; context: derived context (daypart, weekday, device, channel);
# profile: scalar traits the person's behaviour produced (observed, computed, RFM); segments: memberships;
# stated: what the person said about themselves (stated traits, preferences); moments: recent occurrences.
SHARED_NAMESPACES = ("request", "context", "profile", "segments", "stated", "moments")
STATED_NAMESPACE = "stated"
ACTION_NAMESPACE = "offer"  # "id=<key>" and "<attribute>=<value>" of the offer

Group = Literal["policy", "control", "not_personalized"]
RewardSource = Literal["api", "event", "conversion", "default"]


@dataclass(frozen=True, slots=True)
class Action:
    """One candidate: an offer and its features (``{"offer": {"id=summer": 1.0, "category=shoes": 1.0}}``)."""

    key: str
    features: Features


@dataclass(frozen=True, slots=True)
class Ranked:
    """A learner's answer for ``limit`` slots: ``order`` indexes the actions it was given, best first.

    ``propensities[i]`` is the probability that ``order[i]`` was put in slot ``i`` given the earlier slots (for
    slot 0: the probability the policy had of showing it first); ``explored[i]`` says the pick differs from
    the greedy one; ``estimates[i]`` is the predicted expected reward of the picked action.
    """

    order: tuple[int, ...]
    propensities: tuple[float, ...]
    explored: tuple[bool, ...]
    estimates: tuple[float, ...]
    # Every action's estimate, in the order given, when the policy computed them anyway (else empty): the
    # decision path reuses them instead of asking ``estimate`` again.
    means: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class DecisionItem:
    offer: str
    slot: int  # 0-based
    propensity: float
    explored: bool
    estimate: float  # the policy's predicted reward when it decided
    score: float  # arbitration priority: estimate * value * weight


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One logged decision: enough to join rewards, learn, evaluate policies off-line and measure experience."""

    id: str
    at: int  # epoch ms
    subject: str  # the profile id, or the identity ref ("anonymous_id:abc") of someone not known yet
    channel: str
    placement: str | None
    group: Group  # control: served by the baseline; not_personalized: consent denied (baseline, not learned)
    policy: str  # the learner's name
    policy_version: int  # the snapshot it decided with
    shared: Features  # what the policy saw
    candidates: tuple[Action, ...]  # the eligible offers, in the baseline's priority order
    weights: tuple[float, ...]  # value * weight of each candidate
    items: tuple[DecisionItem, ...]
    interaction: bool  # the answer used this person's own behaviour or current context
    customization: bool  # the answer was shaped by the person's own stated input
    profile_pk: int | None = None


@dataclass(frozen=True, slots=True)
class Closed:
    """A decision with the rewards known for its items: offer → reward (the first that arrived, or the
    default once the wait time passed with none). An item absent from ``rewards`` is still open."""

    decision: DecisionRecord
    rewards: Mapping[str, float] = field(default_factory=dict)
