"""Retry-After parsing (seconds, HTTP dates, garbage) and the backoff schedule's bounds."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from airflow_provider_bfl._retry import RetryPolicy, parse_retry_after

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2", 2.0),
        ("0", 0.0),
        (" 1.5 ", 1.5),
        ("Wed, 25 Nov 2026 12:00:30 GMT", 30.0),
        ("Wed, 25 Nov 2026 11:59:00 GMT", 0.0),
        (None, None),
        ("", None),
        ("inf", None),
        ("nan", None),
        ("-3", None),
        ("soon", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(retry_after_max=10)
    assert policy.delay(0, retry_after=3) == 3
    assert policy.delay(0, retry_after=3600) == 10


def test_full_jitter_stays_within_the_exponential_cap() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=4)
    for retry, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0)]:
        delays = [policy.delay(retry) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap / 2  # jitter spreads over the range, not a fixed value
