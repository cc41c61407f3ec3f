"""Approving or discarding a held plan, and layoff pre-approvals: one place for the CLI, the API
and the page.

Four eyes: a held plan or a pre-approval is released once `guard.approvals_required` people other
than whoever requested it have approved it. Every approver is an identity: a signed-in person
(`person:<subject>`), a scoped API token (`token:<name>`), the break-glass admin token
(`break-glass`) or the command line (`cli:<os user>`); each counts once, and each vote is audited
with who gave it.
"""

from __future__ import annotations

import getpass
import secrets
from dataclasses import dataclass

from jml.runtime import Runtime
from jml.store.identity import IdentityStore

PRE_APPROVAL_PREFIX = "pa-"


@dataclass(frozen=True)
class Approver:
    key: str  # the identity that counts once: person:<sub> | token:<name> | break-glass | cli:<user>
    actor: str  # how the audit trail names them


@dataclass(frozen=True)
class Decision:
    done: bool  # released (plan queued / pre-approval in force)
    votes: int
    required: int
    message: str


class Refused(Exception):
    """Not done; `not_found` tells a missing request from a refusal."""

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.not_found = not_found


def cli_approver() -> Approver:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Approver(f"cli:{user}", f"cli user={user}")


def identities(rt: Runtime) -> IdentityStore:
    return rt.store.identities


def record_requester(rt: Runtime, plan_ids: list[str], who: Approver) -> None:
    """Remember who caused these held plans: they cannot approve them themselves."""
    ids = identities(rt)
    for pid in plan_ids:
        ids.open_request(pid, "plan", requested_by=who.key, requester=who.actor, payload=None, now=rt.clock())


def approve(rt: Runtime, request_id: str, who: Approver) -> Decision:
    if request_id.startswith(PRE_APPROVAL_PREFIX):
        return _approve_pre_approval(rt, request_id, who)
    return _approve_plan(rt, request_id, who)


def _vote(rt: Runtime, request_id: str, kind: str, requested_by: str | None, who: Approver) -> int:
    if requested_by is not None and requested_by == who.key:
        raise Refused(f"{request_id} was requested by you: someone else must approve it")
    votes = identities(rt).vote(request_id, who.key, who.actor, rt.clock())
    if votes is None:
        raise Refused(f"you have already approved {request_id}; it waits for someone else")
    return votes


def _approve_plan(rt: Runtime, plan_id: str, who: Approver) -> Decision:
    info = rt.outbox.plan(plan_id)
    if info is None:
        raise Refused(f"no plan {plan_id}", not_found=True)
    if info.state != "held":
        raise Refused(f"plan {plan_id} is {info.state}, not held")
    ids = identities(rt)
    now = rt.clock()
    ids.open_request(plan_id, "plan", requested_by=None, requester=None, payload=None, now=now)
    req = ids.request(plan_id)
    required = rt.config.guard.approvals_required
    votes = _vote(rt, plan_id, "plan", req.requested_by if req else None, who)
    if votes < required:
        rt.audit.append("approval_vote", {"plan_id": plan_id, "votes": votes, "required": required,
                                          "approver": who.key}, now=now, actor=who.actor)
        return Decision(False, votes, required, f"plan {plan_id}: {votes} of {required} approvals; "
                                                f"waiting for {required - votes} more")
    refusal = rt.outbox.decide(plan_id, approve=True, actor=who.actor, now=now)
    if refusal:
        raise Refused(refusal, not_found=refusal.startswith("no plan"))
    ids.close_request(plan_id, "approved", now)
    if info.origin.startswith("revert:"):
        # A held revert puts back the people's stored state only once it is released.
        from jml.revert import on_approved

        on_approved(rt, plan_id, who.actor)
    done = ids.request(plan_id)
    rt.audit.append("approval", {"plan_id": plan_id, "votes": votes, "required": required, "approver": who.key,
                                 "requested_by": req.requester if req else None,
                                 "approvers": list(done.approvers) if done else [who.actor]},
                    now=now, actor=who.actor)
    if info.origin == "export" and info.export_id is not None:
        # Approving an export's plan vouches for that export: it is marked `approved`, so the next
        # read plans it afresh (its people were not recorded while it was held) without the shrink
        # check holding it again.
        rt.store.set_export_status(info.export_id, "approved")
    return Decision(True, votes, required, f"plan {plan_id} approved: its operations are queued")


