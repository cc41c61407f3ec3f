"""Real peers on loopback, started per test session: scim2-server as a subprocess.

Nothing here imitates a server; vendor wrappers (tests/vendor_peers/) sit in front of
these to enforce a vendor's documented limits.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers: up
        except OSError as e:
            last = e
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up: {last}")


@dataclass
class ScimPeer:
    url: str  # base URL, ends with '/'
    token: str
    proc: subprocess.Popen[bytes]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _scim2_server_bin() -> str:
    candidate = Path(sys.executable).with_name("scim2-server")
    return str(candidate) if candidate.exists() else "scim2-server"


@contextlib.contextmanager
def scim2_server(token: str = "test-scim-token", extra_args: list[str] | None = None) -> Iterator[ScimPeer]:
    """A fresh in-memory scim2-server on a free loopback port."""
    port = free_port()
    log = open(os.devnull, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [_scim2_server_bin(), "--hostname", "127.0.0.1", "--port", str(port), "--bearer-token", token,
         *(extra_args or [])],
        stdout=log, stderr=log,
    )
    url = f"http://127.0.0.1:{port}/v2/"
    try:
        wait_http(url + "ServiceProviderConfig")
        yield ScimPeer(url=url, token=token, proc=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
