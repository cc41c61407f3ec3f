"""Retries of a push that failed with a RetryableError: tenacity, with exponential backoff and
jitter, honouring the vendor's Retry-After, bounded by the connector's `max_attempts` and time
budget. The first attempt runs without tenacity (almost every operation succeeds at once, and
setting tenacity up for each was ~2% of a leaver wave's CPU); a failed one is handed to tenacity
as its attempt 1, so the bounds count from it."""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from jml.errors import RetryableError
from jml.lanes import RetryPolicy

__all__ = ["Attempts", "retry_after_first"]

T = TypeVar("T")


class Attempts:
    """How many attempts an operation made: read when it succeeds and when it finally fails."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 1


async def retry_after_first(policy: RetryPolicy, first: RetryableError, started: float,
                            call: Callable[[], Awaitable[T]], *, attempts: Attempts,
                            before_sleep: Callable[[RetryCallState], None]) -> T:
    """Retry `call` after its first attempt (made at monotonic time `started`) failed with
    `first`; the last error is raised once the attempts or the budget are spent."""
    retrying = AsyncRetrying(
        # The budget counts from the first attempt, which ran before tenacity started.
        stop=lambda rs: rs.attempt_number >= policy.max_attempts or time.monotonic() - started >= policy.budget,
        wait=_wait(policy),
        retry=retry_if_exception_type(RetryableError),
        before_sleep=before_sleep,
        reraise=True,
    )
    attempts.count = 0
    failed: RetryableError | None = first
    async for attempt in retrying:
        with attempt:
            attempts.count += 1
            if failed is not None:
                error, failed = failed, None
                raise error
            result = await call()
    return result


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    backoff = wait_exponential_jitter(initial=policy.initial, max=policy.maximum)

    def wait(rs: RetryCallState) -> float:
        exc = rs.outcome.exception() if rs.outcome else None
        after = getattr(exc, "retry_after", None)
        if isinstance(after, (int, float)):
            # The vendor said when: wait that long (plus jitter so workers don't stampede).
            return float(after) + random.uniform(0, 0.1 * max(after, 1.0))
        return float(backoff(rs))

    return wait
