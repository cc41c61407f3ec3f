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

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from connectors.base import ApplyResult, CheckFinding, ConnectorContext, connector_defaults
from connectors.registry import traits_for
from connectors.scim import protocol as p
from connectors.scim.dialect import Dialect
from connectors.scim.index import ResourceIndex
from connectors.scim.learning import OPTIONAL_KEYS, is_conflict, patch_refused, refused_optional
from connectors.scim.membership import MembershipMixin
from connectors.scim.transport import ScimTransport, default_classify
from jml.config import _ConnectorBase
from jml.errors import ConflictError, ConnectorError, NotFoundError, PermanentError
from jml.model import AccountRecord, Action, Operation, RemoteAccount

log = logging.getLogger(__name__)

User = Mapping[str, Any]


class ScimConnector(MembershipMixin):
    users_endpoint = "Users"
    groups_endpoint = "Groups"
    page_size = 100
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
        )
        self.caps: p.Capabilities | None = None
        # What this server turned out to support: learnt from its answers, remembered in the
        # store (connectors/scim/dialect.py), so restarts and replicas start from it.
        self.dialect = Dialect(name, ctx.recall, ctx.remember)
        # Where filters cannot be trusted: paged listings as indexes (connectors/scim/index.py).
        self.user_index = ResourceIndex(("userName", "externalId"))
        self.group_index = ResourceIndex(("displayName",))
        self._manager_refs: dict[str, str] = {}

    # ---- hooks ----------------------------------------------------------------------
    @classmethod
    def base_url(cls, cfg: Any) -> str:
        return str(getattr(cfg, "url", None) or cfg.scim_url)

    def classify(self, status: int, body: Any, retry_after: float | None) -> ConnectorError:
        return default_classify(self.name, status, body, retry_after)

    def find_user_filters(self, employee_id: str, username: str) -> list[tuple[str, str]]:
        # DESIGN: a person is matched by externalId (= employee_id), then by userName; on a
        # server that does not keep externalId, by userName alone.
        if self.dialect.get("external_id") is False:
            employee_id = ""
        return [(a, v) for a, v in (("externalId", employee_id), ("userName", username)) if v]

    def user_payload(self, employee_id: str, username: str, active: bool, attributes: Mapping[str, str],
                     manager_ref: str | None) -> Any:
        return p.build_user(username, employee_id, active, attributes, enterprise=self.enterprise,
                            manager_ref=manager_ref, shape=self.shape())

    def shape(self) -> p.Shape:
        """What not to send this server: attributes it refused, dropped or does not declare."""
        d = self.dialect
        return p.Shape(frozenset([*d.get("rejected", ()), *d.get("dropped", ()), *d.get("undeclared", ())]))

    async def query(self, endpoint: str, filter_: str | None = None, *, count: int | None = None,
                    start_index: int | None = None, cursor: str | None = None,
                    excluded: str | None = None) -> Any:
        """One list/search request. `count` and `excludedAttributes` are optional to a
        server: one that errors on them (some answer any `?count=` with a 500 page) is asked
        again without, and that is remembered."""
        if self.dialect.get("count") is False:
            count = None
        if self.dialect.get("excluded") is False:
            excluded = None
        req = p.search(endpoint, filter_, count=count, start_index=start_index, cursor=cursor, excluded=excluded)
        try:
            return (await self.transport.send(req)).body
        except ConnectorError as e:
            if (count is None and excluded is None) or e.status not in (400, 500, 501):
                raise
            bare = p.search(endpoint, filter_, start_index=start_index, cursor=cursor)
            try:
                body = (await self.transport.send(bare)).body
            except ConnectorError:
                raise e from None
            if count is not None:
                self.dialect.learn("count", False, f"HTTP {e.status} to ?count=: {e.vendor_message}")
            else:
                self.dialect.learn("excluded", False, f"HTTP {e.status} to excludedAttributes")
            return body

    async def paginate(self, endpoint: str, filter_: str | None = None, *,
                       excluded: str | None = None) -> AsyncIterator[User]:
        caps = await self.capabilities()
        if caps.cursor:
            cursor = ""
            while True:  # RFC 9865 §2: follow nextCursor until it is absent
                body = await self.query(endpoint, filter_, count=self.page_size, cursor=cursor, excluded=excluded)
                for r in p.resources_of(body):
                    yield r
                next_cursor = body.get("nextCursor") if isinstance(body, Mapping) else None
                if not next_cursor:
                    return
                cursor = str(next_cursor)
        start, seen = 1, set[str]()
        while True:  # RFC 7644 §3.4.2.4: 1-based startIndex; stop on an empty page or past the total
            body = await self.query(endpoint, filter_, count=self.page_size, start_index=start, excluded=excluded)
            page = p.resources_of(body)
            ids = {str(r.get("id")) for r in page}
            if page and ids <= seen:  # a server that ignores startIndex answers page one again
                self.dialect.learn("start_index", False, "startIndex ignored: the same page again")
                return
            seen |= ids
            for r in page:
                yield r
            total = body.get("totalResults") if isinstance(body, Mapping) else None
            per_page = body.get("itemsPerPage") if isinstance(body, Mapping) else None
            if isinstance(per_page, int) and page and per_page < self.page_size and isinstance(total, int) \
                    and total > per_page:
                self.dialect.learn("page_cap", per_page, f"asked for {self.page_size}, got pages of {per_page}")
            start += len(page)
            if not page or (isinstance(total, int) and start > total):
                return

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
            # Announced, not learnt: shown by `jml check`, read again at every start.
            self.dialect.update(patch=self.caps.patch, etag=self.caps.etag, filter=self.caps.filter)
            described = p.user_schema(schemas)
            if described is not None:
                declared, required = described
                self.dialect["undeclared"] = sorted({k for k, a in p.CORE_ATTRIBUTE_OF.items() if a not in declared})
                self.dialect["required"] = sorted(required - {"userName", "id"})
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
        d = op.detail
        username = str(d.get("username") or (account.username if account else ""))
        known = account.remote_id if account else None
        if op.action == Action.CREATE:
            return await self._create(op.employee_id, username, bool(d.get("active", True)),
                                      dict(d.get("attributes") or {}), known)
        if op.action == Action.CREATE_GROUP:
            await self.group_id(p.group_name_of(str(d["group"])), create=True)
            return ApplyResult()
        if op.action == Action.REMOVE_MEMBER and known:
            # A removal needs only the member id, and removing a non-member is success: the
            # recorded id spares a leaver's removals one read each.
            return await self.change_membership({"id": known}, str(d["group"]), False)
        if op.action == Action.DEACTIVATE and known and await self.deactivate_known(known):
            return ApplyResult(remote_id=known)
        user = await self.find_user(op.employee_id, username, known,
                                    old_username=account.username if account else None)
        if op.action in (Action.ADD_MEMBER, Action.REMOVE_MEMBER):
            return await self.change_membership(user, str(d["group"]), op.action == Action.ADD_MEMBER)
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

    async def _create(self, employee_id: str, username: str, active: bool, attrs: dict[str, str],
                      known: str | None) -> ApplyResult:
        user = await self.find_user(employee_id, username, known)
        if user is None:
            try:
                return await self._post_new_user(employee_id, username, active, attrs)
            except ConflictError:
                # A crash between push and record, or an account made by hand: adopt it.
                user = await self.find_user(employee_id, username, None)
                if user is None:
                    raise
        await self.update_user(user, employee_id, username, active, attrs, list(attrs))
        return ApplyResult(remote_id=str(user["id"]), adopted=known is None or known != user["id"])

    async def _post_new_user(self, employee_id: str, username: str, active: bool,
                             attrs: dict[str, str]) -> ApplyResult:
        """POST the user. An optional attribute the server refuses (400 naming it) is
        dropped for this server and the POST sent again; one it accepts but does not keep
        (missing from what it answers, and from a read-back) is dropped for next time."""
        ref = await self.manager_ref(attrs)
        for _ in range(len(OPTIONAL_KEYS) + 1):
            sent = self._sent_keys(employee_id, attrs, ref)
            payload = p.creation_payload(self.user_payload(employee_id, username, active, attrs, ref))
            try:
                body = (await self.transport.send(p.post(self.users_endpoint, payload))).body
            except ConnectorError as e:
                if is_conflict(e):
                    if e.status != 409:
                        self.dialect.learn("conflict_status", e.status, f"a duplicate is answered {e.vendor_message}")
                    raise ConflictError(self.name, "already exists", status=e.status,
                                        vendor_message=e.vendor_message) from None
                if e.status != 400 or not self._drop_refused(e.vendor_message, sent, "create"):
                    raise
                continue
            created = body if isinstance(body, Mapping) and body.get("id") else None
            if created is None:
                created = await self.find_user(employee_id, username, None)
                if created is None:
                    raise PermanentError(self.name, "create answered 2xx but the account cannot be found")
            self.user_index.add(created)
            await self._learn_kept(created, sent, attrs, employee_id)
            return ApplyResult(remote_id=str(created["id"]))
        raise PermanentError(self.name, "the server refuses every form of this user")

    def _sent_keys(self, employee_id: str, attrs: Mapping[str, str], manager_ref: str | None) -> set[str]:
        shape = self.shape()
        sent = {k for k, v in attrs.items() if v and k not in shape.omit and k not in self._unwritable()}
        if manager_ref and self.enterprise and "manager_id" not in shape.omit:
            sent.add("manager_id")
        if employee_id and "externalId" not in shape.omit:
            sent.add("externalId")
        if attrs.get("email") and not shape.email_plain:
            sent.add("emails.type")
        return sent

    def _unwritable(self) -> set[str]:
        return p.unwritable_keys(enterprise=self.enterprise) | {"manager_id"}

    def _drop_refused(self, message: str, sent: set[str], what: str) -> bool:
        """Stop sending the optional attributes a refusal names; False if it names none."""
        keys = refused_optional(message, sent)
        for k in keys:
            self.dialect.add("rejected", k, f"{what} refused: {message}")
        return bool(keys)

    async def _learn_kept(self, user: User, sent: set[str], attrs: Mapping[str, str], employee_id: str) -> None:
        """Which optional attributes the server did not keep: from the create's answer,
        confirmed by one read-back while that attribute is not yet known to be kept."""
        missing = self._missing(user, sent, attrs, employee_id)
        if missing:
            again = await self.get_user(str(user["id"]))
            missing = self._missing(again, sent, attrs, employee_id) if again is not None else []
            for k in missing:
                self.dialect.add("dropped", k, "accepted but not kept")
                if k == "externalId":
                    self.dialect.learn("external_id", False, "externalId accepted but not kept: match by userName")
        for k in sent - set(missing):
            self.dialect.verify(f"create:{k}")

    def _missing(self, user: User, sent: set[str], attrs: Mapping[str, str], employee_id: str) -> list[str]:
        have = p.user_attributes(user)
        out = [k for k in sent if k in attrs and k in OPTIONAL_KEYS and k != "manager_id"
               and not self.dialect.verified(f"create:{k}")
               and not have.get(k)]
        if "externalId" in sent and not self.dialect.verified("create:externalId") \
                and user.get("externalId") != employee_id:
            out.append("externalId")
        return out

    # ---- users ----------------------------------------------------------------------
    def user_path(self, remote_id: str) -> str:
        return f"{self.users_endpoint}/{quote(remote_id, safe='')}"

    async def get_user(self, remote_id: str) -> User | None:
        try:
            body = (await self.transport.send(p.get(self.user_path(remote_id)))).body
        except NotFoundError:
            return None
        return body if isinstance(body, Mapping) and body.get("id") else None

    async def find_user(self, employee_id: str, username: str, remote_id: str | None = None, *,
                        old_username: str | None = None) -> User | None:
        if remote_id:
            user = await self.get_user(remote_id)
            if user is not None:
                return user
        tried = self.find_user_filters(employee_id, username)
        if old_username and old_username != username:
            tried += self.find_user_filters("", old_username)  # a rename still in flight
        for attribute, value in tried:
            found = await self.search_one(self.users_endpoint, attribute, value)
            if found is not None:
                return found
        return None

    async def search_one(self, endpoint: str, attribute: str, value: str) -> User | None:
        """The resource whose `attribute` equals `value`. By filter while the server's
        answers match it; a server that ignores or refuses the filter is read through a
        paged index instead (never `Resources[0]` on trust)."""
        key = f"filter:{endpoint}:{attribute}"
        caps = await self.capabilities()
        if self.dialect.get(key) is False or not caps.filter:
            return await self.indexed(endpoint, attribute, value)
        try:
            body = await self.query(endpoint, p.eq_filter(attribute, value), count=10)
        except ConnectorError as e:
            if e.status not in (400, 403, 501) or (e.status == 403 and "filter" not in e.vendor_message.lower()):
                raise
            if '"' not in value and "\\" not in value:
                # Only a plain value's refusal speaks for the filter; an escaped quote or
                # backslash that a server's parser chokes on is about this value alone.
                self.dialect.learn(key, False, f"filter refused: HTTP {e.status} {e.vendor_message}")
            return await self.indexed(endpoint, attribute, value)
        resources = p.resources_of(body)
        matches = [r for r in resources if _matches(r, attribute, value)]
        if len(matches) < len(resources):
            self.dialect.learn(key, False, "filter ignored: answered resources that do not match")
            return await self.indexed(endpoint, attribute, value)
        return _oldest(self.name, endpoint, attribute, value, matches)

    async def indexed(self, endpoint: str, attribute: str, value: str) -> User | None:
        """Look `value` up in the paged listing, then read the resource itself (fresh)."""
        index = self.user_index if endpoint == self.users_endpoint else self.group_index
        if index.stale:
            await index.rebuild(self.paginate(endpoint))
        found = []
        for rid in index.lookup(attribute, value):
            try:
                body = (await self.transport.send(p.get(f"{endpoint}/{quote(rid, safe='')}"))).body
            except NotFoundError:
                index.remove(rid)
                continue
            if isinstance(body, Mapping) and _matches(body, attribute, value):
                found.append(body)
        return _oldest(self.name, endpoint, attribute, value, found)

    async def manager_ref(self, attrs: Mapping[str, str]) -> str | None:
        """The manager's remote id, found by externalId (= their employee_id), else None."""
        manager = attrs.get("manager_id")
        if not manager or not self.enterprise:
            return None
        if manager not in self._manager_refs:
            found = await self.search_one(self.users_endpoint, "externalId", manager)
            if found is None:
                return None
            self._manager_refs[manager] = str(found["id"])
        return self._manager_refs[manager]

    async def update_user(self, user: User, employee_id: str, username: str, active: bool | None,
                          attrs: Mapping[str, str], keys: Sequence[str]) -> None:
        """Make `user` carry these values: write the differences, read back, and if the
        server ignored them, try the other form once and remember it."""
        have = p.user_attributes(user)
        # Keys with no SCIM attribute here (github_username, …) always read back as missing:
        # they are no change to write (an adopt after a lost create answer would write nothing).
        skip = p.unwritable_keys(enterprise=self.enterprise) | self.shape().omit
        changes: dict[str, Any] = {k: attrs.get(k, "") for k in keys
                                   if k not in skip and (attrs.get(k) or "") != (have.get(k) or "")}
        if "manager_id" in keys and self.enterprise:
            changes["manager_id"] = attrs.get("manager_id", "")
        if username and user.get("userName") != username:
            changes["username"] = username
        if employee_id and user.get("externalId") != employee_id and self.dialect.get("external_id") is not False \
                and "externalId" not in self.shape().omit:
            changes["external_id"] = employee_id
        if active is not None and p.is_active(user) != active:
            changes["active"] = active
        if changes:
            await self.write_verified(user, changes, attrs, "update")

    async def set_active(self, user: User, active: bool) -> None:
        if p.is_active(user) != active:
            await self.write_verified(user, {"active": active}, {}, "active")

    async def deactivate_known(self, remote_id: str) -> bool:
        """A leaver's deactivation by the recorded id in one write (the leaver fast path):
        PATCH active=false without reading first, then read back — from the PATCH answer
        itself when the server returns the resource (RFC 7644 §3.5.2), else by GET. True
        when the account reads back inactive; False sends the operation down the general
        path (find, write, read back, try PUT and learn), which also covers a stale id, a
        server that wants If-Match, and a server that ignores the PATCH."""
        caps = await self.capabilities()
        if (self.dialect.get("active") or ("patch" if caps.patch else "put")) != "patch":
            return False
        body = p.user_patch({"active": False}, enterprise=self.enterprise, manager_ref=None)
        # RFC 7644 §3.5.2: with `attributes` the answer MUST be 200 and the resource, so the
        # read-back rides on the write; a server that refuses the parameter is remembered.
        ask = self.dialect.get("patch_attributes") is not False
        try:
            reply = await self.transport.send(p.patch(self.user_path(remote_id), body,
                                                      attributes="active" if ask else None))
        except (NotFoundError, ConflictError):
            return False
        except ConnectorError as e:
            if ask and e.status in (400, 500, 501):
                # Some servers fail the whole PATCH on the parameter (SCIMMY: 500 "Required
                # attribute 'userName' is missing", nothing written): never ask again.
                self.dialect.learn("patch_attributes", False, f"PATCH ?attributes= refused: {e.vendor_message}")
                return False
            if e.status in (400, 412, 428):  # refused without a version, or this PATCH form
                return False
            raise
        after = reply.body if _is_resource(reply.body, remote_id) else await self.get_user(remote_id)
        return after is not None and not p.is_active(after)

    async def write_verified(self, user: User, changes: Mapping[str, Any], attrs: Mapping[str, str],
                             kind: str) -> None:
        """Write `changes`, then make sure the server kept them (read back while the form is
        not yet known to work for these attributes). PATCH refused for a path -> GET + PUT,
        remembered per attribute; an optional attribute refused or not kept by any form is
        dropped for this server (one warning); userName and active never are."""
        caps = await self.capabilities()
        form = self.dialect.get(kind) or ("patch" if caps.patch else "put")
        if form == "patch" and any(self.dialect.has("put_only", k) for k in changes):
            form = "put"
        changes = dict(changes)
        for _ in range(len(changes) + 2):
            try:
                await self._write(form, user, changes, attrs)
                break
            except ConnectorError as e:  # 501 is a 5xx, but no retry will implement the PATCH
                if form == "patch" and patch_refused(e):
                    for k in changes:
                        self.dialect.add("put_only", _fact_key(k), f"PATCH refused: {e.vendor_message}")
                    form = "put"
                elif e.status == 400 and self._drop_refused(e.vendor_message, {_fact_key(k) for k in changes}, kind):
                    changes = {k: v for k, v in changes.items() if _fact_key(k) not in self.shape().omit}
                    if not changes:
                        return
                else:
                    raise
                user = await self.get_user(str(user["id"])) or user  # a PUT replaces from what is there now
        unverified = [k for k in changes if not self.dialect.verified(f"{form}:{_fact_key(k)}")]
        if not unverified:
            return
        after = await self.get_user(str(user["id"]))
        wrong = self._diverging(after, changes) if after is not None else list(changes)
        if not wrong:
            for k in unverified:
                self.dialect.verify(f"{form}:{_fact_key(k)}")
            return
        other = "put" if form == "patch" else "patch"
        if other == "patch" and not caps.patch:
            await self._not_kept(wrong, form, None)
            return
        retry = {k: v for k, v in changes.items() if k in wrong}
        await self._write(other, after or user, retry, attrs)
        final = await self.get_user(str(user["id"]))
        still = self._diverging(final, retry) if final is not None else wrong
        for k in set(wrong) - set(still):
            if k in ("active", "username"):
                self.dialect.learn(kind, other, f"{form.upper()} was accepted but ignored")
            else:
                self.dialect.add("put_only" if other == "put" else "patch_only", _fact_key(k),
                                 f"{form.upper()} accepted but ignored")
        if still:
            await self._not_kept(still, form, other)

    async def _not_kept(self, keys: Sequence[str], form: str, other: str | None) -> None:
        mandatory = [k for k in keys if k in ("active", "username")]
        for k in keys:
            if k not in mandatory:
                self.dialect.add("dropped", _fact_key(k), f"accepted by {form.upper()} but not kept")
        if mandatory:
            what = "deactivate" if "active" in mandatory else "rename"
            self.dialect.add("cannot", what, "the server ignores it")
            forms = form.upper() + (f" and {other.upper()}" if other else "")
            raise PermanentError(self.name, f"the server ignores changes to {sorted(mandatory)} by {forms}")

    def _diverging(self, user: User, changes: Mapping[str, Any]) -> list[str]:
        out = []
        if "active" in changes and p.is_active(user) != changes["active"]:
            out.append("active")
        if "username" in changes and str(user.get("userName", "")).casefold() != changes["username"].casefold():
            out.append("username")
        if "external_id" in changes and user.get("externalId") != changes["external_id"]:
            out.append("external_id")
        attrs = {k: str(v) for k, v in changes.items() if k not in ("active", "username", "external_id")}
        return out + p.mismatches(user, attrs, enterprise=self.enterprise)

    async def _write(self, form: str, user: User, changes: Mapping[str, Any], attrs: Mapping[str, str]) -> None:
        ref = await self.manager_ref(attrs)
        rid = str(user["id"])
        etag = self._version(user)
        if form == "patch":
            body = p.user_patch(changes, enterprise=self.enterprise, manager_ref=ref, shape=self.shape())
            if body:
                await self.transport.send(p.patch(self.user_path(rid), body, if_match=etag))
            return
        have = p.user_attributes(user)
        merged = {**have, **{k: v for k, v in attrs.items() if k in changes}}
        username = str(changes.get("username") or user.get("userName") or "")
        active = bool(changes["active"]) if "active" in changes else p.is_active(user)
        ext = str(changes.get("external_id") or user.get("externalId") or "")
        desired = self.user_payload(ext, username, active, {k: v for k, v in merged.items() if v}, ref)
        removed = [k for k, v in changes.items() if v == ""]
        await self.transport.send(p.put(self.user_path(rid), p.replacement_payload(user, desired, removed),
                                        if_match=etag))

    def _version(self, resource: User) -> str | None:
        meta = resource.get("meta")
        if self.caps and self.caps.etag and isinstance(meta, Mapping) and meta.get("version"):
            return str(meta["version"])
        return None

    async def delete_user(self, remote_id: str) -> None:
        with contextlib.suppress(NotFoundError):  # RFC 7644 §3.6: already gone is what a delete wants
            await self.transport.send(p.delete(self.user_path(remote_id)))

    # ---- reading --------------------------------------------------------------------
    async def read_account(self, employee_id: str, username: str, remote_id: str | None) -> RemoteAccount | None:
        await self.capabilities()
        user = await self.find_user(employee_id, username, remote_id)
        if user is None:
            return None
        return self.to_remote(user, await self.groups_of(user))

    def to_remote(self, user: User, groups: frozenset[str]) -> RemoteAccount:
        ext = user.get("externalId")
        return RemoteAccount(remote_id=str(user["id"]), username=str(user.get("userName") or ""),
                             active=p.is_active(user), external_id=str(ext) if ext else None,
                             attributes=p.user_attributes(user), groups=groups)

    async def list_accounts(self) -> AsyncIterator[RemoteAccount]:
        await self.capabilities()
        memberships = await self.all_memberships()
        async for user in self.paginate(self.users_endpoint):
            if user.get("id"):
                yield self.to_remote(user, frozenset(memberships.get(str(user["id"]), set())))

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


