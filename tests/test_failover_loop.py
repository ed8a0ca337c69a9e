"""The active metaserver's event loop never waits on etcd (README, "The metadata on etcd"),
with real processes: a 3-member etcd on loopback, two metaservers sharing it, four fileservers
and client processes. While every etcd member is stopped (SIGSTOP), a stat whose lookup the
active's cache cannot answer waits for etcd, and meanwhile a stat of a name the cache holds is
answered within a call deadline of a few seconds (a loop blocked on etcd answers nothing for
about 10 s); once etcd is back (SIGCONT), both stats succeed.
"""
from __future__ import annotations

import signal
import time

import pytest

from clusters import RemoteClient
from hacluster import HACluster, create_open, ha_client

#: How long the stat that needs no etcd may take: a functional deadline, not a speed target.
ANSWER_SECONDS = 3.0


@pytest.fixture
def ha(tmp_path):
    cluster = HACluster(tmp_path / "ha", lease_seconds=2.0, block_size=64 * 1024,
                        stripe_blocks=16).start()
    yield cluster
    cluster.stop()


@pytest.mark.timeout(240)
def test_a_call_needing_no_etcd_is_answered_while_a_lookup_waits_for_etcd(ha):
    client = ha_client(ha)
    client.mkdir("d")
    assert client.pfs_close(create_open(client, "d/uncached")) == 0
    client.pfs_finish(client.pfs_initialize())
    first = ha.active()
    ha.kill_metaserver(first)  # the standby takes over, knowing nothing of "d" yet
    ha.wait_serving()
    assert ha.active() == 1 - first
    ha.start_metaserver(first)  # (a standby again, should etcd let the active's lease go)
    slow, fast = (RemoteClient(ha, 0, PFS_RETRY_SECONDS="60") for _ in range(2))
    try:
        writer = ha_client(ha)
        assert writer.pfs_close(create_open(writer, "cached")) == 0  # (its commit fills it)
        assert fast.call("stat_size", "cached") == 0  # (the recovery window is over)
        try:
            for i in range(len(ha.etcd.processes)):
                ha.etcd.kill(i, signal.SIGSTOP)
            slow.send("stat_size", "d/uncached")
            time.sleep(0.5)  # (its lookup waits on etcd now)
            started = time.monotonic()
            assert fast.call("stat_size", "cached", timeout=ANSWER_SECONDS) == 0
            print(f"\nanswered in {time.monotonic() - started:.2f}s with etcd stopped")
        finally:
            for i in range(len(ha.etcd.processes)):
                ha.etcd.kill(i, signal.SIGCONT)
        assert slow.receive(timeout=90) == 0
        ha.wait_serving()
        assert ha_client(ha).stat("d/uncached").file_size == 0
    finally:
        for remote in (slow, fast):
            remote.kill()
