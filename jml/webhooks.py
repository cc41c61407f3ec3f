"""Webhook intake: Okta event hooks at /webhooks/okta, signed HR events at /webhooks/hr.

Each request is authenticated by its own secret, validated whole (size, content type,
schema), stored in the webhook inbox (table webhook_event, deduplicated by event id)
and answered at once; jml.events processes the inbox after the answer (Okta gives us 3 s).
A request that fails any check changes nothing and is answered 4xx, never 5xx (Okta
retries a 5xx; a body we cannot read will not get better the second time).

Okta (https://developer.okta.com/docs/concepts/event-hooks/): no HMAC, the
admin-chosen Authorization value is sent on *every* request, the one-time verification
GET included, so the GET is authenticated too. Compared whole, in constant time.

HR: `X-JML-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>." + raw body>`; several v1=
during key rotation; `t` within `sources.webhook.tolerance` of our clock (replay window).

The parsing and checking functions are pure (bytes and values in, values or BadRequest
out) and tested on their own; the aiohttp handlers only wire them to the store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from jml import metrics
from jml.config import Config, resolve_secret
from jml.context import ServiceContext
from jml.errors import BadRequest, ConfigError
from jml.event_hr import map_person
from jml.store.db import DatabaseError
from jml.store.inbox import Inbox

log = logging.getLogger("jml.webhooks")

OKTA_PATH = "/webhooks/okta"
HR_PATH = "/webhooks/hr"
SIGNATURE_HEADER = "X-JML-Signature"
MAX_ID = 200  # characters of an event id
MAX_SIGNATURE_HEADER = 4096
HR_TYPES = ("hire", "change", "termination")


class TooLarge(BadRequest):
    pass


@dataclass(frozen=True, slots=True)
class OktaEvent:
    uuid: str
    event_type: str
    published: dt.datetime
    users: tuple[str, ...]  # alternateId of every target of type User
    actor: str
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HrEvent:
    id: str
    type: str
    occurred_at: dt.datetime
    person: Mapping[str, Any]


# ---- pure checks -----------------------------------------------------------------------
def authorized(presented: str | None, secret: str | None) -> bool:
    """The Authorization value, compared whole in constant time. No secret: nobody."""
    if not secret or presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), secret.encode("utf-8"))


# Event times jml accepts (issue 14: an HR event at 9999-12-31 was stored, then overflowed
# while processed — its termination at 23:59 local is in year 10000 west of UTC — and the
# inbox stalled behind it). Nothing happened before the unix epoch, and an event reports
# something that happened: HR may date one ahead (a termination entered in advance), the
# IdP only by clock skew.
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
HR_MAX_AHEAD = dt.timedelta(days=366)
OKTA_MAX_AHEAD = dt.timedelta(days=1)


def parse_time(value: Any, what: str, default_tz: dt.tzinfo | None = dt.UTC, *, now: dt.datetime | None = None,
               max_ahead: dt.timedelta | None = None) -> dt.datetime:
    """An ISO 8601 instant (aware, UTC); a time without an offset is read in `default_tz`,
    or refused when `default_tz` is None. With `max_ahead`, the time must lie between
    EARLIEST and `now` + `max_ahead`."""
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise BadRequest(f"{what}: expected an ISO 8601 time")
    try:
        t = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadRequest(f"{what}: not an ISO 8601 time: {value[:64]!r}") from None
    if t.tzinfo is None:
        if default_tz is None:
            raise BadRequest(f"{what}: expected a time with an offset (Z or ±hh:mm): {value[:64]!r}")
        t = t.replace(tzinfo=default_tz)
    try:
        t = t.astimezone(dt.UTC)
    except OverflowError:
        raise BadRequest(f"{what}: out of range: {value[:64]!r}") from None
    if max_ahead is not None:
        now = now or dt.datetime.now(dt.UTC)
        if t < EARLIEST or t - now > max_ahead:
            raise BadRequest(f"{what}: out of range: {value[:64]!r} (expected from {EARLIEST:%Y-%m-%d} "
                             f"to {max_ahead.days} day(s) from now)")
    return t


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BadRequest("the body is not UTF-8 JSON") from None


def _event_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID:
        raise BadRequest(f"{what}: expected a non-empty string of at most {MAX_ID} characters")
    return value


def parse_okta(body: bytes, now: dt.datetime | None = None) -> list[OktaEvent]:
    """An Okta event hook delivery -> its events, sorted by `published` (delivery order
    is not event order: Okta's event hooks docs). `published` must carry its offset (Okta's always do)
    and lie between EARLIEST and a day from `now`."""
    doc = _json(body)
    if not isinstance(doc, dict):
        raise BadRequest("expected a JSON object")
    data = doc.get("data")
    events = data.get("events") if isinstance(data, dict) else None
    if not isinstance(events, list):
        raise BadRequest("data.events: expected a list")
    out: list[OktaEvent] = []
    for i, ev in enumerate(events):
        where = f"data.events[{i}]"
        if not isinstance(ev, dict):
            raise BadRequest(f"{where}: expected an object")
        uuid = _event_id(ev.get("uuid"), f"{where}.uuid")
        etype = ev.get("eventType")
        if not isinstance(etype, str) or not etype or len(etype) > 200:
            raise BadRequest(f"{where}.eventType: expected a string")
        published = parse_time(ev.get("published"), f"{where}.published", None, now=now, max_ahead=OKTA_MAX_AHEAD)
        targets = ev.get("target") if ev.get("target") is not None else []
        if not isinstance(targets, list):
            raise BadRequest(f"{where}.target: expected a list")
        users: list[str] = []
        for j, t in enumerate(targets):
            if not isinstance(t, dict):
                raise BadRequest(f"{where}.target[{j}]: expected an object")
            alt = t.get("alternateId")
            if t.get("type") == "User" and isinstance(alt, str) and alt:
                users.append(alt)
        actor = ev.get("actor")
        actor_id = actor.get("alternateId") if isinstance(actor, dict) else None
        out.append(OktaEvent(uuid, etype, published, tuple(users), actor_id if isinstance(actor_id, str) else "",
                             ev))
    out.sort(key=lambda e: e.published)
    return out


def parse_signature(header: str | None) -> tuple[int, list[str]]:
    """`t=<unix>,v1=<hex>[,v1=<hex>…]` -> (t, signatures). Other schemes (v0=…) are ignored."""
    if not header or len(header) > MAX_SIGNATURE_HEADER:
        raise BadRequest(f"missing or oversized {SIGNATURE_HEADER} header")
    t: int | None = None
    sigs: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise BadRequest(f"{SIGNATURE_HEADER}: expected key=value pairs")
        key, value = key.strip(), value.strip()
        if key == "t":
            if t is not None or not value.isascii() or not value.isdigit() or len(value) > 12:
                raise BadRequest(f"{SIGNATURE_HEADER}: t must be one unix time in seconds")
            t = int(value)
        elif key == "v1":
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise BadRequest(f"{SIGNATURE_HEADER}: v1 must be 64 lowercase hex digits")
            sigs.append(value)
    if t is None or not sigs:
        raise BadRequest(f"{SIGNATURE_HEADER}: needs t= and at least one v1=")
    return t, sigs


def sign(secret: str, t: int, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def check_signature(header: str | None, body: bytes, secret: str | None, now: float, tolerance: float) -> str | None:
    """None if the request is signed with `secret` within the window, else why not."""
    if not secret:
        return "no secret configured"
    try:
        t, sigs = parse_signature(header)
    except BadRequest as e:
        return str(e)
    if not math.isfinite(now) or abs(now - t) > tolerance:
        return "signature timestamp outside the allowed window"
    expected = sign(secret, t, body).encode()
    # Compare every candidate (no early exit on a match), so timing says nothing about which.
    ok = False
    for s in sigs:
        ok |= hmac.compare_digest(expected, s.encode())
    return None if ok else "signature does not match"


def parse_hr(body: bytes, default_tz: dt.tzinfo = dt.UTC, now: dt.datetime | None = None) -> HrEvent:
    """A signed HR event's body; `occurred_at` between EARLIEST and HR_MAX_AHEAD from `now`
    (without an offset it is read in `default_tz`, HR's zone)."""
    doc = _json(body)
    if not isinstance(doc, dict):
        raise BadRequest("expected a JSON object")
    eid = _event_id(doc.get("id"), "id")
    etype = doc.get("type")
    if etype not in HR_TYPES:
        raise BadRequest(f"type: expected one of {', '.join(HR_TYPES)}")
    occurred = parse_time(doc.get("occurred_at"), "occurred_at", default_tz, now=now, max_ahead=HR_MAX_AHEAD)
    person = doc.get("person")
    if not isinstance(person, dict) or not person or len(person) > 500:
        raise BadRequest("person: expected an object of export columns")
    for k, v in person.items():
        if not isinstance(v, str | int | float | bool) and v is not None:
            raise BadRequest(f"person.{str(k)[:64]}: expected text, a number or null")
    return HrEvent(eid, str(etype), occurred, person)


# ---- HTTP ------------------------------------------------------------------------------
def _secret(section: Any, path: str) -> str | None:
    return resolve_secret(section, "secret", path, required=False) if section is not None else None


def _problem(source: str, outcome: str, status: int, message: str) -> web.Response:
    metrics.webhook_requests.labels(source, outcome).inc()
    return web.json_response({"error": message}, status=status)


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"the body is larger than {limit} bytes")
    buf = bytearray()
    async for chunk in request.content.iter_chunked(65536):
        buf += chunk
        if len(buf) > limit:
            raise TooLarge(f"the body is larger than {limit} bytes")
    return bytes(buf)


