"""Issue 17, the command line for the people who use it: `plan` says why, `offboard` needs a
reason and reads a date in HR's zone, a closed pipe is no traceback, help for every command."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.e2e.test_cli import JML, Cli, cli, peer, people

__all__ = ["cli", "peer"]  # fixtures


def test_plan_says_why_each_change_happens(cli: Cli) -> None:
    rows = people(30)  # one leaver of 30 stays under the guard's 5%
    cli.write(rows)
    assert cli.run("sync").returncode == 0
    rows[1] = {**rows[1], "department": "Engineering"}  # E001: Engineering already (i % 3); E000 moves
    rows[0] = {**rows[0], "department": "Engineering"}
    rows[2] = {**rows[2], "status": "Terminated", "termination_date": "2020-02-01"}
    rows.append({**people(1)[0], "employee_id": "E100", "work_email": "new.joiner@example.com"})
    cli.write(rows)
    r = cli.run("plan")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "why: mover: department Sales → Engineering — rule 'eng' grants group:Eng" in out, out
    assert "why: leaver: " in out and "account deactivated" in out, out
    assert "why: joiner: new in HR, hire date 2020-01-06 — no account yet" in out, out
    doc = json.loads(cli.run("plan", "--json").stdout)
    reasons = {(op["person"], op["action"]): op["detail"]["reason"] for op in doc["operations"]}
    assert reasons[("E000", "add_member")].startswith("mover: department Sales → Engineering")
    assert reasons[("E002", "deactivate")].startswith("leaver:")


def test_offboard_needs_a_reason_and_reads_a_date_in_hrs_zone(cli: Cli) -> None:
    cli.write(people(2))
    assert cli.run("sync").returncode == 0
    r = cli.run("offboard", "E001")  # not a terminal: no prompt, exit 2, nothing recorded
    assert r.returncode == 2 and "--reason" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = cli.run("offboard", "E001", "--reason", "contract ends", "--at", "2026-12-31")
    assert r.returncode == 0, r.stderr
    # HR's zone (Europe/Berlin) at lifecycle.termination_time (23:59), not 00:00 UTC.
    assert "leaver from 2026-12-31 23:59 CET" in r.stdout, r.stdout
    trail = [json.loads(line) for line in cli.run("audit", "export").stdout.splitlines()]
    [off] = [x for x in trail if x.get("kind") == "offboard"]
    assert off["data"]["effective_at"] == "2026-12-31T22:59:00+00:00"
    assert off["data"]["reason"] == "contract ends"


def test_a_closed_pipe_is_no_traceback(cli: Cli) -> None:
    cli.write(people(3000))
    proc = subprocess.Popen([JML, "--config", str(cli.config), "plan", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=cli.env, cwd=cli.tmp)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(100)  # `| head -c 100`
    proc.stdout.close()
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    err = proc.stderr.read().decode()
    assert proc.returncode == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize("command", [["status"], ["audit"], ["audit", "export"], ["audit", "verify"], ["report"],
                                     ["report", "access"], ["report", "sla"], ["offboard"], ["plan"], ["retry"]])
def test_every_command_and_option_has_help(command: list[str]) -> None:
    out = subprocess.run([JML, *command, "--help"], capture_output=True, text=True, timeout=60).stdout
    lines = out.splitlines()
    # every option / argument line in the help has words after it (argparse puts them on the same
    # line or the next, indented)
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("-") and not stripped.startswith("-h"):
            words = stripped.split("  ", 1)
            assert len(words) == 2 or (i + 1 < len(lines) and lines[i + 1].startswith(" " * 10)), (command, line)
    top = subprocess.run([JML, "--help"], capture_output=True, text=True, timeout=60).stdout
    for name in ("status", "audit", "report"):
        line = next(x for x in top.splitlines() if x.strip().startswith(name + " ") or x.strip() == name)
        assert len(line.split()) > 1, line


def test_set_aside_rows_show_in_status(cli: Cli) -> None:
    rows = people(3)
    rows[1] = {**rows[1], "first_name": "Grace", "last_name": "García", "termination_date": "31.12.2026"}
    rows[2] = {**rows[2], "work_email": "not an email"}
    cli.write(rows)
    r = cli.run("sync")
    assert r.returncode == 0, r.stderr
    doc = json.loads(cli.run("status", "--json").stdout)
    aside = doc["set_aside"]
    assert aside["count"] == 2 and {x["employee_id"] for x in aside["rows"]} == {"E001", "E002"}
    assert [i["kind"] for i in doc["attention"]].count("set_aside_row") == 2
    text = cli.run("status").stdout
    assert "NEEDS ATTENTION (2)" in text and "Grace García (E001)" in text, text
    assert "HR: correct termination_date for Grace García (E001)" in text
    assert "work_email not an e-mail address: 'not an email'" in text


def test_offboard_asks_for_the_reason_on_a_terminal(cli: Cli) -> None:
    import os
    import pty

    cli.write(people(2))
    assert cli.run("sync").returncode == 0
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([JML, "--config", str(cli.config), "offboard", "E000"], stdin=slave,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli.env, cwd=cli.tmp, text=True)
        os.write(master, b"asked at the terminal\n")
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, err
    assert "Reason for offboarding E000" in out
    trail = [json.loads(line) for line in cli.run("audit", "export").stdout.splitlines()]
    [off] = [x for x in trail if x.get("kind") == "offboard"]
    assert off["data"]["reason"] == "asked at the terminal"


def test_report_access_into_a_closed_pipe(cli: Cli) -> None:
    """`jml report access | head -c 50`: a small pipe, read a little, then closed."""
    import fcntl
    import os

    cli.write(people(30))
    assert cli.run("sync").returncode == 0
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, 1031, 4096)  # F_SETPIPE_SZ: the report (~9 KB) cannot fit
    proc = subprocess.Popen([JML, "--config", str(cli.config), "report", "access"], stdout=write_end,
                            stderr=subprocess.PIPE, env=cli.env, cwd=cli.tmp)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        assert reader.read(50)
    _, err = proc.communicate(timeout=120)
    text = err.decode()
    assert proc.returncode == 0 and "Traceback" not in text and "BrokenPipe" not in text, text
