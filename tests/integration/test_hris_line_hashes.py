"""Issue 16: CSV row hashes over raw lines. After the upgrade the stored (v1, over the values)
hashes match no line: the first poll re-reads and re-plans everyone once — no operation, no
hold, nobody missing — and stores line hashes; the next poll takes every line as known."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from jml import config as config_mod
from jml.outbox_workers import build_engine
from jml.runtime import Runtime
from jml.sources import hris
from jml.sources.profiles import resolve_profile
from jml.sync import PlanOutcome, plan_cycle
from tests.peers import ScimPeer

HEADER = ["employee_id", "first_name", "last_name", "work_email", "department", "status", "hire_date", "notes"]


def export(n: int) -> bytes:
    out = io.StringIO()
    w = csv.writer(out)  # \r\n lines, as spreadsheets and bench/gen_hris.py write them
    w.writerow(HEADER)
    for i in range(n):
        notes = "desk 4\nsecond floor" if i % 7 == 0 else ""  # a multi-line cell now and then
        w.writerow([f"E{i:03d}", f"Ann{i}", "Lee", f"p{i}@acme.example", "Engineering" if i % 2 else "Sales",
                    "Active", "2020-01-01", notes])
    return out.getvalue().encode()


def v1_hashes(data: bytes) -> dict[str, str]:
    """The row hashes jml stored before line hashes (blake2b over the values)."""
    reader = csv.reader(io.StringIO(data.decode(), newline=""), strict=True)
    header, header_row = hris._csv_header(reader, "a.csv")
    parser = hris._Parser("a.csv", header, resolve_profile("generic", None, None), None, {}, csv_mode=True)
    return parser.run(enumerate(reader, header_row + 1)).row_hashes


def test_the_upgrade_re_plans_everyone_once_and_changes_nothing(
        tmp_path: Path, scim_peer: ScimPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P_TOKEN", scim_peer.token)
    exports = tmp_path / "exports"
    exports.mkdir()
    data = export(40)
    (exports / "a.csv").write_bytes(data)
    cfg_path = tmp_path / "jml.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "state": {"url": "sqlite:///jml.db"},
        "sources": {"hris": {"location": "./exports/", "timezone": "UTC", "full_export": True}},
        "policy": {"rules": [{"name": "all", "when": {"status": "Active"}, "grant": {"app": ["Staff"]}},
                             {"name": "eng", "when": {"department": "Engineering"}, "grant": {"app": ["Eng"]}}]},
        "connectors": {"app": {"type": "scim", "url": scim_peer.url, "token_env": "P_TOKEN"}},
    }))
    cfg = config_mod.load(cfg_path)

    async def poll(name: str, body: bytes, *, push: bool = False) -> PlanOutcome:
        for f in exports.iterdir():
            f.unlink()
        (exports / name).write_bytes(body)
        rt = Runtime(cfg)
        try:
            outcome = await plan_cycle(rt)
            if push:
                await rt.open_connectors()
                await build_engine(rt, poll_interval=0.05).run_until_idle(timeout=20)
            return outcome
        finally:
            await rt.close()

    first = asyncio.run(poll("a.csv", data, push=True))
    assert len(first.why) == 40 and first.operations and not first.held
    first_seq = Runtime(cfg).audit.head()[0]
    assert sum(r["kind"] == "hr_change" for r in Runtime(cfg).audit.records()) == 40

    # What a store written before the upgrade holds: value hashes.
    store = Runtime(cfg).store
    old = v1_hashes(data)
    with store.engine.begin() as conn:
        for eid, h in old.items():
            conn.execute(text("UPDATE person SET row_hash = :h WHERE employee_id = :e"), {"h": h, "e": eid})
    assert {e: i.row_hash for e, i in store.person_index().items()} == old

    # The same people in a byte-different file: everyone is read and planned once, nothing changes.
    upgrade = asyncio.run(poll("b.csv", data + b"\r\n"))
    assert len(upgrade.why) == 40  # everyone re-planned, no field changed: no hr_change record
    trail = list(Runtime(cfg).audit.records())
    assert [r for r in trail if r["kind"] == "hr_change" and r["seq"] > first_seq] == []
    assert upgrade.operations == [] and not upgrade.held and upgrade.missing == [] and upgrade.quarantined == []
    stored = {e: i.row_hash or "" for e, i in Runtime(cfg).store.person_index().items()}
    assert set(stored) == set(old) and not set(stored.values()) & set(old.values())

    # From then on a poll of the same people takes every line as known.
    again = asyncio.run(poll("c.csv", data.replace(b"\r\n", b"\n")))  # even with other line breaks
    assert again.why == {} and again.operations == [] and not again.held
    assert {e: i.row_hash or "" for e, i in Runtime(cfg).store.person_index().items()} == stored
    parsed = hris.parse_export(data, name="d.csv", format=None, known_hashes=stored)
    assert parsed.unchanged == 40 and parsed.people == []

    # A mover after the upgrade is planned as before.
    moved = data.replace(b"E001,Ann1,Lee,p1@acme.example,Engineering", b"E001,Ann1,Lee,p1@acme.example,Sales")
    mover = asyncio.run(poll("e.csv", moved))
    assert list(mover.why) == ["E001"] and {o.employee_id for o in mover.operations} == {"E001"}
    assert sorted(o.action.value for o in mover.operations) == ["remove_member", "update"]
    moves = [r for r in Runtime(cfg).audit.records() if r["kind"] == "hr_change" and r["seq"] > first_seq]
    assert [(r["subject"], r["data"]["changes"]) for r in moves] == [("E001", {"department": ["Engineering", "Sales"]})]
