"""The signed-in web layer of `jml serve`: the status page, the HR view, the JSON API and
the OpenAPI document. The service mounts it with `add_routes(app, ctx)`.

ROUTES is the one table of what each route needs (jml.web.roles); the role tests walk it.
"""

from __future__ import annotations

from aiohttp import web

from jml.context import ServiceContext
from jml.web import access, access_pages, api, html, login, people, revert_pages, reviews, status_page
from jml.web.auth import Gate
from jml.web.oidc import OidcClient
from jml.web.roles import APPROVE, AUDIT, OFFBOARD, OPERATE, PEOPLE, REVIEW, VIEW
from jml.web.state import WEB, PageHandler, WebState, form, page
from jml.web.state import api as api_auth

__all__ = ["ROUTES", "add_routes"]

# (method, path, kind, handler, right): kind is page (HTML GET), form (HTML POST) or api (JSON).
ROUTES: list[tuple[str, str, str, PageHandler, str]] = [
    ("GET", "/", "page", status_page.status_page, VIEW),
    ("GET", "/people", "page", people.search, PEOPLE),
    ("GET", "/people/{employee_id}", "page", people.person, PEOPLE),
    ("POST", "/people/{employee_id}/offboard", "form", people.offboard, OFFBOARD),  # type: ignore[list-item]
    ("POST", "/plans/{plan_id}/approve", "form", api.approve_form, APPROVE),  # type: ignore[list-item]
    ("POST", "/plans/{plan_id}/discard", "form", api.discard_form, OPERATE),  # type: ignore[list-item]
    ("GET", "/plans/{plan_id}/revert", "page", revert_pages.revert_page, OPERATE),
    ("POST", "/plans/{plan_id}/revert", "form", revert_pages.revert_form, OPERATE),  # type: ignore[list-item]
    ("POST", "/retry", "form", api.retry_form, OPERATE),  # type: ignore[list-item]
    ("POST", "/operations/{operation_id}/discard", "form", api.discard_operation_form,  # type: ignore[list-item]
     OPERATE),
    ("POST", "/connectors/{connector}/pause", "form", api.pause_form, OPERATE),  # type: ignore[list-item]
    ("POST", "/connectors/{connector}/resume", "form", api.pause_form, OPERATE),  # type: ignore[list-item]
    ("GET", "/audit", "page", api.audit_page, AUDIT),
    ("GET", "/api/v1/status", "api", api.status, VIEW),
    ("POST", "/api/v1/offboard", "api", api.offboard, OFFBOARD),
    ("POST", "/api/v1/plans/{plan_id}/approve", "api", api.approve, APPROVE),
    ("POST", "/api/v1/plans/{plan_id}/discard", "api", api.discard, OPERATE),
    ("POST", "/api/v1/plans/{plan_id}/revert", "api", revert_pages.revert_api, OPERATE),
    ("POST", "/api/v1/retry", "api", api.retry, OPERATE),
    ("POST", "/api/v1/connectors/{connector}/pause", "api", api.pause, OPERATE),
    ("POST", "/api/v1/connectors/{connector}/resume", "api", api.resume, OPERATE),
    ("GET", "/api/v1/people/{employee_id}/progress", "api", api.progress, VIEW),
    ("GET", "/api/v1/audit", "api", api.audit_export, AUDIT),
    ("GET", "/api/v1/reports/access", "api", api.access_report, AUDIT),
    ("GET", "/api/v1/reports/sla", "api", api.sla_report, AUDIT),
    # Access reviews (issue 18): each reviewer sees and decides their own items (jml/web/reviews.py).
    ("GET", "/reviews", "page", reviews.list_page, REVIEW),
    ("GET", "/reviews/{campaign_id}", "page", reviews.show_page, REVIEW),
    ("POST", "/reviews/{campaign_id}/decide", "form", reviews.decide_form, REVIEW),  # type: ignore[list-item]
    ("GET", "/api/v1/reviews", "api", reviews.list_api, REVIEW),
    ("POST", "/api/v1/reviews", "api", reviews.start_api, AUDIT),
    ("GET", "/api/v1/reviews/{campaign_id}", "api", reviews.show_api, REVIEW),
    ("POST", "/api/v1/reviews/{campaign_id}/decisions", "api", reviews.decide_api, REVIEW),
    ("GET", "/api/v1/reviews/{campaign_id}/export", "api", reviews.export_api, AUDIT),
    # Access requests (issue 18): every signed-in person; the approval policy decides (jml/web/access.py).
    ("GET", "/api/v1/catalogue", "api", access.get_catalogue, VIEW),
    ("GET", "/api/v1/access/requests", "api", access.list_requests, VIEW),
    ("POST", "/api/v1/access/requests", "api", access.create_request, VIEW),
    ("POST", "/api/v1/access/requests/{request_id}/approve", "api", access.approve, VIEW),
    ("POST", "/api/v1/access/requests/{request_id}/deny", "api", access.deny, VIEW),
    ("POST", "/api/v1/access/requests/{request_id}/revoke", "api", access.revoke, VIEW),
    ("POST", "/api/v1/access/jit", "api", access.jit, VIEW),
    ("GET", "/access", "page", access_pages.access_page, VIEW),
    ("POST", "/access/request", "form", access_pages.request_form, VIEW),  # type: ignore[list-item]
    ("POST", "/access/{request_id}/approve", "form", access_pages.approve_form, VIEW),  # type: ignore[list-item]
    ("POST", "/access/{request_id}/deny", "form", access_pages.deny_form, VIEW),  # type: ignore[list-item]
    ("POST", "/access/{request_id}/revoke", "form", access_pages.revoke_form, VIEW),  # type: ignore[list-item]
]


def _audit(ctx: ServiceContext) -> object:
    def append(kind: str, data: dict[str, object], actor: str) -> None:
        ctx.rt.audit.append(kind, data, now=ctx.rt.clock(), actor=actor)

    return append


def add_routes(app: web.Application, ctx: ServiceContext) -> None:
    """Register the pages, the API and /api/openapi.json on `app` (before it starts)."""
    cfg = ctx.rt.config
    html.set_display_timezone(cfg.display_timezone)
    oidc = None
    if cfg.server.oidc is not None:
        base = cfg.server.public_url or "http://" + cfg.server.listen
        oidc = OidcClient(cfg.server.oidc, base.rstrip("/") + "/auth/callback")
    gate = Gate(cfg, identities=ctx.rt.store.identities, audit=_audit(ctx),  # type: ignore[arg-type]
                clock=ctx.rt.clock)
    st = WebState(ctx=ctx, gate=gate, oidc=oidc)
    app[WEB] = st

    async def close_http(_app: web.Application) -> None:
        if st.http is not None:
            await st.http.close()

    app.on_cleanup.append(close_http)
    app.router.add_get("/login", login.login_form)
    app.router.add_post("/login", login.login)
    app.router.add_get("/auth/callback", login.callback)
    app.router.add_post("/logout", login.logout)
    wrap = {"page": page, "form": form, "api": api_auth}
    for method, path, kind, handler, right in ROUTES:
        app.router.add_route(method, path, wrap[kind](handler, right))  # type: ignore[operator]
    app.router.add_get("/api/openapi.json", api.openapi)
    app.router.add_get("/static/style.css", api.static_file)
    app.router.add_get("/static/app.js", api.static_file)
