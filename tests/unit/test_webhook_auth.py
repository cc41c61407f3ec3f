"""Webhook authentication and parsing (jml.webhooks): tables of known cases, and properties
over arbitrary headers and bodies — nothing raises but BadRequest, and only a request signed
with the secret, inside the window, is accepted."""

from __future__ import annotations

import contextlib
import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jml.webhooks import (
    BadRequest,
    authorized,
    check_signature,
    parse_hr,
    parse_okta,
    parse_signature,
    sign,
)

SECRET = "whsec_0123456789abcdef"
NOW = 1_741_021_509
BODY = b'{"id":"evt-1","type":"termination","occurred_at":"2025-03-03T17:05:08Z","person":{"employee_id":"E1"}}'
GOOD = sign(SECRET, NOW, BODY)
OTHER = sign("an-old-secret", NOW, BODY)


@pytest.mark.parametrize(("presented", "secret", "ok"), [
    ("s3cret-value", "s3cret-value", True),
    ("s3cret-value ", "s3cret-value", False),  # compared whole
    ("Bearer s3cret-value", "s3cret-value", False),
    ("s3cret", "s3cret-value", False),  # a prefix is not the secret
    ("S3CRET-VALUE", "s3cret-value", False),
    (None, "s3cret-value", False),
    ("", "", False),  # no secret configured: nobody gets in
    ("anything", None, False),
    ("s\udcffcret", "s3cret-value", False),  # undecodable header bytes do not raise
])
def test_authorization_value(presented: str | None, secret: str | None, ok: bool) -> None:
    assert authorized(presented, secret) is ok


@pytest.mark.parametrize(("header", "expected"), [
    (f"t={NOW},v1={GOOD}", (NOW, [GOOD])),
    (f"t={NOW}, v1={OTHER}, v1={GOOD}", (NOW, [OTHER, GOOD])),  # key rotation: several v1
    (f"v1={GOOD},t={NOW},v0=legacy", (NOW, [GOOD])),  # order free, other schemes ignored
])
def test_signature_header_parses(header: str, expected: tuple[int, list[str]]) -> None:
    assert parse_signature(header) == expected


@pytest.mark.parametrize("header", [
    None, "", f"t={NOW}", f"v1={GOOD}", f"t=abc,v1={GOOD}", f"t={NOW},t={NOW},v1={GOOD}",
    f"t={NOW},v1={GOOD.upper()}", f"t={NOW},v1={GOOD[:-1]}", f"t={NOW};v1={GOOD}", f"t=-{NOW},v1={GOOD}",
    f"t=١٢٣,v1={GOOD}", "t=1," + "v1=" + "0" * 64 + "," * 5000,
])
def test_signature_header_rejected(header: str | None) -> None:
    with pytest.raises(BadRequest):
        parse_signature(header)


@pytest.mark.parametrize(("header", "body", "now", "ok"), [
    (f"t={NOW},v1={GOOD}", BODY, NOW, True),
    (f"t={NOW},v1={OTHER},v1={GOOD}", BODY, NOW, True),  # old and new key during rotation
    (f"t={NOW},v1={OTHER}", BODY, NOW, False),  # signed with another key
    (f"t={NOW},v1={GOOD}", BODY + b" ", NOW, False),  # body changed
    (f"t={NOW + 1},v1={GOOD}", BODY, NOW, False),  # t is part of what is signed
    (f"t={NOW},v1={GOOD}", BODY, NOW + 300, True),  # the window is inclusive
    (f"t={NOW},v1={GOOD}", BODY, NOW + 301, False),  # replay after the window
    (f"t={NOW},v1={GOOD}", BODY, NOW - 301, False),  # from the future
    ("garbage", BODY, NOW, False),
    (None, BODY, NOW, False),
])
def test_signature_check(header: str | None, body: bytes, now: int, ok: bool) -> None:
    assert (check_signature(header, body, SECRET, float(now), 300.0) is None) is ok


def test_no_secret_accepts_nothing() -> None:
    assert check_signature(f"t={NOW},v1={GOOD}", BODY, None, NOW, 300) is not None
    assert check_signature(f"t={NOW},v1={sign('', NOW, BODY)}", BODY, "", NOW, 300) is not None


@given(header=st.one_of(st.none(), st.text(max_size=300)), body=st.binary(max_size=300),
       now=st.floats(allow_nan=True, allow_infinity=True))
@settings(max_examples=400, deadline=None)
def test_signature_check_never_raises_and_forgeries_fail(header: str | None, body: bytes, now: float) -> None:
    assert check_signature(header, body, SECRET, now, 300.0) is not None  # random input is never valid


@given(body=st.binary(max_size=500), t=st.integers(0, 10**11), skew=st.integers(-1000, 1000),
       extra=st.lists(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64), max_size=3))
