"""Every connector declares the write rate it keeps to, and the SLA forecast paces by it
(issue 13: Slack's 3 writes/s never reached the forecast when it read an undeclared attribute)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jml import config as config_mod
from jml.runtime import Runtime
from jml.sla_forecast import _rate

CONNECTORS = {
    "app": {"type": "scim", "url": "http://127.0.0.1:9/", "token_env": "T"},
    "limited": {"type": "scim", "url": "http://127.0.0.1:9/", "token_env": "T", "rate_limit": 7},
    "slack": {"type": "slack", "token_env": "T", "scim_url": "http://127.0.0.1:9/"},
    "github": {"type": "github", "mode": "org", "org": "acme", "token_env": "T", "api_url": "http://127.0.0.1:9"},
    "emu": {"type": "github", "mode": "emu", "enterprise": "acme", "token_env": "T",
            "api_url": "http://127.0.0.1:9"},
}


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    monkeypatch.setenv("T", "not-a-real-token")
    path = tmp_path / "jml.yaml"
    path.write_text(yaml.safe_dump({"state": {"url": f"sqlite:///{tmp_path / 'jml.db'}"},
                                    "sources": {"hris": {"location": str(tmp_path)}},
                                    "connectors": CONNECTORS}), encoding="utf-8")
    return Runtime(config_mod.load(path))


@pytest.mark.parametrize(("name", "rate"), [("app", None), ("limited", 7.0), ("slack", 3.0), ("github", 1.0),
                                            ("emu", 1.0)])
def test_each_connector_declares_its_write_rate_and_the_forecast_reads_it(runtime: Runtime, name: str,
                                                                           rate: float | None) -> None:
    assert runtime.connector(name).write_rate == rate
    assert _rate(runtime, name) == rate
