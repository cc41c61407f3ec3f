"""Shared pieces of the reliability proofs (issue 6): a fault-injecting proxy with a seeded
random mode, HR exports from gen_hris.py, the rules written twice (as jml config and as the
test's own expectation), `jml` run as a real process, and the SCIM server read directly.

Nothing here asks jml what the answer should be: expectations come from the CSV and the
rules below, and the target's state is read from scim2-server itself, never through the
proxy or the connector.
"""

from __future__ import annotations

import asyncio
import collections
import csv
import datetime as dt
import importlib.util
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from aiohttp import web

from tests.peers import ScimPeer, scim2_server
from tests.vendor_peers.proxy import VendorProxy

ROOT = Path(__file__).resolve().parents[2]
TOKEN_ENV = "JML_REL_SCIM_TOKEN"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def today() -> dt.date:
    """The day jml sees (its clock; sources.hris.timezone is UTC here); hire dates are drawn around
    it. Read when a test runs, not when the tests are collected: a run may cross midnight."""
    return dt.datetime.now(dt.UTC).date()

PREHIRE_DAYS = 3  # lifecycle.prehire_days default


# ---- fault injection ---------------------------------------------------------------------

class RandomFaultProxy(VendorProxy):
    """A VendorProxy that, while `rate` > 0, fails that fraction of requests at random with a
    seeded RNG: 500, 429 with Retry-After, a connection reset before forwarding, a reset after
    forwarding (the write happened, the client never hears), or a stall longer than the
    client's timeout followed by a real forward (the write lands after the client gave up)."""

    KINDS = ("500", "429", "reset", "reset_after", "stall")

    def __init__(self, upstream: str, *, rate: float = 0.0, seed: int = 1, stall: float = 2.0,
                 retry_after: str = "1", weights: Mapping[str, float] | None = None) -> None:
        super().__init__(upstream)
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # injected resets are not news
        self.rate = rate
        self.rng = random.Random(seed)
        self.stall = stall
        self.retry_after = retry_after
        self.weights = dict(weights or dict.fromkeys(self.KINDS, 1.0))
        self.injected: collections.Counter[str] = collections.Counter()
        self.requests = 0

    def _pick(self) -> str | None:
        self.requests += 1
        if self.rate <= 0 or self.rng.random() >= self.rate:
            return None
        kinds = [k for k in self.KINDS if self.weights.get(k)]
        kind = self.rng.choices(kinds, [self.weights[k] for k in kinds])[0]
        self.injected[kind] += 1
        return kind

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        kind = self._pick()  # one event loop thread: no lock needed
        if kind == "500":
            await request.read()
            return web.json_response({"schemas": [ERROR], "status": "500", "detail": "injected failure"}, status=500)
        if kind == "429":
            await request.read()
            return web.json_response({"schemas": [ERROR], "status": "429", "detail": "injected rate limit"},
                                     status=429, headers={"Retry-After": self.retry_after})
        if kind == "reset":
            await request.read()
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError("injected reset")
        if kind == "stall":
            await request.read()  # the whole request arrived; only the answer is late
            await asyncio.sleep(self.stall)  # aiohttp does not cancel a handler whose client left
            return await super()._handle(request)
        response = await super()._handle(request)
        if kind == "reset_after":
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError("injected reset after forwarding")
        return response

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "faults": sum(self.injected.values()), **dict(sorted(self.injected.items()))}


# ---- HR exports ------------------------------------------------------------------------

def _gen_hris_module() -> ModuleType:
    """The project's own seeded generator, bench/gen_hris.py (a copy of the reference one)."""
    path = ROOT / "bench" / "gen_hris.py"
    spec = importlib.util.spec_from_file_location("gen_hris", path)
    assert spec is not None and spec.loader is not None, path
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _gen_hris_module()
FIELDS: list[str] = list(GEN.FIELDS)
DEPARTMENTS = [d for d, _ in GEN.DEPTS]
LOCATIONS = [c for c, _ in GEN.LOCS]
TITLES = sorted({t for ts in GEN.TITLES.values() for t in ts})


def generate(people: int, seed: int) -> list[dict[str, str]]:
    """gen_hris.py's day-0 export."""
    return list(GEN.generate(people, seed, today()))


