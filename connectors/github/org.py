"""GitHub org mode: org membership and team membership over the REST API.

The person's GitHub login is theirs (an HR attribute, `github_username` by default); jml
invites it to the org and puts it in teams. The login doubles as the account's remote_id,
so later operations (and verification) work from the stored record alone.

Semantics, from GitHub's REST description (`@octokit/openapi` ghec.json):
  * PUT /orgs/{org}/memberships/{username} invites a non-member (state `pending` until the
    user accepts) — and *sets the role* of a member, so we GET first and never PUT over an
    existing membership (an owner must not be demoted to member by a joiner run).
  * DELETE /orgs/{org}/memberships/{username} removes an active member (and every team
    membership with it) and "if the specified user has been invited … will cancel their
    invitation". So deactivate and cancel_invite are the same call; a 404 is success.
  * A team PUT for a login not yet in the org adds a pending team membership that GitHub
    attaches to the org invitation; it becomes active when the user accepts.

Choices:
  * No login for a person: joiner-side operations raise PermanentError naming the HR
    attribute to fill (dead-lettered, visible in `jml status`); leaver-side operations with
    no login and no recorded remote_id succeed with a note — nothing can exist to remove.
  * update: a GitHub profile belongs to its user, so nothing is pushed — unless the login
    itself changed: then the new login is invited, given the old login's teams, and the
    old login is removed from the org (one live account, never two).
  * delete: org mode cannot delete a GitHub user (traits can_delete=False); if a delete
    arrives anyway it removes the org membership, the strongest thing org mode can do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

from connectors.base import ApplyResult, CheckFinding, ConnectorContext, Entitlement
from connectors.github._http import GithubHttp
from connectors.github.scopes import check_scopes
from connectors.traits import traits_for
from jml.config import GithubConnectorConfig
from jml.errors import PermanentError
from jml.model import AccountRecord, Action, Operation, RemoteAccount

TEAM = "team:"
_LEAVER_ACTIONS = frozenset({Action.DEACTIVATE, Action.CANCEL_INVITE, Action.REMOVE_MEMBER, Action.DELETE})


def _seg(value: str) -> str:
    return quote(value, safe="")


class GithubOrgConnector:
    def __init__(self, name: str, cfg: GithubConnectorConfig, ctx: ConnectorContext) -> None:
        if not cfg.org:
            raise ValueError(f"connectors.{name}.org is required in org mode")
        self.name, self.cfg, self.ctx = name, cfg, ctx
        self.traits = traits_for(name, cfg)
        self.org = cfg.org
        self.http = GithubHttp(name, cfg, ctx, provisions_per_hour=cfg.provisions_per_hour)
        self.bucket = self.http.pace  # the write pace
        self._logins: dict[str, str] = {}  # employee_id -> login, learned from apply
        # Logins this process removed from the org: GitHub removed their team memberships
        # with it, so a leaver's team removals that follow need no request (the SLA check
        # reads the account back anyway). Forgotten when the login is invited again.
        self._left: set[str] = set()

    @property
    def write_rate(self) -> float | None:
        """GitHub's pace: one write at a time, a second apart (read by the SLA prediction)."""
        return self.http.pace.rate

    async def open(self) -> None:
        await self.http.open()

    async def close(self) -> None:
        await self.http.close()

    # ---- map (pure) -----------------------------------------------------------------
    def login_for(self, op: Operation, account: AccountRecord | None) -> str:
        """The login this operation is about ('' when HR has none and jml recorded none)."""
        attr = self.cfg.username_attribute
        attrs: Mapping[str, Any] = op.detail.get("attributes") or {}
        login = str(attrs.get(attr) or op.detail.get(attr) or op.detail.get("login") or "")
        if not login and account is not None:
            login = str(account.attributes.get(attr) or account.remote_id or "")
        return login.strip()

    @staticmethod
    def team_slug(grant: str) -> str:
        if not grant.startswith(TEAM) or len(grant) == len(TEAM):
            raise ValueError(grant)
        return grant[len(TEAM):]

    def _membership(self, login: str) -> str:
        return f"/orgs/{_seg(self.org)}/memberships/{_seg(login)}"

    def _team_membership(self, slug: str, login: str) -> str:
        return f"/orgs/{_seg(self.org)}/teams/{_seg(slug)}/memberships/{_seg(login)}"

    # ---- apply ------------------------------------------------------------------------
    async def apply(self, op: Operation, account: AccountRecord | None) -> ApplyResult:
        login = self.login_for(op, account)
        if op.action is Action.CREATE_GROUP:
            return await self._ensure_team(self._slug(op))
        if not login:
            if op.action in _LEAVER_ACTIONS:
                return ApplyResult(note=f"no GitHub login ({self.cfg.username_attribute}) recorded: nothing to remove")
            raise PermanentError(self.name, f"employee {op.employee_id} has no GitHub login: "
                                 f"fill the HR attribute {self.cfg.username_attribute!r}")
        self._logins[op.employee_id] = login
        match op.action:
            case Action.INVITE | Action.CREATE | Action.REACTIVATE:
                if op.detail.get("active") is False:
                    return ApplyResult(remote_id=None, note="not active yet: GitHub invitations wait for the hire date")
                return await self._invite(login)
            case Action.DEACTIVATE | Action.CANCEL_INVITE | Action.DELETE:
                return await self._remove(login)
            case Action.UPDATE:
                return await self._update(op, account, login)
            case Action.ADD_MEMBER:
                return await self._add_to_team(self._slug(op), login)
            case Action.REMOVE_MEMBER if login in self._left:
                return ApplyResult(remote_id=login, note="removed from the org, and so from its teams")
            case Action.REMOVE_MEMBER:
                reply = await self.http.request("DELETE", self._team_membership(self._slug(op), login),
                                                what="remove team membership")
                return ApplyResult(remote_id=login, note="was not a member" if reply.status == 404 else "")
            case _:
                raise PermanentError(self.name, f"{op.action} is not supported by GitHub org mode")

    def _slug(self, op: Operation) -> str:
        grant = str(op.detail.get("group", ""))
        try:
            return self.team_slug(grant)
        except ValueError:
            raise PermanentError(self.name, f"grant {grant!r} is not a GitHub team: write it as team:SLUG") from None

    async def _state(self, login: str) -> str | None:
        """'active' | 'pending' | None (not in the org)."""
        reply = await self.http.request("GET", self._membership(login), what="read org membership")
        if reply.status == 404:
            return None
        return str((reply.body or {}).get("state") or "active")

    async def _invite(self, login: str) -> ApplyResult:
        self._left.discard(login)
        state = await self._state(login)
        if state is not None:
            return ApplyResult(remote_id=login, adopted=True, note=f"already {state} in the org")
        await self.http.provision()
        reply = await self.http.request("PUT", self._membership(login), body={"role": "member"},
                                        ok=frozenset(), what="invite to org")
        state = str((reply.body or {}).get("state") or "pending")
        return ApplyResult(remote_id=login, note="invitation sent" if state == "pending" else f"membership {state}")

    async def _remove(self, login: str) -> ApplyResult:
        reply = await self.http.request("DELETE", self._membership(login), what="remove from org")
        self._left.add(login)
        return ApplyResult(remote_id=login, note="was not in the org" if reply.status == 404 else "")

    async def _update(self, op: Operation, account: AccountRecord | None, login: str) -> ApplyResult:
        old = ""
        if account is not None:
            old = str(account.remote_id or account.attributes.get(self.cfg.username_attribute) or "")
        if not old or old.lower() == login.lower():
            return ApplyResult(remote_id=login, note="nothing to push: a GitHub profile belongs to its user")
        result = await self._invite(login)
        for grant in sorted(account.grants if account else ()):
            if grant.startswith(TEAM):
                await self._add_to_team(self.team_slug(grant), login)
        await self._remove(old)
        return ApplyResult(remote_id=login, adopted=result.adopted, note=f"login changed from {old}")

    async def _add_to_team(self, slug: str, login: str) -> ApplyResult:
        self._left.discard(login)  # a team membership brings the login back into the org
        path = self._team_membership(slug, login)
        current = await self.http.request("GET", path, what="read team membership")
        if current.status == 200:
            return ApplyResult(remote_id=login, adopted=True, note="already in the team")
        reply = await self.http.request("PUT", path, body={"role": "member"}, what="add to team")
        if reply.status == 404:  # the team is missing: make it, then add (find-then-create)
            await self._ensure_team(slug)
            await self.http.request("PUT", path, body={"role": "member"}, ok=frozenset(), what="add to team")
        return ApplyResult(remote_id=login)

    async def _ensure_team(self, slug: str) -> ApplyResult:
        team = f"/orgs/{_seg(self.org)}/teams/{_seg(slug)}"
        if (await self.http.request("GET", team, what="read team")).status == 200:
            return ApplyResult(remote_id=slug, adopted=True)
        reply = await self.http.request("POST", f"/orgs/{_seg(self.org)}/teams",
                                        body={"name": slug, "privacy": "closed"}, ok=frozenset({422}),
                                        what="create team")
        if reply.status == 422:  # created concurrently ("Name must be unique"): adopt it
            if (await self.http.request("GET", team, what="read team")).status == 200:
                return ApplyResult(remote_id=slug, adopted=True)
            raise PermanentError(self.name, f"cannot create team {slug!r}", status=422,
                                 vendor_message=str((reply.body or {}).get("message", "")))
        created = str((reply.body or {}).get("slug") or slug)
        if created != slug:
            raise PermanentError(self.name, f"GitHub named the new team {created!r}, not {slug!r}: "
                                 "use the slug GitHub derives from the name (lowercase, dashes)")
        return ApplyResult(remote_id=slug)

    # ---- read -------------------------------------------------------------------------
    async def read_account(self, employee_id: str, username: str, remote_id: str | None) -> RemoteAccount | None:
        """active = an active org member; pending_invitation = invited, not yet accepted;
        active=False without an invitation = the GitHub user exists but is not in the org."""
        login = remote_id or self._logins.get(employee_id) or ("" if "@" in username else username)
        if not login:
            return None
        state = await self._state(login)
        if state is None:
            # Not in the org: access is gone. The GitHub user itself lives on (it is theirs),
            # so this is an inactive account, and None only when GitHub has no such user.
            user = await self.http.request("GET", f"/users/{_seg(login)}", what="read user")
            return None if user.status == 404 else RemoteAccount(remote_id=login, username=login, active=False)
        groups = set()
        async for slug in self._team_slugs():
            reply = await self.http.request("GET", self._team_membership(slug, login), what="read team membership")
            if reply.status == 200:
                groups.add(TEAM + slug)
        return RemoteAccount(remote_id=login, username=login, active=state == "active",
                             groups=frozenset(groups), pending_invitation=state == "pending")

    async def _team_slugs(self) -> AsyncIterator[str]:
        async for team in self.http.paginate(f"/orgs/{_seg(self.org)}/teams", {"per_page": "100"}):
            yield str(team["slug"])

    async def entitlements(self) -> list[Entitlement]:
        """The org's teams."""
        out = []
        async for team in self.http.paginate(f"/orgs/{_seg(self.org)}/teams", {"per_page": "100"}):
            out.append(Entitlement(TEAM + str(team["slug"]), str(team.get("name") or team["slug"])))
        return sorted(out, key=lambda e: e.grant)

    async def list_accounts(self) -> AsyncIterator[RemoteAccount]:
        teams: dict[str, set[str]] = {}
        async for slug in self._team_slugs():
            async for user in self.http.paginate(f"/orgs/{_seg(self.org)}/teams/{_seg(slug)}/members",
                                                 {"per_page": "100"}):
                teams.setdefault(str(user["login"]).lower(), set()).add(TEAM + slug)
        async for user in self.http.paginate(f"/orgs/{_seg(self.org)}/members", {"per_page": "100"}):
            login = str(user["login"])
            yield RemoteAccount(remote_id=login, username=login, active=True,
                                groups=frozenset(teams.get(login.lower(), ())))
        async for invite in self.http.paginate(f"/orgs/{_seg(self.org)}/invitations", {"per_page": "100"}):
            login = invite.get("login")
            if login:  # invitations by e-mail address carry no login: not jml's
                yield RemoteAccount(remote_id=str(login), username=str(login), active=False,
                                    pending_invitation=True)

    async def check(self) -> list[CheckFinding]:
        return await check_scopes(self.http, required="admin:org", org=self.org)
