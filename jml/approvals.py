"""Approving or discarding a held plan: one place for the CLI, the API and the page."""

from __future__ import annotations

from jml.runtime import Runtime


def decide(rt: Runtime, plan_id: str, *, approve: bool, actor: str) -> str | None:
    """Release or drop a held plan; returns a refusal reason, or None when done.

    Approving an export's plan vouches for that export: it is marked `approved`, so the
    next read plans it afresh (its people were not recorded while it was held) without
    the shrink check holding it again.
    """
    now = rt.clock()
    refusal = rt.outbox.decide(plan_id, approve=approve, actor=actor, now=now)
    if refusal:
        return refusal
    rt.audit.append("approval" if approve else "discard", {"plan_id": plan_id}, now=now, actor=actor)
    if approve:
        info = rt.outbox.plan(plan_id)
        if info is not None and info.origin == "export" and info.export_id is not None:
            rt.store.set_export_status(info.export_id, "approved")
    return None
