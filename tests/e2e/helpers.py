"""Run `jml serve` as a real process on loopback, and talk to it.

    cfg = write_config(tmp_path, scim_url=peer.url, location=exports)
    with start_serve(cfg, env={"SCIM_TOKEN": peer.token}) as served:
        served.wait_ready()
        status, body = served.get("/metrics")
        assert served.stop() == 0

Other e2e tests reuse these: `start_serve`, `write_config`, `write_export`, `wait_until`,
`scim_users`, `db_scalar`.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.peers import free_port

T = TypeVar("T")

COLUMNS = ["employee_id", "first_name", "last_name", "preferred_name", "work_email", "department", "cost_center",
           "job_title", "manager_id", "location", "country", "employment_type", "status", "hire_date",
           "termination_date", "github_username"]


def jml_bin() -> str:
    exe = Path(sys.executable).with_name("jml")
    return str(exe) if exe.exists() else "jml"


def wait_until(check: Callable[[], T], timeout: float = 20.0, interval: float = 0.2, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


def http(url: str, *, method: str = "GET", data: bytes | None = None, headers: Mapping[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Served:
    """A running `jml serve` process."""

    proc: subprocess.Popen[bytes]
    url: str  # http://host:port/
    config_path: Path
    log_path: Path
    _log: Any = field(repr=False, default=None)

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        return http(self.url + path.lstrip("/"), headers=headers)

    def get_json(self, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        status, body = self.get(path, headers)
        return status, json.loads(body) if body else None

    def post(self, path: str, body: bytes, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        return http(self.url + path.lstrip("/"), method="POST", data=body, headers=headers)

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.logs().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"jml serve exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")

    def wait_up(self, timeout: float = 30.0) -> None:
        """/healthz answers."""
        def up() -> bool:
            self._alive()
            try:
                return self.get("/healthz")[0] == 200
            except OSError:
                return False
        wait_until(up, timeout, 0.1, "/healthz")

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        """/readyz says ready (the database answers and the first poll has read the source)."""
        self.wait_up(timeout)

        def ready() -> dict[str, Any] | None:
            self._alive()
            status, doc = self.get_json("/readyz")
            # A stale source no longer fails /readyz (a warning: issue 17); the tests still start
            # once the first poll has read it.
            return doc if status == 200 and doc["checks"]["source"].get("ok") else None
        return wait_until(ready, timeout, 0.1, "/readyz 200 and the source read")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig`, wait for the exit; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"jml serve did not exit within {timeout}s of signal {sig}") from None
        if self._log is not None:
            self._log.close()
            self._log = None
        return int(self.proc.returncode)

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self._log is not None:
            self._log.close()


def start_serve(config_path: Path, env: Mapping[str, str] | None = None, *, cwd: Path | None = None,
                log_name: str = "serve.log", exe: str | None = None) -> Served:
    """Start `jml --config config_path serve` (JSON log lines into a file beside the config);
    `exe` is another `jml` to run than this environment's."""
    doc = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    listen = (doc.get("server") or {}).get("listen", "127.0.0.1:8080")
    host, _, port = listen.rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0") else host.strip("[]")
    log_path = config_path.parent / log_name
    n = 1
    while log_path.exists():
        n += 1
        log_path = config_path.parent / f"{Path(log_name).stem}.{n}.log"
    log = log_path.open("wb")
    full_env = {**os.environ, "JML_LOG_LEVEL": "INFO", **(env or {})}
    proc = subprocess.Popen([exe or jml_bin(), "--config", str(config_path), "--log-json", "serve"],
                            stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=str(cwd or config_path.parent))
    return Served(proc, f"http://{host}:{port}/", config_path, log_path, log)


def person(i: int, **overrides: str) -> dict[str, str]:
    eid = f"E{i:07d}"
    row = {c: "" for c in COLUMNS}
    row.update(employee_id=eid, first_name=f"First{i}", last_name=f"Last{i}", preferred_name=f"First{i}",
               work_email=f"user{i}@example.com", department="Engineering", cost_center="CC-100",
               job_title="Engineer", location="Berlin", country="DE", employment_type="Employee",
               status="Active", hire_date="2024-01-15")
    row.update(overrides)
    return row


def export_bytes(rows: Iterable[Mapping[str, str]]) -> bytes:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(dict(r))
    return buf.getvalue().encode("utf-8")


def write_export(folder: Path, name: str, rows: Iterable[Mapping[str, str]]) -> Path:
    """Write an export atomically (a temp name the folder source ignores, then a rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.part"
    tmp.write_bytes(export_bytes(rows))
    path = folder / name
    os.replace(tmp, path)
    return path


def write_config(tmp: Path, *, scim_url: str | None = None, location: str = "./exports/", poll: str = "1s",
                 grace: str = "3s", port: int | None = None, db: Path | None = None,
                 hris: Mapping[str, Any] | None = None, grants: bool = True,
                 extra: Mapping[str, Any] | None = None, name: str = "jml.yaml") -> Path:
    """A serve config: SQLite state in `tmp`, the HR folder (or URL) `location`, one SCIM app `demo`
    (token from $SCIM_TOKEN) granting everyone "All Staff" (unless not `grants`). `hris` adds keys to
    sources.hris; `extra` replaces top-level sections."""
    doc: dict[str, Any] = {
        "state": {"url": f"sqlite:///{db or tmp / 'jml.db'}"},
        "server": {"listen": f"127.0.0.1:{port or free_port()}", "shutdown_grace": grace,
                   "admin_token_env": "JML_ADMIN_TOKEN"},
        "sources": {"hris": {"location": location, "format": "csv", "profile": "generic", "poll_interval": poll,
                             **(hris or {})}},
        "policy": {"username": "{work_email}",
                   "rules": [{"name": "everyone", "when": {"status": ["Active", "Leave"]},
                              "grant": {"demo": ["All Staff"] if grants else []}}] if scim_url else []},
        "connectors": {"demo": {"type": "scim", "url": scim_url, "token_env": "SCIM_TOKEN"}} if scim_url else {},
    }
    doc.update(extra or {})
    path = tmp / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def db_scalar(db: Path, sql: str, *params: Any) -> Any:
    """One value from the service's SQLite state (read-only, safe while it runs: WAL)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchone()[0]
    finally:
        conn.close()


def scim_users(base_url: str, token: str) -> list[dict[str, Any]]:
    """Every user the SCIM server holds (paged)."""
    out: list[dict[str, Any]] = []
    start = 1
    while True:
        status, body = http(f"{base_url}Users?startIndex={start}&count=500",
                            headers={"Authorization": f"Bearer {token}"})
        assert status == 200, body[:300]
        doc = json.loads(body)
        page = doc.get("Resources") or []
        out.extend(page)
        if not page or len(out) >= int(doc.get("totalResults", 0)):
            return out
        start += len(page)
