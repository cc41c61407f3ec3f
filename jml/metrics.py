"""Prometheus metrics: one registry, the names of the metric contract
(docker/prometheus rules and the Grafana dashboard rely on them).

Labels carry connector, action, outcome, reason and source names only: never a person.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

_DEPROVISION_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
_OP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

deprovision_duration = Histogram(
    "jml_deprovision_duration_seconds",
    "Effective termination to deprovision verified in the app.",
    ["connector"], buckets=_DEPROVISION_BUCKETS, registry=REGISTRY)
sla_breaches = Counter(
    "jml_deprovision_sla_breaches", "Leavers whose deprovision missed the SLA deadline.",
    ["connector"], registry=REGISTRY)
sla_breaches_by_cause = Counter(
    "jml_deprovision_sla_breaches_by_cause", "Missed deprovision deadlines by cause: hr_data_late, held_plan, "
    "paused_connector, vendor_rate_limit, app_errors, jml_backlog.", ["connector", "cause"], registry=REGISTRY)
deprovisions_pending = Gauge(
    "jml_deprovisions_pending", "Leavers not yet verified deprovisioned.", ["connector"], registry=REGISTRY)
oldest_pending = Gauge(
    "jml_deprovision_oldest_pending_seconds", "Age of the oldest unverified leaver since effective termination.",
    ["connector"], registry=REGISTRY)
predicted_breach = Gauge(
    "jml_deprovisions_predicted_breach", "Pending leavers predicted to miss the SLA at the current rate.",
    ["connector"], registry=REGISTRY)
deprovision_sla = Gauge(
    "jml_deprovision_sla_seconds", "The configured deprovision SLA per connector (for alert rules).",
    ["connector"], registry=REGISTRY)
deprovision_verifications = Counter(
    "jml_deprovision_verifications", "Read-backs of a leaver's account after its deprovision "
    "(verified, not_deprovisioned: re-planned, read_error).", ["connector", "outcome"], registry=REGISTRY)
operations = Counter(
    "jml_operations", "Operations finished, by outcome (success, retry, dead).",
    ["connector", "action", "outcome"], registry=REGISTRY)
operation_duration = Histogram(
    "jml_operation_duration_seconds", "Time to apply one operation, retries included.",
    ["connector", "action"], buckets=_OP_BUCKETS, registry=REGISTRY)
outbox_depth = Gauge("jml_outbox_depth", "Operations waiting in the outbox.", ["connector"], registry=REGISTRY)
dead_letters = Gauge("jml_dead_letters", "Dead-lettered operations.", ["connector"], registry=REGISTRY)
retries = Counter("jml_retries", "Retried attempts, by reason.", ["connector", "reason"], registry=REGISTRY)
source_last_success = Gauge(
    "jml_source_last_success_timestamp_seconds", "When a source was last read successfully.",
    ["source"], registry=REGISTRY)
source_records = Gauge("jml_source_records", "Rows in the last accepted export.", ["source"], registry=REGISTRY)
source_errors = Counter("jml_source_errors", "Failed or rejected source reads.", ["source", "reason"],
                        registry=REGISTRY)
source_stale = Gauge(
    "jml_source_stale", "1 when a source has not been read successfully within its staleness bound "
    "(a warning: it does not fail /readyz).", ["source"], registry=REGISTRY)
plans_held = Gauge("jml_plans_held", "Plans held by the guard, awaiting approval.", registry=REGISTRY)
guard_held_plans = Counter("jml_guard_held_plans", "Plans the guard has held.", registry=REGISTRY)
webhook_requests = Counter(
    "jml_webhook_requests", "Webhook requests by outcome.", ["source", "outcome"], registry=REGISTRY)
http_request_duration = Histogram(
    "jml_connector_http_request_duration_seconds", "HTTP requests to apps, by connector and status class.",
    ["connector", "method", "status"], buckets=_OP_BUCKETS, registry=REGISTRY)
plan_operations = Histogram(
    "jml_plan_operations", "Operations per plan.", buckets=(0, 1, 10, 100, 1000, 10000, 100000), registry=REGISTRY)
events_pending = Gauge("jml_events_pending", "Webhook events stored and not yet processed.", registry=REGISTRY)
events_oldest_pending = Gauge(
    "jml_events_oldest_pending_seconds", "How long the oldest unprocessed webhook event has waited (0: none).",
    registry=REGISTRY)
events_quarantined = Gauge(
    "jml_events_quarantined", "Webhook events set aside because they failed while processed.", registry=REGISTRY)
connector_paused = Gauge("jml_connector_paused", "1 when a connector is paused.", ["connector"], registry=REGISTRY)
notifications_sent = Counter(
    "jml_notifications_sent", "Notifications delivered, by channel (slack, email).", ["channel"], registry=REGISTRY)
notifications_failed = Counter(
    "jml_notifications_failed", "Notifications that could not be delivered after retries, by channel.",
    ["channel"], registry=REGISTRY)
purged_people = Counter(
    "jml_purged_people", "Leavers whose personal data retention erased.", registry=REGISTRY)
access_grants_active = Gauge(
    "jml_access_grants_active", "Requested and break-glass grants in force.", ["connector"], registry=REGISTRY)
access_expiry_seconds = Histogram(
    "jml_access_expiry_seconds", "From a grant's expiry (or revoke) to its removal verified in the app.",
    ["connector"], buckets=(30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400), registry=REGISTRY)
access_removal_breaches = Counter(
    "jml_access_removal_sla_breaches", "Ended grants not verified removed within the deprovision SLA.",
    ["connector"], registry=REGISTRY)
access_jit_grants = Counter(
    "jml_access_jit_grants", "Break-glass grants taken without approval.", ["connector"], registry=REGISTRY)
build_info = Gauge("jml_build_info", "Version.", ["version"], registry=REGISTRY)


def observe_http(connector: str, method: str, seconds: float, status: int) -> None:
    http_request_duration.labels(connector, method, f"{status // 100}xx" if status else "error").observe(seconds)


def render() -> bytes:
    return generate_latest(REGISTRY)
