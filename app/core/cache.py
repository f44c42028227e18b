"""A per-process, thread-safe time-to-live cache for values read from the database.

Lookups run on the event loop, a miss's loader in the thread pool (so several loaders and
the loop touch the cache at once), and ``cachetools.TTLCache`` is not thread-safe (a lookup
may evict expired entries), so every access holds one lock. A miss is computed outside the
lock: two requests missing the same key at once both read the database, and the later one's
value is kept; that costs one extra read, never a stale value.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar, cast

import anyio.to_thread
from cachetools import TTLCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_MISSING = object()


class ExpiringCache(Generic[K, V]):
    """Values kept for ``ttl_seconds`` after they were stored, then read again.

    Args:
        ttl_seconds: lifetime of an entry, seconds; 0 disables the cache (every
            :meth:`get_or_load` calls its loader).
        maxsize: entries kept at most; the least recently used goes first.
        timer: the clock, seconds (``time.monotonic``; tests pass a fake one).
    """

    def __init__(
        self,
        *,
        ttl_seconds: float,
        maxsize: int,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds < 0:
            raise ValueError(f"ttl_seconds must be >= 0, got {ttl_seconds}")
        self._lock = threading.Lock()
        self._cache: TTLCache[K, V] | None = (
            TTLCache(maxsize=maxsize, ttl=ttl_seconds, timer=timer) if ttl_seconds > 0 else None
        )

    @property
    def enabled(self) -> bool:
        """False when the TTL is 0."""
        return self._cache is not None

    async def get_or_load(self, key: K, load: Callable[[], V], *, keep: Callable[[V], bool]) -> V:
        """The cached value of ``key``, or else ``load()``, stored when ``keep(value)``.

        For the event loop: a hit costs no thread; a miss runs the blocking ``load()`` in the
        thread pool. Exceptions of ``load`` propagate and nothing is stored.
        """
        cache = self._cache
        if cache is not None:
            with self._lock:
                cached = cache.get(key, _MISSING)
            if cached is not _MISSING:
                return cast(V, cached)
        value = await anyio.to_thread.run_sync(load)
        if cache is not None and keep(value):
            with self._lock:
                cache[key] = value
        return value

    def put(self, key: K, value: V) -> None:
        """Store ``value`` for ``key`` now (computed elsewhere); nothing when the TTL is 0."""
        if self._cache is not None:
            with self._lock:
                self._cache[key] = value

    def __len__(self) -> int:
        if self._cache is None:
            return 0
        with self._lock:
            return len(self._cache)
