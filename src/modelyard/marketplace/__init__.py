"""Marketplace metadata import: what the Hugging Face Hub and CivitAI say about a model.

    from modelyard.marketplace.huggingface import fetch_model_info, import_model_info
    from modelyard.marketplace.apply import import_into

    answer = fetch_model_info("meta-llama/Llama-3.2-1B-Instruct")   # or read_answer(Path("info.json"))
    imported = import_model_info(answer, "meta-llama/Llama-3.2-1B-Instruct")
    imported.config                      # an LlmConfig with downloads, likes, sha, gated, tags, ...
    import_into(registry, "llama-3b-v1@2", imported)   # checks the stated hashes, merges, audits

A marketplace answer is JSON that someone else's server wrote, and its shape drifts: every field
is optional and may be null. `Answer` reads it field by field; a value of the wrong type is an
`InvalidInputError` naming the file (or URL) and the field's path, never a silent default.
This module holds what both marketplaces share; it imports neither of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from modelyard.errors import InvalidInputError
from modelyard.modelconfig import BaseModelConfig

__all__ = ["Answer", "MarketplaceFile", "MarketplaceImport", "answer_object", "hex_digest", "read_answer"]

Source = Literal["huggingface", "civitai"]
MatchBy = Literal["path", "name"]


@dataclass(frozen=True)
class MarketplaceFile:
    """A file the answer describes, with the digests it states for it (lower-case hex)."""

    name: str  # Hugging Face: the path in the repository; CivitAI: the file name
    sha256: str | None = None
    autov2: str | None = None  # CivitAI's AutoV2: the first 10 hex digits of the whole-file SHA-256


@dataclass(frozen=True)
class MarketplaceImport:
    """One marketplace answer, mapped: the typed configuration and the files it vouches for."""

    source: Source
    source_id: str  # the repository id, or the CivitAI model version id
    config: BaseModelConfig
    files: tuple[MarketplaceFile, ...] = ()
    # How the answer's files meet a version's: by path (a Hub repository mirrors a folder) or by
    # base name (CivitAI offers single files, which a run keeps wherever it likes).
    match_by: MatchBy = "path"
    title: str | None = None  # what a human calls it (CivitAI: model and version name)

    @property
    def hashes(self) -> dict[str, str]:
        """File name -> SHA-256 for every file whose full digest the answer states."""
        return {f.name: f.sha256 for f in self.files if f.sha256 is not None}


@dataclass(frozen=True)
class Answer:
    """A JSON object from a marketplace, read with types checked: absent or null is None.

    `source` is the file or URL the object came from and `where` its path inside the document
    (`siblings[3].lfs`), so that an error says exactly which value is wrong; `hint` says what
    to do about it.
    """

    data: Mapping[str, Any]
    source: str
    hint: str = ""
    where: str = ""

    def field_path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def invalid(self, key: str, expected: str, value: Any) -> InvalidInputError:
        """The error for a value of the wrong type, naming the source and the field."""
        hint = f"; {self.hint}" if self.hint else ""
        return InvalidInputError(
            f"expected {expected}, found {describe(value)}{hint}", path=self.source, field=self.field_path(key)
        )

    def raw(self, key: str) -> Any:
        return self.data.get(key)

    def text(self, key: str) -> str | None:
        """A string; an empty one counts as absent."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.invalid(key, "a string", value)
        return value or None

    def count(self, key: str) -> int | None:
        """A non-negative whole number (downloads, sizes, ids). 12.0 is accepted as 12."""
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.invalid(key, "a non-negative integer", value)
        return value

    def number(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.invalid(key, "a number", value)
        return float(value)

    def flag(self, key: str) -> bool | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self.invalid(key, "true or false", value)
        return value

    def texts(self, key: str) -> list[str]:
        """A list of strings, or one string standing for a list of one (card `language: en`).
        Null items and empty strings are skipped; duplicates are dropped, order kept."""
        value = self.data.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            return [value] if value else []
        if not isinstance(value, list):
            raise self.invalid(key, "a string or a list of strings", value)
        result: list[str] = []
        for index, item in enumerate(value):
            if item is None or item == "":
                continue
            if not isinstance(item, str):
                raise self.invalid(f"{key}[{index}]", "a string", item)
            if item not in result:
                result.append(item)
        return result

    def child(self, key: str) -> Answer | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.invalid(key, "an object", value)
        return Answer(value, self.source, self.hint, self.field_path(key))

    def children(self, key: str) -> list[Answer]:
        """A list of objects; null items are skipped."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.invalid(key, "a list of objects", value)
        result = []
        for index, item in enumerate(value):
            if item is None:
                continue
            if not isinstance(item, dict):
                raise self.invalid(f"{key}[{index}]", "an object", item)
            result.append(Answer(item, self.source, self.hint, self.field_path(f"{key}[{index}]")))
        return result

    def counts(self, key: str) -> dict[str, int]:
        """An object of non-negative integers (safetensors parameters per dtype)."""
        values = self.child(key)
        if values is None:
            return {}
        result: dict[str, int] = {}
        for name in values.data:
            number = values.count(name)
            if number is not None:
                result[name] = number
        return result


def describe(value: Any) -> str:
    """The JSON type of a value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def read_answer(path: Path, hint: str) -> dict[str, Any]:
    """A saved marketplace answer: strict JSON whose top level is an object."""
    from modelyard.loaders import parse_json, read_text

    return answer_object(parse_json(read_text(path), path), str(path), hint)


def answer_object(value: Any, source: str, hint: str) -> dict[str, Any]:
    """Check that a parsed answer (a saved file's, or a server's reply) is a JSON object."""
    if not isinstance(value, dict):
        found = describe(value)
        raise InvalidInputError(f"expected a JSON object at the top level, found {found}; {hint}", path=source)
    return value


def hex_digest(answer: Answer, key: str, length: int | None = None) -> str | None:
    """A hex digest stated by the answer, lower-cased (CivitAI writes upper-case hex)."""
    value = answer.text(key)
    if value is None:
        return None
    lowered = value.strip().lower()
    if not lowered or any(c not in "0123456789abcdef" for c in lowered) or (length and len(lowered) != length):
        expected = f"{length} hex digits" if length else "hex digits"
        raise answer.invalid(key, expected, value)
    return lowered
