"""Shared fixtures for the integration tests: a database URL (SQLite, and PostgreSQL when
JML_TEST_DATABASE_URL is set) with a clean schema per test, and a fresh scim2-server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.peers import ScimPeer, scim2_server

PG_ENV = "JML_TEST_DATABASE_URL"


def _pg_base() -> str | None:
    url = os.environ.get(PG_ENV)
    if not url:
        return None
    return "postgresql+psycopg://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


def pg_schema_url(base: str) -> Iterator[str]:
    """A fresh schema on the PostgreSQL server, used through search_path, dropped after."""
    schema = f"jml_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL with nothing in it: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jml-test.db'}"
        return
    base = _pg_base()
    if base is None:
        pytest.skip(f"{PG_ENV} is not set")
    yield from pg_schema_url(base)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jml-test.db'}"


@pytest.fixture
def scim_peer() -> Iterator[ScimPeer]:
    """A fresh in-memory scim2-server on loopback."""
    with scim2_server() as peer:
        yield peer
