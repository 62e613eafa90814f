"""Rate-limited logging for the target's processes: the one implementation lives in coordinator/lograte.py (the
coordinator, which `target` builds on, needs it too)."""
from coordinator.lograte import DEFAULT_INTERVAL, MAX_KEYS, RateLimitedLog  # noqa: F401
