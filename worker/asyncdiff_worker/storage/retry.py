"""Retries with exponential backoff and full jitter.

Why our own loop instead of botocore's: the number of attempts and the waits must be exact and testable (the
"S3 down in the middle of uploads" case must fail in seconds, not minutes), each retry is logged, and the final
error must say how many attempts were made. botocore's own retries are switched off.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger("asyncdiff_worker.storage")


class RetriesExhausted(Exception):
    """Every attempt failed with a retryable error; ``last`` is the final one."""

    def __init__(self, what: str, attempts: int, last: BaseException) -> None:
        self.what = what
        self.attempts = attempts
        self.last = last
        super().__init__(f"{what}: failed after {attempts} attempt(s): {type(last).__name__}: {last}")


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full-jitter delay before retry number ``attempt`` (1-based): uniform in [0, min(cap, base * 2**(attempt-1))]."""
    ceiling = min(cap, base * (2 ** (attempt - 1)))
    return (rng or random).uniform(0.0, ceiling) if ceiling > 0 else 0.0


def call_with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    attempts: int,
    is_retryable: Callable[[BaseException], bool],
    base: float = 0.5,
    cap: float = 8.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn`` until it succeeds, a non-retryable error is raised (re-raised as is), or ``attempts`` are used
    (``RetriesExhausted``)."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_retryable(exc):
                raise
            if attempt == attempts:
                raise RetriesExhausted(what, attempts, exc) from exc
            delay = backoff_delay(attempt, base, cap)
            log.warning(
                "%s: attempt %d/%d failed (%s: %s); retrying in %.2fs",
                what,
                attempt,
                attempts,
                type(exc).__name__,
                exc,
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable")
