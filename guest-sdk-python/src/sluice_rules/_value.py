"""Column values, as one small class for every WIT ``value`` case."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: Every kind a value can have, as in the WIT ``value`` variant (``%bool`` is ``bool``).
KINDS = (
    "null",
    "unchanged",
    "bool",
    "int",
    "float",
    "text",
    "numeric",
    "bytes",
    "json",
    "date",
    "time",
    "timestamp",
    "timestamptz",
)

# Kinds whose payload is text, and how Rust's Debug names each case.
_RUST_NAMES = {kind: kind.capitalize() for kind in KINDS}


@dataclass(frozen=True)
class Value:
    """A column value: its ``kind`` (one of :data:`KINDS`) and its Python ``value``.

    Shapes: ``null`` and ``unchanged`` carry ``None``; ``bool`` a ``bool``; ``int`` an ``int``
    (int2/int4/int8); ``float`` a ``float`` (NaN and infinities included); ``bytes`` ``bytes``;
    ``text``, ``numeric`` (exact decimal text), ``json`` (JSON text: json, jsonb, arrays,
    composites), ``date`` (``YYYY-MM-DD``), ``time``, ``timestamp`` and ``timestamptz``
    (ISO-8601 text, timestamptz in UTC with ``Z``) a ``str``.

    ``unchanged`` is a TOASTed value PostgreSQL did not send; it never equals ``null``.

    Match on it with a class pattern::

        >>> v = Value("text", "u1")
        >>> match v:
        ...     case Value("text", id):
        ...         print(f"user:{id}")
        user:u1
        >>> Value.null() == Value("null")
        True
        >>> Value.unchanged() == Value.null()
        False

    Raises ``ValueError`` for an unknown kind.
    """

    kind: str
    value: Any = None

    __match_args__ = ("kind", "value")

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown value kind {self.kind!r}; kinds are {', '.join(KINDS)}")

    @staticmethod
    def null() -> "Value":
        """SQL NULL: ``Value("null")``."""
        return Value("null")

    @staticmethod
    def unchanged() -> "Value":
        """A TOASTed value PostgreSQL did not send: ``Value("unchanged")``."""
        return Value("unchanged")

    @staticmethod
    def of(python: Any) -> "Value":
        """The value a Python object stands for, for tests: ``None`` is null, ``bool``, ``int``,
        ``float``, ``str`` (text) and ``bytes`` their own kinds, ``dict`` and ``list`` json; a
        :class:`Value` is kept.

        >>> Value.of(42)
        Value(kind='int', value=42)
        >>> Value.of({"a": 1}).value
        '{"a":1}'

        Raises ``TypeError`` for any other type.
        """
        import json

        if isinstance(python, Value):
            return python
        if python is None:
            return Value("null")
        if isinstance(python, bool):
            return Value("bool", python)
        if isinstance(python, int):
            return Value("int", python)
        if isinstance(python, float):
            return Value("float", python)
        if isinstance(python, str):
            return Value("text", python)
        if isinstance(python, (bytes, bytearray)):
            return Value("bytes", bytes(python))
        if isinstance(python, (dict, list)):
            return Value("json", json.dumps(python, separators=(",", ":")))
        raise TypeError(f"no value kind for a {type(python).__name__}")

    @property
    def is_null(self) -> bool:
        """Whether this is SQL NULL (not ``unchanged``)."""
        return self.kind == "null"

    def __str__(self) -> str:
        """The value as :func:`describe` prints it."""
        return describe(self)


def _rust_str(text: str) -> str:
    # Rust's `{:?}` of a str: what rule error messages show, identical in every SDK.
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\0":
            out.append("\\0")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{{{code:x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _rust_float(number: float) -> str:
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    text = repr(number)
    if "e" in text:
        # Rust writes `1e16` and `1e-5` where Python writes `1e+16` and `1e-05`.
        mantissa, exponent = text.split("e")
        return f"{mantissa}e{int(exponent)}"
    return text


def describe(value: Value) -> str:
    """The value as the Rust SDK's ``{:?}`` prints it, so that error messages built from it read
    the same in Rust, Python and JavaScript (``sluice eval`` outcomes compare equal).

    >>> describe(Value("bool", True))
    'Value::Bool(true)'
    >>> describe(Value("text", 'say "hi"'))
    'Value::Text("say \\\\"hi\\\\"")'
    >>> describe(Value.null())
    'Value::Null'
    """
    name = "Value::" + _RUST_NAMES[value.kind]
    kind, payload = value.kind, value.value
    if kind in ("null", "unchanged"):
        return name
    if kind == "bool":
        inner = "true" if payload else "false"
    elif kind == "int":
        inner = str(payload)
    elif kind == "float":
        inner = _rust_float(payload)
    elif kind == "bytes":
        inner = "[" + ", ".join(str(b) for b in payload) + "]"
    else:
        inner = _rust_str(payload)
    return f"{name}({inner})"
