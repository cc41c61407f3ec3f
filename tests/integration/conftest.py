"""Shared fixtures for the integration tests: a database URL (SQLite and PostgreSQL) with a
clean schema per test, and a fresh scim2-server.

PostgreSQL is a peer the suite needs, never an optional one: JML_TEST_DATABASE_URL names the
server, by default the project machines' own (postgresql+psycopg://postgres@127.0.0.1:5432/test,
which `.ci/run` starts). An unreachable server fails the tests that use it, loudly; it does not
skip them."""

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
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_pg_checked: dict[str, str] = {}


def _pg_base() -> str:
    url = os.environ.get(PG_ENV) or PG_DEFAULT
    return "postgresql+psycopg://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


def _pg_reachable(base: str) -> str:
    """`base`, once a connection to it has worked; a failed test naming the server otherwise."""
    if base not in _pg_checked:
        engine = create_engine(base, connect_args={"connect_timeout": 5})
        error = ""
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            error = str(exc).splitlines()[0]
        finally:
            engine.dispose()
        if error:
            shown = make_url(base).render_as_string(hide_password=True)
            pytest.fail(f"PostgreSQL at {shown} ({PG_ENV}, default {PG_DEFAULT}) is not reachable: {error}. "
                        "Start it (`.ci/run` does: pg_ctlcluster ... main start); these tests do not skip.",
                        pytrace=False)
        _pg_checked[base] = base
    return base


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
    yield from pg_schema_url(_pg_reachable(_pg_base()))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jml-test.db'}"


@pytest.fixture
def scim_peer() -> Iterator[ScimPeer]:
    """A fresh in-memory scim2-server on loopback."""
    with scim2_server() as peer:
        yield peer
