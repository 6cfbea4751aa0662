from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kairos.rules import MAX_RULE_LENGTH, Bindings, RuleError, Scope, compile_rule, duration_ms

NOW = 1_700_086_400_000  # epoch ms
DAY = 86_400_000


def error(source: str, scope: Scope = Scope.SEGMENT) -> RuleError:
    with pytest.raises(RuleError) as caught:
        compile_rule(source, scope)
    assert caught.value.code == "invalid_rule"
    return caught.value


def segment(source: str, **variables: Any) -> bool:
    return compile_rule(source, Scope.SEGMENT).evaluate({"now": NOW, **variables})


# Save-time errors, with their positions.


@pytest.mark.parametrize(
    ("source", "position", "line", "column", "text"),
    [
        ("traits.a == 1 &&", 16, 1, 17, "Syntax error"),
        ("  foo == 1", 2, 1, 3, "undeclared reference to 'foo'"),
        ('traits.a == 1 &&\n  bar == "x"', 19, 2, 3, "undeclared reference to 'bar'"),
        ("segments + 1 == 2", 9, 1, 10, "found no matching overload for '_+_' applied to '(list(string), int)'"),
        ('"é😀" == 1 + "x"', 10, 1, 11, "'(int, string)'"),
        ("profile.nosuch == 1", 7, 1, 8, "undefined field 'nosuch'"),
        ("profile.event_count > 3.5", 20, 1, 21, "'(int, double)'"),
    ],
)
def test_compile_errors_point_at_the_source(source: str, position: int, line: int, column: int, text: str) -> None:
    e = error(source)
    assert (e.position, e.line, e.column) == (position, line, column)
    assert text in e.message
    assert e.to_dict()["position"] == position
    assert "(in container" not in e.message and "\n" not in e.message


def test_a_rule_must_be_true_or_false() -> None:
    e = error("traits.a + 1 > 0 ? 1 : 2")
    assert e.message.startswith("a rule must be true or false; this one gives int")
    assert error('"x"').message.startswith("a rule must be true or false; this one gives string")
    compile_rule("traits.flag", Scope.SEGMENT)  # dyn: checked at run time


def test_empty_not_text_too_long_and_too_deep() -> None:
    assert "empty" in error("  \n").message
    e = error("true || " * 12_500 + "true")  # 100 KB
    assert e.position is None and f"at most {MAX_RULE_LENGTH} characters" in e.message
    compile_rule(
        " || ".join(f"traits.a == {i}" for i in range(200))[:MAX_RULE_LENGTH].rsplit(" ||", 1)[0], Scope.SEGMENT
    )
    assert "nests too deeply" in error("(" * 40 + "true" + ")" * 40).message
    # Member and operator chains nest too (cel-cpp says "max recursion depth" there): the same message.
    assert "nests too deeply" in error("traits." + ".".join(["a"] * 40) + " == 1").message
    assert "nests too deeply" in error(" + ".join(["1"] * 200) + " == 1").message
    with pytest.raises(RuleError, match="text"):
        compile_rule(b"true", Scope.SEGMENT)  # type: ignore[arg-type]


# Durations.


def test_duration_ms() -> None:
    assert duration_ms("30d") == 30 * DAY
    assert duration_ms("1d12h") == 36 * 3_600_000
    assert (duration_ms("12h"), duration_ms("15m"), duration_ms("90s"), duration_ms("250ms")) == (
        43_200_000,
        900_000,
        90_000,
        250,
    )
    for bad in ["", "3x", "30", "d", "1.5h", "-1d", "12h1d", "1h1h", " 1h", "1 h", "36500000d"]:
        with pytest.raises(ValueError, match=r"duration|100 years"):
            duration_ms(bad)


def test_day_durations_in_rules() -> None:
    rule = 'profile.created_at > now - duration("30d")'
    assert segment(rule, profile={"created_at": NOW - 29 * DAY})
    assert not segment(rule, profile={"created_at": NOW - 31 * DAY})
    assert segment('duration("1d12h") == duration("36h") && duration("250ms") < duration("1s")')


def test_bad_duration_literals_are_refused_at_their_position() -> None:
    e = error('now - duration("3x") < now')
    assert (e.position, e.line, e.column) == (15, 1, 16)
    assert "a duration is" in e.message
    e = error("now - duration(traits.window) < now")
    assert (e.position, e.column) == (14, 15)
    assert "literal" in e.message


