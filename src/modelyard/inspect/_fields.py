"""Typed access to fields of untrusted JSON side files (config.json, tokenizer_config.json, ...).

Each accessor returns None when the key is absent or null, the value when it has the expected
type and a sane range, and otherwise raises an error naming the file, the key and what is wrong:
`config.json: field 'max_position_embeddings': expected an integer from 1 to 2147483647, found -4`.
Booleans are never accepted as numbers (JSON `true` is not `1` here).
"""

from __future__ import annotations

from typing import Any

from modelyard.errors import InvalidModelFileError

MAX_SANE_INT = 2**31 - 1


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _error(source: str, key: str, expected: str, value: Any) -> InvalidModelFileError:
    return InvalidModelFileError(f"expected {expected}, found {_describe(value)}", path=source, field=key)


def opt_str(obj: dict[str, Any], key: str, source: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _error(source, key, "a string", value)
    return value


def opt_int(obj: dict[str, Any], key: str, source: str, *, minimum: int = 1, maximum: int = MAX_SANE_INT) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 2048.0 happens in hand-edited configs
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise _error(source, key, f"an integer from {minimum} to {maximum}", value)
    return value


def opt_float(obj: dict[str, Any], key: str, source: str, *, minimum: float = 0.0) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise _error(source, key, f"a number >= {minimum:g}", value)
    return float(value)


def opt_bool(obj: dict[str, Any], key: str, source: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _error(source, key, "true or false", value)
    return value


def str_list(obj: dict[str, Any], key: str, source: str) -> list[str]:
    """A list of strings; a single string counts as a list of one (model cards write both)."""
    value = obj.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _error(source, key, "a string or a list of strings", value)
    return list(value)


def opt_dict(obj: dict[str, Any], key: str, source: str) -> dict[str, Any] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _error(source, key, "an object", value)
    return value


def int_or_pair(obj: dict[str, Any], key: str, source: str) -> int | tuple[int, int] | None:
    """An image size: an int, or a [height, width] pair."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, list) and len(value) == 2 and all(_positive_int(v) for v in value):
        return (value[0], value[1])
    if _positive_int(value):
        assert isinstance(value, int)
        return value
    raise _error(source, key, "a positive integer or a [height, width] pair", value)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_SANE_INT
