"""Protocol buffer schemas the rule language needs, built at import from field numbers.

- ``cel.expr.CheckedExpr``: what ``cel_expr_python``'s ``Expression.serialize()`` returns (inside a
  ``google.protobuf.Any``). No package on PyPI ships Python classes for the ``cel.expr`` protos (cel-spec's
  ``syntax.proto`` / ``checked.proto``), and ``googleapis-common-protos`` has no ``google.api.expr``; so the
  subset Kairos reads (the AST, node positions, the reference map) is declared here with the upstream field
  numbers. Fields left out are kept as unknown fields and written back unchanged, so a decoded expression
  re-serializes whole.
- ``kairos.rules.Profile``: the typed ``profile`` variable. A ``datetime`` inside a ``map(string, dyn)`` is
  refused at evaluation by the binding, and a message type also makes ``profile.nosuch`` a save-time error.
- ``kairos.rules.Context``: the typed ``context`` variable of moment conditions (``kairos.context``'s
  vocabulary). Every field may be unknown, so each is a protobuf wrapper (``google.protobuf.StringValue``,
  ...): CEL reads an unset wrapper field as ``null``, so ``context.holiday == null`` and
  ``has(context.holiday)`` both work, and a set one as its plain value (``context.local_hour >= 18``).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2, timestamp_pb2, wrappers_pb2

__all__ = ["CONTEXT_FIELDS", "ENV_POOL", "CheckedExpr", "Context", "Expr", "Profile"]

# (field, wrapper type) of kairos.rules.Context, in kairos.context.DerivedContext's order.
CONTEXT_FIELDS: tuple[tuple[str, str], ...] = (
    ("local_time", "StringValue"),
    ("local_hour", "Int64Value"),
    ("daypart", "StringValue"),
    ("weekday", "StringValue"),
    ("weekend", "BoolValue"),
    ("holiday", "StringValue"),
    ("timezone", "StringValue"),
    ("device_class", "StringValue"),
    ("os", "StringValue"),
    ("browser", "StringValue"),
    ("channel", "StringValue"),
    ("country", "StringValue"),
    ("city", "StringValue"),
    ("latitude", "DoubleValue"),
    ("longitude", "DoubleValue"),
)

_F = descriptor_pb2.FieldDescriptorProto
_TYPES = {
    "string": _F.TYPE_STRING,
    "bool": _F.TYPE_BOOL,
    "int64": _F.TYPE_INT64,
    "uint64": _F.TYPE_UINT64,
    "int32": _F.TYPE_INT32,
    "double": _F.TYPE_DOUBLE,
    "bytes": _F.TYPE_BYTES,
}


def _message(
    parent: Any, name: str, fields: list[tuple[str, int, str]], *, repeated: tuple[str, ...] = ()
) -> descriptor_pb2.DescriptorProto:
    """Add message ``name`` to ``parent`` (a file or a message); a field type not in ``_TYPES`` is a message
    (or enum) name, ``oneof:NAME`` groups the fields that follow it, as in the ``.proto`` source."""
    msg: descriptor_pb2.DescriptorProto = (
        parent.message_type if hasattr(parent, "message_type") else parent.nested_type
    ).add(name=name)
    for field_name, number, kind in fields:
        label = _F.LABEL_REPEATED if field_name in repeated else _F.LABEL_OPTIONAL
        field = msg.field.add(name=field_name, number=number, label=label)
        oneof, _, kind = kind.rpartition("|")
        if oneof:
            names = [o.name for o in msg.oneof_decl]
            if oneof not in names:
                msg.oneof_decl.add(name=oneof)
                names.append(oneof)
            field.oneof_index = names.index(oneof)
        if kind in _TYPES:
            field.type = _TYPES[kind]
        elif kind == "enum:.google.protobuf.NullValue":
            field.type, field.type_name = _F.TYPE_ENUM, ".google.protobuf.NullValue"
        else:
            field.type, field.type_name = _F.TYPE_MESSAGE, kind
    return msg


def _map_entry(parent: descriptor_pb2.DescriptorProto, name: str, key: str, value: str) -> None:
    entry = _message(parent, name, [("key", 1, key), ("value", 2, value)])
    entry.options.map_entry = True


def _cel_expr_file() -> descriptor_pb2.FileDescriptorProto:
    # Field numbers from cel-spec proto/cel/expr/syntax.proto and checked.proto.
    f = descriptor_pb2.FileDescriptorProto(
        name="kairos/cel_expr_subset.proto",
        package="cel.expr",
        syntax="proto3",
        dependency=["google/protobuf/struct.proto"],
    )
    expr = _message(
        f,
        "Expr",
        [
            ("id", 2, "int64"),
            ("const_expr", 3, "kind|.cel.expr.Constant"),
            ("ident_expr", 4, "kind|.cel.expr.Expr.Ident"),
            ("select_expr", 5, "kind|.cel.expr.Expr.Select"),
            ("call_expr", 6, "kind|.cel.expr.Expr.Call"),
            ("list_expr", 7, "kind|.cel.expr.Expr.CreateList"),
            ("struct_expr", 8, "kind|.cel.expr.Expr.CreateStruct"),
            ("comprehension_expr", 9, "kind|.cel.expr.Expr.Comprehension"),
        ],
    )
    _message(expr, "Ident", [("name", 1, "string")])
    _message(expr, "Select", [("operand", 1, ".cel.expr.Expr"), ("field", 2, "string"), ("test_only", 3, "bool")])
    _message(
        expr,
        "Call",
        [("target", 1, ".cel.expr.Expr"), ("function", 2, "string"), ("args", 3, ".cel.expr.Expr")],
        repeated=("args",),
    )
    _message(expr, "CreateList", [("elements", 1, ".cel.expr.Expr")], repeated=("elements",))
    struct = _message(
        expr,
        "CreateStruct",
        [("message_name", 1, "string"), ("entries", 2, ".cel.expr.Expr.CreateStruct.Entry")],
        repeated=("entries",),
    )
    _message(
        struct,
        "Entry",
        [
            ("id", 1, "int64"),
            ("field_key", 2, "key|string"),
            ("map_key", 3, "key|.cel.expr.Expr"),
            ("value", 4, ".cel.expr.Expr"),
        ],
    )
    _message(
        expr,
        "Comprehension",
        [
            ("iter_var", 1, "string"),
            ("iter_range", 2, ".cel.expr.Expr"),
            ("accu_var", 3, "string"),
            ("accu_init", 4, ".cel.expr.Expr"),
            ("loop_condition", 5, ".cel.expr.Expr"),
            ("loop_step", 6, ".cel.expr.Expr"),
            ("result", 7, ".cel.expr.Expr"),
            ("iter_var2", 8, "string"),
        ],
    )
    _message(
        f,
        "Constant",
        [
            ("null_value", 1, "kind|enum:.google.protobuf.NullValue"),
            ("bool_value", 2, "kind|bool"),
            ("int64_value", 3, "kind|int64"),
            ("uint64_value", 4, "kind|uint64"),
            ("double_value", 5, "kind|double"),
            ("string_value", 6, "kind|string"),
            ("bytes_value", 7, "kind|bytes"),
        ],
    )
    info = _message(
        f,
        "SourceInfo",
        [
            ("line_offsets", 3, "int32"),
            ("positions", 4, ".cel.expr.SourceInfo.PositionsEntry"),
        ],
        repeated=("line_offsets", "positions"),
    )
    _map_entry(info, "PositionsEntry", "int64", "int32")
    _message(f, "Reference", [("name", 1, "string")])
    checked = _message(
        f,
        "CheckedExpr",
        [
            ("reference_map", 2, ".cel.expr.CheckedExpr.ReferenceMapEntry"),
            ("expr", 4, ".cel.expr.Expr"),
            ("source_info", 5, ".cel.expr.SourceInfo"),
        ],
        repeated=("reference_map",),
    )
    _map_entry(checked, "ReferenceMapEntry", "int64", ".cel.expr.Reference")
    return f


def _kairos_file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(
        name="kairos/rules.proto",
        package="kairos.rules",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto", "google/protobuf/wrappers.proto"],
    )
    _message(
        f,
        "Profile",
        [
            ("created_at", 1, ".google.protobuf.Timestamp"),
            ("updated_at", 2, ".google.protobuf.Timestamp"),
            ("event_count", 3, "int64"),
        ],
    )
    _message(
        f,
        "Context",
        [(name, number, f".google.protobuf.{kind}") for number, (name, kind) in enumerate(CONTEXT_FIELDS, start=1)],
    )
    return f


# Pools of their own: nothing here is registered in protobuf's default pool, where another library could
# declare the same names; and the rule environment's pool (``ENV_POOL``) does not see the AST subset, so it
# cannot shadow the ``cel.expr`` types CEL itself knows.
_AST_POOL = descriptor_pool.DescriptorPool()
_AST_POOL.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
_AST_POOL.Add(_cel_expr_file())
ENV_POOL = descriptor_pool.DescriptorPool()
ENV_POOL.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
ENV_POOL.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
ENV_POOL.Add(_kairos_file())

CheckedExpr: Any = message_factory.GetMessageClass(_AST_POOL.FindMessageTypeByName("cel.expr.CheckedExpr"))
Expr: Any = message_factory.GetMessageClass(_AST_POOL.FindMessageTypeByName("cel.expr.Expr"))
Profile: Any = message_factory.GetMessageClass(ENV_POOL.FindMessageTypeByName("kairos.rules.Profile"))
Context: Any = message_factory.GetMessageClass(ENV_POOL.FindMessageTypeByName("kairos.rules.Context"))
