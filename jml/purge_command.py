"""`jml purge [--dry-run]`: retention's erasure on demand (jml/retention.py).

Apart from jml/retention.py so that the command line's parser loads no store: it is built on
every run, whatever the command.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from jml.config import Config
from jml.exit_codes import EXIT_OK, EXIT_USAGE


def add_parser(sub: Any) -> None:
    p = sub.add_parser("purge", help="erase leavers' personal data past retention.leavers_after (and old events')")
    p.add_argument("--dry-run", action="store_true", help="say what would be erased; change nothing")


async def command(args: argparse.Namespace, cfg: Config) -> int:
    from jml import retention
    from jml.approvals import cli_approver
    from jml.runtime import Runtime

    if not retention.enabled(cfg):
        print("jml: retention is off: set retention.leavers_after and/or retention.events_after in the config",
              file=sys.stderr)
        return EXIT_USAGE
    rt = Runtime(cfg)
    report = await asyncio.to_thread(retention.purge, rt, now=rt.clock(), actor=cli_approver().actor,
                                     dry_run=args.dry_run)
    for line in report.lines():
        print(line)
    return EXIT_OK
