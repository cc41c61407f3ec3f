"""`make run`'s command, `jml demo`, as a user runs it: in an empty folder, the bundled export is
synced into a local scim2-server stand-in, then the daemon serves its status page until a
signal, and exits 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from pathlib import Path

from tests.e2e.helpers import http, jml_bin, wait_until
from tests.peers import free_port


def _run(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([jml_bin(), "demo", *args], cwd=cwd, env={**os.environ, "JML_LOG_LEVEL": "WARNING"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_demo_once_syncs_the_sample_export_into_the_stand_in(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--once")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    held = re.search(r"the stand-in app now holds (\d+) users \((\d+) active\)", out)
    assert held, out[-3000:]
    assert int(held.group(1)) > 0 and int(held.group(2)) > 0
    assert (tmp_path / ".jml-demo" / "jml.yaml").exists()


def test_demo_serves_its_status_page_then_stops_on_a_signal(tmp_path: Path) -> None:
    port = free_port()
    proc = _run(tmp_path, "--port", str(port))
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        lines.extend(iter(proc.stdout.readline, ""))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("jml is running: status page" in line for line in lines), 300, 0.2, "the banner")
        url = f"http://127.0.0.1:{port}/"
        assert http(url + "healthz")[0] == 200
        assert http(url + "metrics")[0] == 200
        assert http(url + "api/v1/status")[0] == 401  # the page needs the admin token the banner prints
        proc.send_signal(signal.SIGINT)  # Ctrl-C, as at a terminal
        assert proc.wait(60) == 0, "".join(lines)[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        reader.join(5)
