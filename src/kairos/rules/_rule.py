"""Compiling and evaluating rules; see the package docstring."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cel_expr_python import cel

from kairos.errors import ValidationError
from kairos.rules import _ast, _proto
from kairos.rules._duration import DURATION_HELP, duration_ms

__all__ = ["MAX_RULE_LENGTH", "Bindings", "Outcome", "References", "Rule", "RuleError", "Scope", "compile_rule"]

MAX_RULE_LENGTH = 4096  # code points; CEL's own limit is 100,000
_T: Any = cel.Type
_UTC = dt.UTC
# cel-cpp reports "ERROR: <input>:LINE:COLUMN: message" then the source line and a caret; both 1-based,
# the column counting code points. Several errors may follow; the first is the one to fix first.
_CEL_ERROR = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*?)(?:\n \| |\s*\[INVALID_ARGUMENT\]$|$)", re.S)


class RuleError(ValidationError):
    """A rule that cannot be saved. ``position`` is a 0-based offset into the source as given (``None`` when
    the error concerns the whole rule); ``line`` and ``column`` are 1-based. The message quotes no data."""

    code = "invalid_rule"

    def __init__(self, message: str, source: str = "", position: int | None = None) -> None:
        self.position = position
        self.line: int | None = None
        self.column: int | None = None
        if position is not None:
            before = source[:position]
            self.line = before.count("\n") + 1
            self.column = position - (before.rfind("\n") + 1) + 1
            message = f"{message} (line {self.line}, column {self.column})"
        super().__init__(message, field="rule")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(super().to_dict())
        if self.position is not None:
            out.update(position=self.position, line=self.line, column=self.column)
        return out


@dataclass(frozen=True)
class References:
    """What a rule reads, found in its AST at save time (every branch, not only the ones a run took).

    ``keys[v]`` are the constant keys read from variable ``v`` (trait names, segment keys tested with
    ``in``, identity types, consent purposes, profile fields); ``v in dynamic`` means the rule also reads
    ``v`` in a way no key names (iterating it, a computed key, ``size(v)``): then a change to any key matters.
    """

    variables: frozenset[str]
    keys: Mapping[str, frozenset[str]]
    dynamic: frozenset[str]

    def _keys(self, name: str) -> frozenset[str]:
        return self.keys.get(name, frozenset())

    @property
    def traits(self) -> frozenset[str]:
        return self._keys("traits")

    @property
    def traits_dynamic(self) -> bool:
        return "traits" in self.dynamic

    @property
    def segments(self) -> frozenset[str]:
        return self._keys("segments")

    @property
    def segments_dynamic(self) -> bool:
        return "segments" in self.dynamic

    @property
    def identities(self) -> frozenset[str]:
        return self._keys("identities")

    @property
    def consents(self) -> frozenset[str]:
        return self._keys("consents")

    @property
    def profile(self) -> frozenset[str]:
        return self._keys("profile")

    @property
    def uses_now(self) -> bool:
        return "now" in self.variables

    def reads(self, variable: str, key: str | None = None) -> bool:
        """Whether a change to ``variable`` (or to its ``key``) may change the rule's answer."""
        if variable not in self.variables:
            return False
        return key is None or variable in self.dynamic or key in self._keys(variable)


_SCALARS = (bool, int, float, type(None))


def _json(value: Any) -> Any:
    """``value`` as CEL's ``dyn`` accepts it, the same object when it already is (the common case).

    The binding cuts a string at its first NUL. Collect refuses NUL in events, so none should arrive; one that
    does must not make a rule silently compare a shorter string, so it is refused (the rule is then false).
    """
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("a value holds a NUL character (\\u0000), which rules cannot read")
        return value
    if isinstance(value, _SCALARS):
        return value
    if type(value) is dict:
        same = True
        for k, v in value.items():
            if type(k) is not str or "\x00" in k or (type(v) is not str and not isinstance(v, _SCALARS)):
                same = False
                break
            if type(v) is str and "\x00" in v:
                raise ValueError("a value holds a NUL character (\\u0000), which rules cannot read")
        if same:
            return value
    if isinstance(value, Mapping):
        return {_json(str(k)): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, set | frozenset):
        return [_json(v) for v in sorted(value, key=repr)]
    if isinstance(value, dt.datetime):
        # The binding refuses a datetime inside a map of dyn; the string is what JSON would have carried.
        return _timestamp(value).isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value
    raise TypeError(f"a {type(value).__name__} cannot be given to a rule")


