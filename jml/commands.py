"""The CLI's commands, each an async function (args, config) -> exit code."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from typing import Any

from jml import progress
from jml.config import Config
from jml.errors import JMLError, UsageError
from jml.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_SAFETY, EXIT_USAGE
from jml.push import print_outcome, report_plan, work
from jml.runtime import Runtime
from jml.sla_causes import record_pause
from jml.sync import plan_cycle, write_plan_json
from jml.timeparse import parse_time

__all__ = ["work"]  # pushing a plan from a one-shot command lives in jml.push; tests reach it here too


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, default=str, ensure_ascii=False))




async def sync(args: argparse.Namespace, cfg: Config) -> int:
    rt = Runtime(cfg)
    if not args.dry_run:
        _check_secrets(cfg)
    outcome = await plan_cycle(rt, dry_run=args.dry_run)
    print_outcome(outcome)
    if outcome.held:
        return EXIT_SAFETY
    if args.dry_run:
        return EXIT_OK
    if outcome.plan_id is not None:
        async with progress.watch(functools.partial(_open_by_connector, rt), sys.stderr,
                                  interval=getattr(args, "progress", None)):
            await work(rt, outcome.plan_id, args.timeout)
    else:
        await work(rt, outcome.plan_id, args.timeout)
    code = report_plan(rt, outcome.plan_id)
    held = [p for p in rt.outbox.plans(["held"]) if p.origin == "export"]
    if outcome.unchanged and held and code == EXIT_OK:
        # The export is the one whose plan waits for approval: still a safety stop.
        print(f"plan {held[0].id} is still held: `jml approve {held[0].id}` or `jml discard {held[0].id}`")
        return EXIT_SAFETY
    return code


def _open_by_connector(rt: Runtime) -> dict[str, int]:
    """Operations still to do (pending or running) per connector: what the progress display counts down."""
    out: dict[str, int] = {}
    for (connector, state), n in rt.outbox.counts().items():
        if state in ("pending", "running"):
            out[connector] = out.get(connector, 0) + n
    return out


def _check_secrets(cfg: Config) -> None:
    """Every connector's secret is readable, before a plan is stored that could not be pushed
    (ConfigError -> exit 2 naming the key, e.g. connectors.demo.token_env)."""
    from jml.config import resolve_secret

    for name, c in cfg.connectors.items():
        resolve_secret(c, "token", f"connectors.{name}", required=False)


async def plan(args: argparse.Namespace, cfg: Config) -> int:
    rt = Runtime(cfg)
    outcome = await plan_cycle(rt, dry_run=True)
    if args.json:
        write_plan_json(outcome, sys.stdout.write)
        sys.stdout.write("\n")
        for q in outcome.quarantined:
            print(f"quarantined: {q}", file=sys.stderr)
    else:
        from jml.explain import operation_reason

        print_outcome(outcome)
        for op in outcome.operations[:200]:
            target = op.detail.get("group") or op.detail.get("grant") or op.detail.get("username", "")
            print(f"  {op.connector:12} {op.action.value:14} {op.employee_id:12} {target}")
            print(f"      why: {operation_reason(op, outcome.why)}")
        if len(outcome.operations) > 200:
            print(f"  … {len(outcome.operations) - 200} more (`jml plan --json` lists them all)")
    return EXIT_SAFETY if outcome.held else EXIT_OK


async def _decide(args: argparse.Namespace, cfg: Config, approve: bool) -> int:
    """The command line counts as one approver (`cli:<os user>`), never the requester's second vote."""
    from jml import approvals

    rt = Runtime(cfg)
    who = approvals.cli_approver()
    try:
        if not approve:
            approvals.discard(rt, args.plan_id, who)
            print(f"{args.plan_id} discarded")
            return EXIT_OK
        decision = approvals.approve(rt, args.plan_id, who)
    except approvals.Refused as e:
        raise UsageError(e.message) from None
    print(decision.message)
    if not decision.done:
        return EXIT_SAFETY  # still held: it waits for another approver
    if args.plan_id.startswith(approvals.PRE_APPROVAL_PREFIX):
        return EXIT_OK
    print(f"plan {args.plan_id} approved: applying")
    await work(rt, args.plan_id)
    return report_plan(rt, args.plan_id)


