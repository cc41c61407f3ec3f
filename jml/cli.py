"""`jml [--config FILE] COMMAND` — the command-line contract (README "Commands").

Exit codes: 0 done; 1 an operation failed or was dead-lettered, or `check` found a
problem; 2 usage, config or input error (one line on stderr, never a traceback);
3 safety stop (plan held or export rejected, also under --dry-run).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from jml import access_commands, logs, purge_command, review_commands
from jml import config as config_mod
from jml.errors import ExportRejected, GuardHeld, JMLError
from jml.exit_codes import EXIT_FAILED, EXIT_SAFETY, EXIT_USAGE
from jml.redact import redact

log = logging.getLogger("jml.cli")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jml", description="Joiner-Mover-Leaver provisioning daemon.")
    ap.add_argument("--config", help="config file (default: $JML_CONFIG, then ./jml.yaml)")
    ap.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default) or ERROR; logs go to stderr")
    ap.add_argument("--log-json", action="store_true", default=None, help="JSON log lines even on a terminal")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the daemon: HTTP, scheduled HR polls, webhooks, workers")
    p = sub.add_parser("sync", help="one cycle: fetch, plan, apply, wait")
    p.add_argument("--dry-run", action="store_true", help="plan and show, apply nothing (a held plan still exits 3)")
    p.add_argument("--timeout", type=float, default=None, help="give up waiting after N seconds")
    p.add_argument("--progress", type=float, default=None, metavar="SECONDS",
                   help="progress on stderr every N seconds (default: live on a terminal, else 10; 0: none)")
    p = sub.add_parser("plan", help="what a sync would do, and why each change happens; applies nothing")
    p.add_argument("--json", action="store_true", help="exactly one JSON object on stdout (warnings on stderr)")
    for name in ("approve", "discard"):
        p = sub.add_parser(name, help=f"{name} a held plan (or a pre-approval, pa-…)")
        p.add_argument("plan_id", help="the plan's id, as `jml status` shows it")
    p = sub.add_parser("offboard", help="HR's leaver now: every connector deprovisions them at once")
    p.add_argument("employee_id", help="the person's HR employee_id")
    p.add_argument("--reason", help="why (required; kept in the audit trail). Asked for on a terminal")
    p.add_argument("--at", help="effective time: ISO 8601 (no offset: HR's time zone), or a date alone "
                                "(HR's time zone at lifecycle.termination_time). Default: now")
    p.add_argument("--undo", action="store_true", help="lift an earlier offboard: the person is re-evaluated from HR")
    from jml import revert_cli

    revert_cli.add_parser(sub)
    p = sub.add_parser("retry", help="re-queue dead-lettered operations")
    p.add_argument("operation_id", nargs="?", type=int, help="one dead letter's id, as `jml status` shows it")
    p.add_argument("--all", action="store_true", help="every dead letter")
    p = sub.add_parser("status", help="what needs attention first, then pending work, leavers in flight, sources")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p = sub.add_parser("pause", help="pause a connector (its work waits)")
    p.add_argument("connector", help="a connector's name from the config")
    p = sub.add_parser("resume", help="resume a paused connector")
    p.add_argument("connector", help="a connector's name from the config")
    p = sub.add_parser("pre-approve", help="leavers of a known bulk departure the guard lets through")
    p.add_argument("employee_ids", nargs="*", help="employee_ids of the announced leavers")
    p.add_argument("--file", help="a file with one employee_id per line")
    p.add_argument("--clear", action="store_true", help="empty the list")
    p = sub.add_parser("token", help="scoped API tokens")
    tsub = p.add_subparsers(dest="token_command", required=True)
    t = tsub.add_parser("create", help="create a token; it is printed once")
    t.add_argument("name", help="1-64 letters, digits, '.', '_' or '-'; never reused")
    t.add_argument("--role", action="append", nargs="+", required=True, metavar="ROLE",
                   help="viewer, hr, operator, approver, auditor or admin (repeatable)")
    t.add_argument("--expires", help="lifetime, e.g. 90d, 12h (default: never)")
    tsub.add_parser("list", help="the tokens (never their secrets)")
    t = tsub.add_parser("revoke", help="stop a token at once")
    t.add_argument("name", help="the token's name")
    p = sub.add_parser("audit", help="the hash-chained audit trail: export it, verify it")
    asub = p.add_subparsers(dest="audit_command", required=True)
    e = asub.add_parser("export", help="the trail as JSON lines, ending with a head line (count, hash)")
    e.add_argument("--since", help="only records from this ISO 8601 time on")
    v = asub.add_parser("verify", help="check the hash chain: the database's, or an export's")
    v.add_argument("file", nargs="?", help="an export from `jml audit export` (default: the database)")
    p = sub.add_parser("report", help="evidence for auditors: who has what, deprovision SLA")
    rsub = p.add_subparsers(dest="report_command", required=True)
    r = rsub.add_parser("access", help="who has what in every connector and which rule grants it")
    r.add_argument("--format", choices=["csv", "json"], default="csv", help="csv (default) or json")
    r.add_argument("--changes-since", help="only access granted or removed since this date/time")
    r = rsub.add_parser("sla", help="a month's deprovisions: each leaver's time, breaches and their causes")
    r.add_argument("--month", help="YYYY-MM (default: the current month)")
    review_commands.add_parser(sub)
    access_commands.add_parser(sub)
    purge_command.add_parser(sub)
    chk = sub.add_parser("check", help="validate config, reach every connector, show each one's learned dialect")
    chk.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p = sub.add_parser("demo", help="zero-setup run on local stand-ins")
    p.add_argument("--once", action="store_true", help="one sync, then exit (no daemon)")
    p.add_argument("--port", type=int, default=8080, help="the status page's port (default 8080)")
    p.add_argument("--no-story", action="store_true",
                   help="do not play the short scenario (a mover, a leaver, a held plan, a dead letter…)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup(args.log_level.upper(), json_lines=args.log_json)
    try:
        if args.command == "demo":
            from jml.demo import run_demo

            return run_demo(args)
        cfg = config_mod.load(args.config)
        code = _run(_dispatch(args, cfg))
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at interpreter exit
        return code
    except GuardHeld as e:
        print(str(e), file=sys.stderr)
        return EXIT_SAFETY
    except ExportRejected as e:
        print(f"export rejected: {e}", file=sys.stderr)
        return EXIT_SAFETY
    except JMLError as e:
        print(f"jml: {e}", file=sys.stderr)
        return e.exit_code if e.exit_code in (1, 2, 3) else EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `jml report access | head`: the reader has what it wanted. No traceback, and none
        # at exit either when Python flushes the dead stdout.
        _quiet_stdout()
        return 0
    except Exception as e:  # never a traceback for the user; the log has it
        log.debug("unexpected error", exc_info=True)
        print(f"jml: unexpected error: {type(e).__name__}: {redact(str(e))}", file=sys.stderr)
        return EXIT_FAILED


def _quiet_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _run(coro: Coroutine[Any, Any, int]) -> int:
    async def run() -> int:
        try:
            return await coro
        finally:
            from jml import notify

            await notify.drain()  # notices sent in the background (a held plan's) leave before the process does

    return asyncio.run(run())


def _dispatch(args: argparse.Namespace, cfg: config_mod.Config) -> Coroutine[Any, Any, int]:
    from jml import commands, revert_cli

    table: dict[str, Callable[[argparse.Namespace, config_mod.Config], Coroutine[Any, Any, int]]] = {
        "serve": commands.serve,
        "sync": commands.sync,
        "plan": commands.plan,
        "approve": commands.approve,
        "discard": commands.discard,
        "offboard": commands.offboard,
        "retry": commands.retry,
        "status": commands.status,
        "pause": commands.pause,
        "resume": commands.resume,
        "audit": commands.audit,
        "pre-approve": commands.pre_approve,
        "token": commands.token,
        "report": commands.report,
        "check": commands.check,
        "purge": purge_command.command,
        "revert": revert_cli.revert_cli,
        "review": review_commands.review,
        "access": access_commands.access,
    }
    return table[args.command](args, cfg)


if __name__ == "__main__":
    sys.exit(main())
