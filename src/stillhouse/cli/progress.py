"""How a collection's progress is shown: a rich bar on a terminal, a log line every few seconds elsewhere.

The engine calls the reporter with a `Progress` snapshot a few times a second (never per request),
so showing progress costs nothing measurable however fast answers arrive.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from stillhouse.collect import Progress as Snapshot


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def summary(p: Snapshot) -> str:
    """One line: counts, speed, tokens, spend, errors."""
    paused = f" · paused {p.paused_s:.1f}s (rate limit)" if p.paused_s > 0 else ""
    return (
        f"{p.done:,}/{max(p.planned - p.skipped, 0):,} · {p.rate:,.0f} req/s · "
        f"{p.prompt_tokens + p.completion_tokens:,} tok · ${p.cost:,.4f} · "
        f"{p.failed:,} failed, {p.retries:,} retries · in flight {p.in_flight}{paused}"
    )


class Reporter:
    """Context manager and callback: `with Reporter(console) as r: collect(..., on_progress=r)`."""

    def __init__(self, console: Console, log_every_s: float = 10.0):
        self.console, self.log_every_s = console, log_every_s
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._last_log = 0.0

    def __enter__(self) -> Reporter:
        if self.console.is_terminal:
            self._bar = Progress(
                TextColumn("collect"),
                BarColumn(),
                TextColumn("{task.percentage:>5.1f}%"),
                TextColumn("{task.fields[line]}"),
                TextColumn("ETA {task.fields[eta]}"),
                TimeElapsedColumn(),
                console=self.console,
                auto_refresh=False,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("collect", total=None, line="starting", eta="--:--")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, p: Snapshot) -> None:
        if self._bar is not None and self._task is not None:
            total = max(p.planned - p.skipped, 0)
            self._bar.update(self._task, total=total, completed=p.done, line=summary(p), eta=_eta(p.eta_s))
            self._bar.refresh()
        elif time.monotonic() - self._last_log >= self.log_every_s:
            self._last_log = time.monotonic()
            self.console.print(f"collect: {summary(p)} · ETA {_eta(p.eta_s)}", highlight=False, soft_wrap=True)
