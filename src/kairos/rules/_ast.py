"""Reading a checked rule's AST: the variables and keys it reads, and its ``duration()`` literals.

The AST is the ``cel.expr.CheckedExpr`` that ``cel_expr_python`` serializes (see ``_proto``); positions are
code point offsets into the source, as Python indexes a ``str``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import any_pb2

from kairos.rules import _proto

__all__ = ["Ast", "Reads", "decode", "encode"]


@dataclass
class Reads:
    """What a rule reads, filled by :meth:`Ast.reads`."""

    variables: set[str] = field(default_factory=set)
    keys: dict[str, set[str]] = field(default_factory=dict)
    dynamic: set[str] = field(default_factory=set)


@dataclass
class Ast:
    checked: Any  # cel.expr.CheckedExpr
    wrapper: any_pb2.Any

    def position(self, node: Any) -> int | None:
        positions = self.checked.source_info.positions
        return int(positions[node.id]) if node.id in positions else None

    def reads(self, variables: frozenset[str], keyed: frozenset[str]) -> Reads:
        """Which of ``variables`` the rule reads and, for the ``keyed`` ones (maps, and lists tested with
        ``in``), which constant keys: ``v.k``, ``v["k"]``, ``has(v.k)``, ``"k" in v``. Any other use of a keyed
        variable (iterating it, a computed key, ``size(v)``) puts it in ``dynamic``: then any key may matter."""
        out = Reads()

        def visit(node: Any, bound: frozenset[str]) -> None:
            kind = node.WhichOneof("kind")
            if kind == "ident_expr":
                name = node.ident_expr.name
                if name in variables and name not in bound:
                    out.variables.add(name)
                    if name in keyed:
                        out.dynamic.add(name)
                return
            if kind == "select_expr":
                var = _variable(node.select_expr.operand, variables, bound)
                if var is not None:
                    out.variables.add(var)
                    out.keys.setdefault(var, set()).add(node.select_expr.field)
                    return
                visit(node.select_expr.operand, bound)
                return
            if kind == "call_expr":
                call = node.call_expr
                args = list(call.args)
                if call.function == "_[_]" and len(args) == 2:
                    var, key = _variable(args[0], variables, bound), _string(args[1])
                    if var is not None and key is not None:
                        out.variables.add(var)
                        out.keys.setdefault(var, set()).add(key)
                        return
                if call.function == "@in" and len(args) == 2:
                    key, var = _string(args[0]), _variable(args[1], variables, bound)
                    if var is not None and key is not None:
                        out.variables.add(var)
                        out.keys.setdefault(var, set()).add(key)
                        return
                if call.HasField("target"):
                    visit(call.target, bound)
                for arg in args:
                    visit(arg, bound)
                return
            if kind == "list_expr":
                for element in node.list_expr.elements:
                    visit(element, bound)
                return
            if kind == "struct_expr":
                for entry in node.struct_expr.entries:
                    if entry.HasField("map_key"):
                        visit(entry.map_key, bound)
                    visit(entry.value, bound)
                return
            if kind == "comprehension_expr":
                c = node.comprehension_expr
                visit(c.iter_range, bound)
                visit(c.accu_init, bound)
                inner = bound | {c.iter_var, c.iter_var2, c.accu_var}
                visit(c.loop_condition, inner)
                visit(c.loop_step, inner)
                visit(c.result, bound | {c.accu_var})

        visit(self.checked.expr, frozenset())
        return out

    def calls(self, function: str, members: bool = False) -> Iterator[Any]:
        """Every global call of ``function`` (and ``x.function()`` too with ``members``), outermost first."""
        stack = [self.checked.expr]
        while stack:
            node = stack.pop()
            kind = node.WhichOneof("kind")
            if kind == "call_expr":
                if node.call_expr.function == function and (members or not node.call_expr.HasField("target")):
                    yield node
                stack.extend(reversed(node.call_expr.args))
                if node.call_expr.HasField("target"):
                    stack.append(node.call_expr.target)
            elif kind == "select_expr":
                stack.append(node.select_expr.operand)
            elif kind == "list_expr":
                stack.extend(reversed(node.list_expr.elements))
            elif kind == "struct_expr":
                for entry in node.struct_expr.entries:
                    stack.append(entry.value)
                    if entry.HasField("map_key"):
                        stack.append(entry.map_key)
            elif kind == "comprehension_expr":
                c = node.comprehension_expr
                stack.extend([c.result, c.loop_step, c.loop_condition, c.accu_init, c.iter_range])


def _variable(node: Any, variables: frozenset[str], bound: frozenset[str]) -> str | None:
    if node.WhichOneof("kind") == "ident_expr":
        name: str = node.ident_expr.name
        if name in variables and name not in bound:
            return name
    return None


def _string(node: Any) -> str | None:
    if node.WhichOneof("kind") == "const_expr" and node.const_expr.WhichOneof("kind") == "string_value":
        return str(node.const_expr.string_value)
    return None


def string_constant(node: Any) -> str | None:
    """The value of ``node`` if it is a string literal."""
    return _string(node)


def decode(serialized: bytes) -> Ast:
    wrapper = any_pb2.Any()
    wrapper.ParseFromString(serialized)
    checked = _proto.CheckedExpr()
    checked.ParseFromString(wrapper.value)
    return Ast(checked, wrapper)


def encode(ast: Ast) -> bytes:
    ast.wrapper.value = ast.checked.SerializeToString()
    return ast.wrapper.SerializeToString()
