"""Strict readers for the JSON and YAML files users hand to modelyard (configs, metrics, manifests).

Both produce plain JSON values (dict, list, str, int, float, bool, None) or raise
InvalidInputError naming the file and the problem. They refuse what would silently change
meaning or a hash later: duplicate keys, NaN and Infinity, YAML timestamps and other non-JSON
types. YAML is read with YAML 1.2 rules, so `1e-4` is the number 0.0001 (PyYAML's 1.1 rules
read it as a string).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

from modelyard.errors import InvalidInputError

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 128

JsonValue = Any  # dict[str, JsonValue] | list[JsonValue] | str | int | float | bool | None


def read_text(path: Path, max_bytes: int = MAX_DOCUMENT_BYTES) -> str:
    """Read a UTF-8 text file, refusing oversized or undecodable input."""
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise InvalidInputError("file not found", path=path) from None
    except IsADirectoryError:
        raise InvalidInputError("is a directory, expected a file", path=path) from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read: {exc.strerror or exc}", path=path) from None
    if len(data) > max_bytes:
        raise InvalidInputError(f"larger than {max_bytes} bytes", path=path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"not UTF-8 text (byte {exc.start})", path=path) from None


def parse_json(text: str, source: str | Path = "<json>") -> JsonValue:
    """Parse JSON text strictly: no duplicate keys, no NaN/Infinity, bounded nesting."""

    def reject_constant(token: str) -> None:
        raise InvalidInputError(f"{token} is not valid JSON", path=source)

    def unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise InvalidInputError(f"duplicate key {key!r}", path=source)
            result[key] = value
        return result

    try:
        value = json.loads(text, object_pairs_hook=unique_pairs, parse_constant=reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", path=source
        ) from None
    except RecursionError:
        raise InvalidInputError(f"nested deeper than {MAX_DEPTH} levels", path=source) from None
    _check_depth(value, source)
    return value


def parse_yaml(text: str, source: str | Path = "<yaml>") -> JsonValue:
    """Parse YAML 1.2 text into JSON values; refuse tags and types JSON cannot hold."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    yaml = YAML(typ="safe", pure=True)
    yaml.version = (1, 2)
    try:
        value = yaml.load(io.StringIO(text))
    except YAMLError as exc:
        problem = str(getattr(exc, "problem", None) or exc).strip().splitlines()[0]
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise InvalidInputError(f"invalid YAML{where}: {problem}", path=source) from None
    except RecursionError:
        raise InvalidInputError(f"nested deeper than {MAX_DEPTH} levels", path=source) from None
    return _to_json_value(value, source, "")


def load_document(path: Path) -> JsonValue:
    """Load a JSON (.json) or YAML (anything else) file."""
    text = read_text(path)
    if path.suffix.lower() == ".json":
        return parse_json(text, path)
    return parse_yaml(text, path)


def load_mapping(path: Path, what: str) -> dict[str, JsonValue]:
    """Load a document whose top level must be a mapping (a training config, metrics)."""
    value = load_document(path)
    if not isinstance(value, dict):
        raise InvalidInputError(
            f"a {what} file must hold a mapping at the top level, found {type(value).__name__}", path=path
        )
    return value


def _check_depth(value: JsonValue, source: str | Path) -> None:
    stack: list[tuple[JsonValue, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidInputError(f"nested deeper than {MAX_DEPTH} levels", path=source)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def _to_json_value(value: Any, source: str | Path, where: str, depth: int = 1) -> JsonValue:
    if depth > MAX_DEPTH:
        raise InvalidInputError(f"nested deeper than {MAX_DEPTH} levels", path=source)
    location = f"key '{where}'" if where else "the document"
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"{location} is {value}, which JSON cannot hold", path=source)
        return value
    if isinstance(value, dict):
        result: dict[str, JsonValue] = {}
        for key, child in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(
                    f"key {key!r} under {location} is a {type(key).__name__}; keys must be strings (quote it)",
                    path=source,
                )
            child_where = f"{where}.{key}" if where else key
            result[key] = _to_json_value(child, source, child_where, depth + 1)
        return result
    if isinstance(value, list):
        return [_to_json_value(item, source, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise InvalidInputError(
        f"{location} holds a YAML {type(value).__name__}, which JSON cannot hold (quote it to keep it as text)",
        path=source,
    )
