"""The metaserver's lease clock (servers/metaserver/loopclock.py) leaves out its event loop's
lag, and never runs faster than wall time."""
from __future__ import annotations

import pytest

from pfs_servers.metaserver import loopclock
from pfs_servers.metaserver.loopclock import MAX_STEP, TICK, LoopClock


@pytest.fixture
def wall(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(loopclock.time, "monotonic", lambda: now[0])
    return now


def test_a_loop_on_time_keeps_wall_time(wall):
    clock, start = LoopClock(), wall[0]
    for _ in range(50):
        wall[0] += TICK * 1.5  # a little late: still on time
        clock._tick()
    assert clock() == pytest.approx(wall[0]) and clock.lag == 0
    assert clock() - start == pytest.approx(50 * TICK * 1.5)


def test_a_stalled_loop_does_not_count_its_stall(wall):
    clock = LoopClock()
    before = clock()
    wall[0] += 30.0  # the loop did not run for 30 s (longer than any lease)
    assert clock() == pytest.approx(before + MAX_STEP)  # even read before the ticker runs
    clock._tick()
    assert clock() == pytest.approx(before + MAX_STEP)
    assert clock.lag == pytest.approx(30.0 - MAX_STEP)
    wall[0] += TICK
    assert clock() == pytest.approx(before + MAX_STEP + TICK)  # and goes on from there


def test_the_clock_never_runs_faster_than_wall_time(wall):
    clock = LoopClock()
    start_wall, start = wall[0], clock()
    for step in [0.05, 3.0, 0.1, 0.3, 12.0, 0.01] * 5:
        wall[0] += step
        assert clock() - start <= wall[0] - start_wall + 1e-9
        clock._tick()
