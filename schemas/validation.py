"""Check a record dict against its schema, fill defaults, and name the offending field."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from enum import Enum
from functools import cache
from typing import Any

from schemas.errors import RecordError
from schemas.loader import NAMESPACE, expanded

Check = Callable[[Any, str], Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLI = timedelta(milliseconds=1)
_INT = (-(1 << 31), (1 << 31) - 1)
_LONG = (-(1 << 63), (1 << 63) - 1)


class _Invalid(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _null(value: Any, path: str) -> None:
    if value is not None:
        raise _Invalid(path, f"expected null, got {_kind(value)}")


def _boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(path, f"expected boolean, got {_kind(value)}")
    return value


def _integer(kind: str, bounds: tuple[int, int]) -> Check:
    low, high = bounds

    def check(value: Any, path: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid(path, f"expected {kind}, got {_kind(value)}")
        if not low <= value <= high:
            raise _Invalid(path, f"{value} is out of range for {kind}")
        return int(value)

    return check


def _real(kind: str) -> Check:
    def check(value: Any, path: str) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _Invalid(path, f"expected {kind}, got {_kind(value)}")
        return float(value)

    return check


def _bytes(value: Any, path: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise _Invalid(path, f"expected bytes, got {_kind(value)}")
    return bytes(value)


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(path, f"expected string, got {_kind(value)}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _Invalid(path, f"string is not encodable as UTF-8: {exc.reason}") from None
    return value if type(value) is str else str.__str__(value)


def _timestamp(value: Any, path: str) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise _Invalid(path, "naive datetime; give it a tzinfo (e.g. UTC)")
        return (value - _EPOCH) // _MILLI
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Invalid(
            path, f"expected timestamp-millis (int epoch ms or aware datetime), got {_kind(value)}"
        )
    return _LONG_CHECK(value, path)


_LONG_CHECK = _integer("long", _LONG)
_PRIMITIVES: dict[str, Check] = {
    "null": _null,
    "boolean": _boolean,
    "int": _integer("int", _INT),
    "long": _LONG_CHECK,
    "float": _real("float"),
    "double": _real("double"),
    "bytes": _bytes,
    "string": _string,
}


def _enum(node: dict[str, Any]) -> Check:
    name = node["name"].rsplit(".", 1)[-1]
    symbols = tuple(node["symbols"])
    allowed = frozenset(symbols)

    def check(value: Any, path: str) -> str:
        if isinstance(value, Enum):
            value = value.value
        if not isinstance(value, str):
            raise _Invalid(path, f"expected a {name} symbol (string), got {_kind(value)}")
        if value not in allowed:
            raise _Invalid(path, f"unknown {name} symbol {value!r}; allowed: {', '.join(symbols)}")
        return str.__str__(value)

    return check


def _array(items: Check) -> Check:
    def check(value: Any, path: str) -> list[Any]:
        if not isinstance(value, (list, tuple)):
            raise _Invalid(path, f"expected array (list), got {_kind(value)}")
        return [items(item, _join(path, str(i))) for i, item in enumerate(value)]

    return check


def _map(values: Check) -> Check:
    def check(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _Invalid(path, f"expected map (dict), got {_kind(value)}")
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Invalid(_join(path, str(key)), f"map key must be string, got {_kind(key)}")
            out[key] = values(item, _join(path, key))
        return out

    return check


def _fixed(node: dict[str, Any]) -> Check:
    size = node["size"]

    def check(value: Any, path: str) -> bytes:
        data = _bytes(value, path)
        if len(data) != size:
            raise _Invalid(path, f"expected {size} bytes, got {len(data)}")
        return data

    return check


def _union(branches: list[Any], named: dict[str, Check], namespace: str) -> Check:
    checks = [_compile(branch, named, namespace) for branch in branches]
    others = [c for b, c in zip(branches, checks, strict=True) if b != "null"]
    if "null" in branches and len(others) == 1:
        other = others[0]

        def nullable(value: Any, path: str) -> Any:
            return None if value is None else other(value, path)

        return nullable
    names = " | ".join(b if isinstance(b, str) else str(b.get("name", b["type"])) for b in branches)

    def check(value: Any, path: str) -> Any:
        for branch in checks:
            try:
                return branch(value, path)
            except _Invalid:
                continue
        raise _Invalid(path, f"{_kind(value)} matches no branch of union [{names}]")

    return check


def _record(node: dict[str, Any], named: dict[str, Check], namespace: str) -> Check:
    short = node["name"].rsplit(".", 1)[-1]
    fields: list[tuple[str, Check, bool, Any]] = []
    for field in node["fields"]:
        has_default = "default" in field
        fields.append(
            (
                field["name"],
                _compile(field["type"], named, namespace),
                has_default,
                field.get("default"),
            )
        )
    known = frozenset(name for name, *_ in fields)

    def check(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _Invalid(path, f"expected a {short} record (dict), got {_kind(value)}")
        out: dict[str, Any] = {}
        present = 0
        for name, field_check, has_default, default in fields:
            if name in value:
                out[name] = field_check(value[name], _join(path, name))
                present += 1
            elif has_default:
                out[name] = copy.deepcopy(default) if isinstance(default, (list, dict)) else default
            else:
                raise _Invalid(_join(path, name), "missing required field")
        if len(value) != present:
            for key in value:
                if key not in known:
                    raise _Invalid(_join(path, str(key)), f"unknown field, not in {short}")
        return out

    return check


def _compile(node: Any, named: dict[str, Check], namespace: str) -> Check:
    """Build a check for one schema node; named types are looked up when first used."""
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return _PRIMITIVES[node]
        fullname = node if "." in node else f"{namespace}.{node}"
        return lambda value, path: named[fullname](value, path)
    if isinstance(node, list):
        return _union(node, named, namespace)
    kind = node["type"]
    if kind == "long" and node.get("logicalType") == "timestamp-millis":
        return _timestamp
    if isinstance(kind, (dict, list)) or kind in _PRIMITIVES:
        return _compile(kind, named, namespace)
    if kind == "array":
        return _array(_compile(node["items"], named, namespace))
    if kind == "map":
        return _map(_compile(node["values"], named, namespace))
    namespace = node.get("namespace", namespace)
    name = node["name"] if "." in node["name"] else f"{namespace}.{node['name']}"
    builders = {"enum": lambda: _enum(node), "fixed": lambda: _fixed(node)}
    check = builders[kind]() if kind in builders else _record(node, named, namespace)
    named[name] = check
    return check


@cache
def compile_validator(record: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """A function that checks and normalizes a dict for `record`, raising RecordError."""
    check = _compile(expanded(record), {}, NAMESPACE)

    def validate(value: Mapping[str, Any]) -> dict[str, Any]:
        try:
            out: dict[str, Any] = check(value, "")
        except _Invalid as exc:
            raise RecordError(record, exc.path, exc.reason) from None
        return out

    return validate
