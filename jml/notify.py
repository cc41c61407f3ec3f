"""Telling people: approvers of a held plan or a request, requesters, reviewers.

Two channels, each optional (`notifications:` in the config): a Slack-compatible incoming
webhook (one message to the channel it posts to) and e-mail over SMTP (one message to the
notice's addresses). Nothing configured: `notify` does nothing.

Best effort by design: a notice is a nudge, the page is the truth. A channel that fails after
its retries is logged (channel and error class only: the webhook URL is a credential and an
SMTP error may echo addresses) and counted in `jml_notifications_failed_total{channel}`; the
caller never sees the failure.

Callers pass `link` as a path of the web app ("/plans/ID"); it is made absolute with
`server.public_url` so that a mail client can open it.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
import threading
from collections.abc import Awaitable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from jml import metrics
from jml.config import Config, NotificationsConfig, SmtpConfig, resolve_secret
from jml.errors import ConfigError
from jml.runtime import Runtime

log = logging.getLogger("jml.notify")

# Kinds callers use (free text is accepted; these keep the vocabulary shared).
PLAN_HELD = "plan_held"
ACCESS_REQUESTED = "access_requested"
ACCESS_DECIDED = "access_decided"
ACCESS_EXPIRING = "access_expiring"
JIT_GRANTED = "jit_granted"
REVIEW_ASSIGNED = "review_assigned"


@dataclass(frozen=True)
class Notice:
    kind: str  # e.g. PLAN_HELD, ACCESS_REQUESTED (for logs; not shown)
    to: list[str] = field(default_factory=list)  # e-mail addresses; Slack posts to its channel regardless
    subject: str = ""
    text: str = ""
    link: str | None = None  # a path of the web app ("/plans/ID") or an absolute URL


class _Failed(Exception):
    """A channel attempt failed; the message is safe to log (no URL, no credential)."""


def absolute_link(config: Config, link: str | None) -> str | None:
    """`link` made absolute with server.public_url (left as is without one)."""
    if not link:
        return None
    if link.startswith(("https://", "http://")):
        return link
    base = config.server.public_url
    return f"{base}/{link.lstrip('/')}" if base else link


def _one_line(text: str) -> str:
    # A subject is a header: a newline in it would start a header of the sender's choosing.
    return " ".join(text.split())


def enabled(config: Config) -> bool:
    n = config.notifications
    return bool(n.slack_webhook_url_env or n.slack_webhook_url_file or n.smtp)


async def notify(rt: Runtime, notice: Notice) -> None:
    """Send `notice` on every configured channel; never raises (see the module's docstring)."""
    cfg = rt.config.notifications
    link = absolute_link(rt.config, notice.link)
    sends = []
    if cfg.slack_webhook_url_env or cfg.slack_webhook_url_file:
        sends.append(_guarded("slack", notice, _send_slack(cfg, notice, link)))
    if cfg.smtp is not None and notice.to:
        sends.append(_guarded("email", notice, _send_email(cfg, cfg.smtp, notice, link)))
    if sends:
        await asyncio.gather(*sends)


_background: set[asyncio.Task[None]] = set()
_threads: set[threading.Thread] = set()


def notify_soon(rt: Runtime, notice: Notice) -> None:
    """`notify` in the background: a request handler or a plan need not wait for a mail server.

    On an event loop's thread, a task; elsewhere (a plan made in a worker thread), a thread of
    its own. `drain()` waits for both (a one-shot command does before it exits).
    """
    if not enabled(rt.config):
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        thread = threading.Thread(target=_send_in_thread, args=(rt, notice), name="jml-notify", daemon=True)
        _threads.add(thread)
        thread.start()
        return
    task = loop.create_task(notify(rt, notice))
    _background.add(task)  # a reference, so the task is not collected mid-flight
    task.add_done_callback(_background.discard)


def _send_in_thread(rt: Runtime, notice: Notice) -> None:
    try:
        asyncio.run(notify(rt, notice))
    finally:
        _threads.discard(threading.current_thread())


async def drain() -> None:
    """Wait for background notices (a one-shot command before it exits, tests)."""
    while _background or _threads:
        if _background:
            await asyncio.gather(*list(_background), return_exceptions=True)
        for thread in list(_threads):
            await asyncio.to_thread(thread.join)
            _threads.discard(thread)


async def _guarded(channel: str, notice: Notice, send: Awaitable[None]) -> None:
    try:
        await send
    except (_Failed, ConfigError) as e:
        metrics.notifications_failed.labels(channel).inc()
        log.warning("notification not sent", extra={"channel": channel, "kind": notice.kind, "error": str(e)})
    except Exception as e:  # best effort: whatever went wrong, the caller carries on
        metrics.notifications_failed.labels(channel).inc()
        log.warning("notification not sent", extra={"channel": channel, "kind": notice.kind,
                                                    "error": type(e).__name__})
    else:
        metrics.notifications_sent.labels(channel).inc()


def _retrying(cfg: NotificationsConfig) -> AsyncRetrying:
    return AsyncRetrying(stop=stop_after_attempt(cfg.max_attempts), wait=wait_exponential(multiplier=0.5, max=5),
                         retry=retry_if_exception_type(_Retry), reraise=True)


class _Retry(_Failed):
    """Worth another attempt (a timeout, a refused connection, a 429 or 5xx)."""


def slack_text(notice: Notice, link: str | None) -> str:
    lines = [f"*{_one_line(notice.subject)}*"] if notice.subject else []
    if notice.text:
        lines.append(notice.text)
    if link:
        lines.append(f"<{link}>")
    return "\n".join(lines)


async def _send_slack(cfg: NotificationsConfig, notice: Notice, link: str | None) -> None:
    url = resolve_secret(cfg, "slack_webhook_url", "notifications")
    assert url is not None  # required=True raises instead
    body = {"text": slack_text(notice, link)}
    timeout = aiohttp.ClientTimeout(total=cfg.timeout.total_seconds())
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async for attempt in _retrying(cfg):
            with attempt:
                try:
                    async with session.post(url, json=body, allow_redirects=False) as resp:
                        if resp.status == 429 or resp.status >= 500:
                            raise _Retry(f"webhook answered HTTP {resp.status}")
                        if resp.status >= 300:
                            raise _Failed(f"webhook answered HTTP {resp.status}")
                except (aiohttp.ClientError, TimeoutError) as e:
                    # The exception's text may hold the URL (the credential): only its class.
                    raise _Retry(f"webhook unreachable ({type(e).__name__})") from None


def email_message(smtp: SmtpConfig, notice: Notice, link: str | None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = smtp.sender
    msg["To"] = ", ".join(_one_line(a) for a in notice.to)
    msg["Subject"] = _one_line(notice.subject) or "jml"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=smtp.sender.rpartition("@")[2] or None)
    body = notice.text
    if link:
        body = f"{body}\n\n{link}\n" if body else f"{link}\n"
    msg.set_content(body)
    return msg


def _smtp_send(cfg: NotificationsConfig, smtp: SmtpConfig, msg: EmailMessage, password: str | None) -> None:
    timeout = cfg.timeout.total_seconds()
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout) as s:
            if smtp.starttls:
                s.starttls(context=ssl.create_default_context())
            if smtp.username:
                s.login(smtp.username, password or "")
            s.send_message(msg)
    except smtplib.SMTPResponseException as e:
        # 4xx: try again later; 5xx: refused (bad login, unknown sender): retrying will not help.
        if e.smtp_code < 500:
            raise _Retry(f"mail server answered {e.smtp_code}") from None
        raise _Failed(f"mail server answered {e.smtp_code}") from None
    except smtplib.SMTPServerDisconnected:
        raise _Retry("mail server closed the connection") from None
    except smtplib.SMTPException as e:  # a subclass of OSError: before it
        raise _Failed(f"mail not accepted ({type(e).__name__})") from None
    except OSError as e:
        raise _Retry(f"mail server unreachable ({type(e).__name__})") from None


