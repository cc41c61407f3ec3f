"""Issue 14 finding 3 / DESIGN "Sticky": HR outranks the IdP. An HR termination (webhook)
or an offboard is lifted only by HR — a rehire (new hire date, by export or webhook) or
`offboard --undo`; an Okta deactivation is lifted by an Okta reactivation or by HR. An IdP
event may deprovision sooner; it never re-provisions someone HR terminated.

Through the real paths (webhook inbox, offboard, export planning) on a SQLite store; only
planning runs, nothing is pushed."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jml import events
from jml import offboard as offboard_mod
from jml.config import from_dict
from jml.model import Action, Override, OverrideKind, Phase
from jml.runtime import Runtime
from jml.store.inbox import Inbox
from jml.sync import plan_cycle
from jml.webhooks import HrEvent, OktaEvent

HEADER = "employee_id,first_name,last_name,work_email,department,status,hire_date,termination_date\n"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
OLD_HIRE = "2020-01-01"
NEW_HIRE = (NOW - dt.timedelta(days=1)).date().isoformat()


class Env:
    def __init__(self, tmp: Path) -> None:
        self.export = tmp / "hr.csv"
        self.rt = Runtime(from_dict({
            "state": {"url": f"sqlite:///{tmp / 'jml.db'}"},
            "sources": {"hris": {"location": str(self.export), "format": "csv", "timezone": "UTC"},
                        "okta": {"secret_env": "JML_TEST_STICKY_OKTA"},
                        "webhook": {"secret_env": "JML_TEST_STICKY_HR"}},
            "guard": {"max_deprovision_percent": 100, "max_deprovision_count": 1000},
            "policy": {"username": "{work_email}", "rules": [
                {"name": "everyone", "when": {"status": ["Active", "Leave"]}, "grant": {"scim": ["All Staff"]}}]},
            "connectors": {"scim": {"type": "scim", "url": "http://127.0.0.1:9/", "token_env": "JML_TEST_STICKY"}},
        }, tmp))
        self.n = 0

    def write(self, hire: str = OLD_HIRE) -> None:
        self.export.write_text(HEADER + f"E1,Pat,Lee,pat@acme.example,Sales,Active,{hire},\n"
                                        f"E2,Ana,Diaz,ana@acme.example,Sales,Active,{OLD_HIRE},\n")

    def override(self) -> Override | None:
        return self.rt.store.load_states(["E1"])["E1"].override

    def phase(self) -> Phase:
        from jml.lifecycle import classify
        return classify(self.rt.store.load_states(["E1"])["E1"], self.rt.clock(), self.rt.rules).phase

    async def okta(self, etype: str, at: dt.datetime | None = None) -> str:
        self.n += 1
        uid = f"u-{self.n}"
        ev = OktaEvent(uid, etype, at or self.rt.clock(), ("pat@acme.example",), "admin@acme.example",
                       {"uuid": uid, "eventType": etype, "published": (at or self.rt.clock()).isoformat(),
                        "target": [{"type": "User", "alternateId": "pat@acme.example"}]})
        Inbox(self.rt.store).add_okta([ev], self.rt.clock())
        batch = await events.process_pending(self.rt)
        return batch.outcomes[f"okta:{uid}"]

    async def hr(self, etype: str, person: dict[str, Any], at: dt.datetime | None = None) -> str:
        self.n += 1
        ev = HrEvent(f"hr-{self.n}", etype, at or self.rt.clock(), {"employee_id": "E1", **person})
        Inbox(self.rt.store).add_hr(ev, self.rt.clock())
        batch = await events.process_pending(self.rt)
        return batch.outcomes[f"hr:hr-{self.n}"]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    for name in ("JML_TEST_STICKY", "JML_TEST_STICKY_OKTA", "JML_TEST_STICKY_HR"):
        monkeypatch.setenv(name, "secret-" + name.lower())
    e = Env(tmp_path)
    e.write()
    asyncio.run(plan_cycle(e.rt))
    try:
        yield e
    finally:
        e.rt.store.close()


# ---- each override kind, made the way it is made in production --------------------------
async def _offboard(env: Env) -> None:
    await offboard_mod.offboard(env.rt, "E1", reason="HR says now", actor="hr@acme")


async def _hr_termination(env: Env) -> None:
    await env.hr("termination", {"work_email": "pat@acme.example"})


async def _idp_deactivate(env: Env) -> None:
    await env.okta("user.lifecycle.deactivate")


MAKE: dict[OverrideKind, Callable[[Env], Awaitable[None]]] = {
    OverrideKind.OFFBOARD: _offboard, OverrideKind.HR_TERMINATION: _hr_termination,
    OverrideKind.IDP_DEACTIVATE: _idp_deactivate,
}


# ---- each lifting event --------------------------------------------------------------------
async def _okta(env: Env, etype: str) -> None:
    await env.okta(etype, env.rt.clock() + dt.timedelta(seconds=1))


async def _undo(env: Env) -> None:
    await offboard_mod.offboard(env.rt, "E1", reason="mistake", actor="hr@acme", undo=True)


async def _rehire_export(env: Env) -> None:
    env.write(hire=NEW_HIRE)
    await plan_cycle(env.rt)


async def _rehire_webhook(env: Env) -> None:
    await env.hr("hire", {"status": "Active", "hire_date": NEW_HIRE, "termination_date": ""})


LIFTERS: dict[str, tuple[bool, Callable[[Env], Awaitable[None]]]] = {  # name -> (is HR, event)
    "okta activate": (False, lambda e: _okta(e, "user.lifecycle.activate")),
    "okta unsuspend": (False, lambda e: _okta(e, "user.lifecycle.unsuspend")),
    "okta reactivate": (False, lambda e: _okta(e, "user.lifecycle.reactivate")),
    "offboard --undo": (True, _undo),
    "HR rehire by export": (True, _rehire_export),
    "HR rehire by webhook": (True, _rehire_webhook),
}


@pytest.mark.parametrize("lifter", list(LIFTERS))
@pytest.mark.parametrize("kind", list(OverrideKind))
def test_who_lifts_which_leaver(env: Env, kind: OverrideKind, lifter: str) -> None:
    async def scenario() -> None:
        await MAKE[kind](env)
        made = env.override()
        assert made is not None and made.kind is kind
        assert env.phase() is Phase.LEAVER
        by_hr, event = LIFTERS[lifter]
        await event(env)
        lifted = kind is OverrideKind.IDP_DEACTIVATE or by_hr
        if lifted:
            assert env.override() is None, f"{lifter} should lift {kind}"
            assert env.phase() is Phase.ACTIVE
        else:
            assert env.override() == made, f"{lifter} must not lift {kind}"
            assert env.phase() is Phase.LEAVER
            queued = [q.op for q in env.rt.outbox.ops(["pending"]) if q.op.employee_id == "E1"]
            assert not [op for op in queued if op.action in (Action.CREATE, Action.REACTIVATE, Action.ADD_MEMBER)]
    asyncio.run(scenario())


@pytest.mark.parametrize("kind", [OverrideKind.OFFBOARD, OverrideKind.HR_TERMINATION])
def test_hr_after_an_idp_deactivation_is_hrs_leaver(env: Env, kind: OverrideKind) -> None:
    """Okta deactivates first, then HR terminates: the leaver is now HR's, and an Okta
    reactivation no longer lifts it."""
    async def scenario() -> None:
        await env.okta("user.lifecycle.deactivate", env.rt.clock() - dt.timedelta(minutes=5))
        first = env.override()
        assert first is not None and first.kind is OverrideKind.IDP_DEACTIVATE
        await MAKE[kind](env)
        now_hr = env.override()
        assert now_hr is not None and now_hr.kind is kind
        assert now_hr.effective_at == first.effective_at  # the earlier decision's time stands
        assert await env.okta("user.lifecycle.activate", env.rt.clock() + dt.timedelta(seconds=1)) != "lifted"
        assert env.override() == now_hr and env.phase() is Phase.LEAVER
    asyncio.run(scenario())


def test_idp_may_deprovision_sooner_than_a_scheduled_offboard(env: Env) -> None:
    async def scenario() -> None:
        later = env.rt.clock() + dt.timedelta(days=7)
        await offboard_mod.offboard(env.rt, "E1", reason="leaves next week", actor="hr@acme", at=later)
        assert env.phase() is not Phase.LEAVER
        assert await env.okta("user.lifecycle.suspend") == "leaver"
        ov = env.override()
        assert ov is not None and ov.kind is OverrideKind.OFFBOARD and ov.effective_at < later
        assert env.phase() is Phase.LEAVER
        await env.okta("user.lifecycle.unsuspend", env.rt.clock() + dt.timedelta(seconds=1))
        assert env.override() == ov and env.phase() is Phase.LEAVER  # HR's offboard still stands
    asyncio.run(scenario())
