"""Progress a person can read in a log: `what: 120/600 steps (20%), 3m12s elapsed, about 12m48s left`.

tqdm's bar redraws one line with carriage returns; `dvc repro` captures a stage's output and a log file keeps only
the last redraw (or all of them run together), so a long stage looked silent. These lines go through `logging`
every `every` percent of the work, and at least every `interval_s` seconds, with the rate measured in this process
(a resumed run's estimate counts only the work it does itself). Work done in under `after_s` seconds logs nothing:
a server scoring one request runs the same loops.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Iterator

log = logging.getLogger("pipeline.progress")


def duration(seconds: float) -> str:
    """`45s`, `3m12s`, `1h05m`."""
    s = int(round(max(seconds, 0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Eta:
    """Counts done units of `total` and logs a line with the elapsed time and the time left at every `every`%
    (and at least every `interval_s` s). `start` units were done before this process began (a resume)."""

    def __init__(self, what: str, total: int, unit: str = "steps", every: float = 5.0, interval_s: float = 300.0,
                 start: int = 0, after_s: float = 10.0, logger: logging.Logger | None = None) -> None:
        self.what, self.total, self.unit = what, max(int(total), 0), unit
        self.every, self.interval_s, self.after_s = every, interval_s, after_s
        self.start = self.done = int(start)
        self.t0 = self.last_t = time.perf_counter()
        self.next_pct = (int(100 * self.done / self.total / every) + 1) * every if self.total else 100.0
        self.log = logger or log

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        pct = 100 * self.done / self.total if self.total else 100.0
        ran = self.done - self.start
        left = (self.total - self.done) * elapsed / ran if ran > 0 else None
        tail = f", about {duration(left)} left" if left is not None and self.done < self.total else ""
        return (f"{self.what}: {self.done:,}/{self.total:,} {self.unit} ({pct:.0f}%), "
                f"{duration(elapsed)} elapsed{tail}")

    def update(self, n: int = 1) -> None:
        self.set(self.done + n)

    def set(self, done: int) -> None:
        self.done = min(int(done), self.total) if self.total else int(done)
        pct = 100 * self.done / self.total if self.total else 100.0
        now = time.perf_counter()
        if pct >= self.next_pct or now - self.last_t >= self.interval_s:
            if now - self.t0 >= self.after_s:
                self.log.info(self.line())
            self.last_t = now
            while self.next_pct <= pct:
                self.next_pct += self.every


def logged(items: Iterable, what: str, total: int | None = None, unit: str = "batches", weights: Any = None,
           **tqdm_kwargs: Any) -> Iterator:
    """`items` with tqdm's bar (for a terminal) and Eta's log lines (for a log). `weights`: one count per item (e.g.
    rows per batch), so the line counts rows while the loop walks batches."""
    from tqdm.auto import tqdm

    items = list(items) if total is None and not hasattr(items, "__len__") else items
    n = len(items) if total is None else total
    counts = list(weights) if weights is not None else None
    eta = Eta(what, sum(counts) if counts is not None else n, unit=unit)
    for i, item in enumerate(tqdm(items, desc=what, total=n, mininterval=5, **tqdm_kwargs)):
        yield item
        eta.update(counts[i] if counts is not None else 1)
