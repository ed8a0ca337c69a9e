"""The machinery the Clients of a process share (pfs/shared.py, pfs/workers.py, pfs/lanes.py):
counted holding, threads started only as work needs them, and lanes that keep one key's slow
calls from delaying another's."""
from __future__ import annotations

import threading

from pfs.runtime import holdings as shared
from pfs.runtime.callqueues import Lanes
from pfs.runtime.threads import Workers
from clusters import wait_until


class Thing:
    closed = 0

    def close(self) -> None:
        self.closed += 1


def test_a_shared_thing_is_made_once_and_closed_by_its_last_holder():
    key = ("test", object())
    first = shared.hold(key, Thing)
    assert shared.hold(key, Thing) is first and shared.holders(key) == 2
    shared.release(key)
    assert first.closed == 0
    shared.release(key)
    assert first.closed == 1 and shared.holders(key) == 0
    assert shared.hold(key, Thing) is not first  # made afresh for the next holder
    shared.release(key)


def test_holdings_of_a_collected_owner_are_released():
    key = ("test", object())

    class Owner:
        pass
    owner, holdings = Owner(), shared.Holdings()
    thing = holdings.hold(key, Thing)
    holdings.watch(owner)
    del owner  # collected: its holdings are let go of on the releasing thread
    wait_until(lambda: thing.closed == 1, timeout=10, what="the holdings to be released")
    assert shared.holders(key) == 0


def threads_named(prefix: str) -> int:
    return sum(t.name.startswith(prefix) for t in threading.enumerate())


def test_workers_start_threads_only_for_work_waiting():
    workers = Workers(8, "test-workers")
    assert threads_named("test-workers") == 0
    for _ in range(20):  # one at a time: one thread does them all
        workers.submit(lambda: None).result(timeout=10)
    assert threads_named("test-workers") == 1
    release = threading.Event()
    busy = [workers.submit(release.wait, 10) for _ in range(12)]
    assert threads_named("test-workers") == 8  # no more than its count
    release.set()
    assert all(f.result(timeout=10) for f in busy)
    workers.shutdown()


def test_a_slow_key_does_not_delay_another():
    lanes = Lanes(per_key=2, name="test-lanes")
    release, started, done = threading.Event(), threading.Semaphore(0), threading.Event()
    order: list[int] = []

    def slow(k: int) -> None:
        order.append(k)
        started.release()
        release.wait(10)
    for k in range(4):  # key "a": two run at once, the rest wait their turn, in order
        lanes.submit("a", slow, k)
    assert started.acquire(timeout=10) and started.acquire(timeout=10)
    lanes.submit("b", done.set)
    assert done.wait(10)  # while both of a's threads are stuck
    assert sorted(order) == [0, 1]
    release.set()
    for _ in range(2):
        assert started.acquire(timeout=10)
    assert order[2:] == [2, 3]
    lanes.close()