def _is_resource(body: Any, remote_id: str) -> bool:
    """The answer is the resource itself (so it can serve as the read-back)."""
    return isinstance(body, Mapping) and str(body.get("id") or "") == remote_id and "active" in body


def _fact_key(change: str) -> str:
    """The dialect's name for a change key (`external_id` is the SCIM `externalId`)."""
    return "externalId" if change == "external_id" else change


def _matches(resource: Mapping[str, Any], attribute: str, value: str) -> bool:
    have = str(resource.get(attribute) or "")
    # userName and displayName are caseExact=false (RFC 7643 §4.1.1, §4.2); ids are exact.
    return have == value or (attribute not in ("externalId", "id") and have.casefold() == value.casefold())


def _oldest(connector: str, endpoint: str, attribute: str, value: str,
            matches: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    if len(matches) > 1:
        # Twins (displayName need not be unique, RFC 7643 §4.2): e.g. a create that stalled
        # past its timeout and landed after the retry made another. Every process must pick
        # the same one, or members split between them: the oldest, then the smallest id.
        log.warning("%s: %d resources in %s with %s %r: using the oldest", connector, len(matches), endpoint,
                    attribute, value)
        return min(matches, key=_age)
    return matches[0] if matches else None


def _age(resource: Mapping[str, Any]) -> tuple[str, str]:
    meta = resource.get("meta")
    created = str(meta.get("created") or "") if isinstance(meta, Mapping) else ""
    return created or "\uffff", str(resource.get("id") or "")
