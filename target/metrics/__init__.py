"""Statistics: per-worker counters in shared memory (layout, the worker's side), read by `ringtgt stats` and the
Prometheus endpoint without a message per I/O."""
