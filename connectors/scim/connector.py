"""The generic SCIM 2.0 connector (`type: scim`), and the base of the vendor SCIM connectors.

Real apps speak their own SCIM dialects, so nothing a 2xx says is trusted where it
matters: filter results are checked to really match, and a user write is read back; if
the server ignored it, the other form (PATCH <-> PUT) is tried once and remembered in
`self.dialect`. Idempotent by construction: create = find by externalId, then userName ->
adopt, else POST (a 409 -> find and adopt); a 404 on delete is success.

Hooks for vendor subclasses (override, never fork the engine):
  base_url(cfg)                   where the SCIM root is (`url`, or a vendor's `scim_url`)
  default_rate / default_burst    the vendor's documented write rate (TokenBucket)
  user_payload(...)               desired User (scim2-models) from jml's attributes
  find_user_filters(eid, name)    [(attribute, value)] tried in order (AWS: eq on two only)
  set_active(user, active)        deactivate/reactivate; default PATCH active, PUT fallback
                                  (Slack: DELETE deactivates)
  delete_user(remote_id)          irreversible delete (GitHub EMU: DELETE, 404 = done)
  add_member_ops(ids) / remove_member_ops(ids)   PatchOp bodies for group membership
                                  (GitHub EMU: remove by value list, no filtered path)
  max_members_per_patch           batch size for member changes (AWS: 100)
  paginate(endpoint, filter)      index paging (RFC 7644 §3.4.2.4) or cursors (RFC 9865)
  page_size                       `count` per page (AWS: <= 100)
  classify(status, body, retry_after)   vendor error bodies -> jml.errors
  group_grant(display_name)       the grant name a group is reported under
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from connectors.base import ApplyResult, CheckFinding, ConnectorContext, Entitlement, connector_defaults
from connectors.scim import protocol as p
from connectors.scim.dialect import Dialect
from connectors.scim.index import ResourceIndex
from connectors.scim.membership import MembershipMixin
from connectors.scim.reading import ReadingMixin
from connectors.scim.transport import ScimTransport, default_classify
from connectors.scim.writing import WritingMixin
from connectors.traits import traits_for
from jml.config import _ConnectorBase
from jml.errors import ConnectorError, NotFoundError, PermanentError
from jml.model import AccountRecord, Action, Operation, Priority

log = logging.getLogger(__name__)

User = Mapping[str, Any]


class ScimConnector(WritingMixin, ReadingMixin, MembershipMixin):
    users_endpoint = "Users"
    groups_endpoint = "Groups"
    page_size = 100
    # A vendor's documented dialect (facts of connectors/scim/dialect.py), known before the
    # first request: what would otherwise be learnt by a refused request is not tried.
    dialect_profile: dict[str, Any] = {}
    default_rate: float | None = None
    default_burst: int | None = None

    def __init__(self, name: str, cfg: _ConnectorBase, ctx: ConnectorContext) -> None:
        super().__init__()
        self.name, self.cfg, self.ctx = name, cfg, ctx
        self.traits = traits_for(name, cfg)
        self.bucket = connector_defaults(cfg, self.default_rate, self.default_burst)
        self.transport = ScimTransport(
            name, self.base_url(cfg), lambda: ctx.secret("token"), timeout=cfg.timeout.total_seconds(),
            bucket=self.bucket, classify=self.classify, observe=ctx.observe,
            # Pushes (`concurrency` workers) and the SLA read-backs beside them (as many again).
            in_flight=2 * int(getattr(cfg, "concurrency", 4)),
        )
        # A held grant's wait counts against the engine's limit on one attempt (5 request
        # timeouts): it must leave room for the lock, the PATCH and a read-back.
        self.bulk_linger = min(self.bulk_linger, 1.5 * cfg.timeout.total_seconds())
        # A group removal predicted to take a tenth of the timeout weighs replacing the member list.
        self.removal_costs.budget = cfg.timeout.total_seconds() / 10
        self.caps: p.Capabilities | None = None
        # What this server turned out to support: learnt from its answers, remembered in the
        # store (connectors/scim/dialect.py), so restarts and replicas start from it.
        self.dialect = Dialect(name, ctx.recall, ctx.remember)
        for key, value in self.dialect_profile.items():
            self.dialect.setdefault(key, value)
        # Where filters cannot be trusted: paged listings as indexes (connectors/scim/index.py).
        self.user_index = ResourceIndex(("userName", "externalId"))
        self.group_index = ResourceIndex(("displayName",))
        self._manager_refs: dict[str, str] = {}

    async def entitlements(self) -> list[Entitlement]:
        """Every group, from the Groups listing (members left out where the server allows)."""
        await self.capabilities()
        out = []
        async for g in self.paginate(self.groups_endpoint, excluded="members"):
            name = str(g.get("displayName") or "")
            if name:
                out.append(Entitlement(self.group_grant(name), name))
        return sorted(out, key=lambda e: e.grant)

    # ---- hooks ----------------------------------------------------------------------
    @classmethod
    def base_url(cls, cfg: Any) -> str:
        return str(getattr(cfg, "url", None) or cfg.scim_url)

    def classify(self, status: int, body: Any, retry_after: float | None) -> ConnectorError:
        return default_classify(self.name, status, body, retry_after)

    def find_user_filters(self, employee_id: str, username: str) -> list[tuple[str, str]]:
        # README "Connectors": a person is matched by externalId (= employee_id), then by userName; on a
        # server that does not keep externalId, by userName alone.
        if self.dialect.get("external_id") is False:
            employee_id = ""
        return [(a, v) for a, v in (("externalId", employee_id), ("userName", username)) if v]

    def user_payload(self, employee_id: str, username: str, active: bool, attributes: Mapping[str, str],
                     manager_ref: str | None) -> Any:
        return p.build_user(username, employee_id, active, attributes, enterprise=self.enterprise,
                            manager_ref=manager_ref, shape=self.shape())

    async def apply_vendor(self, op: Operation, account: AccountRecord | None) -> ApplyResult | None:
        """A vendor's grants that are not SCIM groups (AWS account assignments): apply and
        return the result, or None to let the SCIM path apply `op` (it may act first, e.g.
        revoke assignments before a delete, and still return None)."""
        return None

    def shape(self) -> p.Shape:
        """What not to send this server: attributes it refused, dropped or does not declare."""
        d = self.dialect
        return p.Shape(frozenset([*d.get("rejected", ()), *d.get("dropped", ()), *d.get("undeclared", ())]))

    @property
    def write_rate(self) -> float | None:
        return self.bucket.rate

    # ---- lifecycle ------------------------------------------------------------------
    async def open(self) -> None:
        await self.transport.open()
        try:
            await self.capabilities()
        except ConnectorError as e:  # not fatal: read again on first use
            log.warning("%s: cannot read ServiceProviderConfig yet: %s", self.name, e)

    async def close(self) -> None:
        await self.transport.close()

    async def capabilities(self) -> p.Capabilities:
        if self.caps is None:
            spc = await self._optional(p.get("ServiceProviderConfig"))
            rtypes = await self._optional(p.get("ResourceTypes"))
            schemas = await self._optional(p.get("Schemas"))
            self.caps = p.capabilities(spc, rtypes, schemas)
            log.info("%s: server capabilities %s", self.name, self.caps)
            # Announced, not learnt: read again at every start, kept in the store beside what is
            # learnt (shown by `jml check`, shared with replicas that cannot reach the server yet).
            announced: dict[str, Any] = {"patch": self.caps.patch, "etag": self.caps.etag,
                                         "filter": self.caps.filter, "bulk": self.caps.bulk}
            if self.caps.max_results:
                announced["max_results"] = self.caps.max_results
            described = p.user_schema(schemas)
            if described is not None:
                declared, required = described
                announced["undeclared"] = sorted({k for k, a in p.CORE_ATTRIBUTE_OF.items() if a not in declared})
                announced["required"] = sorted(required - {"userName", "id"})
            self.dialect.announce(announced)
        return self.caps

    async def _optional(self, req: p.ScimRequest) -> Any:
        try:
            return (await self.transport.send(req)).body
        except (NotFoundError, PermanentError) as e:
            if e.status in (401, 403):
                raise
            return None  # RFC 7644 §4 discovery endpoints are optional in practice

    @property
    def enterprise(self) -> bool:
        configured = getattr(self.cfg, "enterprise_extension", None)
        if configured is not None:
            return bool(configured)
        return bool(self.caps and self.caps.enterprise)

    # ---- apply ----------------------------------------------------------------------
    async def apply(self, op: Operation, account: AccountRecord | None) -> ApplyResult:
        await self.capabilities()
        handled = await self.apply_vendor(op, account)
        if handled is not None:
            return handled
        d = op.detail
        username = str(d.get("username") or (account.username if account else ""))
        known = account.remote_id if account else None
        if op.action == Action.CREATE:
            return await self.create_user(op.employee_id, username, bool(d.get("active", True)),
                                      dict(d.get("attributes") or {}), known)
        if op.action == Action.CREATE_GROUP:
            await self.group_id(p.group_name_of(str(d["group"])), create=True)
            return ApplyResult()
        if op.action == Action.REMOVE_MEMBER and known:
            # A removal needs only the member id, and removing a non-member is success: the
            # recorded id spares a leaver's removals one read each.
            return await self.change_membership({"id": known}, str(d["group"]), False,
                                                urgent=op.priority == Priority.LEAVER)
        if op.action == Action.ADD_MEMBER and known:
            # The recorded id spares a joiner's or mover's grants one read each; an id the app
            # no longer knows (deleted by hand) takes the general path below.
            try:
                return await self.change_membership({"id": known}, str(d["group"]), True,
                                                    urgent=op.priority == Priority.LEAVER)
            except (PermanentError, NotFoundError):
                if await self.get_user(known) is not None:
                    raise
        if op.action == Action.DEACTIVATE and known and await self.deactivate_known(known):
            return ApplyResult(remote_id=known)
        if op.action == Action.UPDATE and known and account is not None and await self.update_known(
                known, dict(d.get("attributes") or {}), username if username != account.username else None,
                {**dict(d.get("all_attributes") or {}), **dict(d.get("attributes") or {})}):
            return ApplyResult(remote_id=known)
        user = await self.find_user(op.employee_id, username, known,
                                    old_username=account.username if account else None)
        if op.action in (Action.ADD_MEMBER, Action.REMOVE_MEMBER):
            return await self.change_membership(user, str(d["group"]), op.action == Action.ADD_MEMBER,
                                                urgent=op.priority == Priority.LEAVER)
        if op.action == Action.DELETE:
            if user is not None:
                await self.delete_user(str(user["id"]))
            return ApplyResult(note="" if user else "already gone")
        if user is None:
            if op.action == Action.DEACTIVATE:
                return ApplyResult(note="no such account: nothing to deactivate")
            raise NotFoundError(self.name, f"no account for {op.employee_id} to {op.action}")
        rid = str(user["id"])
        if op.action in (Action.DEACTIVATE, Action.REACTIVATE):
            await self.set_active(user, op.action == Action.REACTIVATE)
        elif op.action == Action.UPDATE:
            changed = dict(d.get("attributes") or {})
            full = {**dict(d.get("all_attributes") or {}), **changed}
            await self.update_user(user, op.employee_id, username, None, full, list(changed))
        else:
            raise PermanentError(self.name, f"action {op.action} is not supported by SCIM")
        return ApplyResult(remote_id=rid)

    async def check(self) -> list[CheckFinding]:
        findings: list[CheckFinding] = []
        base = self.transport.base_url
        for what, req in (("ServiceProviderConfig", p.get("ServiceProviderConfig")),
                          ("Users", p.search(self.users_endpoint, count=1))):
            try:
                await self.transport.send(req)
            except ConnectorError as e:
                findings.append(CheckFinding(False, f"{self.name}: cannot read {base}{what}: {e.message}"))
                if e.status in (401, 403):
                    break
            else:
                findings.append(CheckFinding(True, f"{self.name}: read {base}{what}"))
        return findings


