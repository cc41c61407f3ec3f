"""Access requests, approvals, revocation, expiry and break-glass grants: one place for the CLI,
the API and the scheduler.

A request names a person, an entitlement (connector + grant), a reason and a duration. The
approval policy is jml/access_rules.py (manager from HR, owner from the catalogue, two people for
high risk, never the requester nor the person who gets it). Once approved the grant is `active`
until `expires_at`: every plan for that person keeps it (policy.desired's `extra`), and the
person is planned at once so it reaches the app within minutes. At expiry (or a revoke) it is
planned away, and its removal has its own clock: verified by reading the app back, breached when
not verified within the connector's deprovision SLA. Every step is an audit row naming who acted.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
from dataclasses import dataclass, field

from jml import access_rules, metrics
from jml.access_state import catalogue_entry, is_managed, norm
from jml.approvals import Refused, cli_approver
from jml.context import ServiceContext
from jml.errors import BadRequest, JMLError
from jml.event_plan import plan_event
from jml.model import PersonState
from jml.notify import Notice, notify_soon
from jml.policy import grants_for
from jml.runtime import Runtime
from jml.store.access import AccessRequest

__all__ = ["AccessDecision", "Refused", "Who", "approve", "cli_who", "deny", "expire_due", "is_managed", "jit",
           "request", "revoke", "verify_removals"]

log = logging.getLogger(__name__)

REQUEST_RIGHT, APPROVE_RIGHT, OPERATE_RIGHT = "request", "approve", "operate"
MAX_REASON = 500
VERIFY_BACKOFF = dt.timedelta(minutes=1)  # between two read-backs of one removal


@dataclass(frozen=True)
class Who:
    """Whoever acts: the identity that counts once (`key`), how the audit trail names them, and
    what the approval policy needs to know (their e-mail, their HR employee id, their rights)."""

    key: str
    actor: str
    email: str = ""
    employee_id: str | None = None
    rights: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()


def cli_who() -> Who:
    """The command line: whoever can read the config and the database is an admin."""
    a = cli_approver()
    return Who(a.key, a.actor, rights=frozenset({REQUEST_RIGHT, APPROVE_RIGHT, OPERATE_RIGHT}),
               roles=frozenset({"admin"}))


@dataclass(frozen=True)
class AccessDecision:
    request: AccessRequest
    message: str
    plan_ids: list[str] = field(default_factory=list)  # planned for the person at once (push them)


# ---- facts about people --------------------------------------------------------------------
def _person(rt: Runtime, employee_id: str) -> PersonState:
    state = rt.store.load_states([employee_id]).get(employee_id)
    if state is None or state.person is None:
        raise BadRequest(f"employee_id: unknown employee {employee_id!r} (not in any accepted HR export)")
    return state


def _same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and str(a).strip().casefold() == str(b).strip().casefold()


def _is(who: Who, state: PersonState) -> bool:
    p = state.person
    return who.employee_id == state.employee_id or (p is not None and _same(who.email, p.work_email))


def manager_of(rt: Runtime, state: PersonState) -> PersonState | None:
    """The person's manager from HR data (manager_id), when HR knows them."""
    mid = state.person.manager_id if state.person is not None else ""
    if not mid:
        return None
    m = rt.store.load_states([mid]).get(mid)
    return m if m is not None and m.person is not None else None


def _approver_emails(rt: Runtime, req: AccessRequest) -> list[str]:
    out = []
    entry = catalogue_entry(rt, req.connector, req.grant)
    state = rt.store.load_states([req.employee_id]).get(req.employee_id)
    mgr = manager_of(rt, state) if state is not None else None
    if mgr is not None and mgr.person is not None and mgr.person.work_email and entry.risk != "medium":
        out.append(mgr.person.work_email)
    if entry.owner:
        out.append(entry.owner)
    return sorted(set(out))


def _tell(rt: Runtime, kind: str, to: list[str], subject: str, text: str, employee_id: str) -> None:
    notify_soon(rt, Notice(kind, to=to, subject=subject, text=text, link=f"/people/{employee_id}"))


def _requester_email(req: AccessRequest) -> list[str]:
    """Who asked, as an address to tell them the decision (a person signed in, or `--as` at the CLI)."""
    key = req.requested_by or ""
    if key.startswith("email:"):
        return [key.removeprefix("email:")]
    m = re.search(r"\bemail=(\S+@\S+)", req.requester or "")
    return [m.group(1)] if m else []


def _describe(req: AccessRequest) -> str:
    return f"{req.grant} in {req.connector} for {req.employee_id}"


