"""`jml revert PLAN_ID [--dry-run | --yes] [--json]`: the command line's revert.

Exit codes as everywhere (jml/exit_codes.py): 0 done (or previewed), 1 an operation of the
revert failed, 2 no such plan / not revertible / nothing done without --yes, 3 the revert was
held for approval (also under --dry-run, like `jml sync --dry-run`). People refused (HR still
has them as leavers) are listed and do not change the code: the rest of the revert goes on.
"""

from __future__ import annotations

import argparse
import json
import sys

from jml import approvals
from jml.config import Config
from jml.errors import UsageError
from jml.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_SAFETY, EXIT_USAGE
from jml.push import work
from jml.revert import RevertOutcome, RevertRefused, revert
from jml.runtime import Runtime


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("revert", help="plan the inverse of an applied plan and put back jml's stored person state")
    p.add_argument("plan_id", help="the applied plan's id, as `jml status` or the page shows it")
    p.add_argument("--dry-run", action="store_true", help="show what the revert would do and cannot do; change nothing")
    p.add_argument("--yes", action="store_true", help="go on without asking (required when not on a terminal)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")


def _show(outcome: RevertOutcome, as_json: bool) -> None:
    if as_json:
        print(json.dumps(outcome.to_json(), indent=2, default=str, ensure_ascii=False))
        return
    for line in outcome.lines():
        print(line)


def _confirm(plan_id: str) -> bool:
    if sys.stdin is None or not sys.stdin.isatty():
        return False
    try:
        return input(f"Revert plan {plan_id} as shown? [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


async def revert_cli(args: argparse.Namespace, cfg: Config) -> int:
    if args.dry_run and args.yes:
        raise UsageError("--dry-run and --yes do not go together")
    rt = Runtime(cfg)
    me = approvals.cli_approver()
    try:
        preview = revert(rt, args.plan_id, actor=me.actor, dry_run=True)
        if args.dry_run:
            _show(preview, args.json)
            return EXIT_SAFETY if preview.held else EXIT_OK
        if not args.yes:
            _show(preview, args.json)
            if not _confirm(args.plan_id):
                print(f"jml: revert {args.plan_id}: nothing done; give --yes to go on (--dry-run: preview only)",
                      file=sys.stderr)
                return EXIT_USAGE
        outcome = revert(rt, args.plan_id, actor=me.actor, dry_run=False)
    except RevertRefused as e:
        print(f"jml: {e}", file=sys.stderr)
        return EXIT_USAGE
    assert outcome.plan_id is not None
    # Four eyes: whoever asked for the revert cannot approve it if it is held.
    approvals.record_requester(rt, [outcome.plan_id], me)
    if not args.json:
        _show(outcome, False)
    if outcome.held:
        if args.json:
            _show(outcome, True)
        print(f"plan {outcome.plan_id} is held: someone else runs `jml approve {outcome.plan_id}` "
              f"(or `jml discard {outcome.plan_id}`)", file=sys.stderr)
        return EXIT_SAFETY
    if outcome.operations:
        await work(rt, outcome.plan_id)
    counts = rt.outbox.plan_state_counts(outcome.plan_id)
    if args.json:
        _show(outcome, True)
    else:
        print("result: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing to push"))
    for q in rt.outbox.ops(["dead"], plan_id=outcome.plan_id, limit=20):
        print(f"  dead #{q.id} {q.op.connector} {q.op.action.value} {q.op.employee_id}: {q.last_error}",
              file=sys.stderr)
    if counts.get("dead") or counts.get("pending") or counts.get("running"):
        return EXIT_FAILED
    return EXIT_OK
