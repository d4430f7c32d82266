"""Bounded, buffered reads of one pickle's bytes for the symbolic pickle machine (`pickles.py`).

Every read is checked against the bytes that remain in the pickle's window *before* anything is
read, so a length argument claiming 2^31 bytes in a 20-byte file fails with a message naming the
file, the member, the opcode and its position instead of allocating. One pickle may span at most
`MAX_PICKLE_BYTES`.
"""

from __future__ import annotations

from modelyard.errors import InvalidModelFileError
from modelyard.inspect._bounded import ByteSource

MiB = 1024 * 1024
MAX_PICKLE_BYTES = 256 * MiB
MAX_LINE_BYTES = 16 * MiB  # protocol-0 text arguments
_CHUNK = 64 * 1024


class PickleReader:
    """Buffered reads of one pickle's bytes, each checked against the bytes that remain."""

    def __init__(self, source: ByteSource, start: int, length: int, member: str | None) -> None:
        self.source = source
        self.pos = start
        self.window_end = min(start + max(0, length), source.size)
        self.end = min(self.window_end, start + MAX_PICKLE_BYTES)
        self.base = start if member is not None else 0  # positions in messages: within the member
        self.where = f"member {member!r}: " if member is not None else ""
        self.op_name = ""
        self.op_pos = start
        self._buffer = b""
        self._buffer_start = start

    def fail(self, problem: str) -> InvalidModelFileError:
        """An error naming the opcode being replayed and its position."""
        position = self.op_pos - self.base
        return self.source.error(f"{self.where}pickle opcode {self.op_name} at byte {position}: {problem}")

    def fail_plain(self, problem: str) -> InvalidModelFileError:
        """An error about the pickle as a whole (it ends without STOP, it is too long)."""
        return self.source.error(f"{self.where}pickle {problem}")

    def _past_end(self, needed: int, what: str) -> InvalidModelFileError:
        if self.end < self.window_end and self.pos + needed > self.end:
            return self.fail(f"{what}: the pickle runs past {MAX_PICKLE_BYTES // MiB} MiB, the most modelyard reads")
        remaining = self.end - self.pos
        return self.fail(f"{what} needs {needed} bytes but only {remaining} remain (truncated or corrupt)")

    def _refill(self) -> None:
        self._buffer = self.source.read(self.pos, min(_CHUNK, self.end - self.pos), f"{self.where}pickle data")
        self._buffer_start = self.pos

    def take(self, count: int, what: str) -> bytes:
        """The next `count` bytes; `what` names them if they are not there."""
        if count > self.end - self.pos:
            raise self._past_end(count, what)
        offset = self.pos - self._buffer_start
        if offset + count > len(self._buffer):
            if count > _CHUNK:  # a long argument: read it directly (bounded by the check above)
                data = self.source.read(self.pos, count, f"{self.where}pickle data")
                self.pos += count
                return data
            self._refill()
            offset = 0
        self.pos += count
        return self._buffer[offset : offset + count]

    def skip(self, count: int, what: str) -> None:
        """Step over `count` bytes without reading them (a long argument kept as its length)."""
        if count > self.end - self.pos:
            raise self._past_end(count, what)
        self.pos += count

    def line(self, what: str) -> bytes:
        """A newline-terminated argument, without its newline."""
        pieces: list[bytes] = []
        total = 0
        while True:
            offset = self.pos - self._buffer_start
            if offset >= len(self._buffer):
                if self.pos >= self.end and self.end < self.window_end:
                    raise self._past_end(1, what)  # the size cap, not the data, ended the line
                if self.pos >= self.end:
                    raise self.fail(f"{what} has no newline before the data ends (truncated or corrupt)")
                self._refill()
                offset = 0
            newline = self._buffer.find(b"\n", offset)
            stop = newline if newline >= 0 else len(self._buffer)
            total += stop - offset
            if total > MAX_LINE_BYTES:
                raise self.fail(f"{what} is a text line longer than {MAX_LINE_BYTES // MiB} MiB")
            pieces.append(self._buffer[offset:stop])
            self.pos = self._buffer_start + stop
            if newline >= 0:
                self.pos += 1
                return b"".join(pieces)

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size, "the argument"), "little")

    def int4(self) -> int:
        return int.from_bytes(self.take(4, "the argument"), "little", signed=True)