# ---- request -----------------------------------------------------------------------------
def _checked(rt: Runtime, connector: str, grant: str, reason: str) -> tuple[str, str]:
    if connector not in rt.config.connectors:
        raise BadRequest(f"connector: unknown connector {connector!r} (configured: "
                         f"{', '.join(sorted(rt.config.connectors)) or 'none'})")
    grant = grant.strip()
    if not grant or len(grant) > 256 or any(c in grant for c in "\r\n\t"):
        raise BadRequest("grant: give the entitlement as the catalogue names it, e.g. group:Prod Admins")
    reason = reason.strip()
    if not reason:
        raise BadRequest("reason: say why the access is needed")
    if len(reason) > MAX_REASON or any(c in reason for c in "\r\n"):
        raise BadRequest(f"reason: one line of at most {MAX_REASON} characters")
    return norm(rt, connector, grant), reason


def request(rt: Runtime, who: Who, employee_id: str, connector: str, grant: str, *, reason: str,
            duration: dt.timedelta | None = None) -> AccessRequest:
    """Open a request; approvers are told. Raises BadRequest (bad input) or Refused (not allowed)."""
    grant, reason = _checked(rt, connector, grant, reason)
    state = _person(rt, employee_id)
    entry = catalogue_entry(rt, connector, grant)
    if not entry.requestable:
        raise Refused(f"{grant} in {connector} is not requestable (access.catalogue)")
    try:
        maximum = entry.max_duration or rt.config.access.default_duration
        # Asked for nothing: the default, or the entitlement's maximum when that is shorter.
        length = access_rules.check_duration(duration, min(rt.config.access.default_duration, maximum), maximum)
    except ValueError as e:
        raise BadRequest(f"duration: {e}") from None
    mgr = manager_of(rt, state)
    if not access_rules.may_request(is_self=_is(who, state), is_manager=mgr is not None and _is(who, mgr),
                                    can_request_any=REQUEST_RIGHT in who.rights):
        raise Refused("you may request access for yourself or your reports only")
    pending = [r for r in rt.store.access.find(states=["pending"], eids=[employee_id], connector=connector)
               if r.grant == grant]
    if pending:
        raise Refused(f"{grant} in {connector} for {employee_id} is already requested: {pending[0].id}")
    now = rt.clock()
    rid = "ar-" + secrets.token_hex(5)
    required = access_rules.approvals_required(entry.risk)
    req = rt.store.access.open(rid, kind="request", employee_id=employee_id, connector=connector, grant=grant,
                               reason=reason, duration=length, requested_by=who.key, requester=who.actor,
                               required=required, now=now)
    rt.audit.append("access_request", {"request": rid, "connector": connector, "grant": grant, "reason": reason,
                                       "duration_seconds": int(length.total_seconds()), "risk": entry.risk,
                                       "required": required}, now=now, actor=who.actor, subject=employee_id)
    _tell(rt, "ACCESS_REQUESTED", _approver_emails(rt, req), f"Access request {rid}: {_describe(req)}",
          f"{who.actor} asks for {_describe(req)} for {_human(length)}: {reason}. "
          f"{required} approval(s) needed ({entry.risk} risk).", employee_id)
    return req


# ---- approve / deny ------------------------------------------------------------------------
def _pending(rt: Runtime, request_id: str) -> AccessRequest:
    req = rt.store.access.get(request_id)
    if req is None:
        raise Refused(f"no access request {request_id}", not_found=True)
    if req.state != "pending":
        raise Refused(f"access request {request_id} is {req.state}, not pending")
    return req


def _verdict(rt: Runtime, req: AccessRequest, who: Who) -> access_rules.Verdict:
    entry = catalogue_entry(rt, req.connector, req.grant)
    state = _person(rt, req.employee_id)
    mgr = manager_of(rt, state)
    return access_rules.judge(entry.risk, access_rules.Parties(
        approver_key=who.key, requested_by=req.requested_by, is_grantee=_is(who, state),
        is_manager=mgr is not None and _is(who, mgr), is_owner=_same(who.email, entry.owner),
        can_approve=APPROVE_RIGHT in who.rights))


def may_decide(rt: Runtime, req: AccessRequest, who: Who) -> bool:
    """Would this person's approval of this pending request count (for pages and lists)?"""
    return req.state == "pending" and _verdict(rt, req, who).basis is not None


