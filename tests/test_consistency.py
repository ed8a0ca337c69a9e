"""Randomized races: client processes with tiny caches read and write overlapping ranges of one
file; every read and the final file must be explained by one total order of all operations
(tests/consistency.py). Evictions and revocations are frequent: blocks are 512 bytes and each
client caches only a few.

A second race does the same on a file that grows: appends (at an end that may be stale), reads
across and past the end, writes past it that must fail with EINVAL, and fstat; every size seen
must be explained too.

A third race adds a nemesis: one client is frozen (SIGSTOP) past its lease, a fileserver is
killed (and restarted by `pfs up`; on a file with two copies of each stripe unit, it also loses
its data directory, and once the race is over the resync must leave every copy equal), the
metaserver is killed (and restarted, so the clients reclaim their sessions), and one client is
killed mid-operation while the metaserver is down. Calls whose outcome their client never
learned count as may-have-happened; a lost client's unflushed writes may vanish, and nobody
else's may.

Seeds and sizes come from the environment, for longer runs outside CI:
    PFS_CONSISTENCY_SEEDS=1,2,3,4,5,6,7,8 PFS_CONSISTENCY_OPS=200 pytest tests/test_consistency.py
(also PFS_CONSISTENCY_CLIENTS, PFS_CONSISTENCY_MAX_SIZE for the growing file, and
PFS_NEMESIS_SEEDS, PFS_NEMESIS_SECONDS for the race with faults).
"""
import errno
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

import pfs
from clusters import COURSE, Cluster, RemoteClient, wait_until
from consistency import Op, find_order
from netns import Split, can_make_namespaces, far_fileserver
from test_replicas import in_sync

SEEDS = [int(s) for s in os.environ.get("PFS_CONSISTENCY_SEEDS", "1,2,3").split(",")]
OPS = int(os.environ.get("PFS_CONSISTENCY_OPS", "40"))
CLIENTS = int(os.environ.get("PFS_CONSISTENCY_CLIENTS", "3"))
B = 512
FILE_SIZE = 8 * B
WRITABLE_END = 7 * B    # the last block is never written: it must never read differently
MAX_LEN = 1300          # up to three blocks, so operations span block and stripe boundaries


def make_file(setup: pfs.Client, name: str, seed: int, initial: bytes,
              replicas: int = 1, first_copy_on: int | None = None) -> None:
    """Creates the file holding `initial`; with `first_copy_on`, created again (placement moves
    along for each new file) until that fileserver holds the first copy of a stripe column."""
    width = 1 + seed % (4 // replicas)
    setup.create(name, width, replicas)
    for _ in range(8):
        if first_copy_on is None or first_copy_on in setup.stat(name).recipe.servers[:width]:
            break
        assert setup.pfs_delete(name) == 0, pfs.pfs_last_error()
        setup.create(name, width, replicas)
    else:
        raise AssertionError(f"no new file put a first copy on fileserver {first_copy_on}")
    fd = setup.pfs_open(name, pfs.PFS_READ_WRITE)
    assert setup.pfs_write(fd, initial, len(initial), 0) == len(initial)
    assert setup.pfs_close(fd) == 0


def partner_of(cluster: Cluster, setup: pfs.Client, name: str, index: int) -> int:
    """The process id of the fileserver holding the other copy of the column whose first copy
    fileserver `index` holds."""
    recipe = setup.stat(name).recipe
    column = recipe.servers.index(index) % recipe.stripe_width
    other = [i for i in recipe.copies(column) if i != index][0]
    return cluster.fileserver_pid(setup.fileservers()[other])


def race(cluster, setup: pfs.Client, name: str, seed: int, initial: bytes, helper: str,
         *args) -> list:
    """Creates the file holding `initial`, then runs worker `helper` (seeded per client) in
    CLIENTS processes at once; their histories. Cache sizes differ: none, tiny, a little."""
    make_file(setup, name, seed, initial)
    workers = [RemoteClient(cluster, cache_blocks=[0, 2, 5][k % 3]) for k in range(CLIENTS)]
    try:
        for k, worker in enumerate(workers):
            worker.send(helper, name, seed * 100 + k, OPS, *args)
        return [worker.receive(timeout=300) for worker in workers]
    finally:
        for worker in workers:
            worker.close()


def read_final(setup: pfs.Client, name: str, size: int) -> bytes:
    fd = setup.pfs_open(name, pfs.PFS_READ)
    final = bytearray(size)
    assert setup.pfs_read(fd, final, size, 0) == size, pfs.pfs_last_error()
    assert setup.pfs_close(fd) == 0
    return bytes(final)


def ops_of(histories: list) -> list[Op]:
    """The workers' random_ops histories as checker operations."""
    return [Op(k, i, kind, offset, bytes.fromhex(data), start, end, length=length, error=err)
            for k, history in enumerate(histories)
            for i, (kind, offset, length, data, err, start, end) in enumerate(history)]


def check_untouched_tail(ops: list[Op], initial: bytes, final: bytes) -> None:
    for op in ops:  # the region nobody writes
        lo, hi = max(op.offset, WRITABLE_END), op.offset + len(op.data)
        if op.kind == "read" and not op.error and lo < hi:
            assert op.data[lo - op.offset:] == initial[lo:hi]
    assert final[WRITABLE_END:] == initial[WRITABLE_END:]


@pytest.mark.parametrize("seed", SEEDS)
def test_racing_clients_stay_sequentially_consistent(cluster, clients, name, seed):
    initial = bytes((i * 31 + seed) % 251 for i in range(FILE_SIZE))
    setup = clients(1)
    histories = race(cluster, setup, name, seed, initial, "random_ops", FILE_SIZE,
                     WRITABLE_END, MAX_LEN)
    final = read_final(setup, name, FILE_SIZE)
    ops = ops_of(histories)
    assert not [op for op in ops if op.error], "calls failed without any fault"
    check_untouched_tail(ops, initial, final)
    order = find_order(ops, initial, final)
    assert order is not None, "no total order of the operations explains what the reads saw"
    assert sum(op.kind == "write" for op in ops) > 0 and sum(op.kind == "read" for op in ops) > 0


GROW_INITIAL = 300        # a small file: its last block is partial, and the end moves a lot
GROW_MAX_LEN = 700        # operations span block and stripe-unit boundaries
# Appends stop there, so long runs keep the checker's states small (raise it to grow longer).
GROW_MAX_SIZE = int(os.environ.get("PFS_CONSISTENCY_MAX_SIZE", 16 * 512))


@pytest.mark.parametrize("seed", SEEDS)
def test_racing_clients_growing_file(cluster, clients, name, seed):
    initial = bytes((i * 37 + seed) % 253 for i in range(GROW_INITIAL))
    setup = clients(1)
    histories = race(cluster, setup, name, seed, initial, "random_growing_ops", GROW_MAX_LEN,
                     GROW_MAX_SIZE)

    fd = setup.pfs_open(name, pfs.PFS_READ)
    meta = pfs.Metadata()
    assert setup.pfs_fstat(fd, meta) == 0
    final = bytearray(meta.file_size + 1)
    assert setup.pfs_read(fd, final, len(final), 0) == meta.file_size
    assert setup.pfs_close(fd) == 0
    final = bytes(final[:meta.file_size])

    ops = ops_of(histories)
    unexpected = [op for op in ops if op.error not in (0, errno.EINVAL)]
    assert not unexpected, f"calls failed other than with EINVAL: {unexpected[:5]}"
    order = find_order(ops, initial, final)
    assert order is not None, ("no total order of the operations explains what the reads, "
                               "failures and fstats saw")
    assert len(final) >= GROW_INITIAL
    assert any(op.kind == "write" and not op.error for op in ops)
    assert any(op.kind == "read" and not op.error for op in ops)


NEMESIS_SEEDS = [int(s) for s in os.environ.get("PFS_NEMESIS_SEEDS", "1,2").split(",")]
REPLICATED_SEEDS = [int(s) for s in os.environ.get("PFS_NEMESIS_REPLICATED_SEEDS",
                                                   str(NEMESIS_SEEDS[0])).split(",")]
NEMESIS_SECONDS = float(os.environ.get("PFS_NEMESIS_SECONDS", "6"))
LEASE = 2.0


def journal_ops(client: int, path) -> list[Op]:
    """A worker's journal as checker operations: a call that began and never ended (its client
    was killed) has no end."""
    begun, ended = {}, {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        (ended if "end" in record else begun)[record["i"]] = record
    ops = []
    for i, call in sorted(begun.items()):
        done = ended.get(i)
        data = call["data"] if call["kind"] == "write" else (done or {}).get("data", "")
        ops.append(Op(client, i, call["kind"], call["offset"], bytes.fromhex(data), call["start"],
                      done["end"] if done else None, length=call["length"],
                      error=done["errno"] if done else 0))
    return ops


class CutOff:
    """The nemesis's partition (tests/netns.py): a fifth fileserver in a network namespace,
    which holds the first copy of a stripe column of the replicated file, and a writer there
    with it (no cache: its writes go straight to the copies). The cluster must listen where the
    namespace reaches it (`cluster_args`)."""

    def __init__(self) -> None:
        self.split = Split()
        self.cluster_args = ("--host", self.split.host_ip, "--insecure")
        self.fileserver: subprocess.Popen | None = None
        self.cut_at = 0

    def start(self, cluster: Cluster) -> int:
        """Starts the far fileserver; its index, once it is online with the others."""
        self.fileserver = far_fileserver(self.split, cluster.data_dir / "far", cluster.address,
                                         cluster.key_file, open(cluster.log, "ab"))
        index: list[int] = []

        def attached() -> bool:
            probe = cluster.client(cache_blocks=0)
            index.extend(i for i, a in probe.fileservers().items()
                         if a.startswith(self.split.far_ip + ":"))
            online = probe.layout().fileservers_online
            probe.pfs_finish(probe.pfs_initialize())
            return bool(index) and online == cluster.fileservers + 1
        wait_until(attached, timeout=30, what="the far fileserver to be online")
        return index[0]

    def writer(self, cluster: Cluster) -> RemoteClient:
        return RemoteClient(cluster, cache_blocks=0, prefix=self.split.prefix,
                            PFS_RETRY_SECONDS="1")

    def cut(self) -> None:
        self.split.cut()
        self.cut_at = time.monotonic_ns()

    def stop(self) -> None:
        if self.fileserver is not None:
            self.fileserver.kill()
            self.fileserver.wait(20)
        self.split.delete()


def data_dir_of(pid: int) -> pathlib.Path:
    args = open(f"/proc/{pid}/cmdline", "rb").read().decode().split("\0")
    return pathlib.Path(args[args.index("--data-dir") + 1])


@pytest.mark.parametrize("seed, replicas", [(seed, 1) for seed in NEMESIS_SEEDS] +
                         [(seed, 2) for seed in REPLICATED_SEEDS])
def test_racing_clients_with_a_nemesis(tmp_path, seed, replicas):
    """Four clients race while one is frozen past its lease, a fileserver is killed (and
    restarted by `pfs up`; with two copies, after its data directory is wiped), and another
    stalls (SIGSTOP) long enough for writes to it to fail and stay unstored (the clients retry
    for 1 s only); meanwhile the metaserver is SIGKILLed (and restarted by `pfs up`: the live
    clients reclaim their sessions, keeping what they cache), and one client is killed while it
    is down (it never reclaims: the recovery window evicts it). The clients fsync, and close and
    reopen the file, as they go, so that some of those calls wait for the metaserver while it
    is down or in its recovery window. Calls made while the metaserver is down may fail
    (EHOSTDOWN: unknown outcome), but no surviving client may lose its session to the restart,
    nor a byte it wrote. The frozen client is resumed
    only once the others are done, so that nothing it might still write back is hidden by later
    writes: everything it does then must fail. Every successful read, and the final file, must
    be explained; a surviving client that lost its session meanwhile (evicted while it could
    not store what a revocation needed) counts as crashed then.

    With two copies (and network namespaces), a fifth client writes from the far side of a
    partition (CutOff) that begins as the first client freezes and ends after the stall, cut
    off with the first copy of a column of the file: what it wrote may have reached that copy
    alone. It is evicted (the partition heals after the restarted metaserver's recovery window),
    by the metaserver before its death or at the window's end: no read may see bytes that
    only the far copy took unless every later one could, and the resync and scrub must leave
    the copies equal."""
    rng = random.Random(seed)
    cut_off = CutOff() if replicas > 1 and can_make_namespaces() else None
    cluster = Cluster(tmp_path / "cluster", lease_seconds=LEASE, **COURSE,
                      extra_args=cut_off.cluster_args if cut_off else ()).start()
    try:
        far = cut_off.start(cluster) if cut_off else None
        setup = cluster.client()
        initial = bytes((i * 29 + seed) % 247 for i in range(FILE_SIZE))
        name = f"nemesis-{seed}"
        make_file(setup, name, seed, initial, replicas, first_copy_on=far)
        # The far copy's partner is spared the disk loss: a write that it alone took while the
        # far copy was cut off would be lost with it (two faults on one column of two copies).
        spared = partner_of(cluster, setup, name, far) if cut_off else None
        caches = [16, 16, 0, 2]  # frozen, killed, and two that survive
        workers = [RemoteClient(cluster, cache_blocks=c, PFS_RETRY_SECONDS="1") for c in caches]
        workers += [cut_off.writer(cluster)] if cut_off else []
        journals = [tmp_path / f"journal-{k}.jsonl" for k in range(len(workers))]
        frozen, killed, survivors = workers[0], workers[1], workers[2:4]
        histories = {}
        try:
            # The frozen one runs on after its resume; the cut-off one on past the heal; the
            # survivors on past the restarted metaserver's recovery window, even when one
            # call of theirs waited through it all (a token the frozen one held).
            for k, worker in enumerate(workers):
                worker.send("random_ops", name, seed * 100 + k, 10_000, FILE_SIZE, WRITABLE_END,
                            MAX_LEN, str(journals[k]), NEMESIS_SECONDS * (3, 1, 1.5, 1.5, 2)[k],
                            True)
            time.sleep(rng.uniform(0.3, 0.8))
            stopped = time.monotonic_ns()
            frozen.pause()
            if cut_off:
                cut_off.cut()
            time.sleep(rng.uniform(0.2, 1.0))
            pids = cluster.server_pids("fileserver")
            crashed = rng.choice([pid for pid in pids if pid != spared])
            stalled = rng.choice([pid for pid in pids if pid != crashed])
            crashed_dir = data_dir_of(crashed)
            os.kill(cluster.process.pid, signal.SIGSTOP)  # `pfs up` restarts it after...
            os.kill(crashed, signal.SIGKILL)
            if replicas > 1:  # ...its disk is lost
                shutil.rmtree(crashed_dir)
            os.kill(cluster.process.pid, signal.SIGCONT)
            stall_start = time.monotonic_ns()
            os.kill(stalled, signal.SIGSTOP)
            time.sleep(rng.uniform(0.3, 1.0))
            metaserver_killed = time.monotonic_ns()
            os.kill(cluster.server_pids("metaserver")[0], signal.SIGKILL)
            time.sleep(rng.uniform(0.1, 0.5))
            killed_at = time.monotonic_ns()
            killed.kill()
            time.sleep(rng.uniform(2.0, 3.0))
            os.kill(stalled, signal.SIGCONT)
            if cut_off:  # healed once the writer cannot have reclaimed: it is evicted
                wait_until(lambda: "recovery over" in cluster.log.read_text(), timeout=60,
                           what="the restarted metaserver's recovery window to end")
                time.sleep(rng.uniform(0.0, 1.0))
                cut_off.split.heal()
                histories[4] = workers[4].receive(timeout=120)
            histories.update({2 + k: w.receive(timeout=120) for k, w in enumerate(survivors)})
            resumed = time.monotonic_ns()
            frozen.resume()
            histories[0] = frozen.receive(timeout=120)
        finally:
            for worker in workers:
                worker.close()
        final = read_final(setup, name, FILE_SIZE)
        if replicas > 1:
            wait_until(lambda: in_sync(cluster), timeout=60, what="the copies' resync")
            scrubbed = subprocess.run([sys.executable, "-m", "pfs", "scrub", name],
                                      capture_output=True, text=True, timeout=60,
                                      env=cluster.env(), cwd=cluster.data_dir)
            assert scrubbed.returncode == 0 and "all good" in scrubbed.stdout, \
                f"copies differ after the resync: {scrubbed}"
            assert read_final(setup, name, FILE_SIZE) == final
    finally:
        cluster.stop()
        if cut_off:
            cut_off.stop()

    log = cluster.log.read_text()
    for worker in survivors:  # back after the metaserver's restart, with what they held
        assert f"client {worker.client_id} reclaimed its session" in log, log[-3000:]
    calls = [op for k, path in enumerate(journals) for op in journal_ops(k, path)]
    for k, history in histories.items():  # the journals agree with what the workers returned
        assert len(history) == sum(op.client == k for op in calls)
    unexpected = [op for op in calls if op.error not in (0, errno.ENOTCONN, errno.EHOSTDOWN,
                                                         errno.ETIMEDOUT)]
    assert not unexpected, f"calls failed in ways no fault explains: {unexpected[:3]}"
    syncs = [op for op in calls if op.kind in ("fsync", "close") and op.client in (2, 3)]
    assert not any(op.error for op in syncs if op.kind == "close"), \
        "a surviving client could not close (and reopen) its file"
    # The survivors worked across the outage. `pfs up` restarts the metaserver within about a
    # second, and its recovery window is two leases: an fsync or close begun within 6 s of the
    # kill met the outage or the window, or barely missed them. Or a call begun before the kill
    # returned a second or more after it, having waited out the outage: a token the frozen
    # client held (given up at the window's end) or the stalled fileserver can hold each
    # survivor in one call through the whole window, after which it may have no time left.
    waited = [op for op in calls if op.client in (2, 3) and op.end is not None
              and op.start < metaserver_killed and op.end > metaserver_killed + 1e9]
    assert waited or any(metaserver_killed <= op.start < metaserver_killed + 6e9
                         for op in syncs), \
        "no survivor's call waited out the outage, and no fsync or close was made in it"
    ops = [op for op in calls if op.kind in ("read", "write")]  # what the checker orders
    crashes = {0: (stopped, resumed), 1: (killed_at, None)}
    if cut_off:
        lost = [op.end for op in ops if op.client == 4 and op.error == errno.ENOTCONN]
        crashes[4] = (cut_off.cut_at, min(lost, default=None))
    for k in (2, 3):
        lost = [op.end for op in ops if op.client == k and op.error == errno.ENOTCONN]
        if lost:
            crashes[k] = (stall_start, min(lost))
    after_resume = [op for op in ops if op.client == 0 and op.start > resumed]
    assert after_resume and all(op.error == errno.ENOTCONN for op in after_resume), \
        "the frozen client did something after its lease had run out"
    check_untouched_tail(ops, initial, final)
    order = find_order(ops, initial, final, block_size=B, crashes=crashes)
    assert order is not None, "no total order of the operations explains what the reads saw"
    done = [op for op in ops if op.client in (2, 3) and not op.error]
    assert any(op.kind == "write" for op in done) and any(op.kind == "read" for op in done)
