"""`jml serve` as a real process against real peers on loopback.

Each test starts the daemon with a temporary config (SQLite state, a folder or S3 source
polled every second, scim2-server as the app) and watches what reaches the app.
"""

from __future__ import annotations

import collections
import signal
import time
from pathlib import Path

import boto3

from tests.e2e.conftest import AWS_TEST_ENV
from tests.e2e.helpers import (
    Served,
    db_scalar,
    export_bytes,
    person,
    scim_users,
    start_serve,
    wait_until,
    write_config,
    write_export,
)
from tests.peers import ScimPeer
from tests.vendor_peers.proxy import Fault, VendorProxy


def _external_ids(scim: ScimPeer) -> collections.Counter[str]:
    return collections.Counter(u.get("externalId") for u in scim_users(scim.url, scim.token))


def _has_users(scim: ScimPeer, ids: set[str]) -> bool:
    return ids <= set(_external_ids(scim))


def _plans(db: Path) -> int:
    return int(db_scalar(db, "SELECT count(*) FROM plan"))


UNCHANGED = "export unchanged: planning only dated transitions"


def _unchanged_polls(served: Served) -> int:
    """How many polls so far found the export unchanged (each one logs it)."""
    return sum(1 for r in served.log_records() if r.get("event") == UNCHANGED)


