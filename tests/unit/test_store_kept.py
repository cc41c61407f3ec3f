"""The main thread's kept SQLite connection (jml/store/kept.py) behaves as a fresh one from the
pool would: lent again only when given back clean, never to two users at once, never to
another thread, closed with the engine."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from jml.store.db import make_engine


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    e = make_engine(f"sqlite:///{tmp_path / 'kept.db'}")
    with e.begin() as conn:
        conn.execute(text("CREATE TABLE t (a INTEGER)"))
    yield e
    e.dispose()


def _count(engine: Engine) -> int:
    # From another thread: a pool connection, which sees only what was committed.
    out: list[int] = []
    t = threading.Thread(target=lambda: out.append(_count_here(engine)))
    t.start()
    t.join()
    return out[0]


def _count_here(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM t")).scalar_one())


def test_the_main_thread_reuses_one_connection(engine: Engine) -> None:
    with engine.connect() as a:
        pass
    with engine.begin() as b:
        b.execute(text("INSERT INTO t VALUES (1)"))
        assert b is a  # the same Connection, not a new one over a pooled driver connection
    with engine.connect() as c:
        assert c is a
    assert _count(engine) == 1  # begin() committed through the kept connection


def test_a_second_use_while_it_is_out_gets_a_fresh_connection(engine: Engine) -> None:
    with engine.connect() as outer, engine.begin() as inner:
        assert inner is not outer
        assert inner.connection.dbapi_connection is not outer.connection.dbapi_connection
        inner.execute(text("INSERT INTO t VALUES (1)"))
    assert _count(engine) == 1


def test_other_threads_use_the_pool(engine: Engine) -> None:
    with engine.connect() as mine:
        kept = mine.connection.dbapi_connection
    theirs: list[object] = []

    def other() -> None:
        with engine.connect() as conn:
            theirs.append(conn.connection.dbapi_connection)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert theirs and theirs[0] is not kept


@pytest.mark.parametrize("how", ["sqlalchemy", "driver"])
def test_what_was_not_committed_is_rolled_back_when_given_back(engine: Engine, how: str) -> None:
    """As the pool's reset does: an uncommitted write (through SQLAlchemy's autobegin, or on the
    driver's cursor outside any transaction SQLAlchemy knows of) does not outlive the `with`,
    and holds no write lock after it."""
    with engine.connect() as conn:
        if how == "sqlalchemy":
            conn.execute(text("INSERT INTO t VALUES (1)"))
        else:
            cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cur.execute("INSERT INTO t VALUES (1)")
            cur.close()
    assert _count_here(engine) == 0
    assert _count(engine) == 0
    with engine.connect() as conn:
        assert not conn.in_transaction()
        assert not conn.connection.dbapi_connection.in_transaction  # type: ignore[union-attr]
    # Another thread can write at once: no lock was left behind.
    done: list[bool] = []

    def write() -> None:
        with engine.begin() as c:
            c.execute(text("INSERT INTO t VALUES (2)"))
        done.append(True)

    t = threading.Thread(target=write)
    t.start()
    t.join(10)
    assert done == [True]


def test_a_failed_transaction_leaves_it_usable(engine: Engine) -> None:
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        raise RuntimeError("boom")
    assert _count_here(engine) == 0
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (2)"))
    assert _count(engine) == 1


def test_an_invalidated_connection_is_replaced(engine: Engine) -> None:
    with engine.connect() as conn:
        old = conn.connection.dbapi_connection
        conn.invalidate()
    with engine.connect() as conn:
        assert conn.connection.dbapi_connection is not old
        assert conn.execute(text("SELECT 1")).scalar_one() == 1


def test_disposing_of_the_engine_closes_it(engine: Engine) -> None:
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
    engine.dispose()
    with pytest.raises(Exception, match="closed"):
        raw.execute("SELECT 1")  # type: ignore[union-attr]
    assert _count_here(engine) == 0  # and the engine goes on with a new one
