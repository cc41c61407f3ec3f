"""jml.heap.settle: start-up's objects frozen, later garbage still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from jml import heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test session collects as before


@pytest.mark.usefixtures("unfrozen")
def test_settle_freezes_what_exists_and_later_cycles_are_still_collected() -> None:
    before = _Node()
    before.other = _Node()
    before.other.other = before  # a cycle alive at start-up: frozen with the rest
    frozen = heap.settle()
    assert frozen == gc.get_freeze_count() > 0

    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle made after start-up, then dropped
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None

    kept = weakref.ref(before)
    del before
    gc.collect()
    assert kept() is not None  # frozen: never scanned, so never collected
