"""Slack over SCIM v2: the generic SCIM connector plus Slack's handle rules, limits and errors.

Slack facts this module encodes (https://docs.slack.dev/reference/scim-api and
https://docs.slack.dev/reference/scim-api/rate-limits):

* `userName` is the Slack handle: at most 21 characters, lowercase letters, digits,
  periods, hyphens and underscores. It is NOT the planner's username (usually the email):
  `slack_username()` derives it, deterministically, from the email's local part.
* Collision-free without storing anything: candidate level 0 is the plain handle; when
  Slack says the handle is taken by somebody else (a different externalId and email),
  level 1..3 append `-` and 6, 10, then 19 base32 characters of sha256(employee_id)
  (30, 50, 95 bits). After a crash the connector finds the account by externalId first,
  so it never needs to remember which level it used.
* `DELETE /Users/{id}` deactivates (reversible with `active: true`); Slack cannot hard-
  delete a user over SCIM, so a `delete` operation deactivates too.
* Writes: 180/min per endpoint (burst 20), 600/min across all writes. We send at 3/s per
  endpoint with a burst of 10, half Slack's, so that request jitter (a delayed first
  request shortens the window Slack measures) never costs a 429. Overall 10/s, burst 20.
* 429 + Retry-After for the rate limit and also when a concurrent write holds the
  resource (`resource_locked`): both are retried after Retry-After; only the rate limit
  pauses the whole endpoint.
* Errors come as the legacy `{"Errors": {"description": CODE, "code": N}}` or in RFC 7644
  form (`detail`, integer `status`). `email_taken` (409) means the person already has an
  account: find it by email and adopt it. Codes other than invalid_authentication are
  UNCONFIRMED in Slack's public docs (docs.slack.dev/reference/scim-api), so we match them by
  substring and fall back on the HTTP status.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.base import ApplyResult, ConnectorContext, TokenBucket
from connectors.scim import ScimConnector
from connectors.scim import protocol as p
from connectors.scim.protocol import ScimRequest
from connectors.scim.transport import ScimResponse, ScimTransport
from jml.config import SlackConnectorConfig
from jml.errors import ConflictError, ConnectorError, NotFoundError, PermanentError, RetryableError

__all__ = [
    "SLACK_USERNAME_MAX",
    "SlackConflict",
    "SlackConnector",
    "candidate_levels",
    "classify_slack",
    "slack_error",
    "slack_username",
    "valid_slack_username",
]

SLACK_USERNAME_MAX = 21
_INVALID = re.compile(r"[^a-z0-9._-]+")
_VALID = re.compile(r"^[a-z0-9._-]{1,21}$")
_SEPARATORS = "._-"
# Suffix length (base32 characters of sha256(employee_id)) per collision level.
_SUFFIX_LENGTHS = (0, 6, 10, 19)
candidate_levels = len(_SUFFIX_LENGTHS)

AUTH_HELP = "the Slack SCIM token is invalid or lacks the admin scope"


# ---- map: the Slack handle ----------------------------------------------------------

def _clean(text: str) -> str:
    """Lowercase ASCII in Slack's charset: accents folded, other runs become one period."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    cleaned = _INVALID.sub(".", ascii_text.lower())
    cleaned = re.sub(r"([._-])[._-]+", r"\1", cleaned)
    return cleaned.strip(_SEPARATORS)


def _stem(employee_id: str, attributes: Mapping[str, str], username: str = "") -> str:
    """The readable part: email local part (without +tag), else given.family, else the
    planner's username, else the employee_id."""
    for address in (attributes.get("email", ""), username if "@" in username else ""):
        local = address.split("@", 1)[0].split("+", 1)[0]
        if _clean(local):
            return _clean(local)
    name = _clean(f"{attributes.get('given_name', '')}.{attributes.get('family_name', '')}")
    return name or _clean(username) or _clean(employee_id) or "user"


def _digest(employee_id: str) -> str:
    raw = hashlib.sha256(employee_id.encode("utf-8")).digest()
    return base64.b32encode(raw).decode("ascii").lower().rstrip("=")


