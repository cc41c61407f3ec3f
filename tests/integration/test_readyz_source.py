"""Issue 17: a stale HR export is a warning (body, page, metric), never a 503 on /readyz —
that would take the webhooks offline behind a load balancer exactly when they matter.
The inbox-stall check still fails readiness (tests/integration/test_inbox_quarantine.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from jml import config as config_mod
from jml import health
from jml.context import ServiceContext
from jml.runtime import Runtime

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


class _Lease:
    started = True
    leader = True


async def test_a_stale_source_is_a_warning_not_a_503(tmp_path: Path) -> None:
    (tmp_path / "exports").mkdir()
    cfg = config_mod.from_dict({
        "state": {"url": f"sqlite:///{tmp_path / 'jml.db'}"},
        "sources": {"hris": {"location": "./exports/", "poll_interval": "1m"}},
    }, tmp_path)
    rt = Runtime(cfg, clock=lambda: NOW)
    ctx = ServiceContext(rt=rt, engine=cast(Any, None))
    ctx.source_ok_at["hris"] = NOW - dt.timedelta(hours=2)
    ctx.source_error["hris"] = "export rejected: missing required columns"
    app = web.Application()
    health.add_routes(app, ctx, _Lease())
    try:
        async with TestClient(TestServer(app)) as client:
            r = await client.get("/readyz")
            body = await r.json()
            assert r.status == 200, body
            src = body["checks"]["source"]
            assert src["stale"] is True and src["ok"] is False and src["required"] is False
            assert "stale" in src["warning"] and "missing required columns" in src["error"]
            metrics_text = (await (await client.get("/metrics")).read()).decode()
            assert 'jml_source_stale{source="hris"} 1.0' in metrics_text
            ctx.source_ok_at["hris"] = NOW
            ctx.source_error.pop("hris")
            body = await (await client.get("/readyz")).json()
            assert body["checks"]["source"]["stale"] is False
            metrics_text = (await (await client.get("/metrics")).read()).decode()
            assert 'jml_source_stale{source="hris"} 0.0' in metrics_text
    finally:
        rt.store.close()
