"""The shipped monitoring files: Prometheus alert rules (checked and unit-tested by promtool)
and the Grafana dashboard, and that every metric they query is one jml exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge

from jml import metrics

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "docker" / "prometheus"
RULES = PROM / "alerts.yml"
RULE_TESTS = PROM / "alerts_test.yml"
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "jml.json"
ENSURE = PROM / "ensure_promtool.sh"

# DESIGN's metrics contract: families and their label names.
CONTRACT = {
    "jml_deprovision_duration_seconds": ("histogram", {"connector"}),
    "jml_deprovision_sla_breaches": ("counter", {"connector"}),
    "jml_deprovisions_pending": ("gauge", {"connector"}),
    "jml_deprovision_oldest_pending_seconds": ("gauge", {"connector"}),
    "jml_deprovisions_predicted_breach": ("gauge", {"connector"}),
    "jml_operations": ("counter", {"connector", "action", "outcome"}),
    "jml_operation_duration_seconds": ("histogram", {"connector", "action"}),
    "jml_outbox_depth": ("gauge", {"connector"}),
    "jml_dead_letters": ("gauge", {"connector"}),
    "jml_retries": ("counter", {"connector", "reason"}),
    "jml_source_last_success_timestamp_seconds": ("gauge", {"source"}),
    "jml_source_records": ("gauge", {"source"}),
    "jml_plans_held": ("gauge", set()),
    "jml_guard_held_plans": ("counter", set()),
    "jml_webhook_requests": ("counter", {"source", "outcome"}),
}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry exposes, children or not (a labelled metric without
    children yet exposes no sample, so the names come from the family type)."""
    out: set[str] = set()
    for family in registry.collect():
        out.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
        out.update(s.name for s in family.samples)
    return out


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "inf", "nan",
             # aggregation operators: `sum by (x) (…)` leaves `sum` before `by`, not before `(`
             "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
             "quantile", "limitk", "limit_ratio"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects: identifiers that are not functions,
    aggregation keywords, label names (in {…}, by/on/without/ignoring (…)), durations or
    strings."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", e)
    names = set()
    for m in re.finditer(r"(?<![\w$.])([A-Za-z_:][\w:]*)\b(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def rule_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [(r.get("alert") or r.get("record"), r["expr"]) for g in doc["groups"] for r in g["rules"]]


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in doc["panels"]:
        out.append(p)
        out.extend(p.get("panels") or [])
    return out


def dashboard_exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels(dashboard()) for t in p.get("targets") or []]


# ---- the metric contract ---------------------------------------------------------------
def test_registry_exports_every_contract_family_with_its_labels() -> None:
    by_name = {f.name: f for f in metrics.REGISTRY.collect()}
    for name, (kind, _labels) in CONTRACT.items():
        assert name in by_name, f"{name} is not exported"
        assert by_name[name].type == kind, name
    collectors = {c._name: c for c in vars(metrics).values() if hasattr(c, "_labelnames")}  # type: ignore[attr-defined]
    for name, (_kind, labels) in CONTRACT.items():
        assert set(collectors[name]._labelnames) == labels, name


def test_metric_name_parser() -> None:
    assert metric_names('sum by (connector, le) (rate(jml_a_bucket{outcome=~"x|y"}[5m])) / on (job) jml_b') == {
        "jml_a_bucket", "jml_b"}
    assert metric_names("time() - jml_source_last_success_timestamp_seconds > 3600") == {
        "jml_source_last_success_timestamp_seconds"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(jml_x_bucket[$__rate_interval])))") == {
        "jml_x_bucket"}
    assert metric_names("jml_a and on (instance) (jml_b > 0) unless jml_c offset 5m") == {"jml_a", "jml_b", "jml_c"}


def test_exported_names_include_suffixes() -> None:
    reg = CollectorRegistry()
    Counter("x_events", "x", ["connector"], registry=reg)
    Gauge("x_depth", "x", registry=reg)
    names = exported_names(reg)
    assert {"x_events_total", "x_depth"} <= names and "x_events" not in names


