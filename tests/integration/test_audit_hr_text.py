"""Issue 14 finding 1: HR text full of `//`, `:` and `@` (titles, names) reaches the audit
trail as the JSON it was, through the real store; `jml audit verify` and `audit export`
stay whole; a row that is not JSON is reported by number (exit 1), never a traceback."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from jml.store.audit import AuditLog
from tests.integration.test_audit import FIELDS, TOKEN_ENV, Env, row
from tests.peers import ScimPeer

TITLES = ["SRE//oncall", "Dev//Ops: lead@EMEA", "a:b@c", "//x:y@z", "Ops: on-call @ night", "https:/x:y@",
          'Quote "A": b@c', "back\\slash//u:p@h", "ftp://ops:rota@x.example/", "Basic Operations"]


@pytest.fixture
def env(tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str], scim_peer: ScimPeer,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.setenv(TOKEN_ENV, scim_peer.token)
    e = Env(tmp_path, db_url, capsys, peer_url=scim_peer.url)
    try:
        yield e
    finally:
        e.store.close()


def _import(env: Env) -> list[dict[str, str]]:
    rows = []
    for i, title in enumerate(TITLES):
        r = row(f"E{i}", f"N{i}")
        r["job_title"] = title
        r["last_name"] = f"O'Neil//{i}: x@y"
        rows.append(r)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*FIELDS, "job_title"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    env.export.write_text(buf.getvalue(), encoding="utf-8")
    code, _, err = env.cli("sync")
    assert code == 0, err
    return rows


def test_audit_verify_passes_after_an_hr_import_full_of_slashes_colons_and_ats(env: Env) -> None:
    _import(env)
    pushes = [r["data"] for r in AuditLog(env.store).records() if r["kind"] == "push"]
    assert len({p["operation_id"] for p in pushes if p["action"] == "create"}) == len(TITLES)
    blob = json.dumps(pushes)
    for title in TITLES[:-2]:  # HR text is kept as it was (the ftp URL's password is masked)
        assert json.dumps(title)[1:-1] in blob
    code, out, err = env.cli("audit", "verify")
    assert code == 0, err
    assert "intact" in out
    code, out, err = env.cli("audit", "export")
    assert code == 0, err
    lines = out.splitlines()
    assert all(json.loads(x) for x in lines)
    code, out, err = env.verify_file(lines)
    assert code == 0 and "intact" in out, err


def test_a_row_that_is_not_json_is_reported_not_a_traceback(env: Env) -> None:
    env.fill(4)
    broken = {"d": '{"job_title":"SRE//***@example.com"'}
    if env.store.engine.dialect.name != "sqlite":
        # PostgreSQL's json column refuses text that is not JSON: such a row cannot exist there,
        # and the trail stays whole.
        with pytest.raises(DBAPIError, match="json"), env.store.engine.begin() as conn:
            conn.execute(text("UPDATE audit SET data = CAST(:d AS json) WHERE seq = 3"), broken)
        code, out, err = env.cli("audit", "verify")
        assert code == 0 and "intact" in out, err
        return
    with env.store.engine.begin() as conn:
        conn.execute(text("UPDATE audit SET data = :d WHERE seq = 3"), broken)
    code, out, err = env.cli("audit", "verify")
    assert code == 1
    assert "record 3" in err and "Traceback" not in err + out and "unexpected error" not in err
    code, out, err = env.cli("audit", "export")
    assert code == 1 and "record 3" in err and "Traceback" not in err
    assert len(out.splitlines()) == 5  # every record and the head line are still written
