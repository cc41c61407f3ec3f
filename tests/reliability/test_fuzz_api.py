"""Fuzzing a running `jml serve` (bounded: a few dozen examples per operation, no deadline).

* schemathesis over `/api/openapi.json`: unauthenticated requests never get a 5xx and never
  change state (row counts of every table and the audit head, before and after); signed-in
  requests never get a 5xx either.
* hypothesis over the webhooks: random bodies and headers at POST /webhooks/hr and
  /webhooks/okta never get a 5xx and are never accepted without a valid signature / secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis  # in the dev extra
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.helpers import Served, http, start_serve
from tests.peers import free_port
from tests.reliability.conftest import csv_bytes, generate, write_config, write_export

ADMIN = "fuzz-admin-token-0123456789"
WEBHOOK = "fuzz-webhook-secret-0123456789"
OKTA = "fuzz-okta-secret-0123456789"
ENV = {"JML_REL_ADMIN_TOKEN": ADMIN, "JML_REL_WEBHOOK_SECRET": WEBHOOK, "JML_REL_OKTA_SECRET": OKTA,
       "JML_REL_SCIM_TOKEN": "unused"}
EXAMPLES = 25


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Path]]:
    """A service with state (an export read, people planned) and no app to push to: the
    connector points at a closed port, so nothing a fuzzed request triggers leaves the box."""
    folder = tmp_path_factory.mktemp("fuzz")
    rows = generate(12, seed=3)
    write_export(folder / "exports", "day0.csv", csv_bytes(rows))
    cfg = write_config(
        folder, scim_url=f"http://127.0.0.1:{free_port()}/v2/",
        connector={"timeout": "1s", "max_attempts": 1},
        extra={"server": {"listen": f"127.0.0.1:{free_port()}", "admin_token_env": "JML_REL_ADMIN_TOKEN",
                          "shutdown_grace": "2s"},
               "sources": {"hris": {"location": str(folder / "exports") + "/", "format": "csv",
                                    "profile": "generic", "timezone": "UTC", "poll_interval": "1h"},
                           "okta": {"secret_env": "JML_REL_OKTA_SECRET"},
                           "webhook": {"secret_env": "JML_REL_WEBHOOK_SECRET"}}})
    with start_serve(cfg, env=ENV) as s:
        s.wait_up(60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _counts(folder / "jml.db").get("export", 0) == 0:
            time.sleep(0.2)  # the first poll has read the export
        time.sleep(1.0)
        yield s, folder / "jml.db"
        s.stop()


def _counts(db: Path) -> dict[str, Any]:
    if not db.exists():
        return {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        out: dict[str, Any] = {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
        if "audit_head" in tables:
            out["audit_head_row"] = conn.execute("SELECT * FROM audit_head").fetchall()
        if "operation" in tables:
            out["operation_states"] = conn.execute(
                "SELECT state, COUNT(*) FROM operation GROUP BY state ORDER BY state").fetchall()
        return out
    finally:
        conn.close()


def _schema(served: Served) -> Any:
    status, body = http(served.url + "api/openapi.json")
    assert status == 200, body[:300]
    doc = json.loads(body)
    assert doc.get("paths"), doc
    return schemathesis.openapi.from_dict(doc)


def _operations(schema: Any) -> list[Any]:
    ops = []
    for result in schema.get_all_operations():
        ops.append(result.ok())
    assert ops
    return ops


def _fuzz(served: Served, *, auth: bool) -> dict[str, int]:
    schema = _schema(served)
    seen: dict[str, int] = {}
    for op in _operations(schema):
        _runner(served, op, auth, seen)()
    return seen


def _runner(served: Served, op: Any, auth: bool, seen: dict[str, int]) -> Any:
    headers = {"Authorization": f"Bearer {ADMIN}"} if auth else {}
    key = f"{op.method.upper()} {op.path}"

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy())
    def run(case: Any) -> None:
        if not auth:
            for k in list(case.headers or {}):
                if k.lower() in ("authorization", "cookie"):
                    del case.headers[k]
        response = case.call(base_url=served.url.rstrip("/"), headers=headers, timeout=15)
        seen[key] = seen.get(key, 0) + 1
        assert response.status_code < 500, (key, response.status_code, response.text[:500])

    return run


def test_openapi_unauthenticated_fuzz_no_5xx_no_state_change(served: tuple[Served, Path]) -> None:
    s, db = served
    before = _counts(db)
    seen = _fuzz(s, auth=False)
    after = _counts(db)
    # Scheduled work may tick meanwhile (the poll interval is an hour; the SLA tick writes no rows).
    assert before == after, {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                             if before.get(k) != after.get(k)}
    assert sum(seen.values()) >= EXAMPLES, seen
    print("\nunauthenticated fuzz:", seen)


def test_openapi_signed_in_fuzz_no_5xx(served: tuple[Served, Path]) -> None:
    s, _ = served
    seen = _fuzz(s, auth=True)
    print("\nsigned-in fuzz:", seen)


# ---- webhooks --------------------------------------------------------------------------

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                  max_size=4), max_leaves=12)
_bodies = st.one_of(st.binary(max_size=300), _json.map(lambda v: json.dumps(v).encode()),
                    st.fixed_dictionaries({"id": st.text(max_size=12),
                                            "type": st.sampled_from(["hire", "change", "termination", "x"]),
                                            "occurred_at": st.text(max_size=30),
                                            "person": st.dictionaries(st.text(max_size=12), st.text(max_size=12),
                                                                      max_size=5)}).map(
                        lambda v: json.dumps(v).encode()))
_header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)  # what HTTP can carry
_signatures = st.one_of(
    st.none(), _header_text,
    st.builds(lambda t, v: f"t={t},v1={v}", st.integers(-10**12, 10**12), st.text("0123456789abcdef", max_size=64)),
    st.builds(lambda v: f"t={int(time.time())},v1={v}", st.text("0123456789abcdef", min_size=64, max_size=64)))


def _sign(body: bytes, t: int) -> str:
    mac = hmac.new(WEBHOOK.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def test_hr_webhook_random_bodies_and_signatures(served: tuple[Served, Path]) -> None:
    s, db = served
    before = _counts(db).get("webhook_event")
    statuses: dict[int, int] = {}

    @settings(max_examples=60, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(body=_bodies, sig=_signatures, ctype=st.sampled_from(["application/json", "text/plain", ""]))
    def unsigned(body: bytes, sig: str | None, ctype: str) -> None:
        headers = {"Content-Type": ctype} if ctype else {}
        if sig is not None:
            headers["X-JML-Signature"] = sig
        status, answer = http(s.url + "webhooks/hr", method="POST", data=body, headers=headers)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, (status, answer[:300])
        assert status >= 400, f"accepted without a valid signature: {status} {answer[:200]!r}"

    unsigned()
    assert _counts(db).get("webhook_event") == before

    @settings(max_examples=40, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(body=_bodies)
    def signed(body: bytes) -> None:
        headers = {"Content-Type": "application/json", "X-JML-Signature": _sign(body, int(time.time()))}
        status, answer = http(s.url + "webhooks/hr", method="POST", data=body, headers=headers)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, (status, answer[:300])

    signed()
    print("\nhr webhook statuses:", statuses)


def test_okta_webhook_random_bodies_and_secrets(served: tuple[Served, Path]) -> None:
    s, db = served
    before = _counts(db).get("webhook_event")
    statuses: dict[int, int] = {}
    early_400: list[bytes] = []  # a bad body answered before the missing secret (still refused)

    @settings(max_examples=60, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(body=_bodies, auth=st.one_of(st.none(), _header_text, st.just(OKTA + "x"), st.just(OKTA[:-1]),
                                         st.just("Bearer " + OKTA)),
           challenge=st.one_of(st.none(), _header_text))
    def wrong_secret(body: bytes, auth: str | None, challenge: str | None) -> None:
        headers = {"Content-Type": "application/json"}
        if auth is not None:
            headers["Authorization"] = auth
        status, answer = http(s.url + "webhooks/okta", method="POST", data=body, headers=headers)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, (status, answer[:300])
        assert 400 <= status < 500, f"accepted without the secret: {status} {answer[:200]!r}"
        if status == 400:
            early_400.append(answer[:100])
        gheaders = {"x-okta-verification-challenge": challenge} if challenge is not None else {}
        if auth is not None:
            gheaders["Authorization"] = headers["Authorization"]
        status, answer = http(s.url + "webhooks/okta", headers=gheaders)
        assert status < 500, (status, answer[:300])

    wrong_secret()
    assert _counts(db).get("webhook_event") == before

    @settings(max_examples=40, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(body=_bodies)
    def right_secret(body: bytes) -> None:
        status, answer = http(s.url + "webhooks/okta", method="POST", data=body,
                              headers={"Content-Type": "application/json", "Authorization": OKTA})
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, (status, answer[:300])

    right_secret()
    print("\nokta webhook statuses:", statuses, "400 before auth:", len(early_400), early_400[:2])
