"""The mass-deprovisioning guard: limits are strict (`>`), the percentage is per connector over
the accounts jml manages there, the count is distinct people (DESIGN "Held plan")."""

from __future__ import annotations

from typing import Any

import pytest

from jml.guard import Limits, evaluate
from jml.model import Action, Operation, Priority


def ops(connector: str, n: int, *, start: int = 0, action: Action = Action.DEACTIVATE) -> list[Operation]:
    return [Operation(connector, action, f"E{i}", {"username": f"u{i}"}, Priority.LEAVER)
            for i in range(start, start + n)]


# (id, operations, evaluate kwargs, held?)
CASES: list[tuple[str, list[Operation], dict[str, Any], bool]] = [
    ("nothing", [], {"managed": {"demo": 100}}, False),
    ("percent-equal-not-held", ops("demo", 5), {"managed": {"demo": 100}}, False),
    ("percent-one-more-held", ops("demo", 6), {"managed": {"demo": 100}}, True),
    ("fractional-percent-equal", ops("demo", 5), {"managed": {"demo": 200}, "limits": Limits(2.5)}, False),
    ("fractional-percent-over", ops("demo", 6), {"managed": {"demo": 200}, "limits": Limits(2.5)}, True),
    ("tiny-percent-equal", ops("demo", 1), {"managed": {"demo": 1000}, "limits": Limits(0.1)}, False),
    ("count-equal-not-held", ops("demo", 10), {"managed": {"demo": 10}, "limits": Limits(100, 10)}, False),
    ("count-one-more-held", ops("demo", 11), {"managed": {"demo": 11}, "limits": Limits(100, 10)}, True),
    ("count-is-distinct-people-across-connectors", ops("demo", 10) + ops("aws", 10),
     {"managed": {"demo": 10, "aws": 10}, "limits": Limits(100, 10)}, False),
    ("count-adds-different-people", ops("demo", 6) + ops("aws", 5, start=6),
     {"managed": {"demo": 10, "aws": 10}, "limits": Limits(100, 10)}, True),
    ("deactivate-and-delete-of-one-person-count-once",
     ops("demo", 10) + ops("demo", 10, action=Action.DELETE), {"managed": {"demo": 10}, "limits": Limits(100, 10)},
     False),
    ("percent-per-connector-over-managed", ops("demo", 3) + ops("aws", 3),
     {"managed": {"demo": 100, "aws": 20}}, True),
    ("percent-per-connector-each-under", ops("demo", 3) + ops("aws", 3),
     {"managed": {"demo": 100, "aws": 60}}, False),
    ("managed-zero-no-percentage-check", ops("new", 50), {"managed": {"new": 0}}, False),
    ("managed-unknown-no-percentage-check", ops("new", 50), {}, False),
    ("override-looser-percent", ops("aws", 10),
     {"managed": {"aws": 100}, "per_connector": {"aws": Limits(10, 100)}}, False),
    ("override-looser-percent-one-more", ops("aws", 11),
     {"managed": {"aws": 100}, "per_connector": {"aws": Limits(10, 100)}}, True),
    ("override-stricter-count-equal", ops("aws", 3),
     {"managed": {"aws": 100}, "per_connector": {"aws": Limits(50, 3)}}, False),
    ("override-stricter-count-one-more", ops("aws", 4),
     {"managed": {"aws": 100}, "per_connector": {"aws": Limits(50, 3)}}, True),
    ("override-only-for-its-connector", ops("demo", 10),
     {"managed": {"demo": 100}, "per_connector": {"aws": Limits(50, 100)}}, True),
    ("pre-approved-exempt", ops("demo", 10), {"managed": {"demo": 100},
                                              "pre_approved": frozenset(f"E{i}" for i in range(5))}, False),
    ("pre-approved-exempt-one-short", ops("demo", 10),
     {"managed": {"demo": 100}, "pre_approved": frozenset(f"E{i}" for i in range(4))}, True),
    ("removals-alone-not-deprovisions", ops("demo", 50, action=Action.REMOVE_MEMBER)
     + ops("aws", 50, action=Action.UNASSIGN) + ops("demo", 50, action=Action.CREATE),
     {"managed": {"demo": 100, "aws": 100}}, False),
    ("delete-counts", ops("demo", 6, action=Action.DELETE), {"managed": {"demo": 100}}, True),
    ("shrink-equal-not-held", [], {"export_rows": 900, "last_good_rows": 1000}, False),
    ("shrink-one-more-held", [], {"export_rows": 899, "last_good_rows": 1000}, True),
    ("growth-not-held", [], {"export_rows": 5000, "last_good_rows": 1000}, False),
    ("no-last-good-export-no-shrink-check", [], {"export_rows": 0, "last_good_rows": None}, False),
    ("empty-last-good-export-no-shrink-check", [], {"export_rows": 0, "last_good_rows": 0}, False),
    ("shrink-uses-global-limit", [], {"export_rows": 850, "last_good_rows": 1000,
                                      "limits": Limits(max_shrink_percent=15)}, False),
]


@pytest.mark.parametrize(("operations", "kw", "expected"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_evaluate(operations: list[Operation], kw: dict[str, Any], expected: bool) -> None:
    verdict = evaluate(operations, **{"limits": Limits(), "managed": {}, **kw})
    assert verdict.held is expected
    assert bool(verdict.reasons) is expected


def test_reasons_name_connector_numbers_and_limit() -> None:
    v = evaluate(ops("aws", 4) + ops("demo", 101, start=100), managed={"aws": 10, "demo": 1000},
                 limits=Limits(), per_connector={"aws": Limits(50, 3)}, export_rows=80, last_good_rows=100)
    assert v.held
    assert v.reasons == (
        "aws: would deprovision 4 people (> max_deprovision_count 3)",
        "demo: would deprovision 101 of 1000 managed accounts (10.1% > max_deprovision_percent 5%)",
        "would deprovision 105 people (> max_deprovision_count 100)",
        "export shrank from 100 to 80 rows (20.0% > max_shrink_percent 10%)",
    )
    assert dict(v.deprovisions) == {"aws": 4, "demo": 101}


def test_deprovisions_per_connector_exclude_pre_approved() -> None:
    v = evaluate(ops("demo", 3) + ops("aws", 2), managed={}, limits=Limits(), pre_approved=frozenset({"E0"}))
    assert not v.held
    assert dict(v.deprovisions) == {"demo": 2, "aws": 1}
