"""Writing users to a SCIM server and making sure they stuck: create (adopting what is
there), update, (de)activate, delete. A mixin of ScimConnector.

Nothing a 2xx says is trusted where it matters: a write is read back until the dialect
knows that form keeps that attribute on this server ("verified:"), then trusted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from connectors.base import ApplyResult
from connectors.scim import patches
from connectors.scim import protocol as p
from connectors.scim.dialect import Dialect
from connectors.scim.index import ResourceIndex
from connectors.scim.learning import OPTIONAL_KEYS, is_conflict, patch_refused, refused_optional
from connectors.scim.transport import ScimTransport
from jml.errors import ConflictError, ConnectorError, NotFoundError, PermanentError

User = Mapping[str, Any]


class WritingMixin:
    name: str
    users_endpoint: str
    transport: ScimTransport
    dialect: Dialect
    user_index: ResourceIndex
    caps: p.Capabilities | None

    if TYPE_CHECKING:  # provided by the other mixins / ScimConnector (no runtime stubs: MRO)
        async def capabilities(self) -> p.Capabilities:
            raise NotImplementedError

        @property
        def enterprise(self) -> bool:
            raise NotImplementedError

        def shape(self) -> p.Shape:
            raise NotImplementedError

        def user_payload(self, employee_id: str, username: str, active: bool, attributes: Mapping[str, str],
                         manager_ref: str | None) -> Any:
            raise NotImplementedError

        def user_path(self, remote_id: str) -> str:
            raise NotImplementedError

        async def get_user(self, remote_id: str) -> User | None:
            raise NotImplementedError

        async def find_user(self, employee_id: str, username: str, remote_id: str | None = None, *,
                            old_username: str | None = None, combined: bool = True) -> User | None:
            raise NotImplementedError

        async def indexed(self, endpoint: str, attribute: str, value: str) -> User | None:
            raise NotImplementedError

        async def manager_ref(self, attrs: Mapping[str, str]) -> str | None:
            raise NotImplementedError

    async def create_user(self, employee_id: str, username: str, active: bool, attrs: dict[str, str],
                          known: str | None) -> ApplyResult:
        """Find (externalId, then userName) and adopt, else POST; a hook (Slack picks handles)."""
        user = await self.find_user(employee_id, username, known)
        if user is None:
            try:
                return await self._post_new_user(employee_id, username, active, attrs)
            except ConflictError:
                # A crash between push and record, or an account made by hand: adopt it. One
                # attribute at a time: the `or` search that missed it may be what lied.
                user = await self.find_user(employee_id, username, None, combined=False)
                if user is None:
                    user = await self.indexed(self.users_endpoint, "userName", username)
                if user is None:
                    raise
                self.dialect.learn("filter_or", False, "`or` search missed an existing account")
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
        body = patches.deactivation_patch(self.enterprise)
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

    async def update_known(self, remote_id: str, changed: Mapping[str, str], rename: str | None,
                           attrs: Mapping[str, str]) -> bool:
        """A mover's change by the recorded id in one write, without reading first: only
        where PATCH of every changed attribute was already read back and kept on this
        server. False sends the operation down the general path (read, write, read back,
        learn), which also covers a stale id and a server that wants If-Match."""
        caps = await self.capabilities()
        omit = self.shape().omit | p.unwritable_keys(enterprise=self.enterprise)
        changes: dict[str, Any] = {k: v for k, v in changed.items() if k not in omit}
        if rename:
            changes["username"] = rename
        if not changes:
            return True  # nothing this server keeps changed: no request at all
        form = self.dialect.get("update") or ("patch" if caps.patch else "put")
        if form != "patch" or not all(self.dialect.verified(f"patch:{_fact_key(k)}") for k in changes) \
                or any(self.dialect.has("put_only", _fact_key(k)) for k in changes):
            return False
        body = patches.user_patch(changes, enterprise=self.enterprise, manager_ref=await self.manager_ref(attrs),
                                  shape=self.shape())
        if not body:
            return True
        try:
            await self.transport.send(p.patch(self.user_path(remote_id), body))
        except (NotFoundError, ConflictError):
            return False
        except ConnectorError as e:
            if e.status in (400, 412, 428, 501):
                return False
            raise
        return True

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
            body = patches.user_patch(changes, enterprise=self.enterprise, manager_ref=ref, shape=self.shape())
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
        if self.dialect.verified("delete"):
            return
        # Read back once: some apps answer a DELETE by deactivating (django-scim2-server, and
        # Slack by design), so the account stays. It is no access, but say so in `jml check`.
        after = await self.get_user(remote_id)
        if after is None:
            self.dialect.verify("delete")
        elif not p.is_active(after):
            self.dialect.learn("delete_deactivates", True, "DELETE answered, the account stays inactive")
            self.dialect.verify("delete")
        else:
            self.dialect.add("cannot", "delete", "DELETE answered, the account is still active")
            raise PermanentError(self.name, "the server answered the DELETE but the account is still active")


def _is_resource(body: Any, remote_id: str) -> bool:
    """The answer is the resource itself (so it can serve as the read-back)."""
    return isinstance(body, Mapping) and str(body.get("id") or "") == remote_id and "active" in body


def _fact_key(change: str) -> str:
    """The dialect's name for a change key (`external_id` is the SCIM `externalId`)."""
    return "externalId" if change == "external_id" else change