def _timestamp(value: Any) -> dt.datetime:
    """Epoch milliseconds or a datetime (a naive one is UTC) → an aware datetime."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=_UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value / 1000, _UTC)
    raise TypeError(f"a timestamp must be epoch milliseconds or a datetime, not {type(value).__name__}")


def _identities(value: Any) -> dict[str, list[str]]:
    if isinstance(value, Mapping):
        return {_json(str(k)): [_json(str(v)) for v in _sorted(vs)] for k, vs in value.items()}
    out: dict[str, list[str]] = {}
    for kind, ident in sorted(value):  # (type, value) pairs, as ProfileState.identities holds them
        out.setdefault(_json(str(kind)), []).append(_json(str(ident)))
    return out


def _sorted(values: Iterable[Any]) -> list[Any]:
    return sorted(values) if isinstance(values, set | frozenset) else list(values)


def _profile(value: Any) -> Any:
    if isinstance(value, _proto.Profile):
        return value
    message = _proto.Profile(event_count=int(value.get("event_count") or 0))
    for name in ("created_at", "updated_at"):
        at = value.get(name)
        if type(at) is int:
            getattr(message, name).FromMilliseconds(at)
        elif at is not None:
            getattr(message, name).FromDatetime(_timestamp(at))
    return message


def _context(value: Any) -> Any:
    """A derived context (``kairos.context.DerivedContext`` or a mapping of its fields) → the typed message;
    a field that is None stays unset, which CEL reads as ``null``."""
    if isinstance(value, _proto.Context):
        return value
    if not isinstance(value, Mapping):
        value = {name: getattr(value, name, None) for name, _ in _proto.CONTEXT_FIELDS}
    message = _proto.Context()
    for name, kind in _proto.CONTEXT_FIELDS:
        item = value.get(name)
        if item is None:
            continue
        if kind == "StringValue":
            getattr(message, name).value = _json(item) if isinstance(item, str) else _json(str(item))
        elif kind == "BoolValue":
            getattr(message, name).value = bool(item)
        elif isinstance(item, bool) or not isinstance(item, int | float):
            raise TypeError(f"context.{name} must be a number, not {type(item).__name__}")
        else:
            getattr(message, name).value = int(item) if kind == "Int64Value" else float(item)
    return message


_CONVERT: dict[str, Any] = {
    "traits": _json,
    "properties": _json,
    "context": _json,
    "identities": _identities,
    "segments": lambda v: [_json(str(s)) for s in _sorted(v)],
    "consents": lambda v: {_json(str(k)): bool(b) for k, b in v.items()},
    "profile": _profile,
    "now": _timestamp,
    "timestamp": _timestamp,
    "event": lambda v: _json(str(v)),
    "event_type": lambda v: _json(str(v)),
}
_EMPTY: dict[str, Any] = {
    "traits": {},
    "properties": {},
    "context": {},
    "identities": {},
    "segments": [],
    "consents": {},
    "profile": {},
}


class Scope:
    """The variables one kind of rule may use; its CEL environment is built on first use.

    ``Scope.SEGMENT`` is for segment rules over a profile, ``Scope.EVENT`` for computed-trait ``where``
    filters over one event, ``Scope.MOMENT`` for moment conditions: a profile (as ``SEGMENT``), the event that
    happened (``event``: ``name``, ``type``, ``properties``) and its derived ``context`` (``docs/context.md``).
    ``Scope.OFFER`` is for offer eligibility at decision time: a profile (as ``SEGMENT``), the derived
    ``context`` of the request, the request's own context as ``request``, its ``channel`` and ``placement``,
    and ``moments`` (moment key → when it last occurred for the person).
    ``convert`` and ``empty`` override, for this scope, how a variable is converted and its value when absent.
    """

    SEGMENT: ClassVar[Scope]
    EVENT: ClassVar[Scope]
    MOMENT: ClassVar[Scope]
    OFFER: ClassVar[Scope]

    def __init__(
        self,
        name: str,
        variables: Mapping[str, Any],
        keyed: Iterable[str],
        convert: Mapping[str, Any] | None = None,
        empty: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.variables = dict(variables)
        self.keyed = frozenset(keyed)
        self.convert = {**_CONVERT, **(convert or {})}
        self.empty = {**_EMPTY, **(empty or {})}
        self._empties: dict[str, Any] | None = None
        self._env: cel.Env | None = None

    def __repr__(self) -> str:
        return f"Scope.{self.name}"

    @property
    def env(self) -> cel.Env:
        if self._env is None:
            self._env = cel.NewEnv(descriptor_pool=_proto.ENV_POOL, variables=self.variables)
        return self._env

    def bind(self, variables: Mapping[str, Any]) -> Bindings:
        """Convert ``variables`` once for all the rules of this scope that read them (a profile's changed
        rules): evaluating on bindings costs about half of evaluating on a mapping.

        Raises :class:`TypeError` or :class:`ValueError` for a value no rule can read (see ``_json``).
        """
        data: dict[str, Any] = {}
        empties = self._empties
        if empties is None:  # converted once: rules only read them
            empties = self._empties = {name: self.convert[name](value) for name, value in self.empty.items()}
        for name in self.variables:
            value = variables.get(name)
            if value is None:
                if name in empties:
                    data[name] = empties[name]
                continue  # unbound: a rule that reads it gets an error, hence false
            data[name] = self.convert[name](value)
        return Bindings(self, self.env.Activation(data), data)


Scope.SEGMENT = Scope(
    "SEGMENT",
    {
        "traits": _T.Map(_T.STRING, _T.DYN),
        "identities": _T.Map(_T.STRING, _T.List(_T.STRING)),
        "segments": _T.List(_T.STRING),
        "consents": _T.Map(_T.STRING, _T.BOOL),
        "profile": _T("kairos.rules.Profile"),
        "now": _T.TIMESTAMP,
    },
    keyed=("traits", "identities", "segments", "consents", "profile"),
)
Scope.EVENT = Scope(
    "EVENT",
    {
        "event": _T.STRING,
        # CEL declares `type` itself (the type of types): Segment's event `type` is `event_type` here.
        "event_type": _T.STRING,
        "properties": _T.Map(_T.STRING, _T.DYN),
        "context": _T.Map(_T.STRING, _T.DYN),
        "traits": _T.Map(_T.STRING, _T.DYN),
        "timestamp": _T.TIMESTAMP,
    },
    keyed=("properties", "context", "traits"),
)
Scope.MOMENT = Scope(
    "MOMENT",
    {
        **Scope.SEGMENT.variables,
        "context": _T("kairos.rules.Context"),
        "event": _T.Map(_T.STRING, _T.DYN),
    },
    keyed=(*Scope.SEGMENT.keyed, "context", "event"),
    convert={"context": _context, "event": _json},
    empty={"event": {}},
)


Scope.OFFER = Scope(
    "OFFER",
    {
        **Scope.SEGMENT.variables,
        "context": _T("kairos.rules.Context"),
        "request": _T.Map(_T.STRING, _T.DYN),
        "moments": _T.Map(_T.STRING, _T.TIMESTAMP),
        "channel": _T.STRING,
        "placement": _T.STRING,
    },
    keyed=(*Scope.SEGMENT.keyed, "context", "request", "moments"),
    convert={
        "context": _context,
        "request": _json,
        "moments": lambda v: {_json(str(k)): _timestamp(t) for k, t in v.items()},
        "channel": lambda v: _json(str(v)),
        "placement": lambda v: _json(str(v)),
    },
    empty={"request": {}, "moments": {}, "channel": "", "placement": ""},
)


@dataclass(frozen=True, slots=True)
class Bindings:
    """Variables converted for one scope: see :meth:`Scope.bind`."""

    scope: Scope
    activation: cel.Activation
    data: Mapping[str, Any] = field(default_factory=dict)  # the converted values

    def replace(self, values: Mapping[str, Any], only: Iterable[str] | None = None) -> Bindings:
        """These bindings with ``values`` converted in place of the old ones (the others are not converted
        again), keeping only the variables ``only`` when given: a rule that reads no others evaluates the same
        on them, and a smaller activation is cheaper to build (probing one rule at many times)."""
        data = dict(self.data) if only is None else {k: v for k, v in self.data.items() if k in only}
        for name, value in values.items():
            if name not in self.scope.variables:
                raise ValueError(f"{name!r} is not a variable of {self.scope!r}")
            empty = self.scope.empty
            if value is None and name not in empty:
                data.pop(name, None)  # unbound, as in bind()
                continue
            data[name] = self.scope.convert[name](empty[name] if value is None else value)
        return Bindings(self.scope, self.scope.env.Activation(data), data)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A rule's answer and, when it could not be computed (and so is false), why."""

    matched: bool
    error: str | None = None


