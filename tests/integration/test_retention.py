"""Retention on both databases (SQLite and PostgreSQL): the CLI in-process against scim2-server,
every table read back through SQLAlchemy for the leavers' names and e-mail addresses, the trail
verified before and after, tampering with an erased record caught."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, inspect, text

from jml import cli
from jml import config as config_mod
from jml.runtime import Runtime
from jml.store.tables import AccessRequestRow
from tests.peers import ScimPeer

TOKEN_ENV = "JML_TEST_RETENTION_TOKEN"
FIELDS = ["employee_id", "first_name", "last_name", "work_email", "department", "status", "hire_date",
          "termination_date"]
GONE = ("Isolde", "Fenwickshaw")
STAYING = ("Ottokar", "Brindlemere-Ødegård")


def _export(path: Path, gone_status: str, staying_status: str = "Active") -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerow({"employee_id": "E1", "first_name": GONE[0], "last_name": GONE[1],
                "work_email": "isolde.fenwickshaw@example.com", "department": "Sales", "status": gone_status,
                "hire_date": "2019-01-07", "termination_date": "2024-03-29" if gone_status == "Terminated" else ""})
    w.writerow({"employee_id": "E2", "first_name": STAYING[0], "last_name": STAYING[1],
                "work_email": "ottokar.brindlemere@example.com", "department": "Sales", "status": staying_status,
                "hire_date": "2019-01-07",
                "termination_date": "2024-05-31" if staying_status == "Terminated" else ""})
    path.write_text(buf.getvalue(), encoding="utf-8")


def _cell(value: Any) -> str:
    # JSON as the text it stands for: SQLite hands back "\u00d8degård" for a JSON column's "Ødegård".
    if isinstance(value, str) and value[:1] in ("{", "[", '"'):
        try:
            return json.dumps(json.loads(value), ensure_ascii=False)
        except ValueError:
            return value
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _everything(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return "\n".join(_cell(c) for t in inspect(conn).get_table_names()
                             for row in conn.execute(text(f'SELECT * FROM "{t}"')).fetchall() for c in row).lower()
    finally:
        engine.dispose()


def _run(config: Path, *args: str) -> int:
    return cli.main(["--config", str(config), *args])


def test_purge_on_both_databases(db_url: str, scim_peer: ScimPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(TOKEN_ENV, scim_peer.token)
    doc: dict[str, Any] = {
        "state": {"url": db_url},
        "sources": {"hris": {"location": "./hr.csv", "timezone": "Europe/Berlin"}},
        "guard": {"max_deprovision_percent": 100},
        "retention": {"leavers_after": "400d"},
        "policy": {"rules": [{"name": "all", "when": {"status": "Active"}, "grant": {"demo": ["Staff"]}}]},
        "connectors": {"demo": {"type": "scim", "url": scim_peer.url, "token_env": TOKEN_ENV, "max_attempts": 1}},
    }
    config = tmp_path / "jml.yaml"
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    _export(tmp_path / "hr.csv", "Active")
    assert _run(config, "sync") == 0
    _export(tmp_path / "hr.csv", "Terminated")
    assert _run(config, "sync") == 0
    # A record naming both people: the first purge rewrites it (the JSON type escapes "Ø"), the second
    # must still find the second name in it.
    rt = Runtime(config_mod.load(config))
    rt.audit.append("note", {"text": "Isolde Fenwickshaw handed over to Brindlemere-Ødegård"}, now=rt.clock())
    rt.store.close()
    # The leaver once asked for access for the colleague who stays: their row names the leaver.
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(AccessRequestRow.__table__.insert().values(  # type: ignore[attr-defined]
            id="ar-1", employee_id="E2", connector="demo", grant="group:Ops", reason="cover for Isolde Fenwickshaw",
            requested_by="person:isolde.fenwickshaw@example.com", requester="person isolde.fenwickshaw@example.com",
            state="denied"))
    engine.dispose()
    before = _everything(db_url)
    assert "fenwickshaw" in before and "isolde.fenwickshaw@example.com" in before

    assert _run(config, "purge", "--dry-run") == 0
    assert "would erase the personal data of 1 leaver(s): E1" in capsys.readouterr().out
    assert _everything(db_url) == before

    assert _run(config, "purge") == 0
    assert "erased the personal data of 1 leaver(s): E1" in capsys.readouterr().out
    after = _everything(db_url)
    for term in ("isolde", "fenwickshaw"):
        assert term not in after, term
    assert "brindlemere-ødegård" in after and "ottokar.brindlemere@example.com" in after  # not a leaver: untouched
    assert _run(config, "audit", "verify") == 0

    # The second leaver, gone long enough too: the record the first purge rewrote is rewritten again.
    _export(tmp_path / "hr.csv", "Terminated", "Terminated")
    assert _run(config, "sync") == 0
    capsys.readouterr()
    assert _run(config, "purge") == 0
    assert "erased the personal data of 1 leaver(s): E2" in capsys.readouterr().out
    after = _everything(db_url)
    for term in ("ottokar", "ødegård", "brindlemere"):
        assert term not in after, term
    assert _run(config, "audit", "verify") == 0

    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            seq = conn.execute(text("SELECT seq FROM audit WHERE kind = 'note'")).scalar()
            conn.execute(text("UPDATE audit SET kind = 'edited' WHERE seq = :s"), {"s": seq})
    finally:
        engine.dispose()
    capsys.readouterr()
    assert _run(config, "audit", "verify") == 1
    assert f"record {seq}" in capsys.readouterr().err
