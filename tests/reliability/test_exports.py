"""Bad HR exports through the real `jml sync` process against a real scim2-server.

After a good baseline (60 people, synced), each bad export must deprovision nobody who
should not be (checked on the server), and say why in three places: `jml sync`'s stderr
and exit code, `jml status`, and the audit trail (`export_rejected` / `export` records).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.peers import ScimPeer, scim2_server
from tests.reliability.conftest import (
    compare,
    csv_bytes,
    desired_state,
    generate,
    read_target,
    run_jml,
    scim_env,
    write_config,
    write_export,
)

PEOPLE = 60


@dataclass
class Baseline:
    peer: ScimPeer
    rows: list[dict[str, str]]
    folder: Path  # the synced state: jml.db and exports/


@dataclass
class Env:
    peer: ScimPeer
    rows: list[dict[str, str]]
    folder: Path
    config: Path

    def sync(self, data: bytes, name: str) -> Any:
        write_export(self.folder / "exports", name, data)
        return run_jml(self.config, "sync", env=scim_env(self.peer), timeout=120)

    def status(self) -> dict[str, Any]:
        r = run_jml(self.config, "status", "--json", env=scim_env(self.peer), timeout=60)
        assert r.returncode == 0, r.stderr
        doc: dict[str, Any] = json.loads(r.stdout)
        return doc

    def status_text(self) -> str:
        r = run_jml(self.config, "status", env=scim_env(self.peer), timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def audit(self, kind: str) -> list[dict[str, Any]]:
        r = run_jml(self.config, "audit", "export", env=scim_env(self.peer), timeout=60)
        assert r.returncode == 0, r.stderr
        recs = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        return [rec for rec in recs if rec.get("kind") == kind]

    def nobody_deprovisioned(self) -> None:
        """Every baseline person still has their active account and groups."""
        problems = [p for p in compare(read_target(self.peer), desired_state(self.rows))
                    if not p.startswith("unexpected user")]
        assert problems == [], problems[:20]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Baseline]:
    folder = tmp_path_factory.mktemp("exports-baseline")
    rows = generate(PEOPLE, seed=91)
    for r in rows:
        if r["status"] == "Pre-hire":
            r["status"], r["hire_date"] = "Active", "2025-03-03"
    with scim2_server(token="rel-export-token-01") as peer:
        cfg = write_config(folder, scim_url=peer.url)
        write_export(folder / "exports", "day0.csv", csv_bytes(rows))
        r = run_jml(cfg, "sync", env=scim_env(peer), timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
        assert compare(read_target(peer), desired_state(rows)) == []
        yield Baseline(peer, rows, folder)


@pytest.fixture
def env(baseline: Baseline, tmp_path: Path) -> Env:
    """The baseline's database copied for this test (the server is shared: every test here
    leaves the baseline people as they were, which is the point)."""
    src = sqlite3.connect(str(baseline.folder / "jml.db"))
    dst = sqlite3.connect(str(tmp_path / "jml.db"))
    src.backup(dst)
    src.close()
    dst.close()
    shutil.copytree(baseline.folder / "exports", tmp_path / "exports")
    cfg = write_config(tmp_path, scim_url=baseline.peer.url)
    return Env(baseline.peer, baseline.rows, tmp_path, cfg)


def _truncated(data: bytes) -> bytes:
    """Cut in the middle of a row halfway through the file (a transfer that stopped)."""
    cut = len(data) // 2
    while data[cut - 1:cut] in (b"\n", b","):
        cut += 7
    return data[:cut]


def _renamed(data: bytes, old: str, new: str) -> bytes:
    head, rest = data.split(b"\n", 1)
    return head.replace(old.encode(), new.encode()) + b"\n" + rest


def _non_utf8(data: bytes) -> tuple[bytes, int]:
    at = data.index(b"\n") + 40  # inside the first data row
    return data[:at] + b"\xff\xfe" + data[at:], at


REJECTIONS: dict[str, tuple[Callable[[bytes], bytes], list[str]]] = {
    "empty": (lambda d: b"", ["empty"]),
    "header-only": (lambda d: d.split(b"\n", 1)[0] + b"\n", ["no data rows"]),
    "truncated-mid-row": (_truncated, ["cut off"]),
    "renamed-required-column": (lambda d: _renamed(d, "status", "worker_status"),
                                ["missing required columns", "status"]),
    "renamed-other-column": (lambda d: _renamed(d, "department", "dept"), ["column set changed", "dept"]),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_structurally_broken_export_is_rejected_whole(env: Env, case: str) -> None:
    mangle, words = REJECTIONS[case]
    r = env.sync(mangle(csv_bytes(env.rows)), f"bad-{case}.csv")
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("export rejected:"), r.stderr
    assert f"bad-{case}.csv" in line and all(w in line for w in words), line
    env.nobody_deprovisioned()
    src = env.status()["source"]
    assert src["last_status"] == "rejected" and all(w in (src["last_reason"] or "") for w in words), src
    recs = env.audit("export_rejected")
    assert recs and all(w in recs[-1]["data"]["reason"] for w in words), recs[-1:]


def test_non_utf8_export_is_rejected_with_the_byte_offset(env: Env) -> None:
    data, at = _non_utf8(csv_bytes(env.rows))
    r = env.sync(data, "latin1.csv")
    assert r.returncode == 3, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "not UTF-8" in line and f"byte offset {at}" in line and "0xff" in line and "latin1.csv" in line, line
    env.nobody_deprovisioned()
    assert f"byte offset {at}" in (env.status()["source"]["last_reason"] or "")
    text = env.status_text()
    assert "rejected" in text and f"byte offset {at}" in text, text
    assert f"byte offset {at}" in env.audit("export_rejected")[-1]["data"]["reason"]
    # A second read of the same bad file is no "unchanged, nothing to do": still nobody deprovisioned.
    again = run_jml(env.config, "sync", env=scim_env(env.peer), timeout=120)
    assert again.returncode in (0, 3), again.stderr
    env.nobody_deprovisioned()


def test_half_the_rows_is_held_not_applied(env: Env) -> None:
    half = env.rows[: PEOPLE // 2]
    r = env.sync(csv_bytes(half), "half.csv")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "HELD" in r.stdout and "shrank" in r.stdout and "max_shrink_percent" in r.stdout, r.stdout
    env.nobody_deprovisioned()
    doc = env.status()
    assert doc["held_plans"], doc
    assert any("shrank" in reason for p in doc["held_plans"] for reason in p["reasons"]), doc["held_plans"]
    exports = env.audit("export")
    assert exports[-1]["data"]["held"] is True and exports[-1]["data"]["file"] == "half.csv"
    # Even the next read of the same file keeps it held, and nothing is deprovisioned.
    again = run_jml(env.config, "sync", env=scim_env(env.peer), timeout=120)
    assert again.returncode == 3, (again.stdout, again.stderr)
    env.nobody_deprovisioned()


def test_duplicate_employee_ids_are_quarantined_and_the_rest_proceeds(env: Env) -> None:
    rows = [dict(r) for r in env.rows]
    twin = dict(rows[3], work_email="someone.else@example.com", first_name="Impostor")
    rows.append(twin)  # rows[3]'s employee_id twice
    mover = next(r for r in rows[10:] if r["status"] == "Active" and r["department"] != "Legal")
    mover["department"] = "Legal"
    joiner = dict(rows[5], employee_id="E9999999", work_email="new.joiner@example.com", status="Active")
    rows.append(joiner)
    r = env.sync(csv_bytes(rows), "dupes.csv")
    assert r.returncode == 0, (r.stdout, r.stderr)
    dup_id = rows[3]["employee_id"]
    assert f"employee_id {dup_id} appears in rows" in r.stderr, r.stderr
    assert "2 quarantined" in r.stdout, r.stdout
    # The rest proceeded: the mover moved, the joiner joined.
    expected = desired_state([x for x in rows if x is not twin])
    problems = compare(read_target(env.peer), expected)
    assert [p for p in problems if not p.startswith("unexpected user")] == [], problems[:20]
    # The quarantined person was not deprovisioned, and the impostor got nothing.
    users = read_target(env.peer).by_username()
    assert users[rows[3]["work_email"]]["active"] is True
    assert "someone.else@example.com" not in users
    rec = env.audit("export")[-1]["data"]
    assert rec["file"] == "dupes.csv" and len(rec["quarantined"]) == 2
    assert all(dup_id in q for q in rec["quarantined"]), rec["quarantined"]
    # The next export, with the duplicate gone, is no leaver event for that person either.
    clean = [x for x in rows if x is not twin]
    r = env.sync(csv_bytes(clean), "clean.csv")
    assert r.returncode == 0, r.stderr
    assert read_target(env.peer).by_username()[rows[3]["work_email"]]["active"] is True
