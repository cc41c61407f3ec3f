"""A held plan tells the approvers once, whichever path held it: an HR export (jml/sync.py),
reconcile's orphan deletions (jml/reconcile.py), review revocations (jml/reviews.py) and reverts
(jml/revert.py) all go through the guard, and each calls notify.held_plan_saved after storing
the held plan."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from jml import config as config_mod
from jml import guard, notify, reconcile, reviews
from jml import revert as revert_mod
from jml.model import RemoteAccount
from jml.notify import Notice
from jml.push import work
from jml.review_items import ACCOUNT
from jml.runtime import Runtime
from jml.sync import plan_cycle
from tests.integration.test_revert import MISTAKE, Env
from tests.integration.test_revert import env as env
from tests.integration.test_revert import peers as peers
from tests.integration.test_web import NOW, _config, _seed


@pytest.fixture
def told(monkeypatch: pytest.MonkeyPatch) -> list[Notice]:
    """The notices jml would send (notifications on, nothing sent)."""
    sent: list[Notice] = []
    monkeypatch.setattr(notify, "enabled", lambda _config: True)
    monkeypatch.setattr(notify, "notify_soon", lambda _rt, notice: sent.append(notice))
    return sent


def _held_notices(told: list[Notice], plan_id: str) -> list[Notice]:
    return [n for n in told if n.kind == notify.PLAN_HELD and plan_id in n.subject]


def _hold_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard, "evaluate", lambda *_a, **_k: guard.Verdict(True, ("held by the test's guard",)))


def test_an_export_plan_held(env: Env, told: list[Notice]) -> None:
    env.write(frozenset(MISTAKE[:8]))  # eight of twelve leave at once: past the 50% the config allows
    outcome = asyncio.run(plan_cycle(env.rt))
    assert outcome.held and outcome.plan_id
    assert len(_held_notices(told, outcome.plan_id)) == 1
    assert len(told) == 1


def test_a_revert_held(env: Env, told: list[Notice], monkeypatch: pytest.MonkeyPatch) -> None:
    env.write(frozenset({"E01"}))
    outcome = asyncio.run(plan_cycle(env.rt))
    assert not outcome.held and outcome.plan_id
    asyncio.run(work(env.rt, outcome.plan_id, 60))
    assert told == []
    _hold_everything(monkeypatch)
    out = revert_mod.revert(env.rt, outcome.plan_id, actor="cli user=ops", dry_run=False)
    assert out.held and out.plan_id
    info = env.rt.outbox.plan(out.plan_id)
    assert info is not None and info.state == "held"
    [notice] = told
    assert _held_notices(told, out.plan_id) == [notice] and "held by the test's guard" in notice.text


def test_reconcile_orphan_deletions_held(tmp_path: Path, told: list[Notice], monkeypatch: pytest.MonkeyPatch) -> None:
    rt = _runtime(tmp_path, monkeypatch)
    try:
        _hold_everything(monkeypatch)
        before = {p.id for p in rt.outbox.plans(["held"])}
        orphans = [RemoteAccount(f"r{i}", f"ghost{i}@acme.example", True) for i in range(3)]
        reconcile._delete_orphans(rt, [reconcile.Findings("demo", orphans=orphans)], NOW)
        [plan] = [p for p in rt.outbox.plans(["held"]) if p.id not in before]
        assert plan.origin == "reconcile"
        assert len(_held_notices(told, plan.id)) == 1 and len(told) == 1
        assert "3 operation(s)" in told[0].text
    finally:
        rt.store.close()


def test_review_revocations_held(tmp_path: Path, told: list[Notice], monkeypatch: pytest.MonkeyPatch) -> None:
    rt = _runtime(tmp_path, monkeypatch, reviewer="bob.jones@acme.example")
    try:
        c = reviews.start(rt, by="app", connector="demo", due=None, name="Q4", created_by="test", now=NOW)
        item = next(it for it in rt.store.reviews.items(c.id)
                    if (it.holding.employee_id, it.holding.entitlement) == ("E300", ACCOUNT))
        admin = reviews.Decider("admin", "bob.jones@acme.example", admin=True)
        done = reviews.decide(rt, c.id, [item.id], "revoke", admin, reason="left", now=NOW)
        # Deactivating one of the two demo accounts is past the default guard: held, and the approvers told.
        assert done.held and done.plan_id
        assert len(_held_notices(told, done.plan_id)) == 1
        assert [n for n in told if n.kind == notify.PLAN_HELD] == _held_notices(told, done.plan_id)
    finally:
        rt.store.close()


def _runtime(tmp: Path, monkeypatch: pytest.MonkeyPatch, reviewer: str | None = None) -> Runtime:
    monkeypatch.setenv("JML_TEST_SCIM", "scim-token-not-used")
    cfg = _config(tmp)
    if reviewer:
        cfg = cfg.model_copy(update={"reviews": config_mod.ReviewsConfig(default_reviewer=reviewer)})
    rt = Runtime(cfg, clock=lambda: NOW)
    _seed(rt)
    return rt