def test_positions_after_a_day_duration_rewrite() -> None:
    # The rewrite is done on the AST, not the text: errors found after it still point into the text as written.
    e = error('duration("30d") < duration("1d") && duration("2x") > duration("1h")')
    assert e.position == 45
    e = error('now - duration("30d") > now && nosuch')
    assert e.position == 31


# Evaluation.


def test_missing_trait_is_false_not_an_exception() -> None:
    rule = compile_rule('traits.plan == "pro"', Scope.SEGMENT)
    assert rule.evaluate({"traits": {"plan": "pro"}})
    outcome = rule.evaluate_detail({"traits": {}})
    assert outcome.matched is False
    assert outcome.error is not None and "not found" in outcome.error.lower()
    assert rule.errors == 1
    assert not rule.evaluate({"traits": {"plan": 3}})  # heterogeneous equality: false, not an error
    assert not segment('has(traits.plan) && traits.plan == "pro"', traits={})
    assert segment("!has(traits.plan)", traits={})


def test_wrong_types_at_run_time_are_false_and_counted() -> None:
    rule = compile_rule("traits.age > 30", Scope.SEGMENT)
    assert not rule.evaluate({"traits": {"age": "old"}})
    assert rule.errors == 1 and rule.last_error is not None
    dyn = compile_rule("traits.flag", Scope.SEGMENT)
    assert dyn.evaluate({"traits": {"flag": True}})
    assert not dyn.evaluate({"traits": {"flag": "yes"}})
    assert dyn.errors == 1


@pytest.mark.parametrize(
    ("source", "value", "expected"),
    [
        ("traits.n == 1.0", 1, True),
        ("traits.n == 1", 1.0, True),
        ("traits.n < 1.5", 1, True),
        ("traits.n > 1.5", 2, True),
        ("traits.n >= 2.5", 2, False),
        ("traits.n in [1.0, 2.0]", 2, True),
        ("traits.n == 1u", 1, True),
        ("traits.n > 9223372036854775807", 2**63, True),
    ],
)
def test_numbers_compare_across_int_and_double(source: str, value: Any, expected: bool) -> None:
    rule = compile_rule(source, Scope.SEGMENT)
    assert rule.evaluate({"traits": {"n": value}}) is expected
    assert rule.errors == 0


def test_unicode_and_nul() -> None:
    assert segment('traits.city == "Zürich 😀"', traits={"city": "Zürich 😀"})
    assert segment('size(traits.city) == 8 && traits.city.startsWith("Zü")', traits={"city": "Zürich 😀"})
    assert segment('size("a\\u0000b") == 3 && "a\\u0000b" != "a"')
    # The binding would cut a NUL in a value: such a value is refused, the rule is false and the error counted.
    rule = compile_rule('traits.a == "a"', Scope.SEGMENT)
    outcome = rule.evaluate_detail({"traits": {"a": "a\x00b"}})
    assert not outcome.matched and outcome.error is not None and "NUL" in outcome.error


def test_values_are_converted() -> None:
    assert segment('"vip" in segments', segments={"vip", "new"})
    assert segment(
        'identities.email.exists(e, e.endsWith("@x.io"))', identities={("email", "a@x.io"), ("user_id", "1")}
    )
    assert segment('"a@x.io" in identities["email"]', identities={"email": {"a@x.io"}})
    assert segment("consents.marketing && !consents.analytics", consents={"marketing": True, "analytics": False})
    assert segment(
        "traits.tags.exists(t, t == 'b') && size(traits.nested.list) == 2",
        traits={"tags": ("a", "b"), "nested": {"list": [1, {"x": None}]}},
    )
    at = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    assert segment('traits.seen == "2024-01-02T00:00:00Z"', traits={"seen": at})
    assert segment(
        "profile.updated_at == timestamp('2024-01-02T00:00:00Z') && profile.event_count == 3",
        profile={"updated_at": at, "event_count": 3},
    )
    assert segment("now == timestamp('2023-11-15T22:13:20Z')")
    rule = compile_rule("traits.a == 1", Scope.SEGMENT)
    assert not rule.evaluate({"traits": {"a": object()}})


