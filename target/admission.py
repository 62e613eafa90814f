"""Which connections still logging in a worker keeps: a cap per worker and per source address, pure code.

A connection is "before login" from its accept until its login completes (or it closes). Such connections
cost memory and a descriptor each while they prove nothing, so a worker holds a bounded number of them; a
new one beyond a cap evicts the idlest one already held instead of being refused, so a storm of idle
connections cannot lock real logins out. The idlest is the oldest of those that never sent a byte, else the
one that has been silent longest: an initiator in the middle of its login is the last to go. IPv6 sources
count per /64 (one host can own a whole /64).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Hashable
from typing import Generic, TypeVar

IPV6_PREFIX = 64
STORM = 64                  # this many held at once, then a quarter of it or less: a storm has receded

K = TypeVar("K", bound=Hashable)     # what stands for a connection (the worker's Channel)


def source_of(host: str) -> str:
    """The address a per-source cap counts `host` under: itself for IPv4, its /64 for IPv6."""
    if ":" not in host:
        return host
    return str(ipaddress.IPv6Network((host.partition("%")[0], IPV6_PREFIX), strict=False))


class _Idlest(Generic[K]):
    """Connections in eviction order: those never heard from by accept time, then the others by when they
    were last heard from (dicts keep insertion order; every operation is O(1))."""

    __slots__ = ("silent", "heard")

    def __init__(self) -> None:
        self.silent: dict[K, None] = {}
        self.heard: dict[K, None] = {}

    def __len__(self) -> int:
        return len(self.silent) + len(self.heard)

    def add(self, key: K) -> None:
        self.silent[key] = None

    def touch(self, key: K) -> None:
        self.silent.pop(key, None)
        self.heard.pop(key, None)
        self.heard[key] = None

    def discard(self, key: K) -> None:
        self.silent.pop(key, None)
        self.heard.pop(key, None)

    def first(self) -> K:
        return next(iter(self.silent or self.heard))


class PreLoginConnections(Generic[K]):
    """The connections of one worker that have not logged in yet, at most `max_total` of them and
    `max_per_source` from one source. Keys are any hashable objects (the worker uses its channels); the
    caps are named as the `[server]` keys that set them."""

    def __init__(self, max_total: int, max_per_source: int) -> None:
        self.max_total = max_total
        self.max_per_source = max_per_source
        self._all: _Idlest[K] = _Idlest()
        self._by_source: dict[str, _Idlest[K]] = {}
        self._source: dict[K, str] = {}     # key -> its source
        self.peak = 0                       # most held at once since the last storm receded

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, key: object) -> bool:
        return key in self._source

    def add(self, key: K, source: str) -> tuple[K, str] | None:
        """Hold a new connection from `source`; if a cap was reached, (the connection to evict so that it fits,
        no longer held here, the cap's name). One eviction is enough: the caps are reached one at a time."""
        evicted: tuple[K, str] | None = None
        group = self._by_source.get(source)
        if group is not None and len(group) >= self.max_per_source:
            evicted = self._evict(group.first()), "max_prelogin_per_address"
        elif len(self._all) >= self.max_total:
            evicted = self._evict(self._all.first()), "max_prelogin_connections"
        group = self._by_source.get(source)     # again: an eviction removes the group it empties
        if group is None:
            group = self._by_source[source] = _Idlest()
        group.add(key)
        self._all.add(key)
        self._source[key] = source
        self.peak = max(self.peak, len(self._all))
        return evicted

    def heard_from(self, key: K) -> None:
        """`key` received something: it moves to the back of the eviction order."""
        source = self._source.get(key)
        if source is not None:
            self._all.touch(key)
            self._by_source[source].touch(key)

    def idlest(self) -> K | None:
        """The connection to evict first, or None if none is held."""
        return self._all.first() if self._all else None

    def discard(self, key: K) -> None:
        """`key` logged in or closed."""
        source = self._source.pop(key, None)
        if source is None:
            return
        self._all.discard(key)
        group = self._by_source[source]
        group.discard(key)
        if not group:
            del self._by_source[source]

    def receded(self) -> bool:
        """True once after each storm: when at least STORM were held at once and now a quarter of that peak
        or less are (the time to give the memory they held back)."""
        if self.peak < STORM or len(self._all) > self.peak // 4:
            return False
        self.peak = len(self._all)
        return True

    def _evict(self, key: K) -> K:
        self.discard(key)
        return key
