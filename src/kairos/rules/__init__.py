"""The one rule language of Kairos: Google's Common Expression Language (CEL), run by cel-cpp.

Segments, computed-trait ``where`` filters, moments and offers all write their conditions in CEL. A rule is
checked when it is saved (syntax, names, types; :class:`RuleError` gives the position), compiled once,
then evaluated many times::

    >>> rule = compile_rule('"vip" in segments || traits.ltv >= 1000.0', Scope.SEGMENT)
    >>> rule.evaluate({"traits": {"ltv": 1200}, "segments": ["new"]})
    True
    >>> sorted(rule.references.segments), sorted(rule.references.traits)
    (['vip'], ['ltv'])

What Kairos adds to CEL:

- Variables per :class:`Scope`, typed: a misspelt variable or ``profile.nosuch`` is refused at save time.
  Traits, properties and an event's raw context are ``map(string, dyn)``: their keys are checked only at
  run time. The derived ``context`` of moment conditions (``Scope.MOMENT``) is a typed message whose every
  field may be null (``context.holiday == null``, ``has(context.holiday)``; ``docs/context.md``).
- ``duration("30d")``: CEL stops at hours; a duration literal is read as Kairos reads windows
  (:func:`duration_ms`: ``d``, ``h``, ``m``, ``s``, ``ms``), checked at save time, and must be a literal.
- Errors while evaluating (a missing trait, a string compared with a number) make the rule false, counted on
  :attr:`Rule.errors`; :meth:`Rule.evaluate` never raises. Guard with ``has(traits.x)`` to say it on purpose.
- :attr:`Rule.references`: the trait keys, segments, identity types, consent purposes and profile fields a
  rule reads, found in its AST, so that only rules whose inputs changed are evaluated again.

Numbers: CEL compares ``int``, ``uint`` and ``double`` values across types at run time (``traits.n == 1.0``
holds for the trait ``1``; ``traits.n < 1.5`` too). Between two statically typed operands the checker wants
one type: ``profile.event_count > 3.5`` is refused at save time, ``> 3`` is the way to write it.

Cost (cel-expr-python 0.1.3, one core of the shared development VM, median of 5): a segment rule reading two
traits, the profile and ``now - duration("365d")`` evaluates in 5-7 µs on :meth:`Scope.bind` bindings, which
cost ~13 µs once per profile (ten traits, identities, consents, profile); 23 µs when given a mapping, which
converts per rule. So a profile whose change touches all of 50 rules costs ~0.3 ms; compiling takes ~0.2 ms.
``bench/cel_compare.py`` compares CEL runtimes (``docs/decisions.md``).
"""

from __future__ import annotations

from kairos.rules._duration import duration_ms
from kairos.rules._rule import (
    MAX_RULE_LENGTH,
    Bindings,
    Outcome,
    References,
    Rule,
    RuleError,
    Scope,
    compile_rule,
)

__all__ = [
    "MAX_RULE_LENGTH",
    "Bindings",
    "Outcome",
    "References",
    "Rule",
    "RuleError",
    "Scope",
    "compile_rule",
    "duration_ms",
]
