"""`jml review start|list|show|decide|verify|export`: access review campaigns from the command line.

The command line decides as an admin would (`cli:<os user>`): any item but, with `--as EMAIL`
naming the person at the keyboard, never that person's own access.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from jml.config import Config, parse_duration
from jml.errors import UsageError
from jml.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_SAFETY, EXIT_USAGE


def add_parser(sub: Any) -> None:
    p = sub.add_parser("review", help="access review campaigns: start, list, show, decide, verify, export")
    rsub = p.add_subparsers(dest="review_command", required=True)
    s = rsub.add_parser("start", help="a campaign over everyone's access: one item per account and entitlement")
    s.add_argument("--by", choices=["app", "manager"], required=True,
                   help="app: catalogue owners review; manager: each person's HR manager reviews")
    s.add_argument("--connector", help="only this connector's access")
    s.add_argument("--due", help="time to decide, e.g. 14d (default: reviews.due)")
    s.add_argument("--name", help="the campaign's name")
    s = rsub.add_parser("list", help="the campaigns and their progress")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    s = rsub.add_parser("show", help="a campaign's items: why each person holds it, who reviews it, the decision")
    s.add_argument("campaign", type=int, help="the campaign's id, as `jml review list` shows it")
    s.add_argument("--reviewer", help="only this reviewer's items (their e-mail)")
    s.add_argument("--open", action="store_true", help="only items not yet decided")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    s = rsub.add_parser("decide", help="keep or revoke items; revocations are pushed and read back at once")
    s.add_argument("campaign", type=int, help="the campaign's id")
    s.add_argument("items", nargs="+", type=int, help="item ids, as `jml review show` lists them")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--keep", action="store_true", help="the access stays")
    g.add_argument("--revoke", action="store_true", help="the access is taken away (and stays away)")
    s.add_argument("--reason", default="", help="why (kept in the audit trail)")
    s.add_argument("--as", dest="as_email", default="",
                   help="the e-mail of the person deciding: never their own access")
    s.add_argument("--timeout", type=float, default=120, help="give up waiting for the push after N seconds")
    s = rsub.add_parser("verify", help="read revoked access back from the apps")
    s.add_argument("campaign", type=int, help="the campaign's id")
    s = rsub.add_parser("export", help="evidence: every item, decision and its audit record (JSON or CSV)")
    s.add_argument("campaign", type=int, help="the campaign's id")
    s.add_argument("--format", choices=["json", "csv"], default="json", help="json (default) or csv")


async def review(args: argparse.Namespace, cfg: Config) -> int:
    # The command line's parser is built on every run: the engine and the store load only here.
    from jml import reviews
    from jml.approvals import cli_approver
    from jml.push import work
    from jml.runtime import Runtime

    rt = Runtime(cfg)
    cmd = args.review_command
    now = rt.clock()
    if cmd == "start":
        try:
            due = parse_duration(args.due) if args.due else None
        except ValueError as e:
            raise UsageError(f"--due: {e}") from None
        c = reviews.start(rt, by=args.by, connector=args.connector, due=due, name=args.name,
                          created_by=cli_approver().actor, now=now)
        unexplained = sum(1 for it in rt.store.reviews.items(c.id) if it.why.kind == "none")
        print(f"campaign {c.id} started: {c.name}, {c.total} item(s), {unexplained} unexplained, "
              f"due {c.due_at.isoformat() if c.due_at else '-'}")
        return EXIT_OK
    if cmd == "list":
        campaigns = [reviews.campaign_dict(c) for c in rt.store.reviews.campaigns()]
        if args.json:
            print(json.dumps({"campaigns": campaigns}, indent=2, default=str))
        elif not campaigns:
            print("no review campaigns")
        for row in campaigns if not args.json else []:
            print(f"{row['id']:>4}  {row['name']}  by {row['by']}  {row['decided']}/{row['total']} decided  "
                  f"due {row['due_at']}")
        return EXIT_OK
    if cmd == "show":
        c = reviews.campaign_or_error(rt, args.campaign)
        people: dict[str, Any] = dict(rt.store.people_summary())
        items = rt.store.reviews.items(c.id, reviewer=args.reviewer)
        if args.open:
            items = [it for it in items if it.decision is None]
        rows = [reviews.item_dict(it, people) for it in items]
        prog = reviews.progress_of(rt, c.id)
        if args.json:
            print(json.dumps({"campaign": reviews.campaign_dict(c), "items": rows,
                              "progress": {r: {"decided": d, "total": t} for r, (d, t) in prog.items()}},
                             indent=2, default=str, ensure_ascii=False))
            return EXIT_OK
        print(f"campaign {c.id}: {c.name} (by {c.by}), {c.decided}/{c.total} decided")
        for r, (d, t) in prog.items():
            print(f"  reviewer {r}: {d}/{t}")
        for row in rows:
            print(f"{row['item']:>6}  {row['employee_id'] or '-'}  {row['connector']}  {row['entitlement']}  "
                  f"why: {row['why_detail']}  reviewer: {row['reviewer']}  {row['state']}")
        return EXIT_OK
    if cmd == "decide":
        user = cli_approver()
        actor = user.actor + (f" as {args.as_email}" if args.as_email else "")
        who = reviews.Decider(actor, args.as_email, None, admin=True)
        decision = "keep" if args.keep else "revoke"
        out = reviews.decide(rt, args.campaign, args.items, decision, who, reason=args.reason, now=now)
        for iid, why in out.refused.items():
            print(f"item {iid}: refused: {why}", file=sys.stderr)
        print(f"{len(out.decided)} item(s) decided: {decision}")
        if out.held:
            print(f"revocation plan {out.plan_id} is held by the guard: `jml approve {out.plan_id}`")
            return EXIT_SAFETY
        code = EXIT_USAGE if out.refused else EXIT_OK
        if out.plan_id is not None:
            await work(rt, out.plan_id, args.timeout)
            await rt.open_connectors()  # work() closed them: the read-back needs them again
            try:
                done, waiting = await reviews.verify(rt, rt.clock(), args.campaign)
            finally:
                await rt.close()
            print(f"revocations verified in the apps: {done}; not yet: {waiting}")
            if waiting:
                code = EXIT_FAILED
        return code
    if cmd == "verify":
        reviews.campaign_or_error(rt, args.campaign)
        await rt.open_connectors()
        try:
            done, waiting = await reviews.verify(rt, now, args.campaign)
        finally:
            await rt.close()
        print(f"revocations verified in the apps: {done}; not yet: {waiting}")
        return EXIT_FAILED if waiting else EXIT_OK
    if cmd == "export":
        reviews.export(rt, args.campaign, sys.stdout, fmt=args.format)
        return EXIT_OK
    raise UsageError(f"unknown review command {cmd!r}")
