"""GitHub EMU mode: the enterprise SCIM API at {api_url}/scim/v2/enterprises/{enterprise}/,
as a dialect of the one SCIM connector (connectors/scim), spoken over GitHub's wire.

GitHub's dialect, from its REST description (ghec.json) and docs:
  * bodies are `application/json` (not application/scim+json); a User needs schemas,
    externalId, userName, active, displayName and emails; no discovery endpoints
    (/ServiceProviderConfig, /Schemas), so the capabilities are the documented ones.
  * `active:false` suspends (reversible, handle and e-mail obfuscated); DELETE is
    irreversible, so it is sent only for a planner `delete` (after `delete_after`).
  * PATCH paths with filters ("emails[type eq …]") are not supported: membership changes
    are `members` with a value list, never `members[value eq "…"]`.
  * groups carry an externalId; grants `group:NAME` are resolved by displayName.
  * over 1,000 user provisions per hour risks rate limiting: `provisions_per_hour`
    defaults to 1,000 here, applied to POST /Users only.
The wire is GitHub's (`_http`: its headers, content type, pacing and rate-limit answers),
under the SCIM transport's interface: the SCIM logic is the generic connector's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from connectors.base import CheckFinding, ConnectorContext
from connectors.github._http import GithubHttp
from connectors.github.scopes import check_scopes
from connectors.scim import ScimConnector
from connectors.scim import protocol as p
from connectors.scim.transport import ScimResponse, ScimTransport
from jml.config import GithubConnectorConfig
from jml.errors import ConflictError, NotFoundError, RetryableError

EMU_PROVISIONS_PER_HOUR = 1000
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"


class GithubScimTransport(ScimTransport):
    """SCIM requests over GitHub's wire; 404 / 409 / 412 mapped to the SCIM meanings."""

    def __init__(self, name: str, http: GithubHttp, root: str) -> None:
        super().__init__(name, http.base + root + "/", lambda: None, timeout=http.cfg.timeout.total_seconds(),
                         bucket=http.writes, classify=lambda *_: RetryableError(name, "unused"))
        self.http, self.root = http, root

    async def open(self) -> None:
        await self.http.open()

    async def close(self) -> None:
        await self.http.close()

    async def send(self, req: p.ScimRequest) -> ScimResponse:
        if req.method == "POST" and req.path == "Users":
            await self.http.provision()
        what = f"{req.method} {req.path.split('/', 1)[0]}"
        reply = await self.http.request(req.method, f"{self.root}/{req.path}", body=req.payload,
                                        params=dict(req.params) or None, ok=frozenset({404, 409, 412}), what=what)
        message = p.error_message(reply.body)
        if reply.status == 404:
            raise NotFoundError(self.connector, f"{what}: not found", status=404, vendor_message=message)
        if reply.status == 409:
            raise ConflictError(self.connector, f"{what}: already exists", status=409, vendor_message=message)
        if reply.status == 412:
            raise RetryableError(self.connector, f"{what}: changed concurrently", status=412,
                                 vendor_message=message, reason="conflict")
        return ScimResponse(reply.status, reply.body, reply.headers.get("ETag"))


class GithubEmuConnector(ScimConnector):
    # GitHub documents these; none of them needs to be learnt by a refused request.
    dialect_profile = {
        "remove_member": "value", "filter_or": False, "patch_attributes": False, "excluded": False,
        "filter:members": False, "undeclared": ["country", "employment_type", "location", "title"],
    }

    def __init__(self, name: str, cfg: GithubConnectorConfig, ctx: ConnectorContext) -> None:
        if not cfg.enterprise:
            raise ValueError(f"connectors.{name}.enterprise is required in emu mode")
        super().__init__(name, cfg, ctx)
        self.enterprise_slug = cfg.enterprise
        self.http = GithubHttp(name, cfg, ctx, provisions_per_hour=cfg.provisions_per_hour or EMU_PROVISIONS_PER_HOUR)
        self.bucket = self.http.writes
        self.transport = GithubScimTransport(name, self.http, f"/scim/v2/enterprises/{quote(cfg.enterprise, safe='')}")

    @classmethod
    def base_url(cls, cfg: Any) -> str:
        return f"{str(cfg.api_url).rstrip('/')}/scim/v2/enterprises/{quote(str(cfg.enterprise), safe='')}/"

    @property
    def write_rate(self) -> float | None:
        """GitHub's pace: one write at a time, a second apart (read by the SLA prediction)."""
        return self.http.pace.rate

    async def capabilities(self) -> p.Capabilities:
        if self.caps is None:  # GitHub serves no discovery endpoints: its documented capabilities
            self.caps = p.Capabilities(patch=True, etag=False, filter=True, enterprise=False)
            self.dialect.update(patch=True, etag=False, filter=True)
        return self.caps

    def user_payload(self, employee_id: str, username: str, active: bool, attributes: Mapping[str, str],
                     manager_ref: str | None) -> Any:
        # GitHub requires emails: the username is the work e-mail when HR gives none.
        if not attributes.get("email") and "@" in username:
            attributes = {**attributes, "email": username}
        return super().user_payload(employee_id, username, active, attributes, manager_ref)

    def group_payload(self, display_name: str) -> dict[str, Any]:
        return {"schemas": [GROUP_SCHEMA], "externalId": display_name, "displayName": display_name}

    async def check(self) -> list[CheckFinding]:
        return await check_scopes(self.http, required="scim:enterprise", enterprise=self.enterprise_slug)