async def approve(args: argparse.Namespace, cfg: Config) -> int:
    return await _decide(args, cfg, True)


async def discard(args: argparse.Namespace, cfg: Config) -> int:
    return await _decide(args, cfg, False)


async def retry(args: argparse.Namespace, cfg: Config) -> int:
    if args.operation_id is None and not args.all:
        raise UsageError("give an OPERATION_ID or --all")
    rt = Runtime(cfg)
    n = rt.outbox.retry(None if args.all else args.operation_id, rt.clock())
    rt.audit.append("retry", {"operation_id": args.operation_id, "all": args.all, "count": n}, now=rt.clock(),
                    actor="cli")
    print(f"{n} operation(s) back in the outbox")
    if n:
        await work(rt, None)
    return report_plan(rt, None) if n else EXIT_OK


async def status(args: argparse.Namespace, cfg: Config) -> int:
    from jml.status import render_text, snapshot

    rt = Runtime(cfg)
    doc = snapshot(rt)
    if args.json:
        print_json(doc)
    else:
        print(render_text(doc))
    return EXIT_OK


async def _pause(args: argparse.Namespace, cfg: Config, paused: bool) -> int:
    if args.connector not in cfg.connectors:
        raise UsageError(f"no connector {args.connector!r} (configured: {', '.join(cfg.connectors) or 'none'})")
    rt = Runtime(cfg)
    current = set(rt.store.get_setting("paused_connectors", []) or [])
    current = current | {args.connector} if paused else current - {args.connector}
    rt.store.set_setting("paused_connectors", sorted(current))
    record_pause(rt, args.connector, paused, rt.clock())
    rt.audit.append("pause" if paused else "resume", {"connector": args.connector}, now=rt.clock(), actor="cli")
    print(f"{args.connector} {'paused: its work waits in the outbox' if paused else 'resumed'}")
    return EXIT_OK


async def pause(args: argparse.Namespace, cfg: Config) -> int:
    return await _pause(args, cfg, True)


async def resume(args: argparse.Namespace, cfg: Config) -> int:
    return await _pause(args, cfg, False)


async def pre_approve(args: argparse.Namespace, cfg: Config) -> int:
    """A layoff or divestiture HR announced: those leavers pass the guard (nobody else does)."""
    ids = [i.strip() for i in args.employee_ids if i.strip()]
    if args.file:
        try:
            with open(args.file, encoding="utf-8") as f:
                ids += [line.strip() for line in f if line.strip() and not line.startswith("#")]
        except OSError as e:
            raise UsageError(f"cannot read {args.file}: {e.strerror}") from None
    from jml import approvals

    rt = Runtime(cfg)
    who = approvals.cli_approver()
    if args.clear:  # emptying the list only makes the guard stricter: no second pair of eyes needed
        rt.store.set_setting("pre_approved_leavers", [])
        rt.audit.append("pre_approval", {"added": [], "cleared": True, "count": 0}, now=rt.clock(), actor=who.actor)
        print("pre-approved leavers cleared")
    if not ids:
        return EXIT_OK
    rid = approvals.request_pre_approval(rt, ids, who)
    required = cfg.guard.approvals_required
    print(f"pre-approval {rid} for {len(set(ids))} leaver(s) waits for {required} approval(s) by someone else: "
          f"`jml approve {rid}` (another user), the page, or POST /api/v1/plans/{rid}/approve")
    return EXIT_OK


