"""Notifications against real loopback peers: an aiohttp server standing in for a Slack
incoming webhook, and aiosmtpd for the mail server. Best effort: a failing or absent peer is
counted and logged (without the webhook URL) and never raises into the caller."""

from __future__ import annotations

import asyncio
import email
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiosmtpd.controller import Controller

from jml import cli, metrics
from jml.config import from_dict
from jml.notify import Notice, absolute_link, drain, notify, notify_soon
from jml.runtime import Runtime
from tests.peers import ScimPeer

SECRET_PATH = "/services/T000/B000/s3cr3t-hook-path"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Hook:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_first = 0  # answer 503 to this many requests first
        self.status = 200

    async def handle(self, request: web.Request) -> web.Response:
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=503)
        self.received.append(await request.json())
        return web.Response(status=self.status, text="ok")


@pytest.fixture
async def hook() -> AsyncIterator[tuple[Hook, str]]:
    h = Hook()
    app = web.Application()
    app.router.add_post(SECRET_PATH, h.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield h, f"http://127.0.0.1:{port}{SECRET_PATH}"
    await runner.cleanup()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = _free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


def _rt(notifications: dict[str, Any]) -> Runtime:
    return Runtime(from_dict({"server": {"public_url": "https://jml.test.example"},
                              "notifications": {"max_attempts": 3, "timeout": "2s", **notifications}}))


def _failed(channel: str) -> float:
    return metrics.REGISTRY.get_sample_value("jml_notifications_failed_total", {"channel": channel}) or 0.0


NOTICE = Notice(kind="plan_held", to=["approver@acme.example", "second@acme.example"],
                subject="Plan p-123 held: 12 leavers", text="The guard held a plan; it needs your approval.",
                link="/plans/p-123")


async def test_webhook_and_email_arrive_with_the_link(hook: tuple[Hook, str], smtp: tuple[Mailbox, int],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    h, url = hook
    box, port = smtp
    monkeypatch.setenv("JML_TEST_HOOK", url)
    rt = _rt({"slack_webhook_url_env": "JML_TEST_HOOK",
              "smtp": {"host": "127.0.0.1", "port": port, "starttls": False, "sender": "jml@acme.example"}})
    await notify(rt, NOTICE)

    assert len(h.received) == 1
    text = h.received[0]["text"]
    assert "Plan p-123 held" in text and "<https://jml.test.example/plans/p-123>" in text

    assert len(box.messages) == 1
    rcpts, msg = box.messages[0]
    assert sorted(rcpts) == ["approver@acme.example", "second@acme.example"]
    assert msg["Subject"] == "Plan p-123 held: 12 leavers"
    assert msg["From"] == "jml@acme.example"
    body = msg.get_payload(decode=True).decode()
    assert "https://jml.test.example/plans/p-123" in body and "needs your approval" in body


async def test_webhook_retries_a_503_then_delivers(hook: tuple[Hook, str], monkeypatch: pytest.MonkeyPatch) -> None:
    h, url = hook
    h.fail_first = 2
    monkeypatch.setenv("JML_TEST_HOOK", url)
    before = _failed("slack")
    await notify(_rt({"slack_webhook_url_env": "JML_TEST_HOOK"}), NOTICE)
    assert len(h.received) == 1
    assert _failed("slack") == before


async def test_failures_are_counted_and_logged_without_the_url(
        hook: tuple[Hook, str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    h, url = hook
    h.fail_first = 100  # always 503
    dead_port = _free_port()  # nothing listens there
    monkeypatch.setenv("JML_TEST_HOOK", url)
    rt = _rt({"slack_webhook_url_env": "JML_TEST_HOOK", "max_attempts": 2,
              "smtp": {"host": "127.0.0.1", "port": dead_port, "starttls": False, "sender": "jml@acme.example"}})
    slack_before, email_before = _failed("slack"), _failed("email")
    with caplog.at_level(logging.WARNING, logger="jml.notify"):
        await notify(rt, NOTICE)  # must not raise
    assert _failed("slack") == slack_before + 1
    assert _failed("email") == email_before + 1
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "notification not sent" in logged
    assert "s3cr3t-hook-path" not in logged and SECRET_PATH not in logged


async def test_unset_webhook_env_is_a_counted_failure_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JML_TEST_HOOK_UNSET", raising=False)
    before = _failed("slack")
    await notify(_rt({"slack_webhook_url_env": "JML_TEST_HOOK_UNSET"}), NOTICE)
    assert _failed("slack") == before + 1


async def test_nothing_configured_sends_nothing(hook: tuple[Hook, str], smtp: tuple[Mailbox, int]) -> None:
    h, _ = hook
    box, _ = smtp
    rt = Runtime(from_dict({}))
    await notify(rt, NOTICE)
    notify_soon(rt, NOTICE)
    await drain()
    assert h.received == [] and box.messages == []


async def test_notify_soon_sends_in_the_background(smtp: tuple[Mailbox, int]) -> None:
    box, port = smtp
    rt = _rt({"smtp": {"host": "127.0.0.1", "port": port, "starttls": False, "sender": "jml@acme.example"}})
    notify_soon(rt, NOTICE)
    await drain()
    await asyncio.sleep(0)
    assert len(box.messages) == 1


def test_links_are_made_absolute_with_public_url() -> None:
    cfg = from_dict({"server": {"public_url": "https://jml.acme.example/"}})
    assert absolute_link(cfg, "/plans/x") == "https://jml.acme.example/plans/x"
    assert absolute_link(cfg, "https://elsewhere.example/a") == "https://elsewhere.example/a"
    assert absolute_link(cfg, None) is None
    assert absolute_link(from_dict({}), "/plans/x") == "/plans/x"


def test_a_subject_with_a_newline_cannot_add_a_header() -> None:
    from jml.notify import email_message

    cfg = from_dict({"notifications": {"smtp": {"host": "h", "sender": "jml@acme.example"}}})
    assert cfg.notifications.smtp is not None
    msg = email_message(cfg.notifications.smtp, Notice(kind="x", to=["a@b.example"],
                                                       subject="Hi\r\nBcc: evil@x.example", text="t"), None)
    assert msg["Bcc"] is None and "Bcc: evil" in str(msg["Subject"])


def test_a_held_plan_tells_the_approvers(smtp: tuple[Mailbox, int], scim_peer: ScimPeer, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`jml sync` whose plan the guard holds: the approvers get a mail naming the plan, with the page's link."""
    box, port = smtp
    monkeypatch.setenv("JML_TEST_NOTIFY_SCIM", scim_peer.token)
    config = tmp_path / "jml.yaml"
    config.write_text(yaml.safe_dump({
        "state": {"url": f"sqlite:///{tmp_path / 'jml.db'}"},
        "server": {"public_url": "https://jml.test.example"},
        "sources": {"hris": {"location": "./hr.csv"}},
        "policy": {"rules": [{"name": "all", "when": {"status": "Active"}, "grant": {"demo": ["Staff"]}}]},
        "connectors": {"demo": {"type": "scim", "url": scim_peer.url, "token_env": "JML_TEST_NOTIFY_SCIM"}},
        "notifications": {"approvers": ["approver@acme.example"],
                          "smtp": {"host": "127.0.0.1", "port": port, "starttls": False,
                                   "sender": "jml@acme.example"}},
    }), encoding="utf-8")

    def export(terminated: int) -> None:
        lines = ["employee_id,first_name,last_name,work_email,status,hire_date,termination_date"]
        for i in range(4):
            status, end = ("Terminated", "2026-01-05") if i < terminated else ("Active", "")
            lines.append(f"E{i},P,N{i},p{i}@example.com,{status},2020-01-06,{end}")
        (tmp_path / "hr.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    export(0)
    assert cli.main(["--config", str(config), "sync"]) == 0
    assert box.messages == []  # nothing held: nobody told
    export(2)
    assert cli.main(["--config", str(config), "sync"]) == 3  # held: half the accounts would go
    assert len(box.messages) == 1
    rcpts, msg = box.messages[0]
    assert rcpts == ["approver@acme.example"]
    plan_id = str(msg["Subject"]).split("plan ")[1].split(" ")[0]
    body = msg.get_payload(decode=True).decode()
    assert f"jml approve {plan_id}" in body and "https://jml.test.example/#held" in body
