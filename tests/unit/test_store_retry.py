"""The one write-conflict retry policy (jml.store.retry): what counts as a conflict, that the
whole transaction is run again, and that giving up stops the job with WriteConflict."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from tenacity import wait_none

from jml.errors import WriteConflict
from jml.store import retry


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


@pytest.fixture(autouse=True)
def _no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "_WAIT", wait_none())


@pytest.mark.parametrize(("error", "conflict"), [
    (OperationalError("INSERT", {}, Exception("database is locked")), True),
    (OperationalError("INSERT", {}, Exception("database table is busy")), True),
    (OperationalError("INSERT", {}, _PgError("40001")), True),  # serialization_failure
    (OperationalError("INSERT", {}, _PgError("40P01")), True),  # deadlock_detected
    (IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed: audit.seq")), True),
    (OperationalError("INSERT", {}, Exception("no such table: people")), False),
    (OperationalError("INSERT", {}, _PgError("08006")), False),  # connection failure: not a conflict
    (ProgrammingError("INSERT", {}, Exception("syntax error")), False),
    (ValueError("locked"), False),
])
def test_what_counts_as_a_write_conflict(error: Exception, conflict: bool) -> None:
    assert retry.is_write_conflict(error) is conflict


def test_a_conflicting_transaction_is_run_again_until_it_commits() -> None:
    calls = []

    def transaction() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("UPDATE", {}, Exception("database is locked"))
        return "committed"

    assert retry.retry_write(transaction, "test") == "committed"
    assert len(calls) == 3


def test_any_other_error_is_raised_at_once() -> None:
    calls = []

    def transaction() -> None:
        calls.append(1)
        raise OperationalError("UPDATE", {}, Exception("disk I/O error"))

    with pytest.raises(OperationalError, match="disk I/O"):
        retry.retry_write(transaction, "test")
    assert len(calls) == 1


def test_giving_up_stops_the_job_with_write_conflict() -> None:
    calls = []

    def transaction() -> None:
        calls.append(1)
        raise IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))

    with pytest.raises(WriteConflict, match=r"saving the plan: still conflicting .* 20 attempts") as info:
        retry.retry_write(transaction, "saving the plan")
    assert len(calls) == retry.ATTEMPTS == 20
    assert info.value.exit_code == 1
    assert isinstance(info.value.__cause__, IntegrityError)