def slack_username(employee_id: str, attributes: Mapping[str, str], level: int = 0, username: str = "") -> str:
    """The Slack userName for collision level `level` (0 .. candidate_levels-1).

    Pure and deterministic: the same person always yields the same list of candidates.
    """
    if not 0 <= level < candidate_levels:
        raise ValueError(f"collision level {level} out of range")
    stem = _stem(employee_id, attributes, username)
    n = _SUFFIX_LENGTHS[level]
    if n == 0:
        return stem[:SLACK_USERNAME_MAX].rstrip(_SEPARATORS) or "user"
    suffix = _digest(employee_id)[:n]
    room = SLACK_USERNAME_MAX - n - 1
    head = stem[:room].rstrip(_SEPARATORS) or "u"
    return f"{head}-{suffix}"


def valid_slack_username(name: str) -> bool:
    return bool(_VALID.match(name))


# ---- classify: Slack's errors -> ours ------------------------------------------------

@dataclass(frozen=True, slots=True)
class SlackErrorBody:
    code: str  # e.g. email_taken, invalid_authentication ('' when the body names none)
    message: str  # the vendor's own words, for the operator


def slack_error(body: Any) -> SlackErrorBody:
    """Read either error shape; `code` is the legacy description or a snake_case detail."""
    if isinstance(body, str):
        text = body.strip()[:500]
        return SlackErrorBody(_code_in(text), text)
    if not isinstance(body, Mapping):
        return SlackErrorBody("", "")
    legacy = body.get("Errors")
    if isinstance(legacy, Mapping):
        text = str(legacy.get("description") or "")
        return SlackErrorBody(_code_in(text), text)
    parts = [str(body[k]) for k in ("scimType", "detail", "message") if body.get(k)]
    text = ": ".join(parts)
    return SlackErrorBody(_code_in(text), text)


_KNOWN_CODES = ("email_taken", "username_taken", "invalid_authentication", "resource_locked", "too_many_requests",
                "rate_limited", "no_such_user", "user_not_found", "uniqueness")


def _code_in(text: str) -> str:
    low = text.lower()
    return next((c for c in _KNOWN_CODES if c in low), low.split(":")[0].strip() if re.fullmatch(r"[a-z_]+", low)
                else "")


class SlackConflict(ConflictError):
    """409: `taken` says what is taken: 'email', 'username' or '' (unknown)."""

    def __init__(self, connector: str, taken: str, *, vendor_message: str = "") -> None:
        self.taken = taken
        super().__init__(connector, f"{taken or 'resource'} already taken", status=409,
                         vendor_message=vendor_message)


def classify_slack(connector: str, status: int, body: Any, *, retry_after: float | None = None,
                   what: str = "request failed") -> ConnectorError:
    """One place for retryable vs permanent vs adopt, by Slack code first, status second."""
    err = slack_error(body)
    code, msg = err.code, err.message
    if status == 429 or code in ("too_many_requests", "rate_limited", "resource_locked"):
        reason = "resource_locked" if code == "resource_locked" else "rate_limited"
        return RetryableError(connector, "resource locked by a concurrent write" if reason == "resource_locked"
                              else "rate limited", status=status, vendor_message=msg,
                              retry_after=retry_after if retry_after is not None else 1.0, reason=reason)
    if status in (401, 403) or code == "invalid_authentication":
        return PermanentError(connector, AUTH_HELP, status=status, vendor_message=msg)
    if status == 409 or code in ("email_taken", "username_taken"):
        taken = "email" if code == "email_taken" else "username" if code in ("username_taken", "uniqueness") else ""
        return SlackConflict(connector, taken, vendor_message=msg)
    if status == 404:
        return NotFoundError(connector, "not found", status=status, vendor_message=msg)
    if status >= 500 or status == 408:
        return RetryableError(connector, what, status=status, vendor_message=msg, retry_after=retry_after,
                              reason="server_error")
    return PermanentError(connector, what, status=status, vendor_message=msg)


# ---- call: the connector ---------------------------------------------------------------

# Which write endpoint a request counts against (Slack limits each one separately).
_endpoint: contextvars.ContextVar[str] = contextvars.ContextVar("slack_endpoint", default="")


def endpoint_key(method: str, path: str) -> str:
    """'POST Users', 'update Users' (PUT and PATCH share a limit), 'DELETE Groups', …"""
    verb = "update" if method in ("PUT", "PATCH") else method
    return f"{verb} {path.split('/', 1)[0]}"