def test_bindings_are_shared_by_the_rules_of_one_scope() -> None:
    bindings = Scope.SEGMENT.bind({"traits": {"plan": "pro"}, "now": NOW})
    assert isinstance(bindings, Bindings)
    assert compile_rule('traits.plan == "pro"', Scope.SEGMENT).evaluate(bindings)
    assert not compile_rule('"vip" in segments', Scope.SEGMENT).evaluate(bindings)
    event_rule = compile_rule('event == "Order Completed"', Scope.EVENT)
    assert not event_rule.evaluate(bindings)
    assert event_rule.errors == 1


def test_value_for_non_bool_uses() -> None:
    rule = compile_rule("traits.n", Scope.SEGMENT)
    assert rule.value({"traits": {"n": [1, 2]}}) == [1, 2]
    with pytest.raises(ValueError, match="not found"):
        rule.value({"traits": {}})


def test_unbound_now_is_an_error_not_a_crash() -> None:
    rule = compile_rule("now > timestamp('2020-01-01T00:00:00Z')", Scope.SEGMENT)
    assert not rule.evaluate({})
    assert rule.errors == 1


# References.


def test_references() -> None:
    refs = compile_rule(
        'traits.plan == "pro" && has(traits.email) && traits["ltv"] > 10 && "country" in traits'
        ' && traits.address.city == "Oslo" && "vip" in segments && !("churned" in segments)'
        " && identities.email.size() > 0 && consents.marketing && profile.created_at < now",
        Scope.SEGMENT,
    ).references
    assert refs.traits == {"plan", "email", "ltv", "country", "address"}
    assert not refs.traits_dynamic
    assert refs.segments == {"vip", "churned"} and not refs.segments_dynamic
    assert refs.identities == {"email"} and refs.consents == {"marketing"} and refs.profile == {"created_at"}
    assert refs.uses_now
    assert refs.reads("traits", "plan") and not refs.reads("traits", "other")


def test_dynamic_references() -> None:
    refs = compile_rule(
        'traits.exists(k, k.startsWith("utm_")) && segments.exists(s, s.startsWith("v"))', Scope.SEGMENT
    ).references
    assert refs.traits_dynamic and refs.segments_dynamic and not refs.uses_now
    assert refs.reads("traits", "anything")
    refs = compile_rule("traits[traits.key] == 1 && size(segments) > 2", Scope.SEGMENT).references
    assert refs.traits == {"key"} and refs.traits_dynamic and refs.segments_dynamic
    refs = compile_rule("traits.a == 1", Scope.SEGMENT).references
    assert refs.variables == {"traits"} and not refs.uses_now and not refs.reads("segments")


def test_comprehension_variables_shadow_scope_variables() -> None:
    refs = compile_rule("[1, 2].exists(traits, traits == 2) && traits.x == 1", Scope.SEGMENT).references
    assert refs.traits == {"x"} and not refs.traits_dynamic


# EVENT scope: computed-trait `where` filters.


def test_event_scope_where_filters() -> None:
    rule = compile_rule(
        'event_type == "track" && event == "Order Completed" && properties.total >= 50.0'
        ' && context.locale.startsWith("de")'
        ' && timestamp > timestamp("2024-01-01T00:00:00Z")',
        Scope.EVENT,
    )
    event = {
        "event_type": "track",
        "event": "Order Completed",
        "properties": {"total": 60},
        "context": {"locale": "de-CH"},
        "timestamp": 1_710_000_000_000,
    }
    assert rule.evaluate(event)
    assert not rule.evaluate({**event, "properties": {"total": 10}})
    assert not rule.evaluate({**event, "properties": {}})
    assert rule.references.keys["properties"] == {"total"} and rule.references.keys["context"] == {"locale"}
    assert rule.references.variables == {"event_type", "event", "properties", "context", "timestamp"}
    assert "undeclared reference to 'segments'" in error('"vip" in segments', Scope.EVENT).message
    assert compile_rule('traits.plan == "pro"', Scope.EVENT).evaluate({"traits": {"plan": "pro"}})


# Moment conditions: the SEGMENT variables, the event, and its derived context (a typed message).

JULY_4 = {
    "local_time": "2026-07-04T08:00:00-04:00",
    "local_hour": 8,
    "daypart": "morning",
    "weekday": "saturday",
    "weekend": True,
    "holiday": "Independence Day",
    "timezone": "America/New_York",
    "device_class": "mobile",
    "os": "iOS",
    "browser": "Mobile Safari",
    "channel": "app",
    "country": "US",
    "city": None,
    "latitude": None,
    "longitude": None,
}


