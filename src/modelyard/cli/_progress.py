"""A rich progress bar implementing modelyard.progress.Progress (terminal only)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as _Bar


class RichProgress:
    def __init__(self) -> None:
        self._bar: _Bar | None = None
        self._task: TaskID | None = None

    def start(self, description: str, total_bytes: int) -> None:
        self.finish()
        if total_bytes <= 0:
            return
        self._bar = _Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total_bytes)

    def advance(self, done_bytes: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, done_bytes)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            self._task = None
