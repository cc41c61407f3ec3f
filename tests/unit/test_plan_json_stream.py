"""`jml plan --json` is written chunk by chunk, byte for byte what one json.dumps of the whole
document gives (DESIGN's shape: exactly one object on stdout)."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest

from jml.model import Action, Operation, Priority
from jml.sync import PlanOutcome, plan_json, write_plan_json


def _outcome(n: int, held: bool = False) -> PlanOutcome:
    ops = [Operation("app", Action.ADD_MEMBER if i % 3 else Action.CREATE, f"E{i:04d}",
                     {"username": f"zoë.{i}@example.com", "group": "All Staff", "when": dt.date(2026, 12, 6)},
                     Priority.NORMAL) for i in range(n)]
    return PlanOutcome("abc123" if n or held else None, ops, held, ["too many leavers: 6% > 5%"] if held else [],
                       why={"E0001": "joiner: new in the HR export"})


@pytest.mark.parametrize(("n", "chunk", "held"), [(0, 3, False), (1, 3, False), (7, 3, True), (9, 3, False),
                                                   (5000, 2000, False)])
def test_streamed_plan_json_is_the_one_document_byte_for_byte(n: int, chunk: int, held: bool) -> None:
    outcome = _outcome(n, held)
    out = io.StringIO()
    write_plan_json(outcome, out.write, chunk=chunk)
    assert out.getvalue() == json.dumps(plan_json(outcome), ensure_ascii=False, default=str)
    doc = json.loads(out.getvalue())
    assert len(doc["operations"]) == n and doc["guard"]["held"] is held
