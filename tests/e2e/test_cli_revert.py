"""`jml revert PLAN_ID` as a user runs it (a subprocess, a real scim2-server): preview, the
confirmation it needs off a terminal, the revert itself, and the exit codes of DESIGN's CLI
contract — 0 done or previewed, 2 nothing to revert / not confirmed, 3 held (also --dry-run)."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_cli import Cli, people
from tests.peers import scim2_server


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    with scim2_server(token="e2e-revert-token") as peer:
        yield Cli(tmp_path, peer)


def plans(c: Cli) -> list[tuple[str, str, str]]:
    """(id, origin, state), oldest first, read from the database file."""
    with sqlite3.connect(c.tmp / "jml.db") as db:
        return [(r[0], r[1], r[2]) for r in db.execute("SELECT id, origin, state FROM plan ORDER BY created_at")]


def scim_user(c: Cli, username: str) -> tuple[bool, set[str]]:
    """(active, group names) as the server holds them."""
    (user,) = [u for u in c.users() if u["userName"] == username]
    req = urllib.request.Request(c.peer.url + "Groups?count=1000", headers=c.peer.headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        groups = json.loads(r.read()).get("Resources", [])
    return bool(user.get("active", True)), {g["displayName"] for g in groups
                                             if any(m["value"] == user["id"] for m in g.get("members") or [])}


def test_revert_exit_codes_preview_confirmation_and_once_only(cli: Cli) -> None:
    cli.write(people(30))
    assert cli.run("sync").returncode == 0
    (first, origin, _state), = plans(cli)
    assert origin == "export"
    me = "person.n001@example.com"
    before = scim_user(cli, me)
    assert before[0] and before[1]

    off = cli.run("offboard", "E001", "--reason", "wrong person")
    assert off.returncode == 0, off.stderr
    bad = next(p for p in plans(cli) if p[1] == "offboard")[0]
    assert scim_user(cli, me) == (False, set())

    unknown = cli.run("revert", "nope", "--dry-run")
    assert unknown.returncode == 2 and unknown.stderr.strip() == "jml: no plan nope"

    preview = cli.run("revert", bad, "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert f"preview of the revert of plan {bad} (offboard)" in preview.stdout
    assert "reactivate" in preview.stdout and "E001" in preview.stdout
    doc = json.loads(cli.run("revert", bad, "--dry-run", "--json").stdout)
    assert doc["dry_run"] is True and doc["plan_id"] is None and doc["guard"]["held"] is False
    assert {(o["action"], o["person"]) for o in doc["operations"]} >= {("reactivate", "E001")}
    assert doc["people_state_restored"] == ["E001"]

    unconfirmed = cli.run("revert", bad)  # not a terminal: it asks for --yes and does nothing
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert len(plans(cli)) == 2 and scim_user(cli, me)[0] is False

    done = cli.run("revert", bad, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "result: done" in done.stdout
    assert scim_user(cli, me) == before  # active, with the groups it had
    revert_plan = [p for p in plans(cli) if p[1] == f"revert:{bad}"]
    assert len(revert_plan) == 1 and revert_plan[0][2] == "done"

    again = cli.run("revert", bad, "--yes")
    assert again.returncode == 2 and "already reverted" in again.stderr
    nothing = json.loads(cli.run("plan", "--json").stdout)
    assert nothing["operations"] == []  # the offboard is lifted: nothing left to plan

    # Reverting the first import would deactivate all thirty: the guard holds it (exit 3, dry run too).
    assert cli.run("revert", first, "--dry-run").returncode == 3
    held = cli.run("revert", first, "--yes")
    assert held.returncode == 3 and "jml approve" in held.stderr
    assert [p[2] for p in plans(cli) if p[1] == f"revert:{first}"] == ["held"]
    assert all(u.get("active", True) for u in cli.users())
    mine = next(p[0] for p in plans(cli) if p[1] == f"revert:{first}")
    own = cli.run("approve", mine)  # the CLI user asked for it: someone else must approve
    assert own.returncode == 2 and "requested by you" in own.stderr
