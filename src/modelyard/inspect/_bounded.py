"""Bounded access to untrusted model files.

Every reader in `modelyard.inspect` reads through a `ByteSource`: positional reads that check the
requested range against the file's real size *before* anything is allocated or read, so a length
field claiming 10^12 bytes in a 60-byte file costs nothing and fails with a message that names
the file and the field. JSON side files go through `read_json`, which caps the size and refuses
duplicate keys, NaN/Infinity, non-UTF-8 text and deep nesting (model-formats.md section 0).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from modelyard.errors import InvalidInputError, InvalidModelFileError
from modelyard.loaders import JsonValue, parse_json

# Side files (config.json, tokenizer_config.json, model_index.json, ...) are small; a few MiB is
# generous. tokenizer.json can be tens of MiB and is never read whole.
MAX_JSON_BYTES = 16 * 1024 * 1024


class ByteSource:
    """Positional, bounds-checked reads of one file. `name` is how messages refer to it."""

    def __init__(self, handle: BinaryIO, size: int, name: str) -> None:
        self.handle = handle
        self.size = size
        self.name = name
        try:
            self._fd: int | None = handle.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None  # an in-memory or remote stream: seek and read

    @classmethod
    @contextmanager
    def open(cls, path: Path, name: str | None = None) -> Iterator[ByteSource]:
        """Open a local file for bounded reading."""
        label = name or str(path)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise InvalidInputError("file not found", path=label) from None
        except IsADirectoryError:
            raise InvalidInputError("is a directory, expected a file", path=label) from None
        except OSError as exc:
            raise InvalidInputError(f"cannot read: {exc.strerror or exc}", path=label) from None
        with handle:
            yield cls(handle, os.fstat(handle.fileno()).st_size, label)

    def error(self, message: str, field: str | None = None) -> InvalidModelFileError:
        """An error naming this file (and the field, when given)."""
        return InvalidModelFileError(message, path=self.name, field=field)

    def read(self, offset: int, length: int, what: str) -> bytes:
        """Exactly `length` bytes at `offset`; a range past the end is an error naming `what`."""
        if offset < 0 or length < 0:
            raise self.error(f"{what}: negative offset or length ({offset}, {length})")
        if offset + length > self.size:
            raise self.error(
                f"{what} needs bytes {offset}..{offset + length} but the file has only {self.size} bytes "
                "(truncated or corrupt)"
            )
        if length == 0:
            return b""
        try:
            if self._fd is not None:
                data = os.pread(self._fd, length, offset)
            else:
                self.handle.seek(offset)
                data = self.handle.read(length)
        except OSError as exc:
            raise InvalidInputError(f"cannot read: {exc.strerror or exc}", path=self.name) from None
        if len(data) != length:  # the file shrank while we read it
            raise self.error(f"{what}: the file ended early (it changed while being read)")
        return data

    def remaining(self, offset: int) -> int:
        return max(0, self.size - offset)


def read_json(source: ByteSource, max_bytes: int = MAX_JSON_BYTES) -> JsonValue:
    """A whole small JSON file, parsed strictly."""
    if source.size > max_bytes:
        raise source.error(f"is {source.size} bytes; a JSON side file is expected to be under {max_bytes}")
    data = source.read(0, source.size, "the JSON document")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise source.error(f"not UTF-8 text (byte {exc.start})") from None
    return parse_json(text, source.name)


def read_json_object(source: ByteSource, max_bytes: int = MAX_JSON_BYTES) -> dict[str, JsonValue]:
    """A small JSON file whose top level must be an object."""
    value = read_json(source, max_bytes)
    if not isinstance(value, dict):
        raise source.error(f"must hold a JSON object at the top level, found {_json_type(value)}")
    return value


def read_text(source: ByteSource, max_bytes: int = MAX_JSON_BYTES) -> str:
    """A whole small UTF-8 text file (a chat template, a model card)."""
    if source.size > max_bytes:
        raise source.error(f"is {source.size} bytes; expected under {max_bytes}")
    try:
        return source.read(0, source.size, "the text").decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise source.error(f"not UTF-8 text (byte {exc.start})") from None


def _json_type(value: JsonValue) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"
