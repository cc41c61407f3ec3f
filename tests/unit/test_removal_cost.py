"""Which way a group's member removals go: filtered, or by replacing the member list."""

from __future__ import annotations

import pytest

from connectors.scim.removal_cost import RemovalCosts

# (filtered samples (members, seconds), replacement samples (seconds), members to remove, replace?)
CASES = [
    ([], [], 50, False),                      # never timed: the filtered form, timed
    ([(1, 2.2)], [], 1, False),               # one member: a replacement's read buys nothing
    ([(1, 0.02)], [], 100, False),            # cheap server: 2 s predicted, within budget
    ([(1, 2.2)], [], 2, True),                # 4.4 s predicted, replacement never tried: try it
    ([(1, 2.2)], [2.1], 2, True),             # 4.4 s against 2.1 s
    ([(100, 44.0)], [2.1], 5, False),         # 2.2 s predicted: within budget
    ([(100, 44.0)], [2.1], 10, True),         # 4.4 s against 2.1 s
    ([(10, 4.0)], [9.0], 10, False),          # replacing measured dearer: stay filtered
    ([(10, 4.0)], [9.0, 1.0], 10, False),     # one cheap replacement: 5.0 s mixed, still dearer
    ([(10, 4.0)], [9.0, 1.0, 1.0], 10, True),  # ... until it measures cheaper (3.0 s mixed)
    ([(1, 8.0), (10, 4.0)], [], 5, True),     # samples mix: 4.2 s a member
]


@pytest.mark.parametrize(("filtered", "replaced", "members", "expected"), CASES)
def test_prefer_replace(filtered: list[tuple[int, float]], replaced: list[float], members: int,
                        expected: bool) -> None:
    costs = RemovalCosts(budget=3.0)
    for n, seconds in filtered:
        costs.filtered("g", n, seconds)
    for seconds in replaced:
        costs.replaced("g", seconds)
    assert costs.prefer_replace("g", members) is expected
    assert costs.prefer_replace("other group", members) is False  # figures are per group


def test_an_empty_removal_is_no_sample() -> None:
    costs = RemovalCosts()
    costs.filtered("g", 0, 5.0)
    assert costs.figures("g") == (None, None)
