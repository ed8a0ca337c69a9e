"""What the Clients of one process share, counted: made by the first Client that needs it,
closed when the last one lets go.

A gRPC channel is meant to be shared (one connection, any number of calls at once, each with
its own metadata), and so are the threads that make calls. So every Client of a process uses one
channel per server, one set of data-path threads per fileserver, one read-ahead pool, one
revocation pool and one session stream per metaserver; each is held here under a key that
names what it is for (its address and credentials, say) and carries a count of its holders.

`hold(key, make)` returns the thing under `key`, made by `make()` if nobody holds it, and counts
one more holder; `release(key)` counts one less and closes it (its `close()`) once nobody holds
it. A holder that is garbage-collected without letting go (a Client the program dropped) lets go
through `release_later`, which only queues the keys (safe in a finalizer, which may run on any
thread, holding any lock): one thread of this module releases them.
"""
from __future__ import annotations

import logging
import queue
import threading
import weakref
from typing import Any, Callable, Hashable, TypeVar

T = TypeVar("T")

_lock = threading.RLock()  # a thing made may hold others (a stream, its channel)
_held: dict[Hashable, list] = {}  # key -> [thing, holders]
_later: "queue.SimpleQueue[tuple[Hashable, ...]]" = queue.SimpleQueue()
_releaser: threading.Thread | None = None


def hold(key: Hashable, make: Callable[[], T]) -> T:
    """The thing under `key` (made now if nobody holds it), with one more holder."""
    global _releaser
    with _lock:
        entry = _held.get(key)
        if entry is None:
            entry = _held[key] = [make(), 0]
        entry[1] += 1
        if _releaser is None:  # started here, never from a finalizer
            _releaser = threading.Thread(target=_release_queued, name="pfs-release",
                                         daemon=True)
            _releaser.start()
        return entry[0]


def release(key: Hashable) -> None:
    """One holder less; the thing is closed once nobody holds it."""
    with _lock:
        entry = _held[key]
        entry[1] -= 1
        if entry[1]:
            return
        del _held[key]
    entry[0].close()


def release_later(keys: tuple[Hashable, ...] | list[Hashable]) -> None:
    """Releases the keys soon, on this module's thread (for finalizers)."""
    _later.put(tuple(keys))


def holders(key: Hashable) -> int:
    """How many hold the thing under `key` now (0: nobody, it is closed)."""
    with _lock:
        entry = _held.get(key)
        return entry[1] if entry else 0


def _release_queued() -> None:
    while True:
        for key in _later.get():
            try:
                release(key)
            except Exception:  # noqa: BLE001 - one failed close must not stop the others
                logging.getLogger("pfs.client").exception("releasing %r failed", key)


class Holdings:
    """The keys one object holds, let go together: at `release_all()`, or when the object is
    garbage-collected (`watch`), without this keeping the object alive."""

    def __init__(self) -> None:
        self._keys: list[Hashable] = []
        self._lock = threading.Lock()

    def hold(self, key: Hashable, make: Callable[[], Any]) -> Any:
        thing = hold(key, make)
        with self._lock:
            self._keys.append(key)
        return thing

    def release(self, key: Hashable) -> None:
        with self._lock:
            self._keys.remove(key)
        release(key)

    def release_all(self) -> None:
        with self._lock:
            keys, self._keys = self._keys, []
        for key in keys:
            release(key)

    def release_later(self) -> None:
        """For finalizers: queues the keys for release (see the module's docstring)."""
        keys, self._keys = self._keys, []
        if keys:
            release_later(keys)

    def watch(self, owner: object) -> None:
        """Releases (later) whatever is still held once `owner` is garbage-collected."""
        finalizer = weakref.finalize(owner, self.release_later)
        finalizer.atexit = False  # at exit, Clients are finished first (pfs/client/)
