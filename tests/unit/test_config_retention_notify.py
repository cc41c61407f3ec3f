"""Config for notifications and retention: defaults (off), and bad input as one error naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from jml import config
from jml.errors import ConfigError


def test_both_are_off_by_default() -> None:
    cfg = config.from_dict({})
    assert cfg.retention.leavers_after is None and cfg.retention.events_after is None
    assert cfg.notifications.smtp is None and cfg.notifications.slack_webhook_url_env is None


def test_durations_and_smtp_are_read() -> None:
    cfg = config.from_dict({"retention": {"leavers_after": "400d", "events_after": "90d"},
                            "notifications": {"smtp": {"host": "mx", "sender": "jml@acme.example"},
                                              "approvers": ["a@acme.example"]}})
    assert cfg.retention.leavers_after is not None and cfg.retention.leavers_after.days == 400
    assert cfg.notifications.smtp is not None and cfg.notifications.smtp.port == 587
    assert cfg.notifications.smtp.starttls is True


@pytest.mark.parametrize(("doc", "key"), [
    ({"retention": {"leavers_after": "0d"}}, "retention.leavers_after"),
    ({"retention": {"leavers_after": "soon"}}, "retention.leavers_after"),
    ({"retention": {"keep_for": "1d"}}, "retention.keep_for"),
    ({"notifications": {"smtp": {"host": "mx", "sender": "not-an-address"}}}, "notifications.smtp.sender"),
    ({"notifications": {"smtp": {"sender": "jml@acme.example"}}}, "notifications.smtp.host"),
    ({"notifications": {"smtp": {"host": "mx", "sender": "a@b.c", "port": 0}}}, "notifications.smtp.port"),
    ({"notifications": {"slack_webhook_url": "https://hooks.example/x"}}, "notifications.slack_webhook_url"),
])
def test_bad_input_names_the_key(doc: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.from_dict(doc)
    assert key in str(e.value)