class Rule:
    """A compiled rule: compile once with :func:`compile_rule`, evaluate many times."""

    def __init__(self, source: str, scope: Scope, expression: cel.Expression, references: References) -> None:
        self.source = source
        self.scope = scope
        self.references = references
        self._expression = expression
        self.errors = 0  # evaluations that ended in an error (and so answered false)
        self.last_error: str | None = None
        self.durations: tuple[int, ...] = ()  # the duration literals it holds, in ms

    def __repr__(self) -> str:
        return f"Rule({self.source!r}, {self.scope!r})"

    def evaluate(self, variables: Mapping[str, Any] | Bindings) -> bool:
        """True if the rule holds. An error (a missing key, a value of the wrong type) makes it false and is
        counted in ``errors``; this never raises."""
        try:
            value = self._expression.eval(self._activation(variables))
        except (TypeError, ValueError, RuntimeError) as e:
            return self._failed(str(e)).matched
        # The hot path (segments, moments, filters: millions of calls) reads a true or false answer without
        # building an Outcome.
        result = value.value()
        if result is True or result is False:
            return result is True
        return self._outcome(value).matched

    def evaluate_detail(self, variables: Mapping[str, Any] | Bindings) -> Outcome:
        try:
            value = self._expression.eval(self._activation(variables))
        except (TypeError, ValueError, RuntimeError) as e:
            return self._failed(str(e))
        return self._outcome(value)

    def _outcome(self, value: Any) -> Outcome:
        if value.type() == _T.ERROR:
            return self._failed(str(value.value()))
        result = value.value()
        if result is True or result is False:
            return Outcome(result)
        return self._failed(f"the rule gave a {value.type().name()}, not true or false")

    def value(self, variables: Mapping[str, Any] | Bindings) -> Any:
        """The rule's value as Python sees it; raises :class:`ValueError` on an evaluation error."""
        value = self._expression.eval(self._activation(variables))
        if value.type() == _T.ERROR:
            raise ValueError(str(value.value()))
        return value.plain_value()

    def _activation(self, variables: Mapping[str, Any] | Bindings) -> cel.Activation:
        if isinstance(variables, Bindings):
            if variables.scope is not self.scope:
                raise ValueError(f"bindings of {variables.scope!r} given to a rule of {self.scope!r}")
            return variables.activation
        return self.scope.bind(variables).activation

    def _failed(self, error: str) -> Outcome:
        self.errors += 1
        self.last_error = error
        return Outcome(False, error)


