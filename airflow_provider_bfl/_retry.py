"""When to retry an HTTP call and how long to wait: one policy for every call the hook makes."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from airflow_provider_bfl import defaults

#: Statuses worth another try. Retrying a submission is safe because it reuses its taskUUIDs.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = defaults.MAX_RETRIES
    backoff_base: float = defaults.BACKOFF_BASE
    backoff_max: float = defaults.BACKOFF_MAX
    max_elapsed: float = defaults.RETRY_MAX_ELAPSED
    retry_after_max: float = defaults.RETRY_AFTER_MAX

    def delay(self, retry_number: int, retry_after: float | None = None) -> float:
        """Seconds before retry ``retry_number`` (0-based): Retry-After if sent, else full jitter."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2**retry_number))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
        return max(seconds, 0.0)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds
