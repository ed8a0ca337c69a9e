"""Metaserver failover over etcd, with real processes: a 3-member etcd on loopback, two
metaservers sharing it (one active, one standing by), four fileservers and client processes
that know both metaservers (PFS_METASERVER=a,b).

- the active one SIGKILLed and its data directory wiped while clients hold open files and
  dirty cached writes: the standby takes over, the clients reclaim, and every closed file and
  every cached write is there afterwards;
- an etcd member SIGKILLed mid-workload: no call fails;
- the active one SIGSTOPped past its etcd lease, then SIGCONTed: the standby was elected only
  after the stopped one's term was over, the stopped one grants nothing more and exits, and a
  write guarded by its epoch is refused by etcd;
- a directory's layout, a file's raised replica count, attributes and symlinks outlive a
  takeover;
- the consistency nemesis with the active metaserver killed: clients racing on one file, one
  killed during the takeover; the checker explains every history.
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
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
    elected_epoch,
    ha_client,
)

LEASE = 2.0


@pytest.fixture
def ha(tmp_path):
    cluster = HACluster(tmp_path / "ha", lease_seconds=LEASE, block_size=64 * 1024,
                        stripe_blocks=16).start()
    yield cluster
    cluster.stop()


def test_a_standby_takes_over_from_a_killed_active_whose_disk_is_gone(ha):
    size = 1 << 20
    writers = [RemoteClient(ha, cache_blocks=1024) for _ in range(3)]
    try:
        closed = ha_client(ha)
        fd = create_open(closed, "closed-before")
        assert closed.pfs_write(fd, b"kept" * 1000, 4000, 0) == 4000
        assert closed.pfs_close(fd) == 0
        fds = []
        for i, writer in enumerate(writers):
            assert writer.call("pfs_create", f"f{i}", 4) == 0
            fds.append(writer.call("pfs_open", f"f{i}", pfs.PFS_READ_WRITE))
            assert writer.call("write_pattern", fds[i], i + 1, size, 0) == [size, 0]

        active = ha.active()
        assert active >= 0
        killed = time.monotonic()
        ha.kill_metaserver(active)
        shutil.rmtree(ha.data_dir / f"meta{active}")  # its disk is gone too
        for writer, fd in zip(writers, fds):
            writer.send("pfs_close", fd)
        takeover = ha.wait_serving()
        print(f"\ntakeover: a new session served {time.monotonic() - killed:.1f}s after the "
              f"active metaserver was killed (lease {LEASE:g}s, etcd lease "
              f"{ha.election_ttl:g}s)")
        for writer in writers:
            assert writer.receive(timeout=60) == 0, writer.call("last_error")
            assert writer.call("pfs_initialize") == writer.client_id  # the same session

        assert takeover > 0 and ha.active() not in (-1, active)
        check = ha_client(ha)
        for i in range(3):
            assert read_file(check, f"f{i}") == bytes([i + 1]) * size
        assert read_file(check, "closed-before") == b"kept" * 1000
        log = ha.log(ha.active()).read_text()
        assert "3 of 3 session(s) reclaimed" in log or "4 of 4 session(s) reclaimed" in log, log
    finally:
        for writer in writers:
            writer.close()


def test_a_killed_etcd_member_fails_no_call(ha):
    """The member killed is the first of the list: the one the metaservers talk to. `pfs
    status --json` names the active metaserver, the standby and the epoch; `pfs scrub` (whose
    answer is a stream) given the standby first reaches the active one."""
    client = ha_client(ha)
    for i in range(60):
        if i == 20:
            ha.etcd.kill(0, signal.SIGKILL)
        fd = create_open(client, f"g{i}")
        assert client.pfs_write(fd, bytes([i]) * 700, 700, 0) == 700
        assert client.pfs_close(fd) == 0, pfs.pfs_last_error()
        assert client.pfs_rename(f"g{i}", f"h{i}") == 0, pfs.pfs_last_error()
    for i in range(60):
        assert read_file(client, f"h{i}") == bytes([i]) * 700
    killed = ha.etcd.endpoints[0]
    assert f"etcd member {killed} does not answer" in ha.log(ha.active()).read_text()
    status = json.loads(subprocess.run([sys.executable, "-m", "pfs", "status", "--json"],
                                       capture_output=True, text=True, env=ha.env(),
                                       cwd=ha.data_dir, timeout=60, check=True).stdout)
    active = ha.addresses[ha.active()]
    assert status["active"] == active and status["epoch"] > 0
    assert status["standbys"] == [a for a in ha.addresses if a != active]
    standby_first = ",".join(status["standbys"] + [active])  # a streamed answer follows too
    scrubbed = subprocess.run([sys.executable, "-m", "pfs", "scrub"], capture_output=True,
                              text=True, env={**ha.env(), "PFS_METASERVER": standby_first},
                              cwd=ha.data_dir, timeout=60)
    assert scrubbed.returncode == 0 and "all good" in scrubbed.stdout, scrubbed


def test_layouts_replica_changes_and_attributes_outlive_a_takeover(ha):
    """On etcd too: a directory's layout, a file's copies raised by `pfs setstripe`, POSIX
    attributes and a symlink, set at the active metaserver, hold at the one that takes over
    when it is killed, which resyncs the new copies."""
    def cli(*args: str, input: str | None = None, check: bool = True) -> str:
        return subprocess.run([sys.executable, "-m", "pfs", *args], capture_output=True,
                              text=True, env=ha.env(), cwd=ha.data_dir, timeout=60, check=check,
                              input=input).stdout

    def replicas(path: str) -> int:
        return json.loads(cli("getstripe", "--json", path))["replicas"]
    data = os.urandom(300_000).hex()
    cli("mkdir", "runs")
    cli("setstripe", "runs", "--width", "1", "--replicas", "2")
    cli("put", "-", "runs/a", input=data)
    cli("put", "-", "single", "--stripe-width", "2", input=data)
    assert "new copies being made" in cli("setstripe", "single", "--replicas", "2")
    client = ha_client(ha)
    client.setattr("runs/a", mode=0o640, uid=1234, gid=99, mtime=1_000_000.0)
    client.symlink("runs/a", "link")
    client.pfs_finish(client.pfs_initialize())
    ha.kill_metaserver(ha.active())
    ha.wait_serving()
    cli("put", "-", "runs/b", input="b")
    assert [replicas(p) for p in ("runs/a", "single", "runs/b")] == [2, 2, 2]
    assert json.loads(cli("getstripe", "--json", "runs/b"))["stripe_width"] == 1
    client = ha_client(ha)
    try:
        meta = client.stat("runs/a")
        assert (meta.mode, meta.uid, meta.gid, meta.mtime) == (0o640, 1234, 99, 1_000_000.0)
        assert client.stat("link").symlink_target == "runs/a"
    finally:
        client.pfs_finish(client.pfs_initialize())
    deadline = time.monotonic() + 60
    while "all in sync" not in cli("status", check=False):
        assert time.monotonic() < deadline, "the new copies were not made"
        time.sleep(0.5)
    assert cli("cat", "single") == data


@pytest.fixture
def ha_logging_grants(tmp_path):
    cluster = HACluster(tmp_path / "ha", lease_seconds=LEASE, block_size=64 * 1024,
                        stripe_blocks=16, log_level="debug").start()
    yield cluster
    cluster.stop()


def test_an_active_stopped_past_its_lease_is_deposed_and_its_writes_refused(ha_logging_grants):
    """The tokens each metaserver granted are in its debug log, with the time: none the
    deposed one granted comes after the standby's election (it stopped granting before), so
    no two conflicting tokens of different epochs were ever held at once. A client that knows
    only the stopped one sends it a conflicting request meanwhile: after SIGCONT it is not
    granted."""
    ha = ha_logging_grants

    client = ha_client(ha)
    fd = create_open(client, "before")
    assert client.pfs_close(fd) == 0
    old = ha.active()
    epoch = elected_epoch(ha.log(old).read_text())
    holder_fd = create_open(client, "shared")   # a WRITE token of the old epoch, kept
    assert client.pfs_write(holder_fd, b"a" * 4096, 4096, 0) == 4096
    late = RemoteClient(ha, PFS_METASERVER=ha.addresses[old])
    late_fd = late.call("pfs_open", "shared", pfs.PFS_READ_WRITE)
    assert late_fd > 0
    ha.kill_metaserver(old, signal.SIGSTOP)
    stopped = time.monotonic()
    late.send("pfs_write", late_fd, b"q" * 4096, 4096, 0)  # (waits in the stopped one's socket)
    ha.wait_serving()
    new = ha.active()
    assert new not in (-1, old)
    assert time.monotonic() - stopped >= ha.election_ttl * 0.8  # not before its lease ran out
    other = ha_client(ha)    # a conflicting WRITE token of the new epoch
    other_fd = other.pfs_open("shared", pfs.PFS_READ_WRITE)
    assert other_fd > 0, pfs.pfs_last_error()
    assert other.pfs_write(other_fd, b"b" * 4096, 4096, 0) == 4096
    ha.kill_metaserver(old, signal.SIGCONT)
    ha.metaservers[old].wait(timeout=30)  # the deposed one stops: it grants nothing more
    old_log = ha.log(old).read_text()
    assert STEPPED_DOWN in old_log
    late.kill()
    check_grants_of_two_terms(old_log, ha.log(new).read_text())
    check_epoch_refused(ha, epoch)
    assert read_file(client, "before") == b""
    fd = create_open(client, "after")
    assert client.pfs_close(fd) == 0
    assert other.pfs_close(other_fd) == 0
    assert client.pfs_close(holder_fd) == 0


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_racing_clients_with_the_active_metaserver_killed(tmp_path, seed):
    """The nemesis of test_consistency.py with etcd: four clients race on one file (reads,
    writes, fsyncs, closes and reopens) while the active metaserver is SIGKILLed (a standby
    takes over: the clients reclaim, keeping what they cache) and one client is killed while
    no metaserver is active (it never reclaims: the recovery window evicts it). Calls made
    meanwhile may fail (EHOSTDOWN: unknown outcome), but no surviving client loses its
    session, and every successful read and the final file are explained by the checker."""
    from test_consistency import (
        FILE_SIZE,
        MAX_LEN,
        WRITABLE_END,
        B,
        check_untouched_tail,
        find_order,
        journal_ops,
        make_file,
        read_final,
    )
    rng = random.Random(seed)
    ha = HACluster(tmp_path / "ha", lease_seconds=LEASE, block_size=512, stripe_blocks=2).start()
    try:
        setup = ha_client(ha)
        initial = bytes((i * 31 + seed) % 251 for i in range(FILE_SIZE))
        name = f"nemesis-{seed}"
        make_file(setup, name, seed, initial, 1)
        workers = [RemoteClient(ha, cache_blocks=c, PFS_RETRY_SECONDS="1")
                   for c in (16, 0, 2, 16)]
        journals = [tmp_path / f"journal-{k}.jsonl" for k in range(len(workers))]
        survivors, killed = workers[:3], workers[3]
        try:
            for k, worker in enumerate(workers):
                worker.send("random_ops", name, seed * 100 + k, 10_000, FILE_SIZE, WRITABLE_END,
                            MAX_LEN, str(journals[k]), 14.0, True)
            time.sleep(rng.uniform(1.0, 2.0))
            active = ha.active()
            ha.kill_metaserver(active)
            time.sleep(rng.uniform(0.1, 0.5))
            killed_at = time.monotonic_ns()
            killed.kill()
            histories = {k: w.receive(timeout=120) for k, w in enumerate(survivors)}
        finally:
            for worker in workers:
                worker.close()
        final = read_final(setup, name, FILE_SIZE)
        log = ha.log(ha.active()).read_text()
    finally:
        ha.stop()
    for worker in survivors:
        assert f"client {worker.client_id} reclaimed its session" in log, log[-3000:]
    calls = [op for k, path in enumerate(journals) for op in journal_ops(k, path)]
    for k, history in histories.items():
        assert len(history) == sum(op.client == k for op in calls)
    unexpected = [op for op in calls if op.error not in (0, errno.ENOTCONN, errno.EHOSTDOWN,
                                                         errno.ETIMEDOUT)]
    assert not unexpected, f"calls failed in ways no fault explains: {unexpected[:3]}"
    ops = [op for op in calls if op.kind in ("read", "write")]
    crashes = {3: (killed_at, None)}
    for k in range(3):
        lost = [op.end for op in ops if op.client == k and op.error == errno.ENOTCONN]
        assert not lost, f"client {k} lost its session to the takeover"
    check_untouched_tail(ops, initial, final)
    assert find_order(ops, initial, final, block_size=B, crashes=crashes) is not None, \
        "no total order of the operations explains what the reads saw"
    done = [op for op in ops if op.client in range(3) and not op.error]
    assert any(op.kind == "write" for op in done) and any(op.kind == "read" for op in done)


def test_pfs_up_ha_runs_a_failover_cluster_and_stops_it_whole(tmp_path):
    """`pfs up --ha`: a 3-member etcd, two metaservers (one active, one standing by) and the
    fileservers; an etcd member killed is restarted; SIGTERM stops every one of them, etcd
    included."""
    from hacluster import need_etcd
    need_etcd()
    data = tmp_path / "demo"
    data.mkdir()
    up = subprocess.Popen([sys.executable, "-m", "pfs", "up", "--ha", "--port", "0",
                           "--data-dir", str(data), "--die-with-parent", *COURSE_FLAGS],
                          stdout=subprocess.PIPE, stderr=open(tmp_path / "up.log", "ab"),
                          text=True, cwd=data, start_new_session=True)
    try:
        assert "PFS is up" in up.stdout.readline()
        address = (data / "metaserver.address").read_text().strip()
        assert len(address.split(",")) == 2
        status = json.loads(subprocess.run(
            [sys.executable, "-m", "pfs", "status", "--json"], capture_output=True, text=True,
            env={**os.environ, "PFS_METASERVER": address}, cwd=data, timeout=60,
            check=True).stdout)
        assert status["active"] in address.split(",") and status["epoch"] > 0
        assert len(status["standbys"]) == 1 and status["standbys"][0] != status["active"]
        # A dead etcd member is started again (on its data directory).
        member = str(data / "etcd" / "etcd0")
        killed = next(pid for pid in os.listdir("/proc") if pid.isdigit()
                      and member in _cmdline(pid) and "--name" in _cmdline(pid))
        os.kill(int(killed), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not [pid for pid in os.listdir("/proc") if pid.isdigit() and pid != killed
                   and member in _cmdline(pid) and "--name" in _cmdline(pid)]:
            assert time.monotonic() < deadline, "the killed etcd member was not restarted"
            time.sleep(0.2)
        assert "etcd member 0 ended; restarted" in (tmp_path / "up.log").read_text()
    finally:
        up.terminate()
        up.wait(timeout=60)
    etcds = [pid for pid in os.listdir("/proc") if pid.isdigit()
             and str(data / "etcd") in _cmdline(pid)]
    assert not etcds, "an etcd member outlived pfs up"


COURSE_FLAGS = ["--fileservers", "4", "--block-size", "512", "--stripe-blocks", "2"]


def _cmdline(pid: str) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
    except OSError:
        return ""
