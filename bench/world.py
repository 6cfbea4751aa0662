"""A simulated world for the decision API's learners: offers with attributes, situations, click rates.

A *situation* is daypart (4) x channel (4) x customer segment (5): 80 cells, visited with a skewed,
non-uniform distribution (evening web traffic dominates, the store channel is rare). Each offer has a
category, a price tier, a channel affinity and a brand (the brand has no effect: an irrelevant attribute, as
is the weekday in the context). The click probability of (situation, offer) is a few percent and comes from:

- ``pairwise`` (the default): a logit-additive model: offer base rate + daypart x category + channel x offer +
  segment x price tier + channel x affinity. Pairwise in logit space is *not* pairwise in probability space,
  so even here a linear model of click probability is slightly misspecified.
- ``linear``: the same effects added in probability space: the linear learners' home world.
- ``threeway``: ``pairwise`` plus a daypart x channel x category term and independent noise on every
  (cell, offer): effects no pairwise model can capture, to see how a learner does on a world it was not
  designed for.

:meth:`World.features` presents a situation exactly as the decide path will (``docs/learning.md``), including
an irrelevant ``weekday=...`` drawn at random, and :attr:`World.actions` the offers as ``Action`` values.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from kairos.decide.records import Action, Features

__all__ = ["CHANNELS", "DAYPARTS", "SEGMENTS", "VARIANTS", "Situation", "Variant", "World"]

DAYPARTS = ("night", "morning", "afternoon", "evening")
CHANNELS = ("web", "app", "email", "store")
SEGMENTS = ("new", "bargain_hunters", "loyal", "lapsed", "vip")
CATEGORIES = ("shoes", "tops", "outerwear", "hats", "bags", "beauty")
TIERS = ("low", "mid", "high")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Variant = Literal["pairwise", "linear", "threeway"]
VARIANTS: tuple[Variant, ...] = ("pairwise", "linear", "threeway")
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Situation:
    daypart: int
    channel: int
    segment: int
    weekday: int

    @property
    def cell(self) -> int:
        return (self.daypart * len(CHANNELS) + self.channel) * len(SEGMENTS) + self.segment


class World:
    """One random world; the same ``seed`` and arguments give the same world."""

    def __init__(self, seed: int, offers: int = 20, variant: Variant = "pairwise", base_rate: float = 0.02) -> None:
        g = np.random.default_rng(seed)
        self.variant = variant
        self.keys = [f"offer{i:02d}" for i in range(offers)]
        self.category = g.integers(len(CATEGORIES), size=offers)
        self.tier = g.integers(len(TIERS), size=offers)
        self.affinity = g.integers(len(CHANNELS), size=offers)
        self.brand = g.integers(4, size=offers)
        self.actions = [
            Action(
                key,
                {
                    "offer": {
                        f"id={key}": 1.0,
                        f"category={CATEGORIES[self.category[i]]}": 1.0,
                        f"price_tier={TIERS[self.tier[i]]}": 1.0,
                        f"affinity={CHANNELS[self.affinity[i]]}": 1.0,
                        f"brand=b{self.brand[i]}": 1.0,
                    }
                },
            )
            for i, key in enumerate(self.keys)
        ]
        # Skewed traffic: each factor has its own uneven distribution, the cells their product.
        self.p_daypart = np.array([0.1, 0.25, 0.25, 0.4])
        self.p_channel = np.array([0.45, 0.3, 0.18, 0.07])
        self.p_segment = g.dirichlet(np.full(len(SEGMENTS), 2.0))
        logit = self._effects(g, offers)  # (daypart, channel, segment, offer)
        if variant == "linear":
            self.p = self._linear(g, offers)
        else:
            self.p = 1.0 / (1.0 + np.exp(-(logit + math.log(base_rate / (1 - base_rate)))))
        self._cell_probs = (
            self.p_daypart[:, None, None] * self.p_channel[None, :, None] * self.p_segment[None, None, :]
        ).reshape(-1)
        self._features: dict[tuple[int, int, int, int], Features] = {}

    def _effects(self, g: np.random.Generator, n: int) -> FloatArray:
        base = g.normal(0.0, 0.3, size=n)
        daypart_category = g.normal(0.0, 0.35, size=(len(DAYPARTS), len(CATEGORIES)))
        channel_offer = g.normal(0.0, 0.25, size=(len(CHANNELS), n))
        segment_tier = g.normal(0.0, 0.35, size=(len(SEGMENTS), len(TIERS)))
        channel_affinity = np.where(np.arange(len(CHANNELS))[:, None] == self.affinity[None, :], 0.4, 0.0)
        logit = (
            base[None, None, None, :]
            + daypart_category[:, self.category][:, None, None, :]
            + (channel_offer + channel_affinity)[None, :, None, :]
            + segment_tier[:, self.tier][None, None, :, :]
        )
        if self.variant == "threeway":
            three = g.normal(0.0, 0.35, size=(len(DAYPARTS), len(CHANNELS), len(CATEGORIES)))
            logit = logit + three[:, :, self.category][:, :, None, :]
            logit = logit + g.normal(0.0, 0.25, size=logit.shape)
        result: FloatArray = logit
        return result

    def _linear(self, g: np.random.Generator, n: int) -> FloatArray:
        """Effects added in probability space around the base rate (each term a fraction of it)."""
        r = 0.025
        p = (
            r * (1 + g.normal(0, 0.3, size=n))[None, None, None, :]
            + r * g.normal(0, 0.4, size=(len(DAYPARTS), len(CATEGORIES)))[:, self.category][:, None, None, :]
            + r * g.normal(0, 0.3, size=(len(CHANNELS), n))[None, :, None, :]
            + r * g.normal(0, 0.4, size=(len(SEGMENTS), len(TIERS)))[:, self.tier][None, None, :, :]
        )
        clipped: FloatArray = np.clip(p, 0.002, 0.5)
        return clipped

    @property
    def offers(self) -> list[str]:
        return list(self.keys)

    def sample(self, rng: random.Random) -> Situation:
        cell = rng.choices(range(len(self._cell_probs)), weights=self._cell_probs.tolist())[0]
        rest, segment = divmod(cell, len(SEGMENTS))
        daypart, channel = divmod(rest, len(CHANNELS))
        return Situation(daypart, channel, segment, rng.randrange(len(WEEKDAYS)))

    def click_probability(self, situation: Situation, offer: str | int) -> float:
        index = offer if isinstance(offer, int) else self.keys.index(offer)
        return float(self.p[situation.daypart, situation.channel, situation.segment, index])

    def probabilities(self, situation: Situation) -> FloatArray:
        """Every offer's click probability in this situation (the offers' order)."""
        row: FloatArray = self.p[situation.daypart, situation.channel, situation.segment]
        return row

    def oracle_rate(self, situation: Situation) -> float:
        return float(self.probabilities(situation).max())

    def best_fixed_offer(self) -> str:
        """The one offer with the highest click rate over the traffic distribution."""
        expected = (self.p.reshape(-1, len(self.keys)) * self._cell_probs[:, None]).sum(axis=0)
        return self.keys[int(np.argmax(expected))]

    def features(self, situation: Situation) -> Features:
        key = (situation.daypart, situation.channel, situation.segment, situation.weekday)
        found = self._features.get(key)
        if found is None:
            found = self._features[key] = {
                "context": {
                    f"daypart={DAYPARTS[situation.daypart]}": 1.0,
                    f"channel={CHANNELS[situation.channel]}": 1.0,
                    f"weekday={WEEKDAYS[situation.weekday]}": 1.0,
                },
                "segments": {SEGMENTS[situation.segment]: 1.0},
            }
        return found
