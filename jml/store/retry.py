"""The one retry policy for write conflicts, used by every transaction that can lose a race.

A conflict is another writer getting there first: SQLite's "database is locked"/"busy",
PostgreSQL's serialization failure (SQLSTATE 40001) or deadlock (40P01), or a duplicate key
(two processes appending the audit trail's next sequence number, or inserting one row).
The whole transaction is run again, up to ATTEMPTS times with a short jittered wait; then
WriteConflict, which stops the job — nothing carries on as if the write had happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError, OperationalError
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from jml.errors import WriteConflict

__all__ = ["ATTEMPTS", "is_write_conflict", "retry_write"]

log = logging.getLogger("jml.store")
T = TypeVar("T")

ATTEMPTS = 20
# Waits grow from a few milliseconds to at most 0.2 s (about 2 s over all attempts): enough
# for a competing transaction to commit, short enough to run on the event loop's thread.
_WAIT = wait_random_exponential(multiplier=0.005, max=0.2)
_PG_CONFLICTS = frozenset({"40001", "40P01"})


def is_write_conflict(error: BaseException) -> bool:
    """Another writer got there first; running the transaction again may succeed."""
    if isinstance(error, IntegrityError):
        return True
    if not isinstance(error, OperationalError):
        return False
    if getattr(error.orig, "sqlstate", None) in _PG_CONFLICTS:
        return True
    text = str(error).lower()
    return "locked" in text or "busy" in text


def retry_write(transaction: Callable[[], T], what: str) -> T:
    """Run `transaction` (one whole database transaction, begun and committed inside it) until
    it stops conflicting; WriteConflict naming `what` once ATTEMPTS have conflicted."""
    try:  # the first attempt without tenacity's bookkeeping: nearly every write wins at once
        return transaction()
    except Exception as e:
        if not is_write_conflict(e):
            raise
    retrying = Retrying(stop=stop_after_attempt(ATTEMPTS - 1), wait=_WAIT, retry=retry_if_exception(is_write_conflict),
                        before_sleep=lambda rs: log.debug("write conflict, retrying",
                                                          extra={"what": what, "attempt": rs.attempt_number + 1}))
    try:
        return retrying(transaction)
    except RetryError as e:
        last = e.last_attempt.exception()
        raise WriteConflict(f"{what}: still conflicting with other writers after {ATTEMPTS} attempts: "
                            f"{type(last).__name__}") from last