async def token(args: argparse.Namespace, cfg: Config) -> int:
    """`jml token create NAME --role ROLE… [--expires DURATION]` / `token list` / `token revoke NAME`."""
    import datetime as dt
    import re

    from jml import approvals
    from jml.config import ROLE_NAMES, parse_duration
    from jml.web.auth import new_api_token, token_hash

    rt = Runtime(cfg)
    store = rt.store.identities
    now = rt.clock()
    who = approvals.cli_approver()
    if args.token_command == "list":
        rows = store.tokens()
        if not rows:
            print("no API tokens")
        for t in rows:
            from jml.status import local_time

            tz = str(cfg.display_timezone)
            state = ("revoked " + local_time(t.revoked_at, tz) if t.revoked_at else
                     "expired" if not t.live(now) else "live")
            expires = local_time(t.expires_at, tz) if t.expires_at else "never"
            used = local_time(t.last_used_at, tz) if t.last_used_at else "never"
            print(f"{t.name}\troles={','.join(t.roles)}\t{state}\texpires={expires}\tlast_used={used}")
        return EXIT_OK
    name = args.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise UsageError("token NAME: 1-64 letters, digits, '.', '_' or '-'")
    if args.token_command == "revoke":
        if not store.revoke_token(name, now):
            raise UsageError(f"no live token named {name!r}")
        rt.audit.append("token_revoke", {"name": name}, now=now, actor=who.actor)
        print(f"token {name} revoked")
        return EXIT_OK
    roles = sorted({r for group in args.role for r in group})
    bad = [r for r in roles if r not in ROLE_NAMES]
    if bad:
        raise UsageError(f"unknown role(s) {', '.join(bad)} (use {', '.join(ROLE_NAMES)})")
    expires_at = None
    if args.expires:
        try:
            life = parse_duration(args.expires)
        except ValueError as e:
            raise UsageError(f"--expires: {e}") from None
        if life <= dt.timedelta(0) or life > dt.timedelta(days=3660):
            raise UsageError("--expires: between 1 second and 10 years")
        expires_at = now + life
    secret = new_api_token()
    if not store.create_token(name, token_hash(secret), roles, created_by=who.actor, now=now, expires_at=expires_at):
        raise UsageError(f"a token named {name!r} exists (names are not reused; pick another)")
    rt.audit.append("token_create", {"name": name, "roles": roles,
                                     "expires_at": expires_at.isoformat() if expires_at else None},
                    now=now, actor=who.actor)
    print(secret)
    print(f"token {name} ({', '.join(roles)}) created; it is shown only this once: "
          "send it as `Authorization: Bearer <token>`", file=sys.stderr)
    return EXIT_OK


