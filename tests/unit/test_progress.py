"""The sync's progress display: off a terminal, one plain line per interval (no escapes, no
carriage returns), per connector done/total, rate and ETA; on a terminal, a live display."""

from __future__ import annotations

import asyncio
import io
import re

from jml.progress import Cheap, Tally, format_line, watch


class _Outbox:
    """Open operations per connector, counting down as a push would."""

    def __init__(self, app: int, aws: int) -> None:
        self.left = {"app": app, "aws": aws}

    def __call__(self) -> dict[str, int]:
        out = dict(self.left)
        self.left = {k: max(0, v - (10 if k == "app" else 5)) for k, v in self.left.items()}
        return out


async def test_not_a_terminal_one_plain_line_per_interval() -> None:
    out = io.StringIO()
    counts = _Outbox(app=100, aws=20)
    async with watch(counts, out, interval=0.1, resync=0):
        await asyncio.sleep(0.55)
    lines = out.getvalue().splitlines()
    # five intervals, then one final line when the push ends
    assert 5 <= len(lines) <= 7, lines
    assert not re.search(r"[\r\x1b]", out.getvalue())
    for line in lines:
        assert re.fullmatch(r"progress: (app|aws) .*", line), line
    first = lines[0]
    assert re.search(r"app 10/100 \(10\.0%\) \d+/s ETA \S+; aws 5/20 \(25\.0%\) \d+/s ETA \S+", first), first
    assert "aws 20/20 done" in lines[-1]


async def test_interval_zero_shows_nothing() -> None:
    out = io.StringIO()
    async with watch(_Outbox(10, 10), out, interval=0):
        await asyncio.sleep(0.05)
    assert out.getvalue() == ""


async def test_terminal_is_a_live_display() -> None:
    out = io.StringIO()
    async with watch(_Outbox(100, 20), out, interval=0.05, tty=True, resync=0):
        await asyncio.sleep(0.2)
    text = out.getvalue()
    assert "app" in text and "aws" in text and "ETA" in text


def test_tally_counts_added_work_and_rate() -> None:
    t = Tally(started=0.0)
    t.update({"app": 100}, 0.0)
    t.update({"app": 80}, 2.0)
    assert t.done("app") == 20 and t.rate["app"] == 10.0 and t.eta("app") == 8.0
    t.update({"app": 130}, 3.0)  # a new plan added 50
    assert t.total["app"] == 150 and t.done("app") == 20
    t.update({"app": 0}, 4.0)
    assert t.eta("app") == 0.0 and format_line(t) == "progress: app 150/150 done"


async def test_a_push_shorter_than_an_interval_prints_nothing() -> None:
    out = io.StringIO()
    async with watch(_Outbox(10, 10), out, interval=5):
        await asyncio.sleep(0.05)
    assert out.getvalue() == ""


def test_the_outbox_is_read_at_the_start_and_each_resync_and_this_process_s_work_in_between() -> None:
    reads: list[int] = []
    open_in_outbox = {"app": 100}
    finished = {"app": 7}  # the engine's counters before the push
    now = [0.0]

    def outbox() -> dict[str, int]:
        reads.append(1)
        return dict(open_in_outbox)

    c = Cheap(outbox, resync=60, finished=lambda: finished, clock=lambda: now[0])
    assert len(reads) == 1
    finished = {"app": 37}
    now[0] = 10
    assert c() == {"app": 70} and len(reads) == 1
    open_in_outbox = {"app": 50}  # a daemon did some, or work was added: the resync says so
    now[0] = 61
    assert c() == {"app": 50} and len(reads) == 2
    finished = {"app": 47}
    now[0] = 70
    assert c() == {"app": 40}
