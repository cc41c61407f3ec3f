"""A small stateful GitHub on loopback: one org (REST memberships, teams, invitations) and
one enterprise's EMU SCIM API.

Its FIRST step on every request is validating it against GitHub's official REST API
description (`@octokit/openapi` generated/ghec.json, see openapi_validator.py): method,
path, parameters and body. A request the description does not allow is answered 400 and
recorded in `invalid`; tests fail when `invalid` is not empty. It also insists on what
GitHub's docs demand of every client: a User-Agent and a supported X-GitHub-Api-Version.
With `min_write_gap` set it also holds clients to GitHub's "wait at least one second
between each" mutative request: a write that arrives sooner after the previous write's
answer is refused as GitHub refuses a secondary-rate-limited request (403, Retry-After 60)
and counted in `secondary_limited`.

State follows the description's semantics: PUT membership makes a `pending` invitation
(`accept()` plays the user accepting it); DELETE membership removes a member or cancels
an invitation, and drops team memberships; a team PUT for a non-member invites them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from tests.peers import free_port
from tests.vendor_peers.openapi_validator import Request, description
from tests.vendor_peers.proxy import Fault, Seen

WRITES = ("POST", "PUT", "PATCH", "DELETE")
SCIM_ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
_FILTER = re.compile(r"""^\s*(\w+)\s+eq\s+(?:"((?:[^"\\]|\\.)*)"|'([^']*)')\s*$""")


@dataclass
class Membership:
    login: str
    state: str = "pending"  # pending | active
    role: str = "member"
    invitation_id: int = 0


@dataclass
class Team:
    name: str
    slug: str
    id: int
    members: dict[str, str] = field(default_factory=dict)  # login.lower() -> state


def _scim_error(status: int, detail: str, scim_type: str | None = None) -> web.Response:
    body: dict[str, Any] = {"schemas": [SCIM_ERROR], "status": status, "detail": detail}
    if scim_type:
        body["scimType"] = scim_type
    return web.json_response(body, status=status)


def _rest_error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message, "documentation_url": "https://docs.github.com/rest"},
                             status=status)


