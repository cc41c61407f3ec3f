"""Issue 17, the evidence page (auditor): the audit trail with its verify result, the access
report (CSV/JSON) and the monthly SLA report, each downloadable."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.integration.test_attention import app

__all__ = ["app"]  # the fixture


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


async def test_the_auditor_sees_and_downloads_the_evidence(app: Any) -> None:
    client, tokens, rt, _ = app
    auditor = {"Authorization": f"Bearer {tokens['auditor']}"}
    rt.audit.append("test", {"x": 1}, now=rt.clock())
    r = await client.get("/audit", headers=auditor)
    body = await r.text()
    assert r.status == 200, body
    text = _text(body)
    assert "Hash chain check: intact:" in text
    for href in ("/api/v1/audit", "/api/v1/reports/access?format=csv", "/api/v1/reports/access?format=json",
                 "/api/v1/reports/sla?month=2026-11&amp;format=csv",
                 "/api/v1/reports/sla?month=2026-11&amp;format=json"):
        assert f'href="{href}"' in body, href
    assert "Deprovision SLA, 2026-11" in text and "breached" in text
    csv_text = await (await client.get("/api/v1/reports/sla?month=2026-11&format=csv", headers=auditor)).text()
    header, *lines = csv_text.strip().splitlines()
    assert header == "employee_id,name,connector,effective,deadline,verified,seconds,result,cause"
    assert any(",chat," in line and ",breached," in line for line in lines), csv_text
    doc = json.loads(await (await client.get("/api/v1/reports/sla?month=2026-11", headers=auditor)).text())
    assert doc["month"] == "2026-11" and doc["deprovisions"]
    assert (await client.get("/api/v1/reports/sla?month=nope", headers=auditor)).status == 400
    access = await (await client.get("/api/v1/reports/access?format=json", headers=auditor)).text()
    assert json.loads(access)
    viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
    assert (await client.get("/audit", headers=viewer)).status == 403
    assert (await client.get("/api/v1/reports/sla", headers=viewer)).status == 403
