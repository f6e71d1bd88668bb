"""Load the .avsc files beside this module and expand shared types into self-contained schemas."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema

NAMESPACE = "pushcascade"
SCHEMA_DIR = Path(__file__).resolve().parent
IDS_FILE = SCHEMA_DIR / "ids.json"


@cache
def _files() -> dict[str, dict[str, Any]]:
    """Every .avsc file as raw JSON, keyed by its full name."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(SCHEMA_DIR.glob("*.avsc")):
        raw = json.loads(path.read_text(encoding="utf-8"))
        fullname = _fullname(raw["name"], raw.get("namespace", NAMESPACE))
        if path.stem != raw["name"]:
            raise ValueError(f"{path.name}: declares {raw['name']!r}, expected {path.stem!r}")
        found[fullname] = raw
    return found


def _fullname(name: str, namespace: str) -> str:
    return name if "." in name else f"{namespace}.{name}"


@cache
def pinned_ids() -> dict[str, int]:
    """The pinned schema id of every record, from ids.json."""
    ids: dict[str, int] = json.loads(IDS_FILE.read_text(encoding="utf-8"))
    return ids


@cache
def record_names() -> tuple[str, ...]:
    """Short names of all records, in pinned-id order (records missing an id come last)."""
    ids = pinned_ids()
    names = [raw["name"] for raw in _files().values() if raw["type"] == "record"]
    return tuple(sorted(names, key=lambda n: (ids.get(n, 1 << 31), n)))


def _raw(name: str) -> dict[str, Any]:
    raw = _files().get(_fullname(name, NAMESPACE))
    if raw is None or raw["type"] != "record":
        raise ValueError(f"unknown record {name!r}; known: {', '.join(record_names())}")
    return raw


def _expand(node: Any, namespace: str, seen: set[str]) -> Any:
    """Inline the first reference to each shared named type; later references stay names."""
    if isinstance(node, str):
        fullname = _fullname(node, namespace)
        shared = _files().get(fullname)
        if shared is None:
            return node
        if fullname in seen:
            return fullname
        node = shared
    if isinstance(node, list):
        return [_expand(branch, namespace, seen) for branch in node]
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if out.get("type") in ("record", "enum", "fixed", "error"):
        namespace = out.get("namespace", namespace)
        seen.add(_fullname(out["name"], namespace))
    if "fields" in out:
        out["fields"] = [{**f, "type": _expand(f["type"], namespace, seen)} for f in out["fields"]]
    for key in ("items", "values"):
        if key in out:
            out[key] = _expand(out[key], namespace, seen)
    if isinstance(out.get("type"), (dict, list)):
        out["type"] = _expand(out["type"], namespace, seen)
    return out


@cache
def expanded(name: str) -> dict[str, Any]:
    """Self-contained (unparsed) JSON schema of a record; do not mutate the returned dict."""
    result: dict[str, Any] = _expand(copy.deepcopy(_raw(name)), NAMESPACE, set())
    return result


def schema_json(name: str) -> str:
    """Canonical JSON text of a record's self-contained schema, as registered."""
    return _schema_text(name)


@cache
def _schema_text(name: str) -> str:
    return json.dumps(expanded(name), separators=(",", ":"), ensure_ascii=False)


@cache
def _parsed(name: str) -> dict[str, Any]:
    return cast(dict[str, Any], parse_schema(copy.deepcopy(expanded(name))))


def load_schema(name: str) -> dict[str, Any]:
    """A record's self-contained schema, parsed by fastavro (a fresh copy)."""
    return copy.deepcopy(_parsed(name))


def strip_logical(node: Any) -> Any:
    """Copy of a schema without logicalType annotations, so timestamps read as int."""
    if isinstance(node, list):
        return [strip_logical(branch) for branch in node]
    if not isinstance(node, dict):
        return node
    out = {k: strip_logical(v) for k, v in node.items() if k != "logicalType"}
    if set(out) == {"type"} and isinstance(out["type"], str):
        return out["type"]
    return out


@cache
def wire_schema(name: str) -> dict[str, Any]:
    """Parsed schema without logical types: same bytes, ints in and out (do not mutate)."""
    return cast(dict[str, Any], parse_schema(strip_logical(expanded(name))))
