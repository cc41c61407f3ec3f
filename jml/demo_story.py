"""`jml demo`'s short story (issue 17): while the daemon runs, HR's side plays by itself so a
newcomer sees each part of jml within two minutes, narrated on the terminal:

1. joiners — the bundled export, synced before the daemon starts;
2. a mover (Sales -> Engineering), a set-aside row (a date typed the German way) and a joiner
   for the "legacy" app, which is down: a dead letter, in plain words, with Retry/Discard;
3. a leaver offboarded by HR through the API, verified deprovisioned in the app;
4. access beyond the rules: a break-glass grant that expires within a minute (removed, verified),
   and a high-risk request made by HR and approved by two approvers (API tokens the demo made);
5. an export terminating too many people at once: the guard holds the plan for approval.

Everything goes through jml's public doors (the HR export folder, the HTTP API), as HR would.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["play"]

LEGACY_TITLE = "Legacy Admin"


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _write(folder: Path, name: str, fields: list[str], rows: list[dict[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    tmp = folder / f".{name}.part"  # the folder source ignores dot files: the export appears whole
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, folder / name)


def _api(url: str, token: str, path: str, body: dict[str, Any] | None = None) -> Any:
    if not url.startswith("http://127.0.0.1:"):
        raise OSError(f"the demo talks to its own daemon only, not {url}")
    req = urllib.request.Request(url + path.lstrip("/"),  # noqa: S310 (checked just above)
                                 method="POST" if body is not None else "GET",
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        return json.load(resp)


def _wait(check: Callable[[], bool], timeout: float, step: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except OSError:
            pass
        time.sleep(step)
    return False


def _name(row: dict[str, str]) -> str:
    return f"{row.get('preferred_name') or row.get('first_name')} {row.get('last_name')} ({row['employee_id']})"


def _request(url: str, eid: str) -> Callable[[str], dict[str, Any]]:
    def get(token: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = _api(url, token, f"/api/v1/access/requests?employee_id={eid}")["requests"]
        return found[0] if found else {}
    return get


def _in_app(url: str, token: str, eid: str, grant: str) -> bool:
    """The grant recorded as pushed to the app (jml's record of what the app holds)."""
    doc = _api(url, token, "/api/v1/reports/access?format=json")
    return any(a["employee_id"] == eid and any(grant in g["grant"] for g in a["grants"]) for a in doc["accounts"])


def _access(url: str, admin_token: str, approvers: tuple[str, ...], people: list[dict[str, str]],
            say: Callable[[str], None], pause: float) -> None:
    """Access beyond the rules: a break-glass grant that ends within a minute, removed and read back;
    a high-risk request that HR makes and two approvers (not HR) approve."""
    if len(people) < 2 or len(approvers) < 2:
        say("[story] 4. (access requests skipped: no approvers)")
        return
    responder, engineer = people[0], people[1]
    grant = "Prod Admins"
    seconds = 20
    say(f"[story] 4. access beyond the rules: {_name(responder)} takes break-glass access to '{grant}' for an "
        f"incident, for {seconds} seconds (no approval, loud in the log and the audit trail); {_name(engineer)} "
        f"asks for '{grant}' for 7 days — a high-risk entitlement: two approvers, never the one who asked.")
    try:
        jit = _api(url, admin_token, "/api/v1/access/jit", {
            "connector": "demo", "grant": f"group:{grant}", "employee_id": responder["employee_id"],
            "reason": "demo: incident 7, the payments database is down", "hours": seconds / 3600})
        req = _api(url, admin_token, "/api/v1/access/requests", {
            "employee_id": engineer["employee_id"], "connector": "demo", "grant": f"group:{grant}",
            "reason": "demo: on call for production this week", "duration": "7d"})
        say(f"[story]    {req['id']}: requested by HR, waiting for 2 approvals (see 'Access beyond the rules').")
        time.sleep(pause / 2)
        for token in approvers[:2]:
            got = _api(url, token, f"/api/v1/access/requests/{req['id']}/approve", {})
            say(f"[story]    {got['message']}")
        granted = _wait(lambda: _in_app(url, admin_token, engineer["employee_id"], grant), 30)
        say(f"[story]    {_name(engineer)}: '{grant}' " + ("granted in the app until it expires in 7 days — on their "
                                                            "person page with who asked and who approved." if granted
                                                            else "not yet in the app (see the status page)."))
        jit_state = _request(url, responder["employee_id"])
        ended = _wait(lambda: bool(jit_state(admin_token).get("removal_verified_at")), 60)
        say(f"[story]    break-glass {jit['id']} for {_name(responder)}: " + (
            "expired, removed from the app and verified." if ended else "still ending (see the status page)."))
    except OSError as e:
        say(f"[story]    the access calls failed: {e}")
    time.sleep(pause)


def play(url: str, workdir: Path, admin_token: str, say: Callable[[str], None] = print,
         pause: float = 4.0, approvers: tuple[str, ...] = ()) -> None:
    """Play the story against the running daemon at `url` (its HR folder is workdir/exports)."""
    folder = workdir / "exports"
    fields, rows = _read(folder / "export.csv")
    say(f"\n[story] 1. joiners: the {len(rows)} people of HR's export are synced: accounts and groups by the "
        f"rules. Status page: {url}")
    time.sleep(pause)

    mover = next(r for r in rows if r["department"] == "Sales" and r["status"] == "Active")
    mover["department"] = "Engineering"
    aside = next(r for r in rows if r["status"] == "Active" and r is not mover and r["department"] == "Marketing")
    aside["termination_date"] = "31.12.2026"
    joiner = {f: "" for f in fields}
    joiner.update(employee_id="E0000901", first_name="Ada", last_name="Legacy", preferred_name="Ada",
                  work_email="ada.legacy@example.com", department="IT", cost_center="CC-400", job_title=LEGACY_TITLE,
                  location="Berlin", country="DE", employment_type="Employee", status="Active",
                  hire_date=time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400)))
    rows.append(joiner)
    _write(folder, "export-2.csv", fields, rows)
    say(f"[story] 2. HR's next export: {_name(mover)} moves from Sales to Engineering (gains 'Engineering', "
        f"loses 'Go To Market'); {_name(aside)}'s termination date was typed as 31.12.2026 — that row is set aside "
        f"for HR to fix; new joiner {_name(joiner)} needs the 'legacy' app, which is down — a dead letter with "
        "Retry/Discard on the page.")
    _wait(lambda: bool(_api(url, admin_token, "/api/v1/status")["dead_letters"]), 60)
    time.sleep(pause)

    leaver = next(r for r in rows if r["status"] == "Active" and r["department"] == "Finance")
    say(f"[story] 3. HR offboards {_name(leaver)} now (POST /api/v1/offboard): every app deprovisions them and jml "
        "reads each app back until the access is verified gone.")
    try:
        _api(url, admin_token, "/api/v1/offboard", {"employee_id": leaver["employee_id"],
                                                    "reason": "demo: resigned, last day today"})
        done = _wait(lambda: bool(_api(url, admin_token, f"/api/v1/people/{leaver['employee_id']}/progress")
                                  ["all_verified"]), 60)
        say(f"[story]    {_name(leaver)}: " + ("access removed everywhere, verified." if done else
                                               "still in progress (see the status page)."))
    except OSError as e:
        say(f"[story]    the offboard call failed: {e}")
    time.sleep(pause)

    _access(url, admin_token, approvers, [r for r in rows if r["status"] == "Active" and r["department"] == "Security"
                                          and r not in (mover, aside, joiner, leaver)], say, pause)

    leaving = [r for r in rows if r["status"] == "Active" and r["department"] == "Engineering"
               and r not in (mover, aside, joiner)][:15]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    for r in leaving:
        r["status"], r["termination_date"] = "Terminated", today
    _write(folder, "export-3.csv", fields, rows)
    say(f"[story] 5. an export terminating {len(leaving)} engineers at once: more than the guard allows, so the "
        "plan is held — an approver approves it (or an operator discards it) on the status page.")
    _wait(lambda: bool(_api(url, admin_token, "/api/v1/status")["held_plans"]), 60)
    say(f"[story] done. 'Needs attention' on {url} lists the held plan, the dead letter, the set-aside row, "
        "each with what to do. Ctrl-C stops the demo.")