def moment(source: str, context: Any = None, **variables: Any) -> bool:
    return compile_rule(source, Scope.MOMENT).evaluate({"now": NOW, "context": context, **variables})


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('context.daypart == "morning" && context.weekend', True),
        ("context.local_hour >= 6 && context.local_hour < 12", True),
        ('context.holiday == "Independence Day"', True),
        ("has(context.holiday) && context.holiday != null", True),
        ("context.city == null && !has(context.city)", True),
        ('context.device_class in ["mobile", "tablet"] && context.channel == "app"', True),
        ('context.weekday == "saturday" && context.country == "US"', True),
        ("context.latitude > 40.0", False),  # null compared with a number: an error, so false
        ("!has(context.latitude) || context.latitude > 40.0", True),
    ],
)
def test_moment_conditions_read_the_derived_context(source: str, expected: bool) -> None:
    assert moment(source, JULY_4) is expected


def test_moment_context_accepts_the_derived_struct_and_defaults_to_all_null() -> None:
    from kairos.context import derive

    derived = derive({"type": "page", "context": {"timezone": "America/New_York", "locale": "en-US"}},
                     at=1_783_166_400_000)  # fmt: skip
    assert moment('context.holiday == "Independence Day" && context.channel == "web"', derived)
    assert moment("context.holiday == null && context.local_hour == null")  # no context given: every field null


def test_moment_event_and_profile_variables() -> None:
    rule = compile_rule(
        'event.name == "Order Completed" && event.properties.total > 100 && traits.plan == "pro" '
        '&& context.daypart == "evening"',
        Scope.MOMENT,
    )
    event = {"name": "Order Completed", "type": "track", "properties": {"total": 120}}
    evening = {**JULY_4, "daypart": "evening"}
    assert rule.evaluate({"now": NOW, "event": event, "traits": {"plan": "pro"}, "context": evening})
    assert not rule.evaluate({"now": NOW, "event": event, "traits": {"plan": "pro"}, "context": JULY_4})
    assert rule.references.keys["context"] == frozenset({"daypart"})
    assert rule.references.keys["event"] >= frozenset({"name", "properties"})


def test_moment_context_fields_are_checked_at_save_time() -> None:
    assert "undefined field 'nosuch'" in str(error("context.nosuch == 1", Scope.MOMENT))
    assert "no matching overload" in str(error('context.local_hour == "8"', Scope.MOMENT))
    error("context.local_hour > 1", Scope.SEGMENT)  # no context in segment rules


def test_moment_context_of_the_wrong_type_is_false_not_an_exception() -> None:
    rule = compile_rule("context.local_hour == 8", Scope.MOMENT)
    assert rule.evaluate({"context": {**JULY_4, "local_hour": "eight"}}) is False
    assert rule.errors == 1


@pytest.mark.parametrize("scope", [Scope.SEGMENT, Scope.EVENT, Scope.MOMENT, Scope.OFFER], ids=repr)
@pytest.mark.parametrize(
    ("pattern", "reason"),
    [("(", "missing )"), ("[a-", "missing ]"), ("a{1001}", "invalid repetition size"), ("\\\\", "trailing \\")],
)
def test_a_pattern_that_is_no_regular_expression_is_refused_at_its_position(
    scope: Scope, pattern: str, reason: str
) -> None:
    """``matches()`` reads its pattern at run time: ``x.matches("(")`` compiled, was saved, and was false (an
    error) for everyone. A literal pattern is now tried by the engine that runs it (RE2)."""
    for source in (f'"x".matches("{pattern}") || true', f'true && matches("x", "{pattern}")'):
        with pytest.raises(RuleError) as bad:
            compile_rule(source, scope)
        assert reason in bad.value.message and "matches()" in bad.value.message
        assert bad.value.position == source.index(f'"{pattern}"')
    # RE2 syntax, not Python's: (?P<name>...) is valid in both, a lookahead only in Python's.
    assert compile_rule('"ab".matches("^(?P<x>a)b$")', scope).evaluate({"now": 0}) is True
    with pytest.raises(RuleError):
        compile_rule('"ab".matches("a(?=b)")', scope)
    # A pattern that is not a literal is read at run time, as before.
    rule = compile_rule('"ab".matches(string(1) + "(")', scope)
    assert rule.evaluate({"now": 0}) is False and rule.errors == 1