def _json_type(request: web.Request) -> bool:
    return request.content_type in ("application/json", "application/cloudevents+json")


def add_routes(app: web.Application, ctx: ServiceContext) -> None:
    """GET|POST /webhooks/okta and POST /webhooks/hr on `app`."""
    cfg: Config = ctx.rt.config
    limit = cfg.server.max_body_bytes

    def okta_refusal(request: web.Request) -> web.Response | None:
        """Okta sends the configured Authorization value on every request, the verification
        GET included: refuse (404/503/401) unless it is there and right."""
        if cfg.sources.okta is None:
            return _problem("okta", "not_configured", 404, "Okta event hooks are not configured")
        try:
            secret = _secret(cfg.sources.okta, "sources.okta")
        except ConfigError as e:
            log.error("okta webhook secret unavailable", extra={"error": str(e)})
            return _problem("okta", "not_configured", 503, "the webhook secret is not available")
        if not authorized(request.headers.get("Authorization"), secret):
            return _problem("okta", "unauthorized", 401, "unauthorized")
        return None

    async def okta_verify(request: web.Request) -> web.Response:
        refusal = okta_refusal(request)
        if refusal is not None:
            return refusal
        challenge = request.headers.get("x-okta-verification-challenge")
        if not challenge or len(challenge) > 1024:
            return _problem("okta", "bad_request", 400, "missing x-okta-verification-challenge header")
        metrics.webhook_requests.labels("okta", "verification").inc()
        return web.json_response({"verification": challenge})

    async def okta_events(request: web.Request) -> web.Response:
        refusal = okta_refusal(request)
        if refusal is not None:
            return refusal
        try:
            body = await _read_body(request, limit)
            if not _json_type(request):
                raise BadRequest("Content-Type must be application/json")
            parsed = parse_okta(body, ctx.now)
        except TooLarge as e:
            return _problem("okta", "too_large", 413, str(e))
        except BadRequest as e:
            return _problem("okta", "bad_request", 400, str(e))
        try:
            new = Inbox(ctx.rt.store).add_okta(parsed, ctx.now)
        except DatabaseError as e:  # the store is down: let Okta retry once
            log.error("cannot store okta events", extra={"error": str(e)})
            return _problem("okta", "error", 503, "cannot store the events now")
        metrics.webhook_requests.labels("okta", "accepted" if new or not parsed else "duplicate").inc()
        if new:
            ctx.event_wakeup.set()
        return web.Response(status=200)

    async def hr_event(request: web.Request) -> web.Response:
        src = cfg.sources.webhook
        if src is None:
            return _problem("hr", "not_configured", 404, "HR webhooks are not configured")
        try:
            secret = _secret(src, "sources.webhook")
        except ConfigError as e:
            log.error("hr webhook secret unavailable", extra={"error": str(e)})
            return _problem("hr", "not_configured", 503, "the webhook secret is not available")
        try:
            body = await _read_body(request, limit)
        except TooLarge as e:
            return _problem("hr", "too_large", 413, str(e))
        why = check_signature(request.headers.get(SIGNATURE_HEADER), body, secret, ctx.now.timestamp(),
                              src.tolerance.total_seconds())
        if why is not None:
            log.warning("hr webhook rejected", extra={"reason": why})
            return _problem("hr", "unauthorized", 401, "invalid signature")
        try:
            if not _json_type(request):
                raise BadRequest("Content-Type must be application/json")
            ev = parse_hr(body, cfg.timezone, ctx.now)
            map_person(cfg, ev.person, ev.type)  # the row must map like an export row
        except BadRequest as e:
            return _problem("hr", "bad_request", 400, str(e))
        try:
            new = Inbox(ctx.rt.store).add_hr(ev, ctx.now)
        except DatabaseError as e:
            log.error("cannot store hr event", extra={"error": str(e)})
            return _problem("hr", "error", 503, "cannot store the event now")
        if not new:
            metrics.webhook_requests.labels("hr", "duplicate").inc()
            return web.json_response({"status": "duplicate", "id": ev.id})
        metrics.webhook_requests.labels("hr", "accepted").inc()
        ctx.event_wakeup.set()
        return web.json_response({"status": "accepted", "id": ev.id})

    app.router.add_get(OKTA_PATH, okta_verify, allow_head=False)
    app.router.add_post(OKTA_PATH, okta_events)
    app.router.add_post(HR_PATH, hr_event)