async def audit(args: argparse.Namespace, cfg: Config) -> int:
    from jml.audit import verify_lines

    if args.audit_command == "verify" and args.file:
        records: list[dict[str, Any]] = []
        head: dict[str, Any] | None = None
        try:
            with open(args.file, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        doc = json.loads(line)
                    except ValueError:
                        print(f"{args.file}, line {n}: not JSON", file=sys.stderr)
                        return EXIT_FAILED
                    if "head" in doc and "seq" not in doc:
                        head = doc["head"]
                    else:
                        records.append(doc)
        except OSError as e:
            raise UsageError(f"cannot read {args.file}: {e.strerror}") from None
        result = verify_lines(records, expect_count=head["count"] if head else None,
                              expect_head=head["hash"] if head else None)
        if head is None:
            print("warning: the export has no head line; a cut tail cannot be detected", file=sys.stderr)
    else:
        rt = Runtime(cfg)
        if args.audit_command == "export":
            since = parse_time(args.since, "--since") if args.since else None
            bad = 0
            for rec in rt.audit.records(since=since):
                print(json.dumps(rec, ensure_ascii=False, sort_keys=True, default=str))
                if rec.get("error"):  # exported as stored; `audit verify` of the export fails on it
                    bad += 1
                    print(f"audit export: record {rec['seq']}: {rec['error']}", file=sys.stderr)
            count, head_hash = rt.audit.head()
            print(json.dumps({"head": {"count": count, "hash": head_hash}}))
            return EXIT_FAILED if bad else EXIT_OK
        result = rt.audit.verify()
    if result.ok:
        print(f"audit trail intact: {result.count} records")
        return EXIT_OK
    print(f"audit trail BROKEN: {result.problem}", file=sys.stderr)
    return EXIT_FAILED


async def report(args: argparse.Namespace, cfg: Config) -> int:
    from jml import reports

    rt = Runtime(cfg)
    if args.report_command == "access":
        since = parse_time(args.changes_since, "--changes-since") if args.changes_since else None
        reports.access(rt, sys.stdout, fmt=args.format, changes_since=since)
        return EXIT_OK
    return reports.sla_report(rt, sys.stdout, month=args.month)


async def check(args: argparse.Namespace, cfg: Config) -> int:
    """Config, state and every connector; each connector's dialect as a table. A deviation
    jml works around is a warning (exit 0); exit 1 only when something cannot work: the
    state, a connector's reach, or create / deactivate / membership on its server."""

    as_json = bool(getattr(args, "json", False))
    out: dict[str, Any] = {"config": "ok", "state": None, "connectors": {}}
    problems = 0
    rt = Runtime(cfg)
    try:
        ok = rt.store.ping()
    except JMLError as e:
        ok = False
        out["state_error"] = str(e)
    out["state"] = "reachable" if ok else "NOT reachable"
    problems += 0 if ok else 1
    for name in cfg.connectors:
        entry: dict[str, Any] = {"findings": [], "dialect": [], "warnings": [], "cannot": []}
        out["connectors"][name] = entry
        try:
            conn = rt.connector(name)
            await conn.open()
            findings = await conn.check()
        except JMLError as e:
            entry["findings"].append({"ok": False, "message": str(e)})
            problems += 1
            continue
        except Exception as e:
            entry["findings"].append({"ok": False, "message": f"cannot reach the app: {type(e).__name__}"})
            problems += 1
            continue
        entry["findings"] = [{"ok": f.ok, "message": f.message} for f in findings]
        problems += sum(0 if f.ok else 1 for f in findings)
        dialect = getattr(conn, "dialect", None)
        if dialect is not None and hasattr(dialect, "table"):
            entry["dialect"] = [{"fact": r.fact, "value": r.value, "meaning": r.meaning, "severity": r.severity}
                                for r in dialect.table()]
            entry["warnings"] = dialect.warnings()
            entry["cannot"] = dialect.fatal()
            problems += len(entry["cannot"])
    await rt.close()
    if as_json:
        print(json.dumps(out, indent=2, default=str))
    else:
        _print_check(out)
    return EXIT_FAILED if problems else EXIT_OK


def _print_check(out: dict[str, Any]) -> None:
    print(f"config: {out['config']}")
    if out.get("state_error"):
        print(f"state: {out['state_error']}")
    print(f"state: {out['state']}")
    for name, entry in out["connectors"].items():
        for f in entry["findings"]:
            print(f"{name}: {'ok' if f['ok'] else 'PROBLEM'}: {f['message']}")
        if entry["dialect"]:
            print(f"{name}: dialect (learnt from the server's answers; kept in the store)")
            width = max(len(r["fact"]) for r in entry["dialect"])
            for r in entry["dialect"]:
                value = r["value"]
                shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
                mark = {"warn": "WARN ", "fatal": "FAIL "}.get(r["severity"], "     ")
                print(f"  {mark}{r['fact']:<{width}}  {shown or '-'}  ({r['meaning']})")
        for line in entry["cannot"]:
            print(f"{name}: PROBLEM: {line}")


async def serve(args: argparse.Namespace, cfg: Config) -> int:
    from jml.service import serve as run_service

    return await run_service(cfg)


async def offboard(args: argparse.Namespace, cfg: Config) -> int:
    from jml.offboard import offboard_cli

    return await offboard_cli(args, cfg)


__all__ = ["EXIT_USAGE"]