def approve(rt: Runtime, request_id: str, who: Who) -> AccessDecision:
    """One approval; the last one needed grants the access and plans the person at once."""
    req = _pending(rt, request_id)
    verdict = _verdict(rt, req, who)
    if verdict.basis is None:
        raise Refused(f"{request_id}: {verdict.refusal}")
    now = rt.clock()
    votes = rt.store.access.vote(request_id, who.key, who.actor, verdict.basis, now)
    if votes is None:
        raise Refused(f"you have already approved {request_id}; it waits for someone else")
    rt.audit.append("access_vote", {"request": request_id, "basis": verdict.basis, "votes": votes,
                                    "required": req.required, "approver": who.key},
                    now=now, actor=who.actor, subject=req.employee_id)
    if votes < req.required:
        got = rt.store.access.get(request_id) or req
        return AccessDecision(got, f"access request {request_id}: {votes} of {req.required} approvals; "
                                   f"waiting for {req.required - votes} more")
    expires = now + req.duration
    if not rt.store.access.move(request_id, ["pending"], "active", decided_at=now, granted_at=now,
                                expires_at=expires, decided_by=who.actor):
        raise Refused(f"access request {request_id} was decided meanwhile")
    done = rt.store.access.get(request_id) or req
    rt.audit.append("access_granted", {"request": request_id, "connector": req.connector, "grant": req.grant,
                                       "expires_at": expires.isoformat(), "requested_by": req.requester,
                                       "approvers": [v.approver for v in done.votes]},
                    now=now, actor=who.actor, subject=req.employee_id)
    plan_ids = plan_person(rt, req.employee_id, now)
    _tell(rt, "ACCESS_DECIDED", _requester_email(req), f"Access request {request_id} approved",
          f"{_describe(req)} is granted until {expires.isoformat(timespec='minutes')}.", req.employee_id)
    return AccessDecision(done, f"access request {request_id} approved: {_describe(req)} until "
                                f"{expires.isoformat(timespec='minutes')}", plan_ids)


def deny(rt: Runtime, request_id: str, who: Who, reason: str = "") -> AccessDecision:
    """Whoever may approve may deny; the requester may withdraw (cancelled)."""
    req = _pending(rt, request_id)
    withdrawing = req.requested_by is not None and req.requested_by == who.key
    if not withdrawing:
        verdict = _verdict(rt, req, who)
        if verdict.basis is None:
            raise Refused(f"{request_id}: {verdict.refusal}")
    state = "cancelled" if withdrawing else "denied"
    now = rt.clock()
    if not rt.store.access.move(request_id, ["pending"], state, decided_at=now, decided_by=who.actor,
                                end_reason=reason.strip()[:MAX_REASON] or None):
        raise Refused(f"access request {request_id} was decided meanwhile")
    rt.audit.append(f"access_{state}", {"request": request_id, "reason": reason.strip()[:MAX_REASON]},
                    now=now, actor=who.actor, subject=req.employee_id)
    _tell(rt, "ACCESS_DECIDED", _requester_email(req), f"Access request {request_id} {state}",
          f"{_describe(req)}: {state}.",
          req.employee_id)
    got = rt.store.access.get(request_id) or req
    return AccessDecision(got, f"access request {request_id} {state}")


# ---- ending a grant --------------------------------------------------------------------------
def _end(rt: Runtime, req: AccessRequest, state: str, who_actor: str, reason: str, now: dt.datetime) -> list[str]:
    deadline = now + rt.config.connector_sla(req.connector)
    if not rt.store.access.move(req.id, ["active"], state, ended_at=now, end_reason=reason or state,
                                removal_deadline=deadline):
        return []
    rt.audit.append(f"access_{state}", {"request": req.id, "connector": req.connector, "grant": req.grant,
                                        "reason": reason, "deadline": deadline.isoformat()},
                    now=now, actor=who_actor, subject=req.employee_id)
    return plan_person(rt, req.employee_id, now)


def revoke(rt: Runtime, request_id: str, who: Who, reason: str = "") -> AccessDecision:
    """End an active grant now (an approver, an operator, or the person who holds it)."""
    req = rt.store.access.get(request_id)
    if req is None:
        raise Refused(f"no access request {request_id}", not_found=True)
    if req.state != "active":
        raise Refused(f"access request {request_id} is {req.state}, not active")
    state = _person(rt, req.employee_id)
    if not (APPROVE_RIGHT in who.rights or OPERATE_RIGHT in who.rights or _is(who, state)
            or _same(who.email, catalogue_entry(rt, req.connector, req.grant).owner)):
        raise Refused("revoking needs the approve or operate right, the entitlement's owner or its holder")
    now = rt.clock()
    plan_ids = _end(rt, req, "revoked", who.actor, reason.strip()[:MAX_REASON], now)
    if not plan_ids and (rt.store.access.get(request_id) or req).state != "revoked":
        raise Refused(f"access request {request_id} ended meanwhile")
    got = rt.store.access.get(request_id) or req
    return AccessDecision(got, f"access request {request_id} revoked: {_describe(req)} is being removed", plan_ids)


