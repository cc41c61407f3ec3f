"""The signed-in web layer of `jml serve`: the status page, the HR view, the JSON API and
the OpenAPI document. The service mounts it with `add_routes(app, ctx)`.
"""

from __future__ import annotations

from aiohttp import web

from jml.context import ServiceContext
from jml.web import api, login, people, status_page
from jml.web.auth import Gate
from jml.web.state import WEB, WebState, form, page
from jml.web.state import api as api_auth

__all__ = ["add_routes"]


def add_routes(app: web.Application, ctx: ServiceContext) -> None:
    """Register the pages, the API and /api/openapi.json on `app` (before it starts)."""
    app[WEB] = WebState(ctx=ctx, gate=Gate(ctx.rt.config))
    app.router.add_get("/", page(status_page.status_page))
    app.router.add_get("/login", login.login_form)
    app.router.add_post("/login", login.login)
    app.router.add_post("/logout", login.logout)
    app.router.add_get("/people", page(people.search))
    app.router.add_get("/people/{employee_id}", page(people.person))
    app.router.add_post("/people/{employee_id}/offboard", form(people.offboard))
    app.router.add_post("/plans/{plan_id}/approve", form(api.approve_form))
    app.router.add_get("/api/v1/status", api_auth(api.status))
    app.router.add_post("/api/v1/offboard", api_auth(api.offboard))
    app.router.add_post("/api/v1/plans/{plan_id}/approve", api_auth(api.approve))
    app.router.add_get("/api/v1/people/{employee_id}/progress", api_auth(api.progress))
    app.router.add_get("/api/openapi.json", api.openapi)
    app.router.add_get("/static/style.css", api.static_file)
    app.router.add_get("/static/app.js", api.static_file)
