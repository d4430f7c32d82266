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


class RichBoard:
    """One rich bar per node, in one live display."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._bar = _Bar(
            TextColumn("{task.fields[node]:<12}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TextColumn("{task.fields[state]}"),
            console=Console(stderr=True),
        )
        self._tasks: dict[str, TaskID] = {}
        self._bar.start()

    def _task(self, name: str) -> TaskID:
        with self._lock:
            if name not in self._tasks:
                self._tasks[name] = self._bar.add_task("", total=None, node=name, state="")
            return self._tasks[name]

    def bar(self, name: str) -> _NodeBar:
        return _NodeBar(self, self._task(name))

    def note(self, name: str, text: str) -> None:
        self._bar.update(self._task(name), state=text)

    def close(self) -> None:
        self._bar.stop()


class _NodeBar:
    def __init__(self, board: RichBoard, task: TaskID) -> None:
        self._board = board
        self._task = task

    def start(self, description: str, total_bytes: int) -> None:
        self._board._bar.reset(self._task, total=total_bytes or None, state=description)

    def advance(self, done_bytes: int) -> None:
        self._board._bar.advance(self._task, done_bytes)

    def finish(self) -> None:
        pass