def evolve(rows: list[dict[str, str]], seed: int, *, joiners: float, movers: float,
           leavers: float) -> list[dict[str, str]]:
    """gen_hris.py's next day (joiners, movers, leavers marked Terminated today)."""
    rows = [dict(r) for r in rows]
    return list(GEN.evolve(rows, seed, today(), joiners, movers, leavers))


def csv_bytes(rows: list[dict[str, str]]) -> bytes:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def write_export(folder: Path, name: str, data: bytes) -> Path:
    """Atomically (a dot-name the folder source ignores, then a rename); newest file wins."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.part"
    tmp.write_bytes(data)
    path = folder / name
    os.replace(tmp, path)
    # The folder source picks the newest file: make sure a later export is strictly newer.
    stamp = time.time() + len(list(folder.iterdir()))
    os.utime(path, (stamp, stamp))
    return path


# ---- the rules, twice --------------------------------------------------------------------

EMPLOYED = ["Active", "Leave"]


def rules(connector: str = "app") -> list[dict[str, Any]]:
    """Three groups per employed person (department, location, job title); no all-staff group,
    because scim2-server's group PATCH costs O(members) and one 500-member group would be the
    whole run's critical path."""
    out: list[dict[str, Any]] = []
    for d in DEPARTMENTS:
        out.append({"name": f"dept-{d}", "when": {"status": EMPLOYED, "department": d},
                    "grant": {connector: [f"dept {d}"]}})
    for loc in LOCATIONS:
        out.append({"name": f"loc-{loc}", "when": {"status": EMPLOYED, "location": loc},
                    "grant": {connector: [f"loc {loc}"]}})
    for t in TITLES:
        out.append({"name": f"title-{t}", "when": {"status": EMPLOYED, "job_title": t},
                    "grant": {connector: [f"title {t}"]}})
    return out


@dataclass(frozen=True)
class Wanted:
    active: bool
    groups: frozenset[str]


def desired_state(rows: list[dict[str, str]], previously: Mapping[str, str] | None = None) -> dict[str, Wanted]:
    """userName -> what the target must hold, from the CSV alone. `previously` (employee_id ->
    userName) lists who had an account before: a leaver keeps it, inactive, with no groups.
    A pre-hire gets an inactive account without groups `PREHIRE_DAYS` before the hire date."""
    out: dict[str, Wanted] = {}
    day = today()
    for r in rows:
        status = r["status"]
        if status == "Pre-hire" and r["hire_date"]:
            # The account exists, inactive and ungranted, from `prehire_days` before the hire
            # date; from the hire date on the person is the employee the rules describe.
            hire = dt.date.fromisoformat(r["hire_date"])
            if hire <= day:
                status = "Active"
            elif hire - dt.timedelta(days=PREHIRE_DAYS) <= day:
                out[r["work_email"]] = Wanted(False, frozenset())
                continue
        if status in EMPLOYED:
            out[r["work_email"]] = Wanted(True, frozenset(
                {f"dept {r['department']}", f"loc {r['location']}", f"title {r['job_title']}"}))
        elif status == "Terminated" and previously and r["employee_id"] in previously:
            out[previously[r["employee_id"]]] = Wanted(False, frozenset())
    return out


def write_config(folder: Path, *, scim_url: str, connector: Mapping[str, Any] | None = None,
                 extra: Mapping[str, Any] | None = None, name: str = "jml.yaml") -> Path:
    doc: dict[str, Any] = {
        "state": {"url": f"sqlite:///{folder / 'jml.db'}"},
        "sources": {"hris": {"location": str(folder / "exports") + "/", "format": "csv", "profile": "generic",
                             "timezone": "UTC"}},
        "guard": {"max_deprovision_percent": 5, "max_deprovision_count": 100, "max_shrink_percent": 10},
        "policy": {"username": "{work_email}", "rules": rules()},
        "connectors": {"app": {"type": "scim", "url": scim_url, "token_env": TOKEN_ENV, **(connector or {})}},
    }
    doc.update(extra or {})
    path = folder / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


# ---- jml as a process ------------------------------------------------------------------

def jml_bin() -> str:
    exe = Path(sys.executable).with_name("jml")
    return str(exe) if exe.exists() else "jml"


