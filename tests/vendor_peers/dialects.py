"""SCIM dialects real apps speak, one row each, in front of the real scim2-server.

Each quirk is what an app jml met answered (issue 13) or what a vendor documents
(shared/reference/SCIM-DIALECTS.md); the proxy imposes exactly that deviation and forwards
everything else, so scim2-server stays the source of truth. Used by tests/integration/test_interop.py.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from aiohttp import web

from tests.vendor_peers.proxy import VendorProxy

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
# The attributes an app with a small user model keeps; anything else it refuses (unknown_rejected).
SMALL_MODEL = {"schemas", "userName", "name", "displayName", "emails", "active", "externalId", "meta", "id"}

QUIRKS: dict[str, str] = {
    "patch_501": "PATCH implemented for `active` only: any other path answers 501",
    "filter_ignored": "filter ignored: every query answers every resource",
    "count_500_html": "any ?count= answers 500 with an HTML page labelled application/scim+json",
    "name_formatted_required": "a user without name.formatted is refused (400)",
    "email_type_rejected": "emails[].type / primary refused (400)",
    "unknown_rejected": "attributes outside a small model refused (400 naming the attribute)",
    "external_id_dropped": "externalId accepted and silently dropped",
    "remove_by_replace_only": "PATCH remove of a member answers 200 and changes nothing; replace works",
    "members_by_username": "group members read back by userName instead of id",
    "member_ref_required": "members without $ref refused (400)",
    "duplicate_500": "a duplicate userName answers 500 'UNIQUE constraint failed'",
    "page_cap": "pages capped at 5 items whatever count asks",
    "no_etag": "no ETags: meta.version and the ETag header are removed",
}


def scim_error(status: int, detail: str, scim_type: str | None = None) -> web.Response:
    body: dict[str, Any] = {"schemas": [ERROR], "status": str(status), "detail": detail}
    if scim_type:
        body["scimType"] = scim_type
    return web.Response(status=status, text=json.dumps(body), content_type="application/scim+json")


class DialectProxy(VendorProxy):
    def __init__(self, upstream: str, quirk: str) -> None:
        assert quirk in QUIRKS, quirk
        super().__init__(upstream)
        self.quirk = quirk

    # ---- requests ------------------------------------------------------------------
    async def check(self, request: web.Request, body: Any) -> web.StreamResponse | None:
        q, m = self.quirk, request.method
        users = "/Users" in request.path
        groups = "/Groups" in request.path
        if q == "count_500_html" and "count" in request.query:
            return web.Response(status=500, text="<html><head><title>Error</title></head><body><h1>Internal "
                                "Server Error</h1><p>java.lang.NumberFormatException</p></body></html>",
                                content_type="application/scim+json")
        if q == "patch_501" and users and m == "PATCH":
            paths = {str(op.get("path") or "") for op in (body or {}).get("Operations", [])}
            if paths - {"active"}:
                return scim_error(501, "Only 'active' can be patched on this server")
        if users and m in ("POST", "PUT") and isinstance(body, dict):
            if q == "name_formatted_required" and not (body.get("name") or {}).get("formatted"):
                return scim_error(400, "name.formatted is required", "invalidValue")
            if q == "email_type_rejected" and any("type" in e or "primary" in e for e in body.get("emails") or []):
                return scim_error(400, "Unsupported sub-attribute: emails.type", "invalidValue")
            if q == "unknown_rejected":
                extra = sorted(k for k in body if k not in SMALL_MODEL)
                if extra:
                    return scim_error(400, f"Unknown attribute: {extra[0]}", "invalidSyntax")
        if users and m == "PATCH" and q == "unknown_rejected":
            for op in (body or {}).get("Operations", []):
                head = str(op.get("path") or "").split("[")[0].split(".")[0]
                if head and head not in SMALL_MODEL and not head.startswith("name"):
                    return scim_error(400, f"Unknown attribute: {head}", "invalidPath")
        if groups and m == "PATCH" and q == "member_ref_required":
            for op in (body or {}).get("Operations", []):
                if op.get("op", "").lower() == "add" and any("$ref" not in v for v in op.get("value") or []
                                                              if isinstance(v, dict)):
                    return scim_error(400, "members[].$ref is required", "invalidValue")
        if groups and m == "PATCH" and q == "remove_by_replace_only" and \
                any(str(op.get("op", "")).lower() == "remove" for op in (body or {}).get("Operations", [])):
            return web.Response(status=204)
        return None

    async def rewrite(self, method: str, path: str, query: str, body: Any) -> tuple[str, str, str, Any]:
        q = self.quirk
        params = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if q == "filter_ignored":
            params = [(k, v) for k, v in params if k != "filter"]
        if q == "page_cap" and method == "GET":
            params = [(k, str(min(int(v), 5)) if k == "count" and v.isdigit() else v) for k, v in params]
            if not any(k == "count" for k, _ in params) and path.rstrip("/").endswith(("/Users", "/Groups")):
                params.append(("count", "5"))
        if q == "external_id_dropped" and isinstance(body, dict):
            body = {k: v for k, v in body.items() if k != "externalId"}
            if "Operations" in body:
                body["Operations"] = [op for op in body["Operations"] if op.get("path") != "externalId"]
                for op in body["Operations"]:
                    if isinstance(op.get("value"), dict):
                        op["value"] = {k: v for k, v in op["value"].items() if k != "externalId"}
        return method, path, urllib.parse.urlencode(params), body

    # ---- answers -------------------------------------------------------------------
    async def transform_response(self, method: str, path: str, status: int, body: Any) -> tuple[int, Any]:
        q = self.quirk
        if q == "duplicate_500" and status == 409:
            return 500, {"schemas": [ERROR], "status": "500",
                         "detail": "SQLITE_CONSTRAINT: UNIQUE constraint failed: users.userName"}
        if q == "no_etag" and isinstance(body, dict):
            for r in [body, *(body.get("Resources") or [])]:
                if isinstance(r, dict) and isinstance(r.get("meta"), dict):
                    r["meta"].pop("version", None)
            if path.endswith("ServiceProviderConfig"):
                body["etag"] = {"supported": False}
        if q == "external_id_dropped" and isinstance(body, dict):
            for r in [body, *(body.get("Resources") or [])]:
                if isinstance(r, dict):
                    r.pop("externalId", None)
        if q == "members_by_username" and isinstance(body, dict) and "/Groups" in path:
            names = await self._user_names()
            for r in [body, *(body.get("Resources") or [])]:
                for m in r.get("members") or [] if isinstance(r, dict) else []:
                    m["value"] = names.get(m.get("value"), m.get("value"))
        if q == "patch_501" and path.endswith("ServiceProviderConfig") and isinstance(body, dict):
            body["patch"] = {"supported": True}  # it says so, and means `active` only
        return status, body

    async def _user_names(self) -> dict[str, str]:
        assert self._session is not None
        async with self._session.get(self.upstream + "/v2/Users", params={"count": "1000"},
                                     headers={"Authorization": self.auth}) as r:
            data = await r.json(content_type=None)
        return {u["id"]: u["userName"] for u in data.get("Resources", [])}

    auth = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.auth = request.headers.get("Authorization", self.auth)
        resp = await super()._handle(request)
        if self.quirk == "no_etag" and isinstance(resp, web.Response):
            resp.headers.pop("ETag", None)
        return resp


__all__ = ["QUIRKS", "DialectProxy"]
