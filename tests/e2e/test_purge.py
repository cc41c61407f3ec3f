"""Retention and erasure as an operator runs it: `jml purge [--dry-run]` against a real
scim2-server. Leavers gone longer than `retention.leavers_after` lose their personal data from
every table; the audit trail still verifies (the database's and an export's) and tampering is
still caught; people still employed and recent leavers are untouched; a dry run changes nothing."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli import Cli, _empty, people
from tests.e2e.test_cli import peer as peer  # the module's SCIM server fixture
from tests.peers import ScimPeer

# Leavers long gone (due), a recent leaver (not due), and people still employed.
GONE = {"E001": ("Anneliese", "Quortenbach"), "E002": ("Bartholomäus", "Vexleigh-Ørsted")}
RECENT = {"E003": ("Cordelia", "Wimbourne")}
STAYING = {"E004": ("Dagobert", "Yarrowfield")}


def _rows() -> list[dict[str, str]]:
    rows = people(6)
    for eid, (first, last) in {**GONE, **RECENT, **STAYING}.items():
        row = next(r for r in rows if r["employee_id"] == eid)
        row.update(first_name=first, last_name=last, work_email=_email(first, last))
    return rows


def _email(first: str, last: str) -> str:
    ascii_only = f"{first}.{last}".lower().replace("ä", "ae").replace("ø", "oe")
    return f"{ascii_only}@example.com"


def _terms(group: dict[str, tuple[str, str]]) -> list[str]:
    out = []
    for first, last in group.values():
        out += [first, last, _email(first, last)]
    return out


def _dump(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}


def _as_text(cell: Any) -> str:
    if isinstance(cell, str) and cell[:1] in ("{", "[", '"'):
        try:
            return json.dumps(json.loads(cell), ensure_ascii=False)
        except ValueError:
            pass
    return repr(cell) if not isinstance(cell, str) else cell


def _found(db: Path, terms: list[str]) -> list[str]:
    """Every (table, term) where a term appears anywhere in the table, case-insensitively."""
    hits = []
    for table, rows in _dump(db).items():
        # JSON cells as the text they stand for: "Vexleigh-\u00d8rsted" is still the name.
        cells = [_as_text(c) for row in rows for c in row]
        text = "\n".join(cells).lower()
        hits += [f"{table}: {t}" for t in terms if t.lower() in text]
    return hits


@pytest.fixture
def cli(tmp_path: Path, peer: ScimPeer) -> Cli:
    _empty(peer)
    return Cli(tmp_path, peer, retention={"leavers_after": "400d", "events_after": "30d"},
               guard={"max_deprovision_percent": 100, "max_deprovision_count": 100, "max_shrink_percent": 10})


def test_purge_erases_long_gone_leavers_and_the_trail_still_verifies(cli: Cli, tmp_path: Path) -> None:
    db = tmp_path / "jml.db"
    rows = _rows()
    cli.write(rows)
    assert cli.run("sync").returncode == 0
    for r in rows:
        if r["employee_id"] in GONE:
            r.update(status="Terminated", termination_date="2024-01-31")
        if r["employee_id"] in RECENT:
            r.update(status="Terminated", termination_date="2026-11-30")
    cli.write(rows)
    r = cli.run("sync")
    assert r.returncode == 0, r.stderr
    # A webhook event about a leaver (the inbox keeps events' payloads) and an old one about nobody in particular.
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO webhook_event (id, source, received_at, payload, processed_at, outcome) VALUES "
                     "('hr:1', 'hr', '2026-12-01 10:00:00.000000', ?, '2026-12-01 10:00:01.000000', 'done')",
                     (json.dumps({"employee_id": "E001", "email": "anneliese.quortenbach@example.com",
                                  "name": "Anneliese Quortenbach"}),))
        conn.execute("INSERT INTO webhook_event (id, source, received_at, payload, processed_at, outcome) VALUES "
                     "('hr:0', 'hr', '2025-01-01 10:00:00.000000', ?, '2025-01-01 10:00:01.000000', 'done')",
                     (json.dumps({"employee_id": "E005", "note": "old event"}),))
    assert _found(db, _terms(GONE)), "the test needs the leavers' data in the database first"
    assert cli.run("audit", "verify").returncode == 0

    # Dry run: says what it would do, changes nothing.
    before = _dump(db)
    r = cli.run("purge", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would erase the personal data of 2 leaver(s): E001, E002" in r.stdout, r.stdout
    assert "would erase the payload of 1 old webhook event(s)" in r.stdout, r.stdout
    assert _dump(db) == before

    r = cli.run("purge")
    assert r.returncode == 0, r.stderr
    assert "erased the personal data of 2 leaver(s): E001, E002" in r.stdout, r.stdout
    assert _found(db, _terms(GONE)) == []
    # Not due, not touched: the recent leaver and the people still employed.
    assert all(h.split(": ")[1] in _terms(RECENT) + _terms(STAYING)
               for h in _found(db, _terms(RECENT) + _terms(STAYING)))
    assert {h.split(": ")[0] for h in _found(db, _terms(STAYING))} >= {"person", "account", "audit"}
    assert {h.split(": ")[0] for h in _found(db, _terms(RECENT))} >= {"person", "account", "audit"}
    with sqlite3.connect(db) as conn:
        # The pseudonym stays: counts and SLA reports still add up.
        kept = dict(conn.execute("SELECT employee_id, status FROM person WHERE employee_id IN ('E001','E002')"))
        assert kept == {"E001": "Terminated", "E002": "Terminated"}
        assert conn.execute("SELECT count(*) FROM sla_clock WHERE employee_id IN ('E001','E002')").fetchone()[0] > 0
        assert "old event" not in str(conn.execute("SELECT payload FROM webhook_event WHERE id='hr:0'").fetchone())
        erasure = conn.execute("SELECT actor, data FROM audit WHERE kind='erasure'").fetchall()
    assert len(erasure) == 1
    doc = json.loads(erasure[0][1])
    assert doc["employee_ids"] == ["E001", "E002"] and doc["people"] == 2 and doc["audit_records"] > 0
    assert erasure[0][0].startswith("cli user=")

    # The chain still verifies: the database's, and an export's.
    r = cli.run("audit", "verify")
    assert r.returncode == 0, r.stdout + r.stderr
    export = tmp_path / "trail.jsonl"
    r = cli.run("audit", "export")
    assert r.returncode == 0
    export.write_text(r.stdout, encoding="utf-8")
    assert cli.run("audit", "verify", str(export)).returncode == 0

    # Tampering with what is left of an erased record is caught, in an export and in the database.
    lines = export.read_text(encoding="utf-8").splitlines()
    i = next(n for n, line in enumerate(lines) if '"_erased"' in line)
    rec = json.loads(lines[i])
    rec["kind"] = "nothing_to_see"
    lines[i] = json.dumps(rec)
    (tmp_path / "tampered.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = cli.run("audit", "verify", str(tmp_path / "tampered.jsonl"))
    assert r.returncode == 1 and f"record {rec['seq']}" in r.stdout + r.stderr, r.stdout + r.stderr
    # A record falsely marked erased (its content replaced) is caught too.
    plain = next(n for n, line in enumerate(lines) if '"_erased"' not in line and '"seq"' in line)
    rec2 = json.loads(lines[plain])
    rec2["data"] = {"_erased": {"by": 10**6, "data_sha256": "0" * 64}}
    lines[i] = json.dumps(json.loads(export.read_text(encoding="utf-8").splitlines()[i]))
    lines[plain] = json.dumps(rec2)
    (tmp_path / "forged.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert cli.run("audit", "verify", str(tmp_path / "forged.jsonl")).returncode == 1

    with sqlite3.connect(db) as conn:
        seq, data = conn.execute("SELECT seq, data FROM audit WHERE data LIKE '%_erased%' ORDER BY seq").fetchone()
        conn.execute("UPDATE audit SET data=? WHERE seq=?", (data.replace("[erased]", "Mallory"), seq))
    r = cli.run("audit", "verify")
    assert r.returncode == 1 and f"record {seq}" in r.stdout + r.stderr
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit SET data=? WHERE seq=?", (data, seq))
    assert cli.run("audit", "verify").returncode == 0

    # Nothing left to erase: a second run changes nothing and appends no erasure record; a sync of the
    # same export (HR still lists the leavers) does not bring their data back.
    r = cli.run("purge")
    assert r.returncode == 0 and "erased the personal data of 0 leaver(s)" in r.stdout, r.stdout
    assert cli.run("sync").returncode == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM audit WHERE kind='erasure'").fetchone()[0] == 1
        person = str(conn.execute("SELECT * FROM person WHERE employee_id IN ('E001','E002')").fetchall())
    assert not any(t.lower() in person.lower() for t in _terms(GONE)), person
    assert cli.run("audit", "verify").returncode == 0

    # HR changes a long-gone leaver's row after all: their data is back in the store, so the next purge
    # erases it again.
    for r in rows:
        if r["employee_id"] == "E001":
            r.update(job_title="Former Engineer")
    cli.write(rows)
    assert cli.run("sync").returncode == 0
    assert _found(db, ["Quortenbach"]), "the changed row brings the data back (HR still sends it)"
    r = cli.run("purge")
    assert r.returncode == 0 and "erased the personal data of 1 leaver(s): E001" in r.stdout, r.stdout
    assert _found(db, _terms(GONE)) == []
    assert cli.run("audit", "verify").returncode == 0


def test_purge_without_retention_configured_is_one_clear_error(tmp_path: Path, peer: ScimPeer) -> None:
    r = Cli(tmp_path, peer).run("purge")
    assert r.returncode == 2
    assert r.stderr.strip() == ("jml: retention is off: set retention.leavers_after and/or "
                                "retention.events_after in the config")


def test_the_daemon_purges_on_its_schedule(tmp_path: Path, scim: ScimPeer) -> None:
    """`jml serve` with retention configured: a leaver gone long enough is erased without anyone running purge."""
    from tests.e2e.helpers import db_scalar, person, scim_users, start_serve, wait_until, write_config, write_export

    exports = tmp_path / "exports"
    gone = person(1, first_name="Wilhelmina", preferred_name="Wilhelmina", last_name="Oakenshott",
                  work_email="wilhelmina.oakenshott@example.com")
    stays = person(2)
    write_export(exports, "hr-1.csv", [gone, stays])
    cfg = write_config(tmp_path, scim_url=scim.url, extra={
        "retention": {"leavers_after": "400d", "schedule": "2s"},
        "guard": {"max_deprovision_percent": 100, "max_deprovision_count": 100, "max_shrink_percent": 10}})
    db = tmp_path / "jml.db"
    with start_serve(cfg, env={"SCIM_TOKEN": scim.token, "JML_ADMIN_TOKEN": "admin-token-for-purge"}) as served:
        served.wait_ready()
        wait_until(lambda: len(scim_users(scim.url, scim.token)) == 2, what="both accounts created")
        write_export(exports, "hr-2.csv", [{**gone, "status": "Terminated", "termination_date": "2024-02-29"}, stays])
        wait_until(lambda: db_scalar(db, "SELECT erased_at FROM person WHERE employee_id = 'E0000001'"),
                   timeout=60, what="the leaver erased by the daemon")
        assert all(u.get("active") is False for u in scim_users(scim.url, scim.token)
                   if u["userName"] == "wilhelmina.oakenshott@example.com")
        assert served.stop() == 0
    assert _found(db, ["Wilhelmina", "Oakenshott", "wilhelmina.oakenshott@example.com"]) == []
    assert _found(db, ["First2", "user2@example.com"])  # still employed: untouched
    assert db_scalar(db, "SELECT actor FROM audit WHERE kind = 'erasure'") == "jml retention"
