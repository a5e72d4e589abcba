"""Every timeout, retry and polling default in one place, so they can be read and tuned together."""

from __future__ import annotations

DEFAULT_BASE_URL = "https://api.runware.ai/v1"
DEFAULT_CONN_ID = "bfl_default"
CONN_TYPE = "bfl"

#: Seconds one HTTP request may take. A sync-delivery submission that runs past it is not lost: the
#: retry meets ``conflictTaskUUID`` and re-attaches to the generation by polling.
REQUEST_TIMEOUT = 60.0
CONNECT_TIMEOUT = 10.0

#: Retries of one HTTP call after 429/5xx/connection errors (full-jitter exponential backoff).
MAX_RETRIES = 5
BACKOFF_BASE = 0.5
BACKOFF_MAX = 8.0
#: Total seconds one logical call may spend across its retries.
RETRY_MAX_ELAPSED = 120.0
#: A server's Retry-After is honoured up to this many seconds.
RETRY_AFTER_MAX = 60.0

#: Polling getResponse: the official TypeScript client's schedule (1 s, x1.5, capped).
POLL_INTERVAL = 1.0
POLL_BACKOFF = 1.5
POLL_MAX_INTERVAL = 10.0
#: Consecutive failed polls tolerated before waiting gives up.
MAX_POLL_FAILURES = 5
#: Consecutive polls in which the API does not mention a task before it counts as not found.
MAX_MISSING_POLLS = 5

#: Tasks sent in one HTTP request (the API's own maximum is not documented).
MAX_TASKS_PER_REQUEST = 100
