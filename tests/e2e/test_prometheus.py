"""A real Prometheus (Debian's `prometheus`) scraping a running `jml serve` every second, and
PromQL over the scraped data returning the deprovision figures after a leaver — and the
shipped alert rules loaded by that Prometheus."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.helpers import http, person, scim_users, start_serve, wait_until, write_config, write_export
from tests.peers import ScimPeer, free_port

ROOT = Path(__file__).resolve().parents[2]
ENSURE = ROOT / "docker" / "prometheus" / "ensure_promtool.sh"
RULES = ROOT / "docker" / "prometheus" / "alerts.yml"


def _prometheus_bin() -> str:
    exe = shutil.which("prometheus")
    if exe is None:
        res = subprocess.run(["bash", str(ENSURE)], capture_output=True, text=True, timeout=900)
        exe = shutil.which("prometheus")
        if exe is None:
            why = (res.stderr or res.stdout).strip() or f"exit {res.returncode}"
            pytest.fail(f"prometheus is missing and {ENSURE.name} could not install it: {why}", pytrace=False)
    return exe


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, promql: str) -> list[dict[str, Any]]:
        status, body = http(self.url + "api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert status == 200, body[:500]
        doc = json.loads(body)
        assert doc["status"] == "success", doc
        return list(doc["data"]["result"])

    def value(self, promql: str, **labels: str) -> float | None:
        for r in self.query(promql):
            if all(r["metric"].get(k) == v for k, v in labels.items()):
                return float(r["value"][1])
        return None


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    exe = _prometheus_bin()
    procs: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> Prometheus:
        port = free_port()
        folder = tmp_path / "prometheus"
        folder.mkdir()
        shutil.copy(RULES, folder / "alerts.yml")
        (folder / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [{"job_name": "jml", "scrape_interval": "1s", "scrape_timeout": "900ms",
                                "static_configs": [{"targets": [target]}]}],
        }), encoding="utf-8")
        log = (folder / "prometheus.log").open("wb")
        procs.append(subprocess.Popen(
            [exe, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT, cwd=folder))
        url = f"http://127.0.0.1:{port}/"

        def ready() -> bool:
            if procs[-1].poll() is not None:
                raise AssertionError((folder / "prometheus.log").read_text(errors="replace")[-3000:])
            try:
                return http(url + "-/ready", timeout=2)[0] == 200
            except OSError:
                return False
        wait_until(ready, 30, 0.2, "prometheus ready")
        return Prometheus(url)

    try:
        yield start
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def test_prometheus_scrapes_serve_and_promql_returns_the_deprovision_figures(
        scim: ScimPeer, tmp_path: Path, prometheus_for: Any) -> None:
    exports = tmp_path / "exports"
    people = [person(i) for i in range(1, 4)]
    write_export(exports, "export-1.csv", people)
    cfg = write_config(tmp_path, scim_url=scim.url, extra={
        "guard": {"max_deprovision_percent": 100, "max_deprovision_count": 100}})
    listen = yaml.safe_load(cfg.read_text(encoding="utf-8"))["server"]["listen"]
    with start_serve(cfg, env={"SCIM_TOKEN": scim.token}) as served:
        served.wait_ready()
        wait_until(lambda: len(scim_users(scim.url, scim.token)) == 3, 30, what="the joiners pushed")
        prom = prometheus_for(listen)
        wait_until(lambda: prom.value('up{job="jml"}') == 1.0, 30, 0.3, "prometheus scraping jml serve")
        # the SLA tick exports the per-connector series from zero
        wait_until(lambda: prom.value("jml_deprovision_duration_seconds_count", connector="demo") == 0.0, 40, 0.5,
                   "jml_deprovision_duration_seconds_count 0 scraped")
        assert prom.value("jml_deprovision_sla_breaches_total", connector="demo") == 0.0
        assert prom.value("jml_deprovision_sla_seconds", connector="demo") == 600.0

        # HR: person 2 is terminated; the daemon polls, deprovisions and verifies.
        write_export(exports, "export-2.csv", [people[0], {**people[1], "status": "Terminated"}, people[2]])
        count = wait_until(lambda: prom.value("jml_deprovision_duration_seconds_count", connector="demo") == 1.0,
                           60, 0.5, "one verified deprovision in Prometheus")
        assert count
        users = {u["externalId"]: u for u in scim_users(scim.url, scim.token)}
        assert users[people[1]["employee_id"]]["active"] is False

        # The figures, from the scraped data.
        seconds = prom.value("jml_deprovision_duration_seconds_sum", connector="demo")
        assert seconds is not None and 0 <= seconds < 60
        p95 = prom.value("histogram_quantile(0.95, sum by (le, connector) (jml_deprovision_duration_seconds_bucket))",
                         connector="demo")
        assert p95 is not None and 0 < p95 <= 60  # the leaver is in the first buckets (5 s .. 60 s)
        assert prom.value("sum by (connector) (jml_deprovision_sla_breaches_total)", connector="demo") == 0.0
        assert prom.value("jml_deprovision_verifications_total", connector="demo", outcome="verified") == 1.0
        wait_until(lambda: prom.value("jml_deprovisions_pending", connector="demo") == 0.0, 30, 0.5,
                   "no leaver pending")
        assert prom.value("jml_deprovision_oldest_pending_seconds", connector="demo") == 0.0
        ops = prom.value('sum by (connector) (jml_operations_total{action="deactivate", outcome="success"})',
                         connector="demo")
        assert ops == 1.0

        # Prometheus loaded the shipped rules, and none is firing.
        status, body = http(prom.url + "api/v1/rules")
        assert status == 200
        groups = json.loads(body)["data"]["groups"]
        names = {r["name"] for g in groups for r in g["rules"]}
        assert {"JmlDeprovisionSlaBreached", "JmlLeaverPendingPastSla", "JmlLeaverPredictedBreach"} <= names
        assert all(r["state"] == "inactive" for g in groups for r in g["rules"]
                   if r["name"].startswith("JmlDeprovision") or r["name"].startswith("JmlLeaver"))
        assert served.stop() == 0