def test_serve_health_metrics_folder_poll_and_unchanged_export(scim: ScimPeer, tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    first = [person(i) for i in range(1, 6)]
    write_export(exports, "export-1.csv", first)
    cfg = write_config(tmp_path, scim_url=scim.url)
    db = tmp_path / "jml.db"
    with start_serve(cfg, env={"SCIM_TOKEN": scim.token}) as served:
        ready = served.wait_ready()  # ready before the first HR read: the source is a warning, not a gate
        assert ready["checks"]["database"]["ok"] and ready["checks"]["source"]["required"] is False
        ready = wait_until(lambda: (doc := served.get_json("/readyz")[1])["checks"]["source"]["ok"] and doc, 20,
                           what="the first HR read")
        assert ready["workers"] == "leader"
        assert served.get_json("/healthz") == (200, {"status": "ok"})

        wait_until(lambda: _has_users(scim, {p["employee_id"] for p in first}), 20, what="the first export pushed")
        wait_until(lambda: 'jml_outbox_depth{connector="demo"} 0.0' in served.get("/metrics")[1].decode(),
                   10, what="outbox depth 0 in /metrics")
        status, body = served.get("/metrics")
        text = body.decode()
        assert status == 200
        assert 'jml_source_last_success_timestamp_seconds{source="hris"}' in text
        assert "jml_operations_total" in text
        assert _plans(db) == 1

        # More polls of the same file (waited for in the log): no new plan, no new export recorded.
        polls = _unchanged_polls(served)
        wait_until(lambda: _unchanged_polls(served) >= polls + 2, 15, what="two more polls of the unchanged export")
        assert _plans(db) == 1
        assert db_scalar(db, "SELECT count(*) FROM export") == 1

        # A newer export in the folder is read at the next poll and reaches the app.
        write_export(exports, "export-2.csv", [*first, person(6)])
        wait_until(lambda: _has_users(scim, {"E0000006"}), 15, what="the new joiner pushed")
        assert _plans(db) == 2
        assert sum(_external_ids(scim).values()) == 6

        # Malformed requests are the client's problem, never a 5xx.
        assert served.post("/metrics", b"\xff\x00")[0] == 405
        assert served.get("/readyz?%zz=%%")[0] == 200
        assert served.stop() == 0
    assert scim.token not in served.logs()
    assert any(r.get("event") == "http request" and r.get("method") == "POST" and r.get("path") == "/metrics"
               and r.get("status") == 405 for r in served.log_records()), "the access log names refused requests"


def test_failed_source_reads_as_stale_never_as_everyone_left(scim: ScimPeer, tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    people = [person(i) for i in range(1, 4)]
    path = write_export(exports, "export.csv", people)
    content = path.read_bytes()
    # Limits off: if a failed read counted as an empty export, these people would be leavers at once.
    extra = {
        "lifecycle": {"missing_after": 1},
        "guard": {"max_deprovision_percent": 100, "max_deprovision_count": 1000, "max_shrink_percent": 100},
    }
    cfg = write_config(tmp_path, scim_url=scim.url, hris={"stale_after": "2s"}, extra=extra)
    db = tmp_path / "jml.db"
    with start_serve(cfg, env={"SCIM_TOKEN": scim.token}) as served:
        served.wait_ready()
        wait_until(lambda: _has_users(scim, {p["employee_id"] for p in people}), 20, what="the export pushed")
        plans = _plans(db)

        path.unlink()  # the HR drop fails: the folder is empty

        def stale() -> dict[str, object] | None:
            status, doc = served.get_json("/readyz")
            # A warning in the body and a metric; still ready (webhooks stay online: issue 17).
            return doc if status == 200 and doc["checks"]["source"].get("stale") else None

        doc = wait_until(stale, 10, what="/readyz 200 naming a stale source")
        assert "no .csv export" in doc["checks"]["source"]["error"]
        assert doc["checks"]["database"]["ok"]
        assert _plans(db) == plans
        assert all(u.get("active", True) for u in scim_users(scim.url, scim.token))

        path.write_bytes(content)  # the next drop arrives (unchanged): ready again, still nothing to do
        wait_until(lambda: served.get_json("/readyz")[1]["checks"]["source"].get("stale") is False, 10,
                   what="/readyz fresh again")
        assert _plans(db) == plans
        assert served.stop() == 0
    assert all(u.get("active", True) for u in scim_users(scim.url, scim.token))


def test_s3_export_picked_up_on_next_poll(scim: ScimPeer, moto_url: str, tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_url, aws_access_key_id="testing", aws_secret_access_key="testing",
                      region_name="us-east-1")
    bucket = f"hr-{time.monotonic_ns()}"
    s3.create_bucket(Bucket=bucket)
    first = [person(i) for i in range(1, 4)]
    s3.put_object(Bucket=bucket, Key="workday/export-1.csv", Body=export_bytes(first))
    cfg = write_config(tmp_path, scim_url=scim.url, location=f"s3://{bucket}/workday/",
                       hris={"endpoint_url": moto_url})
    db = tmp_path / "jml.db"
    with start_serve(cfg, env={"SCIM_TOKEN": scim.token, **AWS_TEST_ENV}) as served:
        served.wait_ready()
        wait_until(lambda: _has_users(scim, {p["employee_id"] for p in first}), 20, what="the S3 export pushed")
        # Two polls of an unchanged object (same ETag): nothing planned. (Two one-second polls
        # also keep the next object's one-second-resolution LastModified newer.)
        polls = _unchanged_polls(served)
        wait_until(lambda: _unchanged_polls(served) >= polls + 2, 15, what="two polls of the unchanged object")
        assert _plans(db) == 1
        assert db_scalar(db, "SELECT count(*) FROM export") == 1
        s3.put_object(Bucket=bucket, Key="workday/export-2.csv", Body=export_bytes([*first, person(4)]))
        wait_until(lambda: _has_users(scim, {"E0000004"}), 15, what="the newer S3 object pushed")
        assert _plans(db) == 2
        assert served.stop() == 0


def test_sigterm_mid_batch_exits_within_grace_and_restart_finishes_exactly_once(
        scim: ScimPeer, tmp_path: Path) -> None:
    n, grace, stall = 300, 2.0, 5.0
    people = [person(i) for i in range(1, n + 1)]
    ids = {p["employee_id"] for p in people}
    write_export(tmp_path / "exports", "export.csv", people)
    with VendorProxy(scim.url.removesuffix("/v2/")) as proxy:
        # Creates only (no grants): the batch is 300 find-then-create chains through a slow proxy.
        cfg = write_config(tmp_path, scim_url=proxy.url.rstrip("/") + "/v2/", grace=f"{grace:g}s", grants=False)
        db = tmp_path / "jml.db"
        proxy.fail_next(*[Fault(delay=0.03, forward=True)] * 100_000)
        served = start_serve(cfg, env={"SCIM_TOKEN": scim.token})
        with served:
            served.wait_ready()
            wait_until(lambda: len(_external_ids(scim)) >= 20, 30, what="the batch under way")
            # The next four requests stall far longer than the grace period: the workers are mid-operation.
            proxy.faults.clear()
            seen = len(proxy.seen)
            proxy.fail_next(*[Fault(delay=stall, forward=True)] * 4)
            wait_until(lambda: not proxy.faults and len(proxy.seen) >= seen + 4, 10, 0.05, what="stalled requests")
            t0 = time.monotonic()
            assert served.stop(signal.SIGTERM, timeout=grace + 15) == 0
            took = time.monotonic() - t0
        assert grace - 0.3 <= took <= grace + 5, f"exit took {took:.1f}s with a {grace}s grace period"
        done_before = len(_external_ids(scim))
        assert done_before < n
        assert db_scalar(db, "SELECT count(*) FROM operation WHERE state = 'running'") == 0
        assert db_scalar(db, "SELECT count(*) FROM operation WHERE state = 'pending'") > 0
        assert db_scalar(db, "SELECT count(*) FROM lease") == 0
        log = served.logs()
        assert '"event": "workers stopped; released the lease"' in log

        # Restart: the outbox is resumed (the unchanged export plans nothing new) and finishes.
        with start_serve(cfg, env={"SCIM_TOKEN": scim.token}) as again:
            again.wait_ready()
            wait_until(lambda: db_scalar(db, "SELECT count(*) FROM operation WHERE state IN ('pending','running')")
                       == 0, 60, 0.5, what="the batch finished")
            assert db_scalar(db, "SELECT count(*) FROM operation WHERE state = 'dead'") == 0
            assert _plans(db) == 1
            # Let the stalled requests (forwarded late by the proxy) land before counting: the
            # proxy sets a request's status once the app has answered it.
            wait_until(lambda: all(s.status for s in list(proxy.seen)), stall + 15, 0.1,
                       what="every request through the proxy answered, the stalled ones too")
            counts = _external_ids(scim)
            assert set(counts) == ids
            assert all(c == 1 for c in counts.values()), [e for e, c in counts.items() if c != 1]
            assert again.stop() == 0


def test_only_the_lease_holder_works_and_a_standby_takes_over(scim: ScimPeer, tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    write_export(exports, "export-1.csv", [person(1), person(2)])
    env = {"SCIM_TOKEN": scim.token}
    # Two daemons on one database. B starts once A has created the schema (the store's first-start
    # migration is not safe to run twice at once on a fresh database), then they race for the lease.
    a = start_serve(write_config(tmp_path, scim_url=scim.url, name="a.yaml"), env, log_name="a.log")
    a.wait_up()
    b = start_serve(write_config(tmp_path, scim_url=scim.url, name="b.yaml"), env, log_name="b.log")
    with a, b:
        roles = {a.wait_ready()["workers"]: a, b.wait_ready()["workers"]: b}
        assert set(roles) == {"leader", "standby"}, roles
        leader, standby = roles["leader"], roles["standby"]
        wait_until(lambda: _has_users(scim, {"E0000001", "E0000002"}), 20, what="the leader pushed the export")
        assert leader.stop() == 0
        wait_until(lambda: standby.get_json("/readyz")[1]["workers"] == "leader", 10, what="the standby took over")
        write_export(exports, "export-2.csv", [person(1), person(2), person(3)])
        wait_until(lambda: _has_users(scim, {"E0000003"}), 15, what="the new leader pushed the next export")
        assert standby.stop() == 0
    assert sum(_external_ids(scim).values()) == 3
    assert _plans(tmp_path / "jml.db") == 2
