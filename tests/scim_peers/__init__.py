"""Independently written SCIM 2.0 servers as real peers on loopback, one subprocess each.

None of them is ours: where a package is a library, the launcher files here hold only storage and
start-up (a Map per resource type for SCIMMY, Better Auth's memory adapter, a sqlite file for
Django). Filtering, PATCH, pagination and error bodies are each package's own code, quirks
included; tests/scim_peers/FINDINGS.md records the quirks.

    ALL_PEERS = {"scim2-server": ..., "scimmy": ..., "better-auth": ..., "django": ...}

Each entry is a context manager factory yielding a tests.peers.ScimPeer (url ending in '/', token,
proc). The Node peers need `bash tests/scim_peers/install.sh` first (`make test` runs it); the
Django peer needs the dev extra (django-scim2-server).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from tests.peers import ScimPeer, free_port, scim2_server, wait_http

HERE = Path(__file__).resolve().parent
SCIMMY_DIR = HERE / "scimmy"
BETTER_AUTH_DIR = HERE / "better_auth"
DJANGO_DIR = HERE / "django_peer"

STARTUP_TIMEOUT = 30.0


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH; the SCIMMY and Better Auth peers need Node.js 20")
    return node


def _require_install(node_dir: Path) -> None:
    if not (node_dir / "node_modules").is_dir():
        raise RuntimeError(f"{node_dir}/node_modules is missing: run `bash tests/scim_peers/install.sh`")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _read_announcement(proc: subprocess.Popen[bytes], log: Path, what: str) -> dict[str, str]:
    """The first stdout line of a Node peer: {"url": ..., "token": ...}."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        for line in text.splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    found = json.loads(line)
                    if isinstance(found, dict) and "url" in found and "token" in found:
                        return {"url": str(found["url"]), "token": str(found["token"])}
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was up:\n{text[-4000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not announce its URL within {STARTUP_TIMEOUT}s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def _node_peer(node_dir: Path, script: str, args: list[str], what: str) -> Iterator[ScimPeer]:
    _require_install(node_dir)
    with tempfile.TemporaryDirectory(prefix="jml-scim-peer-") as tmp:
        log = Path(tmp) / "out.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([_node(), script, *args], cwd=node_dir, stdout=out, stderr=subprocess.STDOUT)
        try:
            found = _read_announcement(proc, log, what)
            peer = ScimPeer(url=found["url"], token=found["token"], proc=proc)
            wait_http(peer.url + "ServiceProviderConfig", timeout=STARTUP_TIMEOUT, headers=peer.headers)
            yield peer
        finally:
            _stop(proc)


@contextlib.contextmanager
def scimmy_server(token: str = "test-scim-token") -> Iterator[ScimPeer]:
    """SCIMMY + scimmy-routers on express, in-memory; base URL http://127.0.0.1:PORT/scim/v2/."""
    with _node_peer(SCIMMY_DIR, "server.js", [str(free_port()), token], "SCIMMY peer") as peer:
        yield peer


@contextlib.contextmanager
def better_auth_server() -> Iterator[ScimPeer]:
    """Better Auth + @better-auth/scim, memory adapter; base URL http://127.0.0.1:PORT/api/auth/scim/v2/.

    The token is the one the plugin generated for its managed connection at start-up.
    """
    with _node_peer(BETTER_AUTH_DIR, "server.mjs", [str(free_port())], "Better Auth peer") as peer:
        yield peer


@contextlib.contextmanager
def django_server(token: str = "test-scim-token") -> Iterator[ScimPeer]:
    """django-scim2-server in a minimal Django project on runserver, sqlite in a temp file.

    Base URL http://127.0.0.1:PORT/scim/v2/.
    """
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="jml-scim-peer-django-") as tmp:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p),
            "DJANGO_SETTINGS_MODULE": "django_peer.settings",
            "JML_SCIM_PEER_DB": str(Path(tmp) / "scim.sqlite3"),
            "JML_SCIM_PEER_TOKEN": token,
        }
        log = Path(tmp) / "out.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "django_peer.run", str(port)], cwd=HERE, env=env,
                                    stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/scim/v2/"
        try:
            try:
                wait_http(url + "ServiceProviderConfig", timeout=STARTUP_TIMEOUT)
            except RuntimeError as e:
                raise RuntimeError(f"{e}\n{log.read_text(errors='replace')[-4000:]}") from e
            yield ScimPeer(url=url, token=token, proc=proc)
        finally:
            _stop(proc)


ALL_PEERS: dict[str, Callable[[], AbstractContextManager[ScimPeer]]] = {
    "scim2-server": scim2_server,
    "scimmy": scimmy_server,
    "better-auth": better_auth_server,
    "django": django_server,
}
