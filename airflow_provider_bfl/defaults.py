"""Every timeout, retry and polling default in one place, so they can be read and tuned together."""

from __future__ import annotations

DEFAULT_BASE_URL = "https://api.runware.ai/v1"
DEFAULT_CONN_ID = "bfl_default"
CONN_TYPE = "bfl"

#: Total seconds one HTTP request may take, from connecting to the last byte of the answer (not per
#: read: a server dripping one byte at a time cannot stretch it). A sync-delivery submission that
#: runs past it is not lost: the retry meets ``conflictTaskUUID`` and re-attaches by polling.
REQUEST_TIMEOUT = 60.0
CONNECT_TIMEOUT = 10.0
#: A call made at a wait's deadline (less than LAST_POLL_WINDOW before it, or after it: the last
#: poll) still gets LAST_POLL_GRACE seconds; every other call of a wait ends at the wait's
#: deadline. A wait therefore ends by its deadline + LAST_POLL_GRACE at the latest.
LAST_POLL_WINDOW = 0.1
LAST_POLL_GRACE = 2.0

#: The decoded size an API answer may reach: a fixed allowance for the envelope, a little per task
#: and, per image the request can return, enough for a 1440x1440 PNG as base64 with room to spare
#: (connection extra ``max_response_bytes_per_image``). URL-only users may lower it.
RESPONSE_ENVELOPE_BYTES = 256 * 1024
RESPONSE_BYTES_PER_TASK = 16 * 1024
MAX_RESPONSE_BYTES_PER_IMAGE = 16 * 1024 * 1024

#: Retries of one HTTP call after 429/5xx/connection errors (full-jitter exponential backoff).
MAX_RETRIES = 5
BACKOFF_BASE = 0.5
BACKOFF_MAX = 8.0
#: Total seconds one logical call may spend across its retries.
RETRY_MAX_ELAPSED = 120.0
#: A server's Retry-After is honoured up to this many seconds.
RETRY_AFTER_MAX = 60.0

#: Polling getResponse: the official TypeScript client's schedule (1 s, x1.5, capped at 10 s), except
#: that the first POLL_STEADY_POLLS waits keep the base interval. Polls then go out at 0, 1, 2, 3,
#: 4.5, 6.75, 10.1 ... s instead of 0, 1, 2.5, 4.75, 8.1 ... s: a FLUX.1.1 [pro] generation (typically
#: 2-5 s) is noticed within one interval of finishing (a 2 s job at 2 s, not 2.5 s; a 5 s job at
#: 6.75 s, not 8.1 s) for at most one or two more polls on long waits. See benchmarks/RESULTS.md.
POLL_INTERVAL = 1.0
POLL_BACKOFF = 1.5
POLL_MAX_INTERVAL = 10.0
POLL_STEADY_POLLS = 3
#: Consecutive failed polls tolerated before waiting gives up.
MAX_POLL_FAILURES = 5
#: Seconds between two progress lines of one wait (pending / done / elapsed / progress %): a 500-task
#: batch is one wait, so it logs one line per interval, not one per task.
PROGRESS_LOG_INTERVAL = 15.0
#: Progress lines a second that the shared waits of one event loop log together at most: with more
#: than PROGRESS_LOG_INTERVAL x this many waits (30), each wait's interval stretches (a triggerer
#: running 270 triggers logs one line per trigger every 135 s, not 18 lines a second).
PROGRESS_LINES_PER_SECOND = 2.0
#: Consecutive polls in which the API does not mention a task before it counts as not found.
MAX_MISSING_POLLS = 5

#: Tasks sent in one HTTP request (the API's own maximum is not documented).
MAX_TASKS_PER_REQUEST = 100

#: Triggers of one event loop that share a connection poll through one coalescer: a poll that is
#: due within this fraction of its interval joins a batch leaving now (capped at the next value),
#: so triggers started at slightly different times fall into step and share getResponse requests.
COALESCE_EARLY_FRACTION = 0.2
COALESCE_EARLY_MAX = 1.0
#: Minimum seconds between two batches of the coalescer, so a burst of new triggers (the triggerer
#: starts them one by one) is polled in a few requests rather than one request per trigger.
COALESCE_ROUND_SPACING = 0.05
#: Seconds for which one connection lookup serves every trigger of an event loop that starts on the
#: same connection (a triggerer adopting hundreds reads it once, not hundreds of times); a changed
#: API key or extra reaches the triggers that start after that.
SETTINGS_REUSE_SECONDS = 10.0
