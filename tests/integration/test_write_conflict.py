"""A write that keeps losing to other writers stops the job (issue 15): `plan_cycle` raises
WriteConflict, nothing of the plan is half-stored, and the next cycle, once the database is
free, plans the same export whole. (Before, sync carried on after 20 failed attempts as if
the plan had been saved.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from tenacity import wait_none

from jml.config import from_dict
from jml.errors import WriteConflict
from jml.runtime import Runtime
from jml.store import retry
from jml.store.repo import Store
from jml.sync import plan_cycle

HEADER = "employee_id,first_name,last_name,work_email,department,status,hire_date,termination_date\n"


def _runtime(tmp: Path, export: Path) -> Runtime:
    return Runtime(from_dict({
        "state": {"url": f"sqlite:///{tmp / 'jml.db'}"},
        "sources": {"hris": {"location": str(export), "format": "csv", "timezone": "UTC"}},
        "policy": {"username": "{work_email}", "rules": [
            {"name": "everyone", "when": {"status": ["Active"]}, "grant": {"scim": ["All Staff"]}}]},
        "connectors": {"scim": {"type": "scim", "url": "http://127.0.0.1:9/", "token_env": "JML_TEST_CONFLICT"}},
    }, tmp))


async def test_a_plan_that_cannot_be_saved_stops_the_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "_WAIT", wait_none())
    export = tmp_path / "hr.csv"
    export.write_text(HEADER + "E1,Pat,Lee,pat@acme.example,Sales,Active,2020-01-01,\n"
                               "E2,Ana,Diaz,ana@acme.example,Sales,Active,2020-01-01,\n")
    rt = _runtime(tmp_path, export)
    attempts = []
    real = Store.save_people

    def locked(self: Store, *args: Any, **kw: Any) -> None:
        attempts.append(1)
        raise OperationalError("INSERT INTO person", {}, Exception("database is locked"))

    monkeypatch.setattr(Store, "save_people", locked)
    with pytest.raises(WriteConflict, match="saving the plan"):
        await plan_cycle(rt)
    assert len(attempts) == retry.ATTEMPTS
    assert rt.outbox.plans() == [] and rt.store.load_states() == {}  # nothing half-stored
    assert [r["kind"] for r in rt.audit.records()].count("plan") == 0

    monkeypatch.setattr(Store, "save_people", real)
    rt2 = _runtime(tmp_path, export)
    outcome = await plan_cycle(rt2)
    assert outcome.plan_id is not None and not outcome.held
    assert set(rt2.store.load_states()) == {"E1", "E2"}
    assert {op.employee_id for op in outcome.operations} >= {"E1", "E2"}