def expire_due(rt: Runtime, now: dt.datetime) -> list[str]:
    """Active grants past their expiry -> expired, each person planned (the removal's clock starts)."""
    plans: list[str] = []
    for req in rt.store.access.due(now):
        plans += _end(rt, req, "expired", "jml", "expired", now)
        log.info("access grant expired", extra={"request": req.id, "connector": req.connector,
                                                "employee_id": req.employee_id})
    update_gauge(rt, now)
    return plans


async def verify_removals(rt: Runtime, now: dt.datetime) -> int:
    """Read ended grants back from their apps: verified once the grant is gone (the clock stops);
    past the deadline it is a breach, counted once; still held with nothing queued: planned again."""
    verified = 0
    for req in rt.store.access.removals_open():
        if rt.store.access.open_operations(req.employee_id, req.connector):
            _breach_if_late(rt, req, now)
            continue  # still queued: the engine has not pushed the removal yet
        last = _check_time(req.removal_check)
        if last is not None and now - last < VERIFY_BACKOFF and req.removal_check and "held" in req.removal_check:
            _breach_if_late(rt, req, now)
            continue
        other = kept_by(rt, req, now)
        if other is not None:
            # Another grant keeps it (a rule, an extension): nothing was to be removed; the clock stops.
            if rt.store.access.set_removal(req.id, removal_verified_at=now, removal_check=f"{now.isoformat()} kept"):
                rt.audit.append("access_removal_verified", {"request": req.id, "connector": req.connector,
                                                            "grant": req.grant, "kept_by": other},
                                now=now, subject=req.employee_id)
            continue
        holds = await _still_holds(rt, req)
        if holds is None:
            rt.store.access.set_removal(req.id, removal_check=f"{now.isoformat()} unreadable")
            _breach_if_late(rt, req, now)
            continue
        if not holds:
            if rt.store.access.set_removal(req.id, removal_verified_at=now, removal_check=f"{now.isoformat()} gone"):
                started = req.ended_at or now
                seconds = max(0.0, (now - started).total_seconds())
                breached = req.removal_breached or (req.removal_deadline is not None and now > req.removal_deadline)
                metrics.access_expiry_seconds.labels(req.connector).observe(seconds)
                rt.audit.append("access_removal_verified", {
                    "request": req.id, "connector": req.connector, "grant": req.grant, "seconds": round(seconds, 3),
                    "breached": breached}, now=now, subject=req.employee_id)
                verified += 1
            continue
        rt.store.access.set_removal(req.id, removal_check=f"{now.isoformat()} held")
        _breach_if_late(rt, req, now)
        plan_person(rt, req.employee_id, now)
    return verified


def _check_time(check: str | None) -> dt.datetime | None:
    if not check:
        return None
    try:
        return dt.datetime.fromisoformat(check.split(" ", 1)[0])
    except ValueError:
        return None


def _breach_if_late(rt: Runtime, req: AccessRequest, now: dt.datetime) -> None:
    if req.removal_breached or req.removal_deadline is None or now <= req.removal_deadline:
        return
    if rt.store.access.set_removal(req.id, removal_breached=True):
        metrics.access_removal_breaches.labels(req.connector).inc()
        rt.audit.append("access_removal_breach", {"request": req.id, "connector": req.connector, "grant": req.grant,
                                                  "deadline": req.removal_deadline.isoformat()},
                        now=now, subject=req.employee_id)
        log.warning("access removal SLA breached", extra={"request": req.id, "connector": req.connector,
                                                          "employee_id": req.employee_id})


async def _still_holds(rt: Runtime, req: AccessRequest) -> bool | None:
    """Does the app still grant it? None: the app could not be read."""
    account = rt.store.load_accounts([req.employee_id]).get((req.connector, req.employee_id))
    if account is None:
        return False  # jml holds no account there: nothing left to hold the grant
    try:
        remote = await rt.connector(req.connector).read_account(req.employee_id, account.username, account.remote_id)
    except (JMLError, OSError, TimeoutError) as e:
        log.warning("access removal: cannot read the account back",
                    extra={"request": req.id, "connector": req.connector, "error": type(e).__name__})
        return None
    return remote is not None and req.grant in {norm(rt, req.connector, g) for g in remote.groups}


