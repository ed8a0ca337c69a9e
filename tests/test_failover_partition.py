"""Metaserver failover through a network partition (README, "Metaserver failover"): the active
metaserver runs in a network namespace of its own, joined to this one by a veth pair
(tests/netns.py); etcd, the standby and the fileservers listen here, on the veth's address,
which both sides reach while the link is up. Cutting the link cuts the active one off from etcd
and from them, while a client on its side (in the namespace too) still reaches it.

Its term must end (it stops granting) before etcd lets its lease go, so before the standby is
elected: a client on its side asks it for WRITE tokens throughout the partition, and every
token it granted, read from its debug log with the time, precedes its step-down and the
standby's election, while it did grant after the cut (the check bites), and a token the new
one granted conflicts with one it granted. The standby takes over; clients with open files and
cached writes follow it and close them. Once the link is back, the deposed one has exited and
serves nothing, and a write carrying its epoch is refused by etcd. Needs root and `ip`
(network namespaces), and etcd.
"""
from __future__ import annotations

import datetime
import time

import pytest

import pfs
from clusters import RemoteClient, read_file
from hacluster import (
    STEPPED_DOWN,
    HACluster,
    check_epoch_refused,
    check_grants_of_two_terms,
    create_open,
    elected_at,
    elected_epoch,
    ha_client,
    need_etcd,
    stepped_down_at,
    token_grants,
)
from netns import Split, can_make_namespaces

LEASE = 2.0
MiB = 1 << 20
#: Files the client on the cut-off side opens and writes, one after the other, while it can.
PROBES = 40

pytestmark = pytest.mark.skipif(not can_make_namespaces(),
                                reason="needs root and `ip netns` (network namespaces)")


@pytest.fixture
def split_ha(tmp_path):
    need_etcd()
    split = Split()
    try:
        cluster = HACluster(tmp_path / "ha", lease_seconds=LEASE, block_size=64 * 1024,
                            stripe_blocks=16, log_level="debug", split=split).start()
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        split.delete()


def probe(near: RemoteClient, fds: list[int], deadline: float) -> None:
    """Writes the open files from the cut-off side, one after the other, until `deadline`:
    each write asks for a WRITE token, and for nothing else of the metaserver that needs etcd
    first (no lookup); whether one is granted is for the metaserver's log to tell."""
    for fd in fds:
        near.call("write_pattern", fd, 7, 4096, 0, timeout=30)
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)


def open_probes(ha: HACluster, near: RemoteClient, reader: RemoteClient) -> list[int]:
    """Files p0... open in `near` with no token: `reader` holds a READ token on each (given
    up as soon as asked: it caches nothing), so the open could not come with one."""
    client = ha_client(ha)
    fds = []
    for i in range(PROBES):
        assert client.pfs_create(f"p{i}", 1) == 0, pfs.pfs_last_error()
        fd = reader.call("pfs_open", f"p{i}", pfs.PFS_READ)
        assert fd > 0 and reader.call("pfs_read", fd, 1, 0) == (0, b"")
        fds.append(near.call("pfs_open", f"p{i}", pfs.PFS_READ_WRITE))
        assert fds[-1] > 0
    client.pfs_finish(client.pfs_initialize())
    return fds


@pytest.mark.timeout(300)
def test_an_active_cut_off_from_etcd_steps_down_before_the_standby_is_elected(split_ha):
    ha = split_ha
    old, new = 0, 1
    epoch = elected_epoch(ha.log(old).read_text())
    remotes: list[RemoteClient] = []  # (each stopped at the end)

    def remote(cache_blocks: int, **env) -> RemoteClient:
        remotes.append(RemoteClient(ha, cache_blocks, **env))
        return remotes[-1]
    try:
        # (A retry window longer than the default 10 s: noticing the partition takes the
        # keepalive's 5 s, and the recovery window follows the election.)
        writers = [remote(1024, PFS_RETRY_SECONDS="30") for _ in range(2)]
        # On the cut-off side: clients that know only the active one, and reach it meanwhile.
        near, reader = (remote(c, prefix=ha.split.prefix, PFS_METASERVER=ha.addresses[old],
                               PFS_RETRY_SECONDS="1") for c in (1024, 0))
        holder = ha_client(ha)
        holder_fd = create_open(holder, "shared")  # a WRITE token of the old epoch, kept
        assert holder.pfs_write(holder_fd, b"a" * 4096, 4096, 0) == 4096
        probes = open_probes(ha, near, reader)
        fds = []
        for i, writer in enumerate(writers):
            assert writer.call("pfs_create", f"f{i}", 4) == 0
            fds.append(writer.call("pfs_open", f"f{i}", pfs.PFS_READ_WRITE))
            assert writer.call("write_pattern", fds[i], i + 1, MiB, 0) == [MiB, 0]

        cut_at = datetime.datetime.now()
        ha.split.cut()
        cut = time.monotonic()
        for writer, fd in zip(writers, fds):
            writer.send("pfs_close", fd)  # (through the takeover)
        probe(near, probes, cut + 3 * ha.election_ttl)
        ha.wait_serving()
        print(f"\ntakeover: a new session served {time.monotonic() - cut:.1f}s after the cut "
              f"(etcd lease {ha.election_ttl:g}s)")
        assert ha.active() == new
        for writer in writers:
            assert writer.receive(timeout=60) == 0, writer.call("last_error")
            assert writer.call("pfs_initialize") == writer.client_id  # the same session
        other = ha_client(ha)  # a conflicting WRITE token of the new epoch
        other_fd = other.pfs_open("shared", pfs.PFS_READ_WRITE)
        assert other_fd > 0, pfs.pfs_last_error()
        assert other.pfs_write(other_fd, b"b" * 4096, 4096, 0) == 4096

        ha.split.heal()
        ha.metaservers[old].wait(timeout=30)  # the deposed one stops: it serves nothing more
        assert near.call("write_pattern", probes[-1], 8, 4096, 0)[0] < 0
        old_log, new_log = ha.log(old).read_text(), ha.log(new).read_text()
        # It granted on its side of the partition (the checks bite), nothing once its term
        # was over, and nothing after the standby's election, which did not come before its
        # lease at etcd could have run out.
        old_grants = token_grants(old_log)
        print(f"the cut-off one granted {sum(g.at > cut_at for g in old_grants)} token(s) "
              f"after the cut, the last {(old_grants[-1].at - cut_at).total_seconds():.1f}s "
              f"after it; it logged its step-down "
              f"{(stepped_down_at(old_log) - cut_at).total_seconds():.1f}s after it, the "
              f"standby its election {(elected_at(new_log) - cut_at).total_seconds():.1f}s")
        assert [g for g in old_grants if g.at > cut_at]
        assert STEPPED_DOWN in old_log
        assert max(g.at for g in old_grants) < stepped_down_at(old_log)
        assert (elected_at(new_log) - cut_at).total_seconds() >= 0.5 * ha.election_ttl
        check_grants_of_two_terms(old_log, new_log)
        check_epoch_refused(ha, epoch)

        for i in range(len(writers)):
            assert read_file(other, f"f{i}") == bytes([i + 1]) * MiB
        assert other.pfs_close(other_fd) == 0
        assert holder.pfs_close(holder_fd) == 0
        assert read_file(other, "shared")[:4096] == b"b" * 4096
    finally:
        for client in remotes:
            client.kill()