@pytest.mark.parametrize(("where", "exprs"), [("rules", rule_exprs), ("dashboard", dashboard_exprs)])
def test_every_queried_metric_is_exported(where: str, exprs: Any) -> None:
    exported = exported_names(metrics.REGISTRY)
    pairs = exprs()
    assert pairs, f"no expressions found in the {where}"
    unknown = {(title, name) for title, expr in pairs for name in metric_names(expr) if name not in exported}
    assert not unknown, f"{where} query metrics jml does not export: {sorted(unknown)}"


def test_the_sla_and_operations_families_are_all_shown_or_alerted() -> None:
    used = {n for _, e in rule_exprs() + dashboard_exprs() for n in metric_names(e)}
    for name, (kind, _labels) in CONTRACT.items():
        assert any(u == name or u.startswith(name + "_") for u in used), f"{name} ({kind}) is on no panel or rule"


def test_alert_rules_cover_the_required_cases() -> None:
    alerts = dict(rule_exprs())
    required = {
        "JmlDeprovisionSlaBreached": "jml_deprovision_sla_breaches_total",
        "JmlLeaverPendingPastSla": "jml_deprovision_oldest_pending_seconds",
        "JmlLeaverPredictedBreach": "jml_deprovisions_predicted_breach",
        "JmlSourceStale": "jml_source_last_success_timestamp_seconds",
        "JmlDeadLetters": "jml_dead_letters",
        "JmlPlanHeld": "jml_plans_held",
        "JmlConnectorErrorRate": "jml_operations_total",
    }
    for alert, metric in required.items():
        assert alert in alerts and metric in metric_names(alerts[alert]), alert
    tested = {t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
              for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert tested == set(alerts), f"alerts without a firing unit test: {sorted(set(alerts) - tested)}"


# ---- the dashboard ---------------------------------------------------------------------
def test_dashboard_is_provisionable_and_leads_with_the_sla() -> None:
    doc = dashboard()
    assert doc["uid"] and doc["title"] and "__inputs" not in doc  # provisioned as is, not imported
    assert doc["templating"]["list"][0] == {**doc["templating"]["list"][0], "type": "datasource",
                                            "query": "prometheus"}
    ps = panels(doc)
    ids = [p["id"] for p in ps]
    assert len(ids) == len(set(ids))
    for p in ps:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        for t in p.get("targets") or []:
            assert t["datasource"]["uid"] == "${datasource}" and t["expr"].strip(), p["title"]
    titles = [p["title"] for p in ps]
    assert titles[0] == "Deprovision SLA"
    first_row = titles[: titles.index("Operations and errors")]
    for wanted in ("Leavers in flight", "Time left", "p50 / p95", "breaches"):
        assert any(wanted.lower() in t.lower() for t in first_row), wanted
    quantiles = [e for _, e in dashboard_exprs() if "jml_deprovision_duration_seconds_bucket" in e]
    assert any("histogram_quantile(0.5," in e for e in quantiles)
    assert any("histogram_quantile(0.95," in e for e in quantiles)
    assert all("by (le, connector)" in e for e in quantiles)


# ---- promtool --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        res = subprocess.run(["bash", str(ENSURE)], capture_output=True, text=True, timeout=900)
        exe = shutil.which("promtool")
        if exe is None:
            why = (res.stderr or res.stdout).strip() or f"exit {res.returncode}"
            pytest.fail(f"promtool is missing and {ENSURE.name} could not install it: {why}", pytrace=False)
    return exe


def test_promtool_check_rules(promtool: str) -> None:
    res = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 8 rules found" in res.stdout


def test_promtool_test_rules(promtool: str) -> None:
    res = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], capture_output=True, text=True, timeout=120,
                         cwd=PROM)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def test_promtool_test_rules_catches_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    # The rule tests are not vacuous: with a threshold raised they fail.
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    (tmp_path / RULES.name).write_text(RULES.read_text(encoding="utf-8").replace("jml_dead_letters > 0",
                                                                                  "jml_dead_letters > 5"))
    res = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert res.returncode != 0 and "JmlDeadLetters" in res.stdout + res.stderr