def kept_by(rt: Runtime, req: AccessRequest, now: dt.datetime) -> str | None:
    """What else grants this to the person (a rule, another request in force), if anything."""
    for other in rt.store.access.in_force(now, [req.employee_id]):
        if other.id != req.id and other.connector == req.connector and other.grant == req.grant:
            return f"{other.kind}:{other.id}"
    state = rt.store.load_states([req.employee_id]).get(req.employee_id)
    if state is None or state.person is None:
        return None
    denied = {d.grant for d in rt.store.access.denials([req.employee_id]) if d.connector == req.connector}
    for g, rule in grants_for(state.person, rt.policy).get(req.connector, {}).items():
        if norm(rt, req.connector, g) == req.grant and req.grant not in denied:
            return f"rule:{rule}"
    return None


# ---- break-glass ---------------------------------------------------------------------------
def jit(rt: Runtime, who: Who, connector: str, grant: str, *, duration: dt.timedelta, reason: str,
        employee_id: str | None = None) -> AccessDecision:
    """Break-glass: granted at once, no approval, for the roles in access.jit.roles (and admins),
    at most access.jit.max_duration; loud in the log, the audit trail and a metric."""
    cfg = rt.config.access.jit
    if not (set(cfg.roles) & set(who.roles) or "admin" in who.roles):
        raise Refused(f"break-glass access is for the roles in access.jit.roles ({', '.join(cfg.roles) or 'none'})")
    grant, reason = _checked(rt, connector, grant, reason)
    eid = employee_id or who.employee_id
    if not eid:
        raise BadRequest("employee_id: who gets the access (you are not linked to an HR record)")
    if employee_id and who.employee_id and employee_id != who.employee_id and "admin" not in who.roles:
        raise Refused("break-glass access is for yourself")
    _person(rt, eid)
    if duration <= dt.timedelta(0) or duration > cfg.max_duration:
        raise BadRequest(f"hours: between 0 and access.jit.max_duration ({_human(cfg.max_duration)})")
    now = rt.clock()
    rid = "jit-" + secrets.token_hex(5)
    req = rt.store.access.open(rid, kind="jit", employee_id=eid, connector=connector, grant=grant, reason=reason,
                               duration=duration, requested_by=who.key, requester=who.actor, required=0, now=now,
                               state="active", expires_at=now + duration)
    rt.audit.append("access_jit", {"request": rid, "connector": connector, "grant": grant, "reason": reason,
                                   "expires_at": (now + duration).isoformat()},
                    now=now, actor=who.actor, subject=eid)
    metrics.access_jit_grants.labels(connector).inc()
    log.warning("BREAK-GLASS access granted without approval", extra={
        "request": rid, "connector": connector, "grant": grant, "employee_id": eid, "actor": who.actor,
        "reason": reason, "expires_at": (now + duration).isoformat()})
    plan_ids = plan_person(rt, eid, now)
    _tell(rt, "ACCESS_JIT", [], f"Break-glass access {rid}", f"{who.actor} took {grant} in {connector} for "
          f"{eid} for {_human(duration)}: {reason}", eid)
    update_gauge(rt, now)
    return AccessDecision(req, f"break-glass {rid}: {grant} in {connector} for {eid} until "
                               f"{(now + duration).isoformat(timespec='minutes')}", plan_ids)


# ---- planning ------------------------------------------------------------------------------
def plan_person(rt: Runtime, employee_id: str, now: dt.datetime) -> list[str]:
    """Plan this one person now (as an offboard does): the ids of the plans to push."""
    outcomes = plan_event(rt, {employee_id: False}, {}, now, origin="access", order=[employee_id])
    return [o.plan_id for o in outcomes if o.plan_id is not None]


def update_gauge(rt: Runtime, now: dt.datetime) -> None:
    counts = rt.store.access.active_counts(now)
    for name in rt.config.connectors:
        metrics.access_grants_active.labels(name).set(counts.get(name, 0))


def _human(d: dt.timedelta) -> str:
    s = int(d.total_seconds())
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n and s % n == 0:
            return f"{s // n}{unit}"
    return f"{s}s"


# ---- the daemon's job ------------------------------------------------------------------------
JOB_INTERVAL = 60.0  # seconds: the default of access.check_interval (the scheduler reads the config)


async def job(ctx: ServiceContext) -> None:
    """End grants past their expiry (planned and pushed by the daemon's workers), read ended
    grants back, keep the gauge current."""
    rt = ctx.rt
    plans = expire_due(rt, rt.clock())
    if plans:
        ctx.wake(*plans)
    await verify_removals(rt, rt.clock())
