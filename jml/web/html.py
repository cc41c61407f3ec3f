"""Small HTML helpers: every value goes through `h` (html.escape) on its way into a page.

Pages are string.Template files in templates/ filled with pre-escaped fragments; no JS
framework, no build step. The Content-Security-Policy allows only this site's own script and
style files, so nothing here uses inline scripts or style attributes.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable
from functools import cache
from importlib import resources
from string import Template
from typing import Any

from aiohttp import web

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def h(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


@cache
def template(name: str) -> Template:
    return Template(resources.files("jml.web").joinpath("templates", name).read_text(encoding="utf-8"))


@cache
def static(name: str) -> bytes:
    return resources.files("jml.web").joinpath("static", name).read_bytes()


_DISPLAY_TZ: list[dt.tzinfo] = [dt.UTC]


def set_display_timezone(tz: dt.tzinfo) -> None:
    """The one zone every page shows times in (server.timezone, default HR's): add_routes sets it."""
    _DISPLAY_TZ[0] = tz


def when(t: dt.datetime | str | None) -> str:
    """A timestamp as a person reads it, in the display zone: 2026-11-23 15:05:09 CET."""
    if t is None:
        return "—"
    if isinstance(t, str):
        try:
            t = dt.datetime.fromisoformat(t)
        except ValueError:
            return h(t)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(_DISPLAY_TZ[0]).strftime("%Y-%m-%d %H:%M:%S %Z")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(abs(seconds))
    d, rem = divmod(s, 86400)
    hh, rem = divmod(rem, 3600)
    mm, ss = divmod(rem, 60)
    if d:
        text = f"{d}d {hh}h"
    elif hh:
        text = f"{hh}h {mm:02d}m"
    elif mm:
        text = f"{mm}m {ss:02d}s"
    else:
        text = f"{ss}s"
    return ("-" if seconds < 0 else "") + text


def countdown(deadline: dt.datetime | str | None, state: str, now: dt.datetime) -> str:
    """A live countdown to an SLA deadline; app.js ticks it every second."""
    if isinstance(deadline, str):
        try:
            deadline = dt.datetime.fromisoformat(deadline)
        except ValueError:
            deadline = None
    if state == "verified":
        text, cls = "verified", "ok"
    elif deadline is None:
        text, cls = "no deadline", "muted"
    elif state == "breached" or now > deadline:
        text, cls = "BREACHED", "breach"
    else:
        text, cls = duration((deadline - now).total_seconds()) + " left", "running"
    iso = deadline.isoformat() if deadline else ""
    return f'<span class="countdown {cls}" data-deadline="{h(iso)}" data-state="{h(state)}">{h(text)}</span>'


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], *, cls: str = "", empty: str = "none",
          attrs: str = "") -> str:
    """Headers are plain text; cells are HTML already escaped by the caller."""
    head = "".join(f"<th>{h(x)}</th>" for x in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    if not body:
        return f'<p class="empty">{h(empty)}</p>'
    return f'<table class="{h(cls)}"{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def csrf_input(token: str) -> str:
    return f'<input type="hidden" name="csrf_token" value="{h(token)}">'


def badge(text: str, kind: str = "") -> str:
    return f'<span class="badge {h(kind)}">{h(text)}</span>'


def secure_headers(resp: web.StreamResponse, *, private: bool = True) -> web.StreamResponse:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "same-origin"
    resp.headers["X-Frame-Options"] = "DENY"
    if private:
        resp.headers["Cache-Control"] = "no-store"
    return resp


def page(title: str, body: str, *, now: dt.datetime, csrf: str = "", active: str = "", signed_in: bool = True,
         refresh: int = 0, status: int = 200) -> web.Response:
    links = [("/", "Status", "status"), ("/people", "People", "people")]
    from jml.web.auth import CURRENT, VIEW_RIGHTS

    who = CURRENT.get() if signed_in else None
    if who is not None:
        links += [(u, t, k) for u, t, k, right in VIEW_RIGHTS if who.can(right)]
    # Nothing to navigate to for someone not signed in (a refused sign-in gets a plain page).
    nav = "".join(f'<a href="{u}" class="{"active" if k == active else ""}">{t}</a>' for u, t, k in links
                  if who is not None and (k != "people" or who.can("people")))
    account = ""
    if who is not None:
        account = f'<span class="whoami" id="signed-in-as">Signed in as {h(who.label)}</span>'
    if signed_in and csrf:
        account += (f'<form method="post" action="/logout" class="logout">{csrf_input(csrf)}'
                    '<button type="submit" class="link">Sign out</button></form>')
    text = template("base.html").substitute(
        title=h(title), csrf=h(csrf), now=h(now.isoformat()), now_text=h(when(now)), tz=h(str(_DISPLAY_TZ[0])),
        nav=nav, account=account,
        body=body, refresh=str(int(refresh)))
    resp = web.Response(text=text, content_type="text/html", charset="utf-8", status=status)
    secure_headers(resp)
    return resp


def message_page(title: str, message: str, *, now: dt.datetime, csrf: str = "", status: int = 400,
                 back: str = "/") -> web.Response:
    body = (f'<section class="card narrow"><h1>{h(title)}</h1><p>{h(message)}</p>'
            f'<p><a href="{h(back)}">Back</a></p></section>')
    return page(title, body, now=now, csrf=csrf, status=status, signed_in=True)
