"""Retry policy as data: what each Graph error means for a job, and when the next attempt is due (pure)."""

from __future__ import annotations

import enum
import random
from datetime import datetime, timedelta

from outbound.exceptions import GraphError
from outbound.vocabulary import WINDOW_CLOSED_CODE


class Action(enum.Enum):
    RETRY = "retry"
    """Transient: try again after a backoff."""
    PAIR_RATE_LIMIT = "pair_rate_limit"
    """131056: too many messages to this customer; retry after 4^n seconds (Meta's rule)."""
    TEMPLATE = "template"
    """131047: the 24-hour window is closed; send the template instead (once per job)."""
    FAIL = "fail"
    """Permanent for this job: FAILED, no retry."""
    CONFIGURATION = "configuration"
    """Not the job's fault (token, permissions): keep the job, refund the attempt, stop the run loudly."""


# Meta's codes (Meta's error code reference; the README's "Graph API error policy" table). Unlisted 4xx → FAIL.
RETRY_CODES = frozenset({1, 2, 4, 80007, 130429, 131000, 131016, 131057, 133004})
# Listed so that they fail whatever HTTP status carries them (Meta: build on the code, not the status).
# 131050: the customer stopped marketing messages (Meta: "Do not retry"); the contact records it.
FAIL_CODES = frozenset({100, 131008, 131009, 131026, 131050, 131051, 132000, 132001, 132015, 132016})
AUTH_CODES = frozenset({0, 3, 10, 190, 131005}) | frozenset(range(200, 300))
ACTIONS: dict[int, Action] = {
    **{code: Action.RETRY for code in RETRY_CODES},
    **{code: Action.FAIL for code in FAIL_CODES},
    **{code: Action.CONFIGURATION for code in AUTH_CODES},
    131056: Action.PAIR_RATE_LIMIT,
    WINDOW_CLOSED_CODE: Action.TEMPLATE,
}


def graph_error_action(error: GraphError) -> Action:
    """Decide from Meta's code first (Meta says to), the HTTP status only when there is no known code."""
    if error.code is not None and error.code in ACTIONS:
        return ACTIONS[error.code]
    if error.http_status >= 500 or error.http_status == 429:
        return Action.RETRY
    if error.http_status in (401, 403) and error.code is None:
        return Action.CONFIGURATION
    return Action.FAIL


def backoff_seconds(
    *,
    attempts: int,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base · 2^(attempts-1))).

    With a positive base the delay is at least one second, so a job never hot-loops; a provider's
    `retry-after` is a floor. base == 0 makes every retry due at once (tests, benchmarks).
    """
    if base <= 0:
        return max(0.0, retry_after or 0.0)
    ceiling = min(cap, base * 2 ** max(attempts - 1, 0))
    delay = min(cap, max((rng or random).uniform(0, ceiling), 1.0))
    # retry-after wins even over the cap: retrying sooner only earns another 429.
    return max(delay, retry_after or 0.0)


def pair_rate_limit_seconds(*, attempts: int, cap: float) -> float:
    """Meta's rule for 131056: retry after 4^X seconds, X = 0, 1, 2, … (1 s, 4 s, 16 s, 64 s …)."""
    return float(min(cap, 4 ** max(attempts - 1, 0)))


def next_attempt_at(*, now: datetime, delay_seconds: float) -> datetime:
    return now + timedelta(seconds=delay_seconds)
