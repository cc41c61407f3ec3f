"""GitHub EMU mode: the enterprise SCIM API at {api_url}/scim/v2/enterprises/{enterprise}/.

GitHub's dialect, from its REST description (ghec.json) and docs:
  * bodies are `application/json` (not application/scim+json); a User needs schemas,
    externalId, userName, active, displayName and emails.
  * `active:false` suspends (reversible, handle and e-mail obfuscated); DELETE is
    irreversible, so it is sent only for a planner `delete` (after `delete_after`).
  * PATCH paths with filters ("emails[type eq …]") are not supported: membership changes
    are `members` with a value list, never `members[value eq "…"]`.
  * groups are referenced by SCIM id; grants `group:NAME` are resolved by displayName.
  * over 1,000 user provisions per hour risks rate limiting: `provisions_per_hour`
    defaults to 1,000 here, applied to POST /Users only.
This speaks through the shared GitHub wire (`_http`), not the generic SCIM transport,
because GitHub wants its own headers, content type and rate-limit handling on every call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

from connectors.base import ApplyResult, CheckFinding, ConnectorContext
from connectors.github._http import GithubHttp
from connectors.github.scopes import check_scopes
from connectors.registry import traits_for
from jml.config import GithubConnectorConfig
from jml.errors import NotFoundError, PermanentError
from jml.model import AccountRecord, Action, Operation, RemoteAccount

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
GROUP = "group:"
EMU_PROVISIONS_PER_HOUR = 1000
PAGE = 100


# ---- map (pure) -----------------------------------------------------------------------
def quote_filter(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def user_payload(employee_id: str, username: str, active: bool, attrs: Mapping[str, str]) -> dict[str, Any]:
    given, family = attrs.get("given_name", ""), attrs.get("family_name", "")
    display = attrs.get("display_name") or f"{given} {family}".strip() or username
    email = attrs.get("email") or (username if "@" in username else "")
    body: dict[str, Any] = {"schemas": [USER_SCHEMA], "externalId": employee_id, "userName": username,
                            "active": active, "displayName": display,
                            "emails": [{"value": email, "type": "work", "primary": True}] if email else []}
    if given or family:
        body["name"] = {k: v for k, v in (("givenName", given), ("familyName", family)) if v}
    return body


def user_patch(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any] | None:
    """Replace-by-path operations for what differs (no filtered paths); None if nothing does."""
    ops: list[dict[str, Any]] = []
    for key in ("userName", "externalId", "displayName", "active", "emails"):
        if key in wanted and wanted[key] != current.get(key) and not (key == "emails" and not wanted[key]):
            ops.append({"op": "replace", "path": key, "value": wanted[key]})
    for key, value in (wanted.get("name") or {}).items():
        if (current.get("name") or {}).get(key) != value:
            ops.append({"op": "replace", "path": f"name.{key}", "value": value})
    return {"schemas": [PATCH_SCHEMA], "Operations": ops} if ops else None


def members_patch(op: str, user_id: str) -> dict[str, Any]:
    return {"schemas": [PATCH_SCHEMA], "Operations": [{"op": op, "path": "members", "value": [{"value": user_id}]}]}


def group_name(grant: str) -> str:
    return grant[len(GROUP):] if grant.startswith(GROUP) else grant


class GithubEmuConnector:
    def __init__(self, name: str, cfg: GithubConnectorConfig, ctx: ConnectorContext) -> None:
        if not cfg.enterprise:
            raise ValueError(f"connectors.{name}.enterprise is required in emu mode")
        self.name, self.cfg, self.ctx = name, cfg, ctx
        self.traits = traits_for(name, cfg)
        self.enterprise = cfg.enterprise
        self.root = f"/scim/v2/enterprises/{quote(cfg.enterprise, safe='')}"
        self.http = GithubHttp(name, cfg, ctx, provisions_per_hour=cfg.provisions_per_hour or EMU_PROVISIONS_PER_HOUR)
        self.bucket = self.http.pace  # the write pace
        self._group_ids: dict[str, str] = {}
        self.page_size = PAGE

    @property
    def write_rate(self) -> float | None:
        """GitHub's pace: one write at a time, a second apart (read by the SLA prediction)."""
        return self.http.pace.rate

    async def open(self) -> None:
        await self.http.open()

    async def close(self) -> None:
        await self.http.close()

    # ---- call -------------------------------------------------------------------------------
    async def _search(self, endpoint: str, attribute: str, value: str) -> dict[str, Any] | None:
        reply = await self.http.request("GET", f"{self.root}/{endpoint}", ok=frozenset(),
                                        params={"filter": f"{attribute} eq {quote_filter(value)}"},
                                        what=f"find {endpoint} by {attribute}")
        for resource in (reply.body or {}).get("Resources") or []:
            if str(resource.get(attribute, "")).lower() == value.lower():  # trust, but check
                return dict(resource)
        return None

    async def find_user(self, employee_id: str, username: str, remote_id: str | None) -> dict[str, Any] | None:
        if remote_id:
            reply = await self.http.request("GET", f"{self.root}/Users/{quote(remote_id, safe='')}", what="read user")
            if reply.status == 200:
                return dict(reply.body)
        if employee_id and (found := await self._search("Users", "externalId", employee_id)):
            return found
        return await self._search("Users", "userName", username) if username else None

    async def _user_path(self, user: Mapping[str, Any]) -> str:
        return f"{self.root}/Users/{quote(str(user['id']), safe='')}"

    async def _patch_user(self, user: Mapping[str, Any], body: dict[str, Any] | None) -> None:
        if body is not None:
            await self.http.request("PATCH", await self._user_path(user), body=body, ok=frozenset(),
                                    what="update user")

    async def group_id(self, name: str, *, create: bool) -> str | None:
        if name in self._group_ids:
            return self._group_ids[name]
        found = await self._search("Groups", "displayName", name)
        if found is None and create:
            reply = await self.http.request("POST", f"{self.root}/Groups", ok=frozenset({409}), what="create group",
                                            body={"schemas": [GROUP_SCHEMA], "externalId": name, "displayName": name})
            found = reply.body if reply.status == 201 else await self._search("Groups", "displayName", name)
        if found is None:
            return None
        self._group_ids[name] = str(found["id"])
        return self._group_ids[name]

    # ---- apply -------------------------------------------------------------------------------
    async def apply(self, op: Operation, account: AccountRecord | None) -> ApplyResult:
        d = op.detail
        username = str(d.get("username") or (account.username if account else ""))
        known = account.remote_id if account else None
        if op.action is Action.CREATE_GROUP:
            return ApplyResult(remote_id=await self.group_id(group_name(str(d["group"])), create=True))
        user = await self.find_user(op.employee_id, username, known)
        if op.action is Action.CREATE:
            attrs = {str(k): str(v) for k, v in (d.get("attributes") or {}).items()}
            wanted = user_payload(op.employee_id, username, bool(d.get("active", True)), attrs)
            if user is not None:
                await self._patch_user(user, user_patch(user, wanted))
                return ApplyResult(remote_id=str(user["id"]), adopted=True)
            await self.http.provision()
            reply = await self.http.request("POST", f"{self.root}/Users", body=wanted, ok=frozenset({409}),
                                            what="provision user")
            if reply.status == 409:  # someone made it meanwhile: find and adopt
                user = await self.find_user(op.employee_id, username, None)
                if user is None:
                    raise PermanentError(self.name, "user exists but cannot be found", status=409)
                await self._patch_user(user, user_patch(user, wanted))
                return ApplyResult(remote_id=str(user["id"]), adopted=True)
            return ApplyResult(remote_id=str(reply.body["id"]))
        if op.action is Action.DELETE:
            if user is not None:  # irreversible: only the planner's delete (after delete_after) sends it
                await self.http.request("DELETE", await self._user_path(user), what="delete user")
            return ApplyResult(note="" if user else "already gone")
        if user is None:
            if op.action in (Action.DEACTIVATE, Action.REMOVE_MEMBER):
                return ApplyResult(note="no such account: nothing to remove")
            raise NotFoundError(self.name, f"no account for {op.employee_id} to {op.action}")
        rid = str(user["id"])
        match op.action:
            case Action.DEACTIVATE | Action.REACTIVATE:
                await self._patch_user(user, user_patch(user, {"active": op.action is Action.REACTIVATE}))
            case Action.UPDATE:
                attrs = {str(k): str(v) for k, v in {**(d.get("all_attributes") or {}),
                                                     **(d.get("attributes") or {})}.items()}
                wanted = user_payload(op.employee_id, username, bool(user.get("active", True)), attrs)
                await self._patch_user(user, user_patch(user, wanted))
            case Action.ADD_MEMBER | Action.REMOVE_MEMBER:
                adding = op.action is Action.ADD_MEMBER
                gid = await self.group_id(group_name(str(d["group"])), create=adding)
                if gid is None:
                    return ApplyResult(remote_id=rid, note="no such group: nothing to remove")
                reply = await self.http.request("PATCH", f"{self.root}/Groups/{quote(gid, safe='')}",
                                                body=members_patch("add" if adding else "remove", rid),
                                                ok=frozenset() if adding else frozenset({404}),
                                                what="change group membership")
                if reply.status == 404:
                    self._group_ids.pop(group_name(str(d["group"])), None)
            case _:
                raise PermanentError(self.name, f"{op.action} is not supported by GitHub EMU mode")
        return ApplyResult(remote_id=rid)

    # ---- read ------------------------------------------------------------------------------
    def to_remote(self, user: Mapping[str, Any]) -> RemoteAccount:
        groups = frozenset(GROUP + str(g.get("display")) for g in user.get("groups") or [] if g.get("display"))
        return RemoteAccount(remote_id=str(user["id"]), username=str(user.get("userName", "")),
                             active=bool(user.get("active", True)), external_id=user.get("externalId"),
                             groups=groups)

    async def read_account(self, employee_id: str, username: str, remote_id: str | None) -> RemoteAccount | None:
        user = await self.find_user(employee_id, username, remote_id)
        return None if user is None else self.to_remote(user)

    async def list_accounts(self) -> AsyncIterator[RemoteAccount]:
        start = 1
        while True:
            reply = await self.http.request("GET", f"{self.root}/Users", ok=frozenset(), what="list users",
                                            params={"startIndex": str(start), "count": str(self.page_size)})
            page = (reply.body or {}).get("Resources") or []
            for user in page:
                yield self.to_remote(user)
            start += len(page)
            if not page or start > int((reply.body or {}).get("totalResults", 0)):
                return

    async def check(self) -> list[CheckFinding]:
        return await check_scopes(self.http, required="scim:enterprise", enterprise=self.enterprise)
