"""HR's "offboard now": a person becomes a leaver at once (or at `--at`), sticky until HR
lifts it — a rehire (new hire date) or `--undo`; an Okta reactivation does not (HR
outranks the IdP: README "Running it next to HR"). Their operations jump every queue.
Used by `jml offboard`, `POST /api/v1/offboard` and the HR page.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import dataclass, field

from jml.config import Config
from jml.errors import UsageError
from jml.event_plan import plan_event
from jml.exit_codes import EXIT_SAFETY, EXIT_USAGE
from jml.lifecycle import add_leaver
from jml.model import Operation, Override, OverrideKind, PersonState
from jml.push import work
from jml.runtime import Runtime
from jml.sync import PlanOutcome
from jml.timeparse import parse_time


class UnknownEmployee(UsageError):
    pass


@dataclass
class OffboardResult:
    employee_id: str
    undo: bool
    effective_at: dt.datetime | None
    changed: bool  # False: nothing to lift (undo without an override)
    plans: list[PlanOutcome] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return any(p.held for p in self.plans)

    @property
    def plan_ids(self) -> list[str]:
        return [p.plan_id for p in self.plans if p.plan_id]

    @property
    def operations(self) -> list[Operation]:
        return [op for p in self.plans for op in p.operations]


async def offboard(rt: Runtime, employee_id: str, *, reason: str = "", at: dt.datetime | None = None,
                   actor: str = "cli", undo: bool = False) -> OffboardResult:
    """HR's leaver now (or at `at`), sticky until HR records a rehire or `undo` (never lifted
    by the IdP); the person alone is planned, ahead of bulk work. Raises UnknownEmployee."""
    now = rt.clock()
    state: PersonState | None = rt.store.load_states([employee_id]).get(employee_id)
    if state is None or state.person is None:
        raise UnknownEmployee(f"unknown employee {employee_id!r}: not in any accepted HR export")
    current = state.override
    if undo:
        if current is None:
            return OffboardResult(employee_id, True, None, False)
        rt.store.set_override(employee_id, None, now)
        rt.outbox.cancel_people([employee_id], now, leaver_too=True)
        effective = None
    else:
        # An earlier leaver decision's time stands; the override is HR's from now on.
        decided = add_leaver(current, Override(OverrideKind.OFFBOARD, (at or now).astimezone(dt.UTC), reason, actor))
        effective = decided.effective_at
        rt.store.set_override(employee_id, decided, now)
        if effective <= now:
            rt.outbox.cancel_people([employee_id], now)
    rt.audit.append("offboard_undo" if undo else "offboard",
                    {"reason": reason, "effective_at": effective.isoformat() if effective else None,
                     "lifted": current.kind.value if undo and current else None},
                    now=now, actor=actor, subject=employee_id)
    plans = plan_event(rt, {employee_id: False}, {}, now, origin="offboard", order=[employee_id])
    return OffboardResult(employee_id, undo, effective, True, plans)


async def _push(rt: Runtime, plan_ids: list[str], timeout: float = 300.0) -> None:
    """Push the plans ourselves when no daemon holds the workers' lease (the engine runs
    leavers first), else wait for the daemon to (jml.push.work does both)."""
    for pid in plan_ids:
        await work(rt, pid, timeout)


def _report(rt: Runtime, plan_ids: list[str]) -> int:
    per: dict[str, dict[str, int]] = {}
    failed = False
    for pid in plan_ids:
        for q in rt.outbox.plan_ops(pid):
            per.setdefault(q.op.connector, {}).setdefault(q.state, 0)
            per[q.op.connector][q.state] += 1
            if q.state in ("dead", "pending", "running"):
                failed = True
                if q.state == "dead":
                    print(f"  {q.op.connector}: {q.op.action.value} failed: {q.last_error}", file=sys.stderr)
    for connector in sorted(per):
        counts = ", ".join(f"{s} {n}" for s, n in sorted(per[connector].items()))
        print(f"  {connector}: {counts}")
    return 1 if failed else 0


def _ask_reason(employee_id: str) -> str:
    """An offboard is audited with its reason: asked for on a terminal, required otherwise
    (exit 2, before anything is recorded)."""
    if sys.stdin is not None and sys.stdin.isatty():
        try:
            reason = input(f"Reason for offboarding {employee_id} (kept in the audit trail): ").strip()
        except EOFError:
            reason = ""
        return reason
    return ""


async def offboard_cli(args: argparse.Namespace, cfg: Config) -> int:
    """`jml offboard EMPLOYEE_ID [--reason TEXT] [--at ISO8601] [--undo]`."""
    at = parse_time(args.at, "--at", cfg.timezone, date_at=cfg.lifecycle.termination_clock) if args.at else None
    if args.undo and at is not None:
        raise UsageError("--at and --undo do not go together")
    reason = (args.reason or "").strip()
    if not reason and not args.undo:
        reason = _ask_reason(args.employee_id)
        if not reason:
            print(f"jml: offboard {args.employee_id}: give --reason TEXT (why; it is kept in the audit trail)",
                  file=sys.stderr)
            return EXIT_USAGE
    rt = Runtime(cfg)
    from jml import approvals

    me = approvals.cli_approver()
    try:
        result = await offboard(rt, args.employee_id, reason=reason, at=at, actor=me.actor, undo=args.undo)
    except UnknownEmployee as e:
        print(f"jml: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not result.changed:
        print(f"{args.employee_id}: no offboard or IdP deactivation to lift")
        return 0
    if result.undo or result.effective_at is None:
        what = "lifted: re-evaluated from HR"
    else:
        what = f"leaver from {result.effective_at.astimezone(cfg.display_timezone):%Y-%m-%d %H:%M %Z}"
    print(f"{args.employee_id}: {what}")
    for p in result.plans:
        summary = ", ".join(f"{k} {v}" for k, v in p.summary().items()) or "nothing to do"
        print(f"plan {p.plan_id or '-'}: {summary}" + (" (HELD: " + "; ".join(p.reasons) + ")" if p.held else ""))
    if result.held:
        # Four-eyes: whoever asked for this offboard cannot approve its held plan.
        approvals.record_requester(rt, [p.plan_id for p in result.plans if p.held and p.plan_id], me)
        return EXIT_SAFETY
    ids = [p.plan_id for p in result.plans if p.plan_id and p.operations]
    if not ids:
        return 0
    await _push(rt, ids)
    return _report(rt, ids)