_approve_any = approve


def discard(rt: Runtime, plan_id: str, who: Approver) -> None:
    now = rt.clock()
    if plan_id.startswith(PRE_APPROVAL_PREFIX):
        ids = identities(rt)
        req = ids.request(plan_id)
        if req is None:
            raise Refused(f"no pre-approval {plan_id}", not_found=True)
        if req.state != "pending":
            raise Refused(f"pre-approval {plan_id} is {req.state}, not pending")
        ids.close_request(plan_id, "discarded", now)
        rt.audit.append("pre_approval_discard", {"request": plan_id}, now=now, actor=who.actor)
        return
    refusal = rt.outbox.decide(plan_id, approve=False, actor=who.actor, now=now)
    if refusal:
        raise Refused(refusal, not_found=refusal.startswith("no plan"))
    identities(rt).close_request(plan_id, "discarded", now)
    rt.audit.append("discard", {"plan_id": plan_id}, now=now, actor=who.actor)


def decide(rt: Runtime, plan_id: str, *, approve: bool, actor: str) -> str | None:
    """The older single-call form: a refusal reason, or None when done (or waiting for more approvals)."""
    who = Approver(actor, actor)
    try:
        if approve:
            _approve_any(rt, plan_id, who)
        else:
            discard(rt, plan_id, who)
    except Refused as e:
        return e.message
    return None


# ---- layoff pre-approvals --------------------------------------------------------------------
def request_pre_approval(rt: Runtime, employee_ids: list[str], who: Approver) -> str:
    """A layoff HR announced: the list waits for approvals before the guard lets those leavers through."""
    rid = PRE_APPROVAL_PREFIX + secrets.token_hex(4)
    ids = sorted(set(employee_ids))
    identities(rt).open_request(rid, "pre_approval", requested_by=who.key, requester=who.actor,
                                payload={"employee_ids": ids}, now=rt.clock())
    rt.audit.append("pre_approval_request", {"request": rid, "employee_ids": ids,
                                             "required": rt.config.guard.approvals_required},
                    now=rt.clock(), actor=who.actor)
    return rid


def _approve_pre_approval(rt: Runtime, rid: str, who: Approver) -> Decision:
    ids = identities(rt)
    req = ids.request(rid)
    if req is None or req.kind != "pre_approval":
        raise Refused(f"no pre-approval {rid}", not_found=True)
    if req.state != "pending":
        raise Refused(f"pre-approval {rid} is {req.state}, not pending")
    now = rt.clock()
    required = rt.config.guard.approvals_required
    votes = _vote(rt, rid, "pre_approval", req.requested_by, who)
    if votes < required:
        rt.audit.append("approval_vote", {"request": rid, "votes": votes, "required": required,
                                          "approver": who.key}, now=now, actor=who.actor)
        return Decision(False, votes, required, f"pre-approval {rid}: {votes} of {required} approvals; "
                                                f"waiting for {required - votes} more")
    added = [str(x) for x in req.payload.get("employee_ids", [])]
    current = list(rt.store.get_setting("pre_approved_leavers", []) or [])
    merged = sorted(set(current) | set(added))
    rt.store.set_setting("pre_approved_leavers", merged)
    ids.close_request(rid, "approved", now)
    rt.audit.append("pre_approval", {"request": rid, "added": added, "count": len(merged), "votes": votes,
                                     "required": required, "requested_by": req.requester,
                                     "approvers": [*req.approvers, who.actor]}, now=now, actor=who.actor)
    return Decision(True, votes, required, f"pre-approval {rid} in force: {len(merged)} pre-approved leaver(s)")
