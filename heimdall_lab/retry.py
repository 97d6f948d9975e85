"""One retry policy: how many tries, and how long to wait between them.

The IQ store (connection errors), the receiver acquisition (busy or unreachable receivers)
and a capture's database writes all retry with exponential backoff and random jitter, built
on tenacity. :class:`RetryPolicy` says how; the caller says what is worth retrying.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from heimdall_lab.errors import ValidationError

__all__ = ["RetryPolicy"]

BeforeSleep = Callable[[RetryCallState], Any]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter.

    The wait before try ``n + 1`` is ``min(initial_s * multiplier ** (n - 1), maximum_s)``
    plus a random 0 to ``jitter_s`` seconds.

    Attributes
    ----------
    attempts : int
        Tries in all, the first included.
    initial_s : float
        First wait, in seconds.
    maximum_s : float
        Longest wait (before jitter), in seconds.
    multiplier : float
        Factor from one wait to the next.
    jitter_s : float
        Random extra wait, 0 to this many seconds.

    Examples
    --------
    >>> RetryPolicy(attempts=4, initial_s=0.5, maximum_s=1.5).delays()
    [0.5, 1.0, 1.5]
    """

    attempts: int = 5
    initial_s: float = 0.5
    maximum_s: float = 10.0
    multiplier: float = 2.0
    jitter_s: float = 0.25

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValidationError(f"retry attempts must be an integer >= 1, got {self.attempts!r}")
        if min(self.initial_s, self.maximum_s, self.jitter_s) < 0:
            raise ValidationError("retry waits must be >= 0")
        if self.multiplier < 1:
            raise ValidationError(f"retry multiplier must be >= 1, got {self.multiplier!r}")

    def with_attempts(self, attempts: int) -> RetryPolicy:
        """The same waits with another number of tries.

        Parameters
        ----------
        attempts : int
            Tries in all.

        Returns
        -------
        RetryPolicy
            A new policy.
        """
        return replace(self, attempts=attempts)

    def delays(self) -> list[float]:
        """The waits between the tries, without jitter, in seconds.

        Returns
        -------
        list of float
            ``attempts - 1`` waits.
        """
        return [self._base_s(n + 1) for n in range(self.attempts - 1)]

    def _base_s(self, failures: int) -> float:
        """The wait after ``failures`` (>= 1) failures in a row, without jitter."""
        try:
            return min(self.initial_s * self.multiplier ** (failures - 1), self.maximum_s)
        except OverflowError:  # a long streak: the maximum holds
            return self.maximum_s

    def wait_s(self, failures: int, rng: random.Random | None = None) -> float:
        """The wait after ``failures`` failures in a row, jitter included, in seconds.

        For callers that keep their own count of failures (the receiver acquisition counts
        them per host, across receivers and captures).

        Parameters
        ----------
        failures : int
            Failures so far, from 1; 0 or less means no wait.
        rng : random.Random, optional
            Source of the jitter; the module's by default.

        Returns
        -------
        float
            ``min(initial_s * multiplier ** (failures - 1), maximum_s)`` plus a random 0 to
            ``jitter_s``; at most ``maximum_s + jitter_s``.

        Examples
        --------
        >>> RetryPolicy(initial_s=0.5, maximum_s=1.5, jitter_s=0).wait_s(3)
        1.5
        """
        if failures <= 0:
            return 0.0
        return self._base_s(failures) + (rng or random).uniform(0.0, self.jitter_s)

    def _kwargs(
        self, retry_if: Callable[[BaseException], bool], before_sleep: BeforeSleep | None
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "stop": stop_after_attempt(self.attempts),
            "wait": wait_exponential(
                multiplier=self.initial_s, max=self.maximum_s, exp_base=self.multiplier
            )
            + wait_random(0, self.jitter_s),
            "retry": retry_if_exception(retry_if),
            "reraise": True,
        }
        if before_sleep is not None:
            kwargs["before_sleep"] = before_sleep
        return kwargs

    def retrying(
        self,
        retry_if: Callable[[BaseException], bool],
        *,
        before_sleep: BeforeSleep | None = None,
    ) -> Retrying:
        """A tenacity ``Retrying`` for this policy (``for attempt in ...: with attempt:``).

        Parameters
        ----------
        retry_if : callable
            Whether an exception is worth another try; others are raised at once.
        before_sleep : callable, optional
            Called with the tenacity state before each wait (for logging).

        Returns
        -------
        tenacity.Retrying
            Re-raises the last exception when the tries run out.
        """
        return Retrying(**self._kwargs(retry_if, before_sleep))

    def async_retrying(
        self,
        retry_if: Callable[[BaseException], bool],
        *,
        before_sleep: BeforeSleep | None = None,
    ) -> AsyncRetrying:
        """The asyncio form of :meth:`retrying` (``async for attempt in ...``).

        Parameters
        ----------
        retry_if : callable
            Whether an exception is worth another try.
        before_sleep : callable, optional
            Called with the tenacity state before each wait.

        Returns
        -------
        tenacity.AsyncRetrying
            Re-raises the last exception when the tries run out.
        """
        return AsyncRetrying(**self._kwargs(retry_if, before_sleep))