class GithubFake:
    def __init__(self, org: str = "acme", enterprise: str = "acme-ent", token: str = "ghp_fake_token_0123",
                 owner: str = "jml-bot", scopes: str | None = "admin:org, scim:enterprise") -> None:
        self.org, self.enterprise, self.token, self.owner, self.scopes = org, enterprise, token, owner, scopes
        self.members: dict[str, Membership] = {owner.lower(): Membership(owner, "active", "admin")}
        self.teams: dict[str, Team] = {}
        self.nonexistent: set[str] = set()  # logins GitHub does not know
        self.scim_users: dict[str, dict[str, Any]] = {}
        self.scim_groups: dict[str, dict[str, Any]] = {}
        self.faults: deque[Fault] = deque()
        self.seen: list[Seen] = []
        self.invalid: list[str] = []
        self.remaining = 5000
        self.auto_accept = False  # invited users accept at once (for the connector contract)
        self.min_write_gap: float | None = None
        self.secondary_limited = 0
        self._last_write_answered = float("-inf")
        self.url = ""
        self._ids = itertools.count(100)
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ---- test helpers ------------------------------------------------------------------
    def fail_next_write(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def writes(self) -> list[Seen]:
        return [s for s in self.seen if s.method in WRITES]

    def accept(self, login: str) -> None:
        """The invited user accepts: org and team memberships become active."""
        self.members[login.lower()].state = "active"
        for team in self.teams.values():
            if login.lower() in team.members:
                team.members[login.lower()] = "active"

    def add_team(self, slug: str) -> Team:
        team = self.teams.setdefault(slug, Team(slug, slug, next(self._ids)))
        return team

    # ---- plumbing ------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        seen = Seen(request.method, request.path, request.query_string, body)
        self.seen.append(seen)
        response = await self._answer(request, raw, body)
        seen.status = response.status
        if request.method in WRITES:
            self._last_write_answered = time.monotonic()
        self.remaining = max(0, self.remaining - 1)
        response.headers.setdefault("x-ratelimit-limit", "5000")
        response.headers.setdefault("x-ratelimit-remaining", str(max(self.remaining, 1)))
        response.headers.setdefault("x-ratelimit-reset", str(int(time.time()) + 3600))
        return response

    async def _answer(self, request: web.Request, raw: bytes, body: Any) -> web.StreamResponse:
        problems = description().errors(Request(
            request.method, request.path, request.query_string, dict(request.headers), raw or None,
            request.content_type if raw else "application/json"))
        if not request.headers.get("User-Agent"):
            problems.append("no User-Agent header (GitHub rejects requests without one)")
        if request.headers.get("X-GitHub-Api-Version", "2022-11-28") != "2022-11-28":
            problems.append(f"unsupported X-GitHub-Api-Version {request.headers['X-GitHub-Api-Version']}")
        if problems:
            self.invalid.append(f"{request.method} {request.path_qs}: " + "; ".join(problems))
            return _rest_error(400, "request does not match GitHub's REST API description: " + problems[0])
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _rest_error(401, "Bad credentials")
        if self.min_write_gap is not None and request.method in WRITES:
            since = time.monotonic() - self._last_write_answered
            if since < self.min_write_gap:
                self.secondary_limited += 1
                return web.json_response(
                    {"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you "
                                "try again.", "documentation_url": "https://docs.github.com/rest"},
                    status=403, headers={"Retry-After": "60"})
        if self.faults and request.method in WRITES:
            fault = self.faults.popleft()
            if fault.delay:
                await asyncio.sleep(fault.delay)
            return web.json_response(fault.body, status=fault.status, headers=fault.headers)
        return await self._route(request, body)

    async def _route(self, request: web.Request, body: Any) -> web.StreamResponse:
        method, path = request.method, request.path
        if path == "/user":
            headers = {"X-OAuth-Scopes": self.scopes} if self.scopes is not None else {}
            return web.json_response({"login": self.owner, "id": 1, "type": "User"}, headers=headers)
        if path.startswith("/users/"):
            login = path.removeprefix("/users/")
            if login.lower() in self.nonexistent:
                return _rest_error(404, "Not Found")
            return web.json_response({"login": login, "id": hash(login) % 10**6, "type": "User"})
        prefix = f"/orgs/{self.org}/"
        scim = f"/scim/v2/enterprises/{self.enterprise}/"
        if path.startswith(prefix):
            return self._org(method, path[len(prefix):].split("/"), request, body)
        if path.startswith(scim):
            return self._scim(method, path[len(scim):].split("/"), request, body)
        return _rest_error(404, "Not Found")

    # ---- org ---------------------------------------------------------------------------------
    def _org(self, method: str, parts: list[str], request: web.Request, body: Any) -> web.StreamResponse:
        match parts:
            case ["memberships", login]:
                return self._membership(method, login, body)
            case ["members"]:
                active = [m for m in self.members.values() if m.state == "active"]
                return self._page(request, [{"login": m.login, "id": hash(m.login) % 10**6} for m in active])
            case ["invitations"]:
                pending = [m for m in self.members.values() if m.state == "pending"]
                return self._page(request, [{"id": m.invitation_id, "login": m.login, "role": "direct_member"}
                                            for m in pending])
            case ["invitations", invitation_id]:
                for key, m in list(self.members.items()):
                    if m.state == "pending" and str(m.invitation_id) == invitation_id:
                        self._drop(key)
                        return web.Response(status=204)
                return _rest_error(404, "Not Found")
            case ["teams"] if method == "GET":
                return self._page(request, [self._team_json(t) for t in self.teams.values()])
            case ["teams"]:
                slug = re.sub(r"[^a-z0-9_-]+", "-", str(body["name"]).lower()).strip("-")
                if slug in self.teams:
                    return _rest_error(422, "Validation Failed: Name must be unique for this org")
                team = self.add_team(slug)
                team.name = str(body["name"])
                return web.json_response(self._team_json(team), status=201)
            case ["teams", slug] if slug in self.teams:
                return web.json_response(self._team_json(self.teams[slug]))
            case ["teams", slug, "members"] if slug in self.teams:
                team = self.teams[slug]
                return self._page(request, [{"login": self.members[k].login} for k, s in team.members.items()
                                            if s == "active"])
            case ["teams", slug, "memberships", login] if slug in self.teams:
                return self._team_membership(method, self.teams[slug], login)
        return _rest_error(404, "Not Found")

    def _membership(self, method: str, login: str, body: Any) -> web.StreamResponse:
        key = login.lower()
        current = self.members.get(key)
        if method == "GET":
            return web.json_response(self._membership_json(current)) if current else _rest_error(404, "Not Found")
        if method == "DELETE":
            if current is None:
                return _rest_error(404, "Not Found")
            self._drop(key)
            return web.Response(status=204)
        if key in self.nonexistent:
            return _rest_error(404, "Not Found")
        if current is None:
            state = "active" if self.auto_accept else "pending"
            current = self.members[key] = Membership(login, state, invitation_id=next(self._ids))
        current.role = str((body or {}).get("role", "member"))
        return web.json_response(self._membership_json(current))

    def _team_membership(self, method: str, team: Team, login: str) -> web.StreamResponse:
        key = login.lower()
        if method == "GET":
            state = team.members.get(key)
            if state is None:
                return _rest_error(404, "Not Found")
            return web.json_response({"state": state, "role": "member", "url": ""})
        if method == "DELETE":
            if team.members.pop(key, None) is None:
                return _rest_error(404, "Not Found")
            return web.Response(status=204)
        if key in self.nonexistent:
            return _rest_error(404, "Not Found")
        member = self.members.get(key)
        if member is None:  # an owner adding a non-member to a team invites them to the org
            member = self.members[key] = Membership(login, "pending", invitation_id=next(self._ids))
        team.members[key] = member.state
        return web.json_response({"state": member.state, "role": "member", "url": ""})

    def _drop(self, key: str) -> None:
        self.members.pop(key, None)
        for team in self.teams.values():
            team.members.pop(key, None)

    def _membership_json(self, m: Membership) -> dict[str, Any]:
        return {"state": m.state, "role": m.role, "organization_url": f"https://api.github.com/orgs/{self.org}",
                "user": {"login": m.login}}

    def _team_json(self, team: Team) -> dict[str, Any]:
        return {"id": team.id, "name": team.name, "slug": team.slug, "privacy": "closed"}

    def _page(self, request: web.Request, items: list[Any]) -> web.StreamResponse:
        per_page = int(request.query.get("per_page", "30"))
        page = int(request.query.get("page", "1"))
        chunk = items[(page - 1) * per_page: page * per_page]
        headers = {}
        if page * per_page < len(items):
            query = dict(request.query) | {"page": str(page + 1), "per_page": str(per_page)}
            headers["Link"] = f'<{self.url.rstrip("/")}{request.path}?{urlencode(query)}>; rel="next"'
        return web.json_response(chunk, headers=headers)

    # ---- EMU SCIM ------------------------------------------------------------------------
    def _scim(self, method: str, parts: list[str], request: web.Request, body: Any) -> web.StreamResponse:
        match parts:
            case ["Users"] if method == "GET":
                return self._scim_list(request, list(self.scim_users.values()))
            case ["Users"]:
                return self._scim_create_user(body)
            case ["Groups"] if method == "GET":
                groups = list(self.scim_groups.values())
                if request.query.get("excludedAttributes") == "members":
                    groups = [{k: v for k, v in g.items() if k != "members"} for g in groups]
                return self._scim_list(request, groups)
            case ["Groups"]:
                if any(g["displayName"] == body["displayName"] for g in self.scim_groups.values()):
                    return _scim_error(409, "Group already exists", "uniqueness")
                gid = str(uuid.uuid4())
                self.scim_groups[gid] = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "id": gid,
                                         "externalId": body.get("externalId"), "displayName": body["displayName"],
                                         "members": [], "meta": {"resourceType": "Group"}}
                return web.json_response(self.scim_groups[gid], status=201)
            case ["Users", uid]:
                return self._scim_user(method, uid, body)
            case ["Groups", gid]:
                return self._scim_group(method, gid, body)
        return _scim_error(404, "Not Found")

    def _scim_list(self, request: web.Request, items: list[dict[str, Any]]) -> web.StreamResponse:
        expr = request.query.get("filter")
        if expr:
            match = _FILTER.match(expr)
            if match is None:
                return _scim_error(400, f"unsupported filter {expr}", "invalidFilter")
            attr, value = match.group(1), match.group(2) if match.group(2) is not None else match.group(3)
            value = re.sub(r"\\(.)", r"\1", value)
            items = [i for i in items if str(i.get(attr, "")).lower() == value.lower()]
        start = int(request.query.get("startIndex", "1"))
        count = int(request.query.get("count", "30"))
        page = items[start - 1: start - 1 + count]
        return web.json_response({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                                  "totalResults": len(items), "startIndex": start, "itemsPerPage": len(page),
                                  "Resources": page})

    def _scim_create_user(self, body: dict[str, Any]) -> web.StreamResponse:
        for user in self.scim_users.values():
            if user["userName"].lower() == body["userName"].lower() or user["externalId"] == body["externalId"]:
                return _scim_error(409, "User already exists", "uniqueness")
        uid = str(uuid.uuid4())
        self.scim_users[uid] = {**body, "id": uid, "groups": [], "meta": {"resourceType": "User"}}
        return web.json_response(self._user_json(uid), status=201)

    def _user_json(self, uid: str) -> dict[str, Any]:
        user = dict(self.scim_users[uid])
        user["groups"] = [{"value": g["id"], "display": g["displayName"]} for g in self.scim_groups.values()
                          if any(m["value"] == uid for m in g["members"])]
        return user

    def _scim_user(self, method: str, uid: str, body: Any) -> web.StreamResponse:
        user = self.scim_users.get(uid)
        if user is None:
            return _scim_error(404, "User not found")
        if method == "GET":
            return web.json_response(self._user_json(uid))
        if method == "DELETE":
            del self.scim_users[uid]
            for group in self.scim_groups.values():
                group["members"] = [m for m in group["members"] if m["value"] != uid]
            return web.Response(status=204)
        if method == "PUT":
            self.scim_users[uid] = {**body, "id": uid, "meta": user["meta"]}
            return web.json_response(self._user_json(uid))
        for op in body["Operations"]:
            path = op.get("path")
            if path and "[" in path:
                return _scim_error(400, "Complex SCIM path selectors that include filters are not supported",
                                   "invalidPath")
            if op["op"] == "remove":
                user.pop(path, None)
                continue
            changes = op["value"] if path is None else {path: op["value"]}
            for key, value in changes.items():
                if "." in key:
                    head, tail = key.split(".", 1)
                    user.setdefault(head, {})[tail] = value
                else:
                    user[key] = value
        return web.json_response(self._user_json(uid))

    def _scim_group(self, method: str, gid: str, body: Any) -> web.StreamResponse:
        group = self.scim_groups.get(gid)
        if group is None:
            return _scim_error(404, "Group not found")
        if method == "GET":
            return web.json_response(group)
        if method == "DELETE":
            del self.scim_groups[gid]
            return web.Response(status=204)
        for op in body["Operations"]:
            path = op.get("path")
            if path != "members":
                if path and "[" in path:
                    return _scim_error(400, "Complex SCIM path selectors that include filters are not supported",
                                       "invalidPath")
                if path == "displayName":
                    group["displayName"] = op["value"]
                continue
            values = op.get("value")
            if not isinstance(values, list):
                return _scim_error(400, "members operations need a value list", "invalidValue")
            ids = {v["value"] for v in values}
            if op["op"] == "remove":
                group["members"] = [m for m in group["members"] if m["value"] not in ids]
            else:
                unknown = ids - self.scim_users.keys()
                if unknown:
                    return _scim_error(400, f"unknown member {sorted(unknown)[0]}", "invalidValue")
                have = {m["value"] for m in group["members"]}
                group["members"] += [{"value": i} for i in sorted(ids - have)]
        return web.json_response(group)

    # ---- lifecycle ---------------------------------------------------------------------------
    async def _start(self, port: int) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    def start(self) -> GithubFake:
        description()  # build the validator before serving (once per session)
        port = free_port()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start(port))
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> GithubFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
