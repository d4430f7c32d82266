"""How long-running operations report progress, without knowing who is watching.

The library takes any `Progress`; the CLI passes a rich progress bar on a terminal and
`NullProgress` otherwise (not a terminal, or `--quiet`).
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, description: str, total_bytes: int) -> None:
        """A new phase begins; `total_bytes` of work lie ahead."""
        ...

    def advance(self, done_bytes: int) -> None:
        """Another `done_bytes` are done. Called from worker threads."""
        ...

    def finish(self) -> None: ...


class NullProgress:
    def start(self, description: str, total_bytes: int) -> None:
        pass

    def advance(self, done_bytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


class ProgressBoard(Protocol):
    """Several bars at once (one per fleet node during a push)."""

    def bar(self, name: str) -> Progress:
        """The bar for `name`, created on first use."""
        ...

    def note(self, name: str, text: str) -> None:
        """A short state for `name` (verifying, activated, failed: ...)."""
        ...

    def close(self) -> None: ...


class NullBoard:
    def bar(self, name: str) -> Progress:
        return NullProgress()

    def note(self, name: str, text: str) -> None:
        pass

    def close(self) -> None:
        pass