def compile_rule(source: str, scope: Scope) -> Rule:
    """Check ``source`` against ``scope`` and compile it; :class:`RuleError` says what is wrong and where.

    >>> rule = compile_rule('traits.plan == "pro" && profile.created_at > now - duration("30d")', Scope.SEGMENT)
    >>> sorted(rule.references.traits), rule.references.uses_now
    (['plan'], True)
    >>> rule.evaluate({"traits": {"plan": "pro"}, "profile": {"created_at": 1_700_000_000_000},
    ...                "now": 1_700_086_400_000})
    True
    >>> rule.evaluate({"traits": {}, "now": 1_700_086_400_000})  # no plan: false, not an exception
    False
    """
    if not isinstance(source, str):
        raise RuleError("a rule must be text")
    if len(source) > MAX_RULE_LENGTH:
        raise RuleError(f"a rule is at most {MAX_RULE_LENGTH} characters; this one has {len(source)}")
    if not source.strip():
        raise RuleError("the rule is empty")
    env = scope.env  # outside the try: an environment that cannot be built is a bug, not a bad rule
    try:
        expression = env.compile(source)
    except RuntimeError as e:
        raise _compile_error(str(e), source) from None
    ast = _ast.decode(expression.serialize())
    durations = _rewrite_durations(ast, source)
    if durations:
        expression = scope.env.deserialize(_ast.encode(ast))
    _check_patterns(ast, source, scope)
    kind = expression.return_type()
    if kind != _T.BOOL and kind != _T.DYN:
        raise RuleError(f"a rule must be true or false; this one gives {kind.name().lower()}", source, 0)
    reads = ast.reads(frozenset(scope.variables), scope.keyed)
    references = References(
        variables=frozenset(reads.variables),
        keys={name: frozenset(keys) for name, keys in reads.keys.items()},
        dynamic=frozenset(reads.dynamic),
    )
    rule = Rule(source, scope, expression, references)
    rule.durations = tuple(sorted(set(durations)))
    return rule


