"""The main thread's connection to a SQLite state file, kept between uses instead of taken
from the pool and given back every time.

Every repository method opens its own `engine.connect()` / `engine.begin()`: one short
transaction each, which is what makes them safe to call from anywhere. On SQLite the pool's
part of that (a checkout, a `Connection` built, a reset and a checkin, ~25 us) was most of
what a small statement cost: a leaver wave checks a connection out ~25 times per leaver
(marking each operation running, reading its account, recording results), and measured
~7% of jml's CPU in it (issue 16). The event loop runs on the main thread, so that is where
the connection is kept; other threads use the pool as before.

The kept connection behaves as a fresh one would: when the `with` ends it is given back as
the pool gives back a connection (an open transaction rolled back), and a second use while
it is out (a nested `connect()`, a coroutine holding it across an `await`, a generator left
half-read) gets a fresh connection from the pool. A connection the database has dropped or
that failed to reset is closed and replaced. PostgreSQL keeps the pool (a kept connection
would skip `pool_pre_ping`, and a server restart must be survived).
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Connection, Engine, event

__all__ = ["keep_main_thread_connection"]


class _KeptConnection(Connection):
    out = False  # lent to a caller now

    def close(self) -> None:
        if not self.out:
            super().close()
            return
        self.out = False
        try:
            if self.invalidated:
                raise ConnectionError("invalidated")
            if self.in_transaction():
                self.rollback()
            raw = self.connection.dbapi_connection
            if raw is not None and raw.in_transaction:
                raw.rollback()  # a statement run on the driver's cursor outside a transaction
        except Exception:
            # Not in a state to lend again: closed for good (the next use builds another).
            super().close()


def keep_main_thread_connection(engine: Engine) -> None:
    """Make `engine.connect()` (and so `engine.begin()`) lend the main thread one kept connection."""
    main = threading.main_thread()
    fresh = engine.connect
    kept: list[_KeptConnection] = []

    def connect() -> Connection:
        if threading.current_thread() is not main:
            return fresh()
        conn = kept[0] if kept else None
        if conn is None or conn.closed:
            conn = _KeptConnection(engine)
            kept[:] = [conn]
        elif conn.out:
            return fresh()
        conn.out = True
        return conn

    def disposed(_engine: Any) -> None:
        # Store.close() disposes of the engine: the kept connection goes with the pool's ones.
        while kept:
            conn = kept.pop()
            conn.out = False
            conn.invalidate()
            conn.close()

    engine.connect = connect  # type: ignore[method-assign]
    event.listen(engine, "engine_disposed", disposed)