class _SlackBuckets(TokenBucket):
    """The transport's one bucket, routed: a token from the request's endpoint bucket,
    then one from the overall bucket. A 429 pauses the endpoint it came from."""

    def __init__(self, rate: float | None, burst: int | None, overall: TokenBucket) -> None:
        super().__init__(None)
        self._rate, self._burst, self.overall = rate, burst, overall
        self.endpoints: dict[str, TokenBucket] = {}

    @property
    def endpoint_rate(self) -> float | None:
        return self._rate

    def endpoint(self, key: str) -> TokenBucket:
        if key not in self.endpoints:
            self.endpoints[key] = TokenBucket(self._rate, self._burst)
        return self.endpoints[key]

    async def acquire(self) -> None:
        await self.endpoint(_endpoint.get()).acquire()
        await self.overall.acquire()

    def pause(self, seconds: float) -> None:
        self.endpoint(_endpoint.get()).pause(seconds)


class _SlackTransport(ScimTransport):
    async def send(self, req: ScimRequest) -> ScimResponse:
        token = _endpoint.set(endpoint_key(req.method, req.path))
        try:
            return await super().send(req)
        finally:
            _endpoint.reset(token)


class SlackConnector(ScimConnector):
    """`type: slack`. Only what Slack does differently from RFC 7644 lives here."""

    # Slack documents `eq` filters on userName, externalId and emails; not `or`.
    # DELETE /Users/{id} deactivates (reversible): documented, so not read back to learn it.
    dialect_profile = {"filter_or": False, "delete_deactivates": True, "verified:delete": True}
    default_rate = 3.0  # 180/min per endpoint (Slack), see the module docstring
    default_burst = 10
    overall_rate = 10.0  # 600/min over every write endpoint
    overall_burst = 20

    def __init__(self, name: str, cfg: SlackConnectorConfig, ctx: ConnectorContext) -> None:
        super().__init__(name, cfg, ctx)
        rate = cfg.rate_limit if cfg.rate_limit is not None else self.default_rate
        burst = cfg.burst if cfg.burst is not None else self.default_burst
        overall = TokenBucket(max(self.overall_rate, rate), max(self.overall_burst, burst))
        self.buckets = _SlackBuckets(rate, burst, overall)
        self.bucket = self.buckets
        self.transport = _SlackTransport(
            name, self.base_url(cfg), lambda: ctx.secret("token"), timeout=cfg.timeout.total_seconds(),
            bucket=self.bucket, classify=self.classify, observe=ctx.observe,
        )

    @property
    def write_rate(self) -> float | None:
        # A wave's writes go to one endpoint (DELETE /Users/{id}, PATCH /Groups/{id}): its rate binds.
        return min(self.buckets.endpoint_rate or self.overall_rate, self.buckets.overall.rate or self.overall_rate)

    # ---- hooks of ScimConnector -------------------------------------------------------
    def classify(self, status: int, body: Any, retry_after: float | None) -> ConnectorError:
        return classify_slack(self.name, status, body, retry_after=retry_after)

    def find_user_filters(self, employee_id: str, username: str) -> list[tuple[str, str]]:
        # The planner's username is an email, not a Slack handle: match by externalId here,
        # by email in find_user, and by handle only when it is one.
        found = [("externalId", employee_id)] if employee_id else []
        if valid_slack_username(username):
            found.append(("userName", username))
        return found

    async def find_user(self, employee_id: str, username: str, remote_id: str | None = None, *,
                        old_username: str | None = None, combined: bool = True) -> Mapping[str, Any] | None:
        user = await super().find_user(employee_id, username, remote_id, old_username=old_username,
                                       combined=combined)
        for address in (username, old_username or ""):
            if user is None and "@" in address:
                user = await self.find_by_email(address)
        return user

    async def find_by_email(self, email: str) -> Mapping[str, Any] | None:
        body = (await self.transport.send(p.search(self.users_endpoint, p.eq_filter("emails.value", email),
                                                   count=10))).body
        for r in p.resources_of(body):  # checked: a server may ignore a filter it does not know
            if any(isinstance(e, Mapping) and str(e.get("value", "")).casefold() == email.casefold()
                   for e in r.get("emails") or []):
                return r
        return None

    async def update_user(self, user: Mapping[str, Any], employee_id: str, username: str, active: bool | None,
                          attrs: Mapping[str, str], keys: Sequence[str]) -> None:
        # The Slack handle is chosen once, at creation; jml never renames it.
        await super().update_user(user, employee_id, str(user.get("userName") or ""), active, attrs, keys)

    async def set_active(self, user: Mapping[str, Any], active: bool) -> None:
        if active or not p.is_active(user):
            await super().set_active(user, active)
            return
        # Slack: DELETE /Users/{id} deactivates (reversible); it is also the one write that
        # ends the person's sessions at once.
        await self.delete_user(str(user["id"]))
        after = await self.get_user(str(user["id"]))
        if after is not None and p.is_active(after):
            raise RetryableError(self.name, "DELETE answered but the user is still active", reason="server_error")

    async def deactivate_known(self, remote_id: str) -> bool:
        """DELETE by the recorded id, then read back (Slack answers the DELETE without a body).
        A 404 may mean a stale id: the general path finds the account by its other keys."""
        try:
            await self.transport.send(p.delete(self.user_path(remote_id)))
        except NotFoundError:
            return False
        after = await self.get_user(remote_id)
        if after is not None and p.is_active(after):
            raise RetryableError(self.name, "DELETE answered but the user is still active", reason="server_error")
        return after is not None

    # delete: Slack cannot hard-delete over SCIM; ScimConnector.delete_user sends DELETE,
    # which in Slack deactivates (a 404 is success). The account stays, inactive.

    # ---- create: pick a free handle ---------------------------------------------------
    async def create_user(self, employee_id: str, username: str, active: bool, attrs: dict[str, str],
                          known: str | None) -> ApplyResult:
        planner_name = username
        attrs = {str(k): str(v) for k, v in attrs.items()}
        if not attrs.get("email") and "@" in planner_name:
            attrs["email"] = planner_name  # Slack needs an email; policy.username is usually work_email
        user = await self.find_user(employee_id, planner_name, known)
        if user is None and attrs.get("email"):
            user = await self.find_by_email(attrs["email"])
        if user is None:
            created = await self._post_user(employee_id, planner_name, active, attrs)
            if isinstance(created, str):
                return ApplyResult(remote_id=created)
            user = created
        await self.update_user(user, employee_id, "", active, attrs, list(attrs))
        return ApplyResult(remote_id=str(user["id"]), adopted=known != user["id"])

    async def _post_user(self, employee_id: str, planner_name: str, active: bool,
                         attrs: Mapping[str, str]) -> str | Mapping[str, Any]:
        """POST with candidate handles in order; the new id, or the account to adopt."""
        ref = await self.manager_ref(attrs)
        for level in range(candidate_levels):
            handle = slack_username(employee_id, attrs, level, planner_name)
            payload = p.creation_payload(self.user_payload(employee_id, handle, active, attrs, ref))
            try:
                body = (await self.transport.send(p.post(self.users_endpoint, payload))).body
            except SlackConflict as conflict:
                holder = await self._holder(conflict, employee_id, handle, attrs.get("email", ""))
                if holder is not None:
                    return holder  # email_taken, or our own account from before a crash: adopt
                if conflict.taken == "email":
                    raise PermanentError(self.name, "Slack says the email is taken but no account has it",
                                         status=409, vendor_message=conflict.vendor_message) from None
                continue  # the handle belongs to somebody else: next candidate
            if isinstance(body, Mapping) and body.get("id"):
                return str(body["id"])
            found = await self.find_user(employee_id, handle)
            if found is None:
                raise PermanentError(self.name, "create answered 2xx but the account cannot be found")
            return found
        raise PermanentError(self.name, f"every candidate Slack handle for {employee_id} is taken")

    async def _holder(self, conflict: SlackConflict, employee_id: str, handle: str,
                      email: str) -> Mapping[str, Any] | None:
        """The existing account that is this person's (adopt it), or None."""
        if email:
            by_email = await self.find_by_email(email)
            if by_email is not None:
                return by_email
        if conflict.taken == "email":
            return None
        holder = await self.search_one(self.users_endpoint, "userName", handle)
        if holder is not None and employee_id and holder.get("externalId") == employee_id:
            return holder
        return None