def _rewrite_durations(ast: _ast.Ast, source: str) -> list[int]:
    """Rewrite each ``duration("…")`` literal into milliseconds, which CEL reads (it has no day unit).

    The AST is changed, not the text, so every position still points into the source as written. A
    ``duration()`` of anything but a literal is refused: CEL's own parser would read a value such as ``"30d"``
    as an error at run time, while the same text is valid as a literal.
    """
    found: list[int] = []
    for call in ast.calls("duration"):
        args = call.call_expr.args
        text = _ast.string_constant(args[0]) if len(args) == 1 else None
        if text is None:
            raise RuleError('duration() takes a literal such as "30d"', source, ast.position(call))
        try:
            ms = duration_ms(text)
        except ValueError:
            raise RuleError(f"{DURATION_HELP}", source, ast.position(args[0])) from None
        args[0].const_expr.string_value = f"{ms}ms"
        found.append(ms)
    return found


def _check_patterns(ast: _ast.Ast, source: str, scope: Scope) -> None:
    """Refuse a ``matches()`` whose pattern, a literal, is not a valid regular expression: CEL reads it at
    run time only, so the rule would be saved and then be false (an error) for everyone.

    The pattern is tried by the engine that will run it (RE2 in cel-cpp, whose syntax differs from Python's
    ``re``): ``"".matches(pattern)`` evaluated once.
    """
    for call in ast.calls("matches", members=True):
        args = call.call_expr.args
        node = args[0] if call.call_expr.HasField("target") else args[-1]
        pattern = _ast.string_constant(node)
        if pattern is None:
            continue
        probe = _ast.decode(scope.env.compile('"".matches("")').serialize())
        next(probe.calls("matches", members=True)).call_expr.args[0].const_expr.string_value = pattern
        tried = scope.env.deserialize(_ast.encode(probe)).eval(scope.bind({}).activation)
        if tried.type() == _T.ERROR:
            reason = str(tried.value()).removeprefix("INVALID_ARGUMENT: ")
            raise RuleError(f"matches(): {reason}", source, ast.position(node))


def _compile_error(text: str, source: str) -> RuleError:
    if "recursion limit" in text or "max recursion depth" in text:
        return RuleError("the rule nests too deeply (CEL allows 32 levels)")
    match = _CEL_ERROR.search(text)
    if match is None:
        return RuleError("the rule cannot be compiled")
    line, column, message = int(match[1]), int(match[2]), match[3].strip()
    message = message.removesuffix(" (in container '')")
    lines = source.split("\n")
    position = sum(len(lines[i]) + 1 for i in range(min(line - 1, len(lines)))) + column - 1
    return RuleError(message, source, min(position, len(source)))
