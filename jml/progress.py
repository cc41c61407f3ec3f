"""Progress of a long `jml sync` push: per connector done/total, rate and ETA.

On a terminal it is a live display (rich); anywhere else (a log file, a pipe, CI) it is one
plain line per interval, e.g.

    progress: app 12000/288000 (4.2%) 350/s ETA 13m09s; aws 400/400 done

What is still open (pending or running) per connector is read from the outbox at the start
and every `resync` seconds (a count over 290,000 open operations takes about 0.25 s: once a
second it would cost a quarter of the run and stall the workers); in between, what this
process's engine finished (its Prometheus counters: success and dead-lettered) is taken off.
When a daemon holding the workers' lease applies the plan instead, the figures move at each
resync. Done = what was open at the start (plus what was added since) minus what is open now.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

__all__ = ["Cheap", "Tally", "finished_here", "format_line", "watch"]

OpenCounts = Callable[[], Mapping[str, int]]


@dataclass
class Tally:
    """Done/total per connector from successive readings of the open counts."""

    started: float
    total: dict[str, int] = field(default_factory=dict)
    open: dict[str, int] = field(default_factory=dict)
    # recent (time, done) readings per connector: the rate is over the last RATE_WINDOW seconds,
    # so it follows a slowdown (a rate limit) instead of averaging it away
    _samples: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)
    rate: dict[str, float] = field(default_factory=dict)

    RATE_WINDOW = 30.0

    def update(self, open_now: Mapping[str, int], now: float) -> None:
        for name in set(self.total) | set(open_now):
            n = int(open_now.get(name, 0))
            before = self.open.get(name)
            if before is None:
                self.total[name] = n
            elif n > before:  # work added meanwhile (a new plan): it counts in the total
                self.total[name] += n - before
            self.open[name] = n
            samples = self._samples.setdefault(name, deque())
            samples.append((now, self.done(name)))
            while len(samples) > 2 and now - samples[1][0] >= self.RATE_WINDOW:
                samples.popleft()
            t0, d0 = samples[0]
            self.rate[name] = (samples[-1][1] - d0) / (now - t0) if now > t0 else 0.0

    def done(self, name: str) -> int:
        return self.total.get(name, 0) - self.open.get(name, 0)

    def eta(self, name: str) -> float | None:
        r = self.rate.get(name, 0.0)
        left = self.open.get(name, 0)
        if left == 0:
            return 0.0
        return left / r if r > 0 else None


def finished_here() -> dict[str, int]:
    """Operations this process's engine finished (succeeded or dead-lettered), per connector."""
    from jml import metrics

    out: dict[str, int] = {}
    for family in metrics.operations.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("outcome") in ("success", "dead"):
                c = sample.labels["connector"]
                out[c] = out.get(c, 0) + int(sample.value)
    return out


class Cheap:
    """Open operations per connector from an expensive reading (the outbox) taken at the start
    and every `resync` seconds, and a cheap one in between (what this process finished)."""

    def __init__(self, read: OpenCounts, resync: float, finished: Callable[[], Mapping[str, int]] = finished_here,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.read, self.resync, self.finished, self.clock = read, resync, finished, clock
        self._sync(self.clock())

    def _sync(self, now: float) -> None:
        self._base = dict(self.read())
        self._done0 = dict(self.finished())
        self._at = now

    def __call__(self) -> Mapping[str, int]:
        now = self.clock()
        if now - self._at >= self.resync:
            self._sync(now)
            return self._base
        done = self.finished()
        return {c: max(0, n - (done.get(c, 0) - self._done0.get(c, 0))) for c, n in self._base.items()}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds + 0.5)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def format_line(t: Tally) -> str:
    parts = []
    for name in sorted(t.total):
        total, done = t.total[name], t.done(name)
        if not t.open.get(name):
            parts.append(f"{name} {done}/{total} done")
            continue
        pct = 100.0 * done / total if total else 100.0
        parts.append(f"{name} {done}/{total} ({pct:.1f}%) {t.rate.get(name, 0.0):.0f}/s ETA {_duration(t.eta(name))}")
    return "progress: " + ("; ".join(parts) or "nothing to do")


async def _plain(counts: OpenCounts, stream: IO[str], interval: float, stop: asyncio.Event) -> None:
    tally = Tally(started=time.monotonic())
    tally.update(counts(), time.monotonic())
    shown = False
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set() and not shown:
            return  # a push shorter than one interval prints nothing
        tally.update(counts(), time.monotonic())
        stream.write(format_line(tally) + "\n")
        stream.flush()
        shown = True


async def _live(counts: OpenCounts, stream: IO[str], interval: float, stop: asyncio.Event) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

    tally = Tally(started=time.monotonic())
    tally.update(counts(), time.monotonic())
    columns: list[Any] = [TextColumn("{task.description:>12}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.percentage:>5.1f}%"), TextColumn("{task.fields[rate]:>8}"),
                          TextColumn("ETA {task.fields[eta]}")]
    tasks: dict[str, TaskID] = {}
    # The display is redrawn when the figures change (auto_refresh off): no thread, no work between readings.
    with Progress(*columns, console=Console(file=stream), auto_refresh=False, transient=False) as bar:
        while True:
            for name in sorted(tally.total):
                rate, eta = f"{tally.rate.get(name, 0.0):.0f}/s", _duration(tally.eta(name))
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=tally.total[name], completed=tally.done(name),
                                               rate=rate, eta=eta)
                else:
                    bar.update(tasks[name], total=tally.total[name], completed=tally.done(name), rate=rate, eta=eta)
            bar.refresh()
            if stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            tally.update(counts(), time.monotonic())


@contextlib.asynccontextmanager
async def watch(counts: OpenCounts, stream: IO[str], *, interval: float | None = None,
                tty: bool | None = None, resync: float = 60.0) -> AsyncIterator[None]:
    """Show progress on `stream` while the body runs: live on a terminal, else one plain line
    per `interval` (default 1 s on a terminal, 10 s otherwise) and a last one at the end (none
    at all for a push shorter than an interval). `interval` 0 shows nothing. `counts` (the
    outbox) is read at the start and every `resync` seconds (0: at every interval)."""
    if tty is None:
        tty = bool(getattr(stream, "isatty", lambda: False)())
    if interval is None:
        interval = 1.0 if tty else 10.0
    if interval <= 0:
        yield
        return
    if resync > 0:
        counts = Cheap(counts, resync)
    stop = asyncio.Event()
    task = asyncio.create_task((_live if tty else _plain)(counts, stream, interval, stop))
    try:
        yield
    finally:
        stop.set()
        try:
            await task
        except Exception:  # a display must never fail the sync
            import logging

            logging.getLogger("jml.progress").warning("progress display failed", exc_info=True)
