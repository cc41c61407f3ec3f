"""Secrets are masked wherever they appear; Retry-After and the token bucket behave."""

from __future__ import annotations

import asyncio
import time

import pytest

from connectors.base import TokenBucket, parse_retry_after
from jml.errors import ConnectorError
from jml.redact import MASK, redact, register_secret


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("Authorization: Bearer abcdef123456xyz", "abcdef123456xyz"),
        ("header was 'Basic dXNlcjpwYXNzd29yZA=='", "dXNlcjpwYXNzd29yZA=="),
        ("GET https://isu:hunter2pass@wd.example/ccx", "hunter2pass"),
        ("token deadbeefcafe0001 rejected", "deadbeefcafe0001"),
    ],
)
def test_generic_credentials_are_masked(text: str, leaked: str) -> None:
    out = redact(text)
    assert leaked not in out
    assert MASK in out


def test_registered_secret_is_masked_anywhere() -> None:
    register_secret("tok-REGISTERED-98765")
    assert "tok-REGISTERED-98765" not in redact('{"detail": "bad tok-REGISTERED-98765!"}')
    err = ConnectorError("demo", "failed", status=401, vendor_message="echo: tok-REGISTERED-98765")
    assert "tok-REGISTERED-98765" not in str(err)
    assert "tok-REGISTERED-98765" not in err.vendor_message


@pytest.mark.parametrize(("value", "expected"), [("3", 3.0), ("0.5", 0.5), ("-4", 0.0), ("", None), (None, None),
                                                 ("soon", None)])
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_retry_after_http_date() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("Wed, 01 Jan 2020 00:00:00 GMT", now=now) == 0.0  # in the past: now
    assert parse_retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 30)), now=now) == 30


async def test_token_bucket_paces_and_pauses() -> None:
    clock = [0.0]
    bucket = TokenBucket(rate=10, burst=2, clock=lambda: clock[0])
    sleeps: list[float] = []

    async def fake_sleep(s: float) -> None:
        sleeps.append(s)
        clock[0] += s

    orig = asyncio.sleep
    asyncio.sleep = fake_sleep  # type: ignore[assignment]
    try:
        for _ in range(4):
            await bucket.acquire()
        assert clock[0] == pytest.approx(0.2)  # 2 from the burst, then one every 0.1 s
        bucket.pause(5)
        await bucket.acquire()
        assert clock[0] >= 5.2
    finally:
        asyncio.sleep = orig  # type: ignore[assignment]


# ---- issue 14 finding 1: redaction by structure, never a regex over serialised JSON -------
HR_VALUES = ["SRE//oncall", "Ops: on-call @ night", "a:b@c", "//x:y@z", "Dev//Ops: lead@EMEA", "http:/x", 'q"uote:',
             "back\\slash//a:b@", "Basic Operations Manager", "Token Ring Engineer", "mailto:ana@example.com"]


@pytest.mark.parametrize("value", HR_VALUES)
def test_hr_values_pass_redaction_unchanged(value: str) -> None:
    from jml.redact import redact_data

    record = {"job_title": value, "first_name": "Ana", "department": f"Eng {value}", "note": value,
              "person": {"last_name": value, "manager": "boss:1@2"}}
    assert redact_data(record) == record


def test_serialised_hr_record_stays_json_after_text_redaction() -> None:
    import json

    record = {"job_title": "SRE//oncall", "last_name": "O'Neil", "work_email": "ana@example.com"}
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    assert json.loads(redact(text)) == record


def test_structure_masks_secret_fields_and_url_passwords_only() -> None:
    from jml.redact import redact_data

    out = redact_data({"password": "hunter2-long", "client_secret": "abc", "api_key": 12345,
                       "nested": [{"Authorization": "Bearer abcdef123456xyz"}],
                       "url": "https://isu:hunter2pass@wd.example:8443/ccx?x=1",
                       "msg": "GET https://isu:hunter2pass@wd.example/ccx failed",
                       "title": "SRE//oncall", "user_only": "https://isu@wd.example/"})
    assert out["password"] == MASK and out["client_secret"] == MASK and out["api_key"] == MASK
    assert out["nested"] == [{"Authorization": MASK}]
    assert out["url"] == f"https://isu:{MASK}@wd.example:8443/ccx?x=1"
    assert out["msg"] == f"GET https://isu:{MASK}@wd.example/ccx failed"
    assert out["title"] == "SRE//oncall" and out["user_only"] == "https://isu@wd.example/"