async def _send_email(cfg: NotificationsConfig, smtp: SmtpConfig, notice: Notice, link: str | None) -> None:
    password = resolve_secret(smtp, "password", "notifications.smtp", required=bool(smtp.username))
    msg = email_message(smtp, notice, link)
    async for attempt in _retrying(cfg):
        with attempt:
            await asyncio.to_thread(_smtp_send, cfg, smtp, msg, password)


def held_plan_saved(rt: Runtime, plan_id: str, reasons: list[str], operations: int) -> None:
    """A plan the guard held has been stored (committed): count it and tell the approvers, once.

    Every path that stores a held plan calls this right after its commit: HR exports and
    webhook events (jml/sync.py), reconcile's orphan deletions (jml/reconcile.py), review
    revocations (jml/reviews.py) and reverts (jml/revert.py);
    tests/integration/test_held_notify.py holds each of them to it."""
    metrics.guard_held_plans.inc()
    plan_held(rt, plan_id, reasons, operations)


def plan_held(rt: Runtime, plan_id: str, reasons: list[str], operations: int) -> None:
    """Tell the approvers (notifications.approvers, and the webhook's channel) that a plan waits for them
    (through held_plan_saved, which every path that holds a plan calls)."""
    if not enabled(rt.config):
        return
    why = "; ".join(reasons) or "the guard's limits"
    notify_soon(rt, Notice(
        kind=PLAN_HELD, to=list(rt.config.notifications.approvers),
        subject=f"jml: plan {plan_id} is held and needs approval",
        text=(f"The guard held plan {plan_id} ({operations} operation(s)): {why}.\n"
              "Nothing in it is applied until it is approved. Open the status page, check the plan under "
              f"Held plans, then press 'Approve plan {plan_id}' or 'Discard plan {plan_id}' "
              f"(or run `jml approve {plan_id}`)."),
        link="/#held"))