def run_jml(config: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 240.0,
            log_args: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """`jml --config CONFIG ARGS…` to completion (bounded by `timeout`)."""
    return subprocess.run([jml_bin(), "--config", str(config), *log_args, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, cwd=str(config.parent))


def start_jml(config: Path, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([jml_bin(), "--config", str(config), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})}, cwd=str(config.parent))


# ---- the target, read directly ------------------------------------------------------------

def _get(url: str, token: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _all(peer: ScimPeer, endpoint: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    start = 1
    while True:
        doc = _get(f"{peer.url}{endpoint}?startIndex={start}&count=500", peer.token)
        page = doc.get("Resources") or []
        out.extend(page)
        if not page or len(out) >= int(doc.get("totalResults", 0)):
            return out
        start += len(page)


@dataclass
class TargetState:
    users: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)

    def by_username(self) -> dict[str, dict[str, Any]]:
        return {u["userName"]: u for u in self.users}

    def memberships(self) -> dict[str, set[str]]:
        """userName -> group displayNames."""
        names = {u["id"]: u["userName"] for u in self.users}
        out: dict[str, set[str]] = collections.defaultdict(set)
        for g in self.groups:
            for m in g.get("members") or []:
                out[names.get(m.get("value"), f"<unknown id {m.get('value')}>")].add(g["displayName"])
        return out


def read_target(peer: ScimPeer) -> TargetState:
    return TargetState(_all(peer, "Users"), _all(peer, "Groups"))


def compare(state: TargetState, wanted: Mapping[str, Wanted], *,
            allow_empty_duplicate_groups: bool = False) -> list[str]:
    """Every way the target differs from `wanted`: missing, extra or duplicate users, wrong
    active flags, wrong or duplicated memberships, duplicate groups.

    `allow_empty_duplicate_groups`: a POST /Groups that lands after the client gave up on it
    (a stall past the timeout) makes a second group of that name on a server that, like
    scim2-server and RFC 7643, does not require displayName to be unique; the members all
    go to one of them. Such empty twins are then noted in `state.problems`, not returned."""
    problems: list[str] = []
    names = collections.Counter(u["userName"].casefold() for u in state.users)
    problems += [f"duplicate user {n} x{c}" for n, c in names.items() if c > 1]
    ext = collections.Counter(u.get("externalId") for u in state.users)
    problems += [f"duplicate externalId {e} x{c}" for e, c in ext.items() if c > 1]
    gnames = collections.Counter(g["displayName"] for g in state.groups)
    for n, c in gnames.items():
        if c > 1:
            members = [len(g.get("members") or []) for g in state.groups if g["displayName"] == n]
            if sum(1 for m in members if m) > 1 or not allow_empty_duplicate_groups:
                problems.append(f"duplicate group {n} x{c} (members {members})")
            else:
                state.problems.append(f"empty duplicate group {n} x{c} (members {members})")
    for g in state.groups:
        members = collections.Counter(m.get("value") for m in g.get("members") or [])
        problems += [f"group {g['displayName']} lists member {m} x{c}" for m, c in members.items() if c > 1]
    users = state.by_username()
    have_groups = state.memberships()
    for name in sorted(set(users) - set(wanted)):
        problems.append(f"unexpected user {name}")
    for name, w in sorted(wanted.items()):
        u = users.get(name)
        if u is None:
            problems.append(f"missing user {name}")
            continue
        if bool(u.get("active", True)) != w.active:
            problems.append(f"{name}: active={u.get('active')} want {w.active}")
        got = have_groups.get(name, set())
        if got != w.groups:
            problems.append(f"{name}: groups {sorted(got)} want {sorted(w.groups)}")
    for name in sorted(set(have_groups) - set(wanted)):
        problems.append(f"group member {name} is not a wanted user")
    return problems


# ---- fixtures --------------------------------------------------------------------------

@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A work folder on tmpfs when there is one (SQLite commits cost no disk flush there;
    a SIGKILL loses nothing the OS holds either way), else pytest's tmp_path."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        d = Path(tempfile.mkdtemp(prefix="jml-rel-", dir=shm))
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)
    else:
        yield tmp_path


@pytest.fixture
def peer() -> Iterator[ScimPeer]:
    with scim2_server(token="rel-scim-token-0001") as p:
        yield p


def scim_env(peer: ScimPeer) -> dict[str, str]:
    return {TOKEN_ENV: peer.token}


def urlopen_status(url: str, headers: Mapping[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=dict(headers or {})), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
