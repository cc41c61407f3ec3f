"""`jml demo`: zero setup. A local scim2-server stands in for the app, a bundled sample
export stands in for HR, SQLite holds the state. Everything lives in ./.jml-demo/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from jml import config as config_mod

DEMO_DIR = Path(__file__).resolve().parent.parent / "config" / "demo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_standin(token: str) -> tuple[subprocess.Popen[bytes], str]:
    exe = Path(sys.executable).with_name("scim2-server")
    if not exe.exists():
        found = shutil.which("scim2-server")
        if not found:
            raise SystemExit("jml demo needs scim2-server: pip install 'jml[demo]' (make run does this)")
        exe = Path(found)
    port = _free_port()
    proc = subprocess.Popen([str(exe), "--hostname", "127.0.0.1", "--port", str(port), "--bearer-token", token],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v2/"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url + "ServiceProviderConfig", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the SCIM stand-in did not start")


def _get(url: str, token: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def _show_standin(url: str, token: str) -> None:
    users = _get(url + "Users?count=1000", token)
    active = sum(1 for u in users.get("Resources", []) if u.get("active", True))
    print(f"\nthe stand-in app now holds {users.get('totalResults', 0)} users ({active} active)")
    groups = _get(url + "Groups?count=100", token)
    for g in sorted(groups.get("Resources", []), key=lambda g: g.get("displayName", "")):
        print(f"  group {g.get('displayName')!r}: {len(g.get('members') or [])} members")


def prepare(workdir: Path, scim_url: str) -> Path:
    """Write the demo config and export folder into `workdir`; returns the config path."""
    (workdir / "exports").mkdir(parents=True, exist_ok=True)
    shutil.copy(DEMO_DIR / "export.csv", workdir / "exports" / "export.csv")
    doc = yaml.safe_load((DEMO_DIR / "jml.yaml").read_text(encoding="utf-8"))
    doc["connectors"]["demo"]["url"] = scim_url
    path = workdir / "jml.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def run_demo(args: argparse.Namespace) -> int:
    workdir = Path(".jml-demo").resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir()
    token = secrets.token_urlsafe(24)
    os.environ["DEMO_SCIM_TOKEN"] = token
    os.environ.setdefault("JML_ADMIN_TOKEN", secrets.token_urlsafe(24))
    os.environ.setdefault("JML_OKTA_SECRET", secrets.token_urlsafe(24))
    os.environ.setdefault("JML_WEBHOOK_SECRET", secrets.token_urlsafe(24))
    proc, url = _start_standin(token)
    try:
        cfg_path = prepare(workdir, url)
        cfg = config_mod.load(cfg_path)
        print(f"jml demo: HR export {workdir / 'exports' / 'export.csv'} -> SCIM stand-in at {url}")
        print(f"state: {cfg.state.url} (in {workdir})\n")
        code = asyncio.run(_sync(cfg))
        _show_standin(url, token)
        if args.once:
            return code
        from jml.service import serve_demo

        story = not getattr(args, "no_story", False)
        approvers = _approver_tokens(cfg) if story else ()
        return serve_demo(cfg, port=args.port, workdir=workdir, story=story, approvers=approvers)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def _approver_tokens(cfg: config_mod.Config) -> tuple[str, ...]:
    """Two API tokens with the approver role, as `jml token create` makes them: the story's
    high-risk access request needs two approvers, and whoever asks may not approve it."""
    from jml.runtime import Runtime
    from jml.web.auth import new_api_token, token_hash

    rt = Runtime(cfg)
    now = rt.clock()
    out = []
    for name in ("demo-approver-lena", "demo-approver-omar"):
        secret = new_api_token()
        if rt.store.identities.create_token(name, token_hash(secret), ["approver"], created_by="jml demo", now=now,
                                            expires_at=now + dt.timedelta(days=1)):
            rt.audit.append("token_create", {"name": name, "roles": ["approver"]}, now=now, actor="jml demo")
            out.append(secret)
    return tuple(out)


async def _sync(cfg: config_mod.Config) -> int:
    from jml.push import print_outcome, report_plan, work
    from jml.runtime import Runtime
    from jml.sync import plan_cycle

    rt = Runtime(cfg)
    outcome = await plan_cycle(rt)
    print_outcome(outcome)
    if outcome.held:
        return 3
    await work(rt, outcome.plan_id)
    return report_plan(rt, outcome.plan_id)