@settings(max_examples=300, deadline=None)
def test_only_a_valid_signature_in_the_window_is_accepted(body: bytes, t: int, skew: int, extra: list[str]) -> None:
    good = sign(SECRET, t, body)
    header = ",".join([f"t={t}", *(f"v1={e}" for e in extra), f"v1={good}"])
    assert (check_signature(header, body, SECRET, float(t + skew), 300.0) is None) is (abs(skew) <= 300)
    wrong = ",".join([f"t={t}", *(f"v1={e}" for e in extra if e != good)] + ([] if extra else [f"v1={'0' * 64}"]))
    if good not in extra:
        assert check_signature(wrong, body, SECRET, float(t), 300.0) is not None


def _okta(events: list[object]) -> bytes:
    return json.dumps({"eventType": "com.okta.event_hook", "data": {"events": events}}).encode()


def _ev(uuid: str, published: str, etype: str = "user.lifecycle.deactivate", user: str = "pat@acme.example") -> dict:
    return {"uuid": uuid, "published": published, "eventType": etype,
            "actor": {"id": "00uADM1", "type": "User", "alternateId": "admin@acme.example"},
            "target": [{"id": "00uPAT1", "type": "User", "alternateId": user}, {"type": "AppInstance",
                                                                                "alternateId": "slack"}]}


def test_okta_sample_parses_sorted_by_published() -> None:
    events = parse_okta(_okta([_ev("b", "2025-03-03T17:05:09.874Z"), _ev("a", "2025-03-03T17:05:08.874Z")]))
    assert [e.uuid for e in events] == ["a", "b"]
    assert events[0].users == ("pat@acme.example",)  # only User targets
    assert events[0].actor == "admin@acme.example"
    assert events[0].published == dt.datetime(2025, 3, 3, 17, 5, 8, 874000, tzinfo=dt.UTC)


@pytest.mark.parametrize("body", [
    b"", b"not json", b"\xff\xfe", b"[]", b'{"data": {}}', b'{"data": {"events": {}}}',
    _okta(["x"]), _okta([{"published": "2025-03-03T17:05:08Z", "eventType": "x"}]),
    _okta([{**_ev("a", "2025-03-03T17:05:08Z"), "uuid": ""}]),
    _okta([{**_ev("a", "2025-03-03T17:05:08Z"), "uuid": "u" * 201}]),
    _okta([_ev("a", "yesterday")]), _okta([{**_ev("a", "2025-03-03T17:05:08Z"), "target": "pat"}]),
    _okta([{**_ev("a", "2025-03-03T17:05:08Z"), "eventType": 7}]),
    b"[" * 100_000,
])
def test_okta_bad_bodies(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_okta(body)


def _hr(**over: object) -> bytes:
    doc: dict[str, object] = {"id": "evt-1", "type": "termination", "occurred_at": "2025-03-03T17:05:08Z",
                              "person": {"employee_id": "E1", "status": "Terminated"}}
    doc.update(over)
    return json.dumps(doc).encode()


def test_hr_body_parses() -> None:
    ev = parse_hr(_hr(occurred_at="2025-03-03T18:05:08+01:00"))
    expected = ("evt-1", "termination", dt.datetime(2025, 3, 3, 17, 5, 8, tzinfo=dt.UTC))
    assert (ev.id, ev.type, ev.occurred_at) == expected
    naive = parse_hr(_hr(occurred_at="2025-03-03T12:00:00"), dt.timezone(dt.timedelta(hours=-5)))
    assert naive.occurred_at == dt.datetime(2025, 3, 3, 17, 0, tzinfo=dt.UTC)  # read in the HR time zone


@pytest.mark.parametrize("body", [
    _hr(id=""), _hr(id=5), _hr(type="fired"), _hr(occurred_at="3 March"), _hr(occurred_at=None), _hr(person={}),
    _hr(person=["E1"]), _hr(person={"employee_id": {"nested": 1}}), b"{}", b"null", b"\x00",
])
def test_hr_bad_bodies(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_hr(body)


@given(st.binary(max_size=400))
@settings(max_examples=400, deadline=None)
def test_parsers_raise_only_bad_request(body: bytes) -> None:
    for parse in (parse_okta, parse_hr):
        with contextlib.suppress(BadRequest):
            parse(body)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids,
                                                                                      max_size=3), max_leaves=10)


@given(doc=st.dictionaries(st.sampled_from(["id", "type", "occurred_at", "person", "data", "events"]), json_values))
@settings(max_examples=400, deadline=None)
def test_parsers_on_json_shaped_garbage(doc: dict[str, object]) -> None:
    body = json.dumps(doc).encode()
    for parse in (parse_okta, parse_hr):
        with contextlib.suppress(BadRequest):
            parse(body)
