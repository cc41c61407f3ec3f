"""`jml token create NAME --role ROLE… [--expires DURATION]` / `token list` / `token revoke NAME`:
the token is printed once and stored as its sha256; list shows no secret; a revoked token is
refused on the very next request; usage errors exit 2 with one line on stderr."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from jml import config as config_mod
from jml.cli import main
from jml.context import ServiceContext
from jml.outbox_workers import build_engine
from jml.runtime import Runtime
from jml.web import add_routes
from jml.web.auth import token_hash


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "jml.yaml"
    path.write_text(yaml.safe_dump({"state": {"url": "sqlite:///jml.db"}}))
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_token_lifecycle(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await asyncio.to_thread(_run, capsys, "--config", str(cfg), "token", "create", "ci-bot",
                                             "--role", "viewer", "operator", "--expires", "30d")
    assert code == 0, err
    secret = out.strip()
    assert secret.startswith("jml_") and len(secret) > 40 and "\n" not in secret
    assert "shown only this once" in err and secret not in err
    code, out, err = await asyncio.to_thread(_run, capsys, "--config", str(cfg), "token", "list")
    assert code == 0 and "ci-bot" in out and "roles=operator,viewer" in out and "live" in out
    assert secret not in out
    db = cfg.parent / "jml.db"
    with sqlite3.connect(db) as conn:
        dump = repr(conn.execute("SELECT * FROM api_token").fetchall())
    assert secret not in dump and token_hash(secret) in dump

    rt = Runtime(config_mod.load(cfg))
    app = web.Application()
    add_routes(app, ServiceContext(rt=rt, engine=build_engine(rt), started_at=rt.clock()))
    async with TestClient(TestServer(app)) as client:
        auth = {"Authorization": f"Bearer {secret}"}
        assert (await client.get("/api/v1/status", headers=auth)).status == 200
        assert (await client.post("/api/v1/connectors/nope/pause", headers=auth)).status == 404  # operator: allowed
        assert (await client.post("/api/v1/offboard", json={"employee_id": "E1", "reason": "x"},
                                  headers=auth)).status == 403  # not hr
        code, _out, err = await asyncio.to_thread(_run, capsys, "--config", str(cfg), "token", "revoke", "ci-bot")
        assert code == 0, err
        assert (await client.get("/api/v1/status", headers=auth)).status == 401  # at once
    code, out, _ = await asyncio.to_thread(_run, capsys, "--config", str(cfg), "token", "list")
    assert "revoked" in out
    kinds = [(r["kind"], r["data"].get("name")) for r in rt.audit.records()]
    assert ("token_create", "ci-bot") in kinds and ("token_revoke", "ci-bot") in kinds
    assert all(secret not in str(r) for r in rt.audit.records())
    rt.store.close()


@pytest.mark.parametrize("argv", [
    ["token", "create", "x", "--role", "superuser"],
    ["token", "create", "bad name", "--role", "viewer"],
    ["token", "create", "x", "--role", "viewer", "--expires", "soon"],
    ["token", "create", "x", "--role", "viewer", "--expires", "0s"],
    ["token", "revoke", "nobody"],
])
def test_token_usage_errors_exit_2(cfg: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = _run(capsys, "--config", str(cfg), *argv)
    assert code == 2 and out == ""
    assert err.startswith("jml: ") and err.count("\n") == 1 and "Traceback" not in err


def test_token_names_are_not_reused(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "--config", str(cfg), "token", "create", "a", "--role", "admin")[0] == 0
    assert _run(capsys, "--config", str(cfg), "token", "revoke", "a")[0] == 0
    code, _, err = _run(capsys, "--config", str(cfg), "token", "create", "a", "--role", "admin")
    assert code == 2 and "exists" in err


def test_token_create_needs_a_role(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--config", str(cfg), "token", "create", "x"])
    assert e.value.code == 2


def test_roles_flag_repeats(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, _err = _run(capsys, "--config", str(cfg), "token", "create", "r", "--role", "hr", "--role", "auditor")
    assert code == 0
    _, out, _ = _run(capsys, "--config", str(cfg), "token", "list")
    assert "roles=auditor,hr" in out
