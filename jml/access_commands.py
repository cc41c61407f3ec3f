"""`jml access request|approve|deny|revoke|list|catalogue|jit|expire`: access requests from the command line.

The command line acts as an admin would (`cli:<os user>`). `--as EMAIL` names the person at the
keyboard: they count as that person (one approver each, never for their own request or their
own access), and the approval policy sees their HR record and catalogue ownership.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from jml.config import Config, parse_duration
from jml.errors import UsageError
from jml.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_SAFETY

STATES = ("pending", "approved", "denied", "active", "expired", "revoked", "cancelled")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("access", help="access beyond the rules: catalogue, requests, approvals, break-glass")
    asub = p.add_subparsers(dest="access_command", required=True)
    s = asub.add_parser("request", help="ask for an entitlement for someone, for a while")
    s.add_argument("employee_id", help="who gets the access (HR employee_id)")
    s.add_argument("connector", help="the app (a connector's name)")
    s.add_argument("grant", help="the entitlement as the catalogue names it, e.g. 'group:Prod Admins'")
    s.add_argument("--reason", required=True, help="why (kept in the audit trail, shown to approvers)")
    s.add_argument("--for", dest="duration", help="how long, e.g. 8h, 7d (default: access.default_duration)")
    s.add_argument("--as", dest="as_email", default="", help="the e-mail of the person asking")
    for name, text in (("approve", "approve a pending request (the last approval grants it at once)"),
                       ("deny", "deny a pending request (its requester: withdraw it)"),
                       ("revoke", "end an active grant now; its removal is pushed and read back")):
        s = asub.add_parser(name, help=text)
        s.add_argument("request_id", help="the request's id (ar-… or jit-…), as `jml access list` shows it")
        s.add_argument("--as", dest="as_email", default="", help="the e-mail of the person deciding")
        if name != "approve":
            s.add_argument("--reason", default="", help="why (kept in the audit trail)")
        s.add_argument("--timeout", type=float, default=120, help="give up waiting for the push after N seconds")
    s = asub.add_parser("list", help="requests and grants, newest first")
    s.add_argument("--state", choices=STATES, action="append", help="only these states (repeatable)")
    s.add_argument("--employee", help="only this person's")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    s = asub.add_parser("catalogue", help="every entitlement: owner, risk, maximum, birthright, managed")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    s.add_argument("--offline", action="store_true", help="config and rules only: call no app")
    s = asub.add_parser("jit", help="break-glass: take access now, without approval (access.jit.roles)")
    s.add_argument("connector", help="the app (a connector's name)")
    s.add_argument("grant", help="the entitlement, e.g. 'group:Prod Admins'")
    s.add_argument("--hours", type=float, required=True, help="how long (at most access.jit.max_duration)")
    s.add_argument("--reason", required=True, help="why: the incident (kept in the audit trail, alerted on)")
    s.add_argument("--as", dest="as_email", required=True, help="the responder's work e-mail (their HR record)")
    s.add_argument("--timeout", type=float, default=120, help="give up waiting for the push after N seconds")
    asub.add_parser("expire", help="end grants past their expiry and read ended grants back (the daemon does "
                                   "this every minute)")


def _who(rt: Any, as_email: str) -> Any:
    from jml.access import cli_who

    base = cli_who()
    email = as_email.strip()
    if not email:
        return base
    if "@" not in email or any(c in email for c in " \r\n"):
        raise UsageError(f"--as: not an e-mail address: {email!r}")
    eid = next((s.employee_id for s in rt.store.find_people(email, limit=50)
                if s.person is not None and s.person.work_email.casefold() == email.casefold()), None)
    user = base.actor.removeprefix("cli user=")
    return type(base)(f"email:{email.casefold()}", f"cli user={user} as={email}", email, eid, base.rights,
                      base.roles)


def _print_request(r: Any) -> None:
    exp = r.expires_at.isoformat(timespec="minutes") if r.expires_at else "-"
    votes = ", ".join(f"{v.approver} ({v.basis})" for v in r.votes) or "-"
    print(f"{r.id:<15} {r.state:<9} {r.employee_id:<10} {r.connector}:{r.grant}  until {exp}  "
          f"by {r.requester or '-'}  approvals {len(r.votes)}/{r.required}: {votes}  reason: {r.reason}")


async def _push(rt: Any, plan_ids: list[str], timeout: float) -> int:
    from jml.push import report_plan, work

    code = EXIT_OK
    for pid in plan_ids:
        await work(rt, pid, timeout)
        code = max(code, report_plan(rt, pid))
    return code


async def access(args: argparse.Namespace, cfg: Config) -> int:
    # The command line's parser is built on every run: the engine and the store load only here.
    from jml import access as acc
    from jml import catalogue
    from jml.errors import BadRequest
    from jml.runtime import Runtime

    rt = Runtime(cfg)
    cmd = args.access_command
    try:
        if cmd == "catalogue":
            cat = await catalogue.build(rt, live=not args.offline)
            await rt.close()
            print(json.dumps(cat.to_dict(), indent=2) if args.json else catalogue.render(cat))
            return EXIT_FAILED if cat.errors else EXIT_OK
        if cmd == "list":
            found = rt.store.access.find(states=args.state, eids=[args.employee] if args.employee else None)
            if args.json:
                print(json.dumps({"requests": [r.to_dict() for r in found]}, indent=2))
            elif not found:
                print("no access requests")
            for r in found if not args.json else []:
                _print_request(r)
            return EXIT_OK
        if cmd == "expire":
            now = rt.clock()
            plans = acc.expire_due(rt, now)
            code = await _push(rt, plans, 120)
            verified = await acc.verify_removals(rt, rt.clock())
            await rt.close()
            print(f"{len(plans)} plan(s) for expired grants; {verified} removal(s) verified")
            return code
        who = _who(rt, args.as_email)
        if cmd == "request":
            try:
                duration = parse_duration(args.duration) if args.duration else None
            except (ValueError, OverflowError) as e:
                raise UsageError(f"--for: {e}") from None
            req = acc.request(rt, who, args.employee_id, args.connector, args.grant, reason=args.reason,
                              duration=duration)
            print(f"access request {req.id}: {req.grant} in {req.connector} for {req.employee_id}, "
                  f"{req.required} approval(s) needed")
            return EXIT_OK
        if cmd == "jit":
            d = acc.jit(rt, who, args.connector, args.grant, duration=dt.timedelta(hours=args.hours),
                        reason=args.reason)
        elif cmd == "approve":
            d = acc.approve(rt, args.request_id, who)
        elif cmd == "deny":
            d = acc.deny(rt, args.request_id, who, args.reason)
        else:
            d = acc.revoke(rt, args.request_id, who, args.reason)
    except acc.Refused as e:
        raise UsageError(e.message) from None
    except BadRequest as e:
        raise UsageError(str(e)) from None
    print(d.message)
    if cmd == "approve" and d.request.state == "pending":
        return EXIT_SAFETY  # waits for another approver, as a held plan does
    code = await _push(rt, d.plan_ids, args.timeout)
    await rt.close()
    return code
