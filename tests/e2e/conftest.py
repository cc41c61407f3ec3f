"""Fixtures for end-to-end tests: real peers on loopback (scim2-server, moto's S3)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.peers import ScimPeer, scim2_server


@pytest.fixture
def scim() -> Iterator[ScimPeer]:
    """A fresh in-memory scim2-server for one test."""
    with scim2_server(token="e2e-scim-token") as peer:
        yield peer


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


AWS_TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
