"""Computed traits at their edges (found in review): hostile values, sketch limits, ties, late events. Both
backends, through the real collect path and processor."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.test_segments import World, order


@pytest.fixture
def world(store_settings: dict[str, Any]) -> Iterator[World]:
    w = World(store_settings)
    yield w
    w.kairos.close()


def deadletters(world: World) -> list[Any]:
    return list(world.kairos.store.state.deadletters())


def test_a_huge_numeric_string_neither_stops_the_processor_nor_becomes_infinite(world: World) -> None:
    world.define("trait", "spent", {"aggregate": "sum", "event": "Order Completed", "property": "total"})
    world.define("trait", "basket", {"aggregate": "avg", "event": "Order Completed", "property": "total"})
    world.define("trait", "largest", {"aggregate": "max", "event": "Order Completed", "property": "total"})
    world.send(order("u1", 10.0))
    world.send({**order("u1"), "properties": {"total": "1e999999"}})
    world.send({**order("u1"), "properties": {"total": "9e999999"}})
    world.send(order("u1", 5.0))
    assert deadletters(world) == []
    traits = world.view("user_id:u1")["traits"]
    # A number beyond any amount (the text "1e999999") does not count, like any value that is not a number.
    assert (traits["spent"], traits["basket"], traits["largest"]) == (15, 7.5, 10)
    # RFM counts the orders, with an unknown amount (docs/analytics.md: "it never stops the processor").
    assert (traits["rfm_orders"], traits["rfm_spend"]) == (4, 15)


def test_a_property_path_with_a_non_ascii_digit_does_not_stop_the_processor(world: World) -> None:
    world.define("trait", "first_price", {"aggregate": "sum", "property": "items.\u00b2"})
    world.send({"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"items": [1, 2, 3]}})
    assert deadletters(world) == []
    assert world.view("user_id:u1")["traits"]["first_price"] == 0
