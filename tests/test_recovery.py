"""Metaserver restarts (README, "Metaserver restarts"): a metaserver SIGKILLed and started again
by `pfs up` on its data directory lets its clients reclaim their sessions, open files and tokens
within its recovery window, so nothing closed and nothing cached is lost; a client that misses
the window is evicted and fenced; a claim that conflicts with one made first is refused, file by
file, and the refused client is told.
"""
import errno
import os
import signal
import threading
import time

import grpc
import pytest

import pfs
from pfs.protocol import capability, wire
from pfs._proto import metaserver_pb2 as pb
from pfs._proto import metaserver_pb2_grpc as pb_grpc
from pfs.protocol.ranges import INFINITY
from pfs.protocol.transport import CHANNEL_OPTIONS, session_metadata
from clusters import COURSE, Cluster, RemoteClient, read_file, wait_until, write_file
from test_capabilities import call, refused as assert_refused
from test_members import fileserver_pid
from test_single_instance import run_pfs

LEASE = 2.0


def restart_metaserver(cluster: Cluster) -> None:
    """SIGKILL to the metaserver, which `pfs up` starts again on its data directory and port;
    returns once the new one answers, its fileservers attached again."""
    (old,) = cluster.server_pids("metaserver")
    os.kill(old, signal.SIGKILL)

    def answers() -> bool:
        if cluster.server_pids("metaserver") in ([], [old]):
            return False
        with grpc.insecure_channel(cluster.address, options=CHANNEL_OPTIONS) as channel:
            try:
                status = pb_grpc.MetaServerStub(channel).Status(pb.StatusRequest(), timeout=1)
            except grpc.RpcError:
                return False
        return all(f.online for f in status.fileservers)
    wait_until(answers, timeout=30, what="the metaserver to be restarted")


def test_cached_writes_survive_a_metaserver_sigkill(tmp_path):
    """A client with writes only in its cache and in flight (never fsynced) keeps its session
    through a metaserver SIGKILL and restart; a write made while the metaserver is down waits
    for it; close then succeeds, and another client reads every byte."""
    cluster = Cluster(tmp_path / "cluster", lease_seconds=LEASE, **COURSE).start()
    writer = RemoteClient(cluster, cache_blocks=16)
    try:
        assert writer.call("pfs_create", "dirty", 4) == 0
        fd = writer.call("pfs_open", "dirty", pfs.PFS_READ_WRITE)
        cached = bytes(range(256)) * 16                     # 8 blocks, all dirty in the cache
        beyond = bytes(reversed(range(256))) * 80           # 40 blocks: evictions, write-behind
        assert writer.call("pfs_write", fd, cached, len(cached), 0) == len(cached)
        assert writer.call("pfs_write", fd, beyond, len(beyond), len(cached)) == len(beyond)

        restart_metaserver(cluster)
        late = b"written while the metaserver was down" * 20
        writer.send("pfs_write", fd, late, len(late), len(cached) + len(beyond))
        assert writer.receive() == len(late), writer.call("last_error")
        expected = cached + beyond + late
        assert writer.call("pfs_fstat", fd)["size"] == len(expected)
        assert writer.call("pfs_close", fd) == 0, writer.call("last_error")
        assert writer.call("pfs_initialize") == writer.client_id  # the same session throughout

        reader = cluster.client()
        assert read_file(reader, "dirty") == expected
        assert reader.pfs_finish(reader._session.client_id) == 0
        assert "1 of 1 session(s) reclaimed, 0 evicted" in cluster.log.read_text()
    finally:
        writer.close()
        cluster.stop()


def test_closes_issued_while_the_metaserver_is_down_keep_every_cached_write(tmp_path):
    """Three clients each hold 4 MiB of dirty cached writes on an open fd, and a fourth a
    read-only fd; only the metaserver is SIGKILLed, and every client closes at once, so the
    closes wait through the outage and the recovery window. The clients reclaim (a close
    waiting for the restarted metaserver does not keep its Client from reclaiming), every
    close succeeds, and every byte is there afterwards."""
    cluster = Cluster(tmp_path / "cluster", lease_seconds=LEASE, fileservers=4,
                      block_size=64 * 1024, stripe_blocks=16).start()
    size = 4 << 20
    writers = [RemoteClient(cluster, cache_blocks=1024) for _ in range(3)]
    reader = RemoteClient(cluster, cache_blocks=1024)
    try:
        fds = []
        for i, writer in enumerate(writers):
            assert writer.call("pfs_create", f"f{i}", 4) == 0
            fds.append(writer.call("pfs_open", f"f{i}", pfs.PFS_READ_WRITE))
            assert writer.call("write_pattern", fds[i], i + 1, size, 0) == [size, 0]
        assert reader.call("pfs_create", "r", 2) == 0
        read_fd = reader.call("pfs_open", "r", pfs.PFS_READ)
        assert reader.call("pfs_read", read_fd, 1, 0) == (0, b"")

        (metaserver,) = cluster.server_pids("metaserver")
        os.kill(metaserver, signal.SIGKILL)
        for writer, fd in zip(writers, fds):
            writer.send("pfs_close", fd)
        reader.send("pfs_close", read_fd)
        for client in (*writers, reader):
            assert client.receive(timeout=60) == 0, client.call("last_error")
            assert client.call("pfs_initialize") == client.client_id  # the same session

        check = cluster.client(cache_blocks=0)
        for i in range(3):
            assert read_file(check, f"f{i}") == bytes([i + 1]) * size
        assert check.pfs_finish(check._session.client_id) == 0
        assert "4 of 4 session(s) reclaimed, 0 evicted" in cluster.log.read_text()
    finally:
        for client in (*writers, reader):
            client.close()
        cluster.stop()


def test_a_hung_metaserver_loses_no_session(tmp_path):
    """A metaserver that hangs (SIGSTOP) past the clients' lease: they serve nothing from their
    caches meanwhile, and their calls wait for it. Resumed before the clients' keepalive gives
    up on their streams (5 s), it still counts them, and they go on as before; hung again and
    then killed by its supervisor (SIGKILL while stopped), it is restarted and they reclaim.
    Nothing they wrote is lost."""
    cluster = Cluster(tmp_path / "cluster", lease_seconds=LEASE, **COURSE).start()
    writer = RemoteClient(cluster, cache_blocks=16)
    try:
        assert writer.call("pfs_create", "f", 2) == 0
        fd = writer.call("pfs_open", "f", pfs.PFS_READ_WRITE)
        assert writer.call("pfs_write", fd, b"a" * 1024, 1024, 0) == 1024
        (metaserver,) = cluster.server_pids("metaserver")
        os.kill(metaserver, signal.SIGSTOP)
        try:
            time.sleep(LEASE)
            writer.send("pfs_write", fd, b"b" * 1024, 1024, 1024)  # waits: the lease ran out
            time.sleep(0.4)
        finally:
            os.kill(metaserver, signal.SIGCONT)
        assert writer.receive() == 1024, writer.call("last_error")
        assert writer.call("pfs_read", fd, 2048, 0) == (2048, b"a" * 1024 + b"b" * 1024)

        os.kill(metaserver, signal.SIGSTOP)
        time.sleep(2 * LEASE)
        restart_metaserver(cluster)  # SIGKILL, while it is stopped
        assert writer.call("pfs_write", fd, b"c" * 1024, 1024, 2048) == 1024
        assert writer.call("pfs_close", fd) == 0, writer.call("last_error")
        assert writer.call("pfs_initialize") == writer.client_id

        reader = cluster.client()
        assert read_file(reader, "f") == b"a" * 1024 + b"b" * 1024 + b"c" * 1024
        assert reader.pfs_finish(reader._session.client_id) == 0
    finally:
        writer.close()
        cluster.stop()


def test_closed_files_are_unchanged_after_a_restart(tmp_path):
    """Files closed (or fsynced) before the SIGKILL read the same afterwards, with the same
    size and mtime; a second metaserver started on the same data directory by mistake is
    refused, naming the one that holds it, and changes nothing."""
    cluster = Cluster(tmp_path / "cluster", lease_seconds=LEASE, **COURSE).start()
    try:
        before = cluster.client()
        closed = bytes(range(251)) * 40
        write_file(before, "closed", closed, width=3)
        fd = write_file(before, "synced", closed[:3000], close=False)
        assert before.pfs_fsync(fd) == 0
        stats = {n: before.stat(n) for n in ("closed", "synced")}

        restart_metaserver(cluster)
        (holder,) = cluster.server_pids("metaserver")
        second = run_pfs("metaserver", "--data-dir", str(cluster.data_dir / "meta"),
                         "--port", "0", cwd=tmp_path)
        assert second.returncode == 1
        assert "in use by another metaserver" in second.stderr
        assert f"PID {holder}" in second.stderr

        after = cluster.client()
        assert read_file(after, "closed") == closed
        assert read_file(after, "synced") == closed[:3000]
        for name, meta in stats.items():
            now = after.stat(name)
            assert (now.file_size, now.mtime, now.recipe) == (meta.file_size, meta.mtime,
                                                              meta.recipe)
        assert before.pfs_close(fd) == 0
        for c in (before, after):
            assert c.pfs_finish(c._session.client_id) == 0
    finally:
        cluster.stop()


def test_client_frozen_across_the_window_is_evicted_and_fenced(tmp_path):
    """A client paused (SIGSTOP) while the metaserver restarts cannot reclaim: at the end of
    the window it is evicted and fenced, other clients go on with what was stored, and once it
    runs again every call fails with ENOTCONN saying what was lost; nothing it held lands."""
    cluster = Cluster(tmp_path / "cluster", lease_seconds=LEASE, **COURSE).start()
    frozen = RemoteClient(cluster, cache_blocks=16)
    try:
        assert frozen.call("pfs_create", "f", 4) == 0
        fd = frozen.call("pfs_open", "f", pfs.PFS_READ_WRITE)
        stored = b"s" * 2048
        assert frozen.call("pfs_write", fd, stored, len(stored), 0) == len(stored)
        assert frozen.call("pfs_fsync", fd) == 0
        assert frozen.call("pfs_write", fd, b"c" * 2048, 2048, 2048) == 2048  # cached only
        frozen.pause()
        try:
            restart_metaserver(cluster)
            other = cluster.client()
            assert read_file(other, "f") == stored  # (once the window is over)
            assert "0 of 1 session(s) reclaimed, 1 evicted and fenced" in cluster.log.read_text()
        finally:
            frozen.resume()
        for call in (("pfs_write", fd, b"x" * 100, 100, 0), ("pfs_fsync", fd),
                     ("pfs_close", fd)):
            assert frozen.call(*call) == -1
            assert frozen.call("last_errno") == errno.ENOTCONN, frozen.call("last_error")
        message = frozen.call("last_error")
        assert "4 cached block(s) written to 'f'" in message and "pfs_initialize" in message
        time.sleep(1)
        assert read_file(other, "f") == stored
        assert other.pfs_finish(other._session.client_id) == 0
    finally:
        frozen.close()
        cluster.stop()


class RawSession:
    """A session driven over gRPC by the test, which claims what it likes when it reclaims (a
    client that is wrong, or lies); a stream of its own keeps its lease."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.MetaServerStub(self.channel)
        reply = self.stub.Register(pb.RegisterRequest(hostname="test", pid=os.getpid()),
                                   timeout=10)
        self.client_id = reply.client_id
        self.metadata = session_metadata(reply.client_id, reply.session_key)
        self._key = reply.session_key
        self.join()

    def join(self) -> None:
        """Joins a new stream (after a restart: rejoins) and keeps heartbeating on it."""
        def messages():
            yield pb.ClientMessage(join=pb.JoinSession(client_id=self.client_id,
                                                       session_key=self._key))
            for seq in range(1, 1 << 30):
                time.sleep(LEASE / 8)
                yield pb.ClientMessage(heartbeat=pb.Heartbeat(seq=seq))
        responses = self.stub.Sessions(messages())
        assert next(responses).WhichOneof("body") == "joined"

        def drain() -> None:
            try:
                for _ in responses:
                    pass
            except grpc.RpcError:
                pass  # the metaserver went away, or the test is over
        threading.Thread(target=drain, daemon=True).start()

    def open(self, path: str) -> int:
        return self.stub.Open(pb.OpenRequest(path=path), metadata=self.metadata,
                              timeout=30).meta.file_id

    def reclaim_everything(self, file_id: int) -> pb.ReclaimedFile:
        """Claims a WRITE token on the whole file."""
        (answer,) = self.stub.Reclaim(pb.ReclaimRequest(files=[pb.FileClaim(
            file_id=file_id, tokens=[pb.TokenClaim(start=0, end=INFINITY, mode=pb.WRITE)])]),
            metadata=self.metadata, timeout=30).files
        return answer

    def finish(self) -> None:
        self.stub.Finish(pb.FinishRequest(), metadata=self.metadata, timeout=30)
        self.channel.close()


def test_conflicting_reclaims_first_come_first_served(tmp_path):
    """Two sessions claim conflicting tokens after a restart: the first claim wins, the second
    is refused for that file only, saying who holds it. A real client refused a file gets
    ESTALE from its fd, saying what was dropped and what to do, while its other files come
    back whole; a session refused changes nothing."""
    cluster = Cluster(tmp_path / "cluster", lease_seconds=LEASE, **COURSE,
                      extra_args=("--recovery-seconds", "15")).start()
    client = RemoteClient(cluster, cache_blocks=16)
    liars = []
    try:
        fds = {}
        for name, byte in (("lost", b"l"), ("kept", b"k")):
            assert client.call("pfs_create", name, 4) == 0
            fds[name] = client.call("pfs_open", name, pfs.PFS_READ_WRITE)
            assert client.call("pfs_write", fds[name], byte * 1024, 1024, 0) == 1024
        liars = [RawSession(cluster.address) for _ in range(2)]
        lost_id, kept_id = liars[0].open("lost"), liars[1].open("kept")
        client.pause()
        try:
            restart_metaserver(cluster)
            liars[0].join()
            assert liars[0].reclaim_everything(lost_id).refused == ""  # first: granted
        finally:
            client.resume()
        wait_until(lambda: f"client {client.client_id} reclaimed its session"
                   in cluster.log.read_text(), what="the client to reclaim")
        liars[1].join()
        refusal = liars[1].reclaim_everything(kept_id).refused  # second: refused
        assert f"client {client.client_id}" in refusal, refusal

        lost = fds["lost"]
        assert client.call("pfs_write", lost, b"x", 1, 0) == -1
        assert client.call("last_errno") == errno.ESTALE
        message = client.call("last_error")
        assert "did not give it back" in message and "open the file again" in message
        assert client.call("pfs_close", lost) == -1
        assert client.call("last_errno") == errno.ESTALE
        assert "2 cached block(s)" in client.call("last_error")
        assert client.call("pfs_close", lost) == -1
        assert client.call("last_errno") == errno.EBADF  # the fd is gone
        assert client.call("pfs_close", fds["kept"]) == 0, client.call("last_error")
        for liar in liars:
            liar.finish()
        liars = []

        reader = cluster.client()
        assert read_file(reader, "kept") == b"k" * 1024
        assert read_file(reader, "lost") == b""  # the refused client's bytes never landed
        assert reader.pfs_finish(reader._session.client_id) == 0
    finally:
        for liar in liars:
            liar.channel.close()
        client.close()
        cluster.stop()



def test_reclaim_without_a_restart_is_refused(clients):
    """Only a session restored after a restart may reclaim, and only once: anything else would
    hand out tokens without asking their holders."""
    session = clients(1)._session
    with pytest.raises(grpc.RpcError) as refused:
        session.stub.Reclaim(pb.ReclaimRequest(files=[pb.FileClaim(file_id=1, tokens=[
            pb.TokenClaim(start=0, end=INFINITY, mode=pb.WRITE)])]),
            metadata=session.metadata, timeout=10)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "nothing to reclaim" in refused.value.details()


def test_sessions_ended_before_a_restart_stay_refused_at_the_fileservers(tmp_path):
    """A session that ended before the metaserver restarted holds capabilities that have not
    expired yet; once the fileservers re-attach to the new metaserver (whose table names only
    the sessions it restored, and admits new ones from a floor above every id handed out),
    those capabilities are still refused, and nothing they try is stored."""
    cluster = Cluster(tmp_path / "cluster", lease_seconds=LEASE, **COURSE).start()
    try:
        content = bytes(range(256)) * 8
        ended = cluster.client()
        write_file(ended, "kept", content, width=2)
        fd = ended.pfs_open("kept", pfs.PFS_READ_WRITE)
        assert ended.pfs_write(fd, content[:512], 512, 0) == 512  # a WRITE token on column 0
        f = ended._fds[fd]
        address = ended.fileservers()[f.recipe.servers[0]]
        caps = f.held.for_call(0, 0, INFINITY, capability.WRITE)
        assert caps
        assert ended.pfs_close(fd) == 0
        assert ended.pfs_finish(ended.pfs_initialize()) == 0
        evil = wire.write_request(f.file_id, 0, b"EVIL")
        assert_refused(call(address, wire.WRITE_METHOD, evil, caps), errno.ENOTCONN)

        restart_metaserver(cluster)
        assert_refused(call(address, wire.WRITE_METHOD, evil, caps), errno.ENOTCONN)
        later = cluster.client(cache_blocks=0)  # a session begun after the restart is served
        assert read_file(later, "kept") == content
        assert later.pfs_finish(later.pfs_initialize()) == 0
    finally:
        cluster.stop()


def test_tokens_kept_after_a_close_are_dropped_at_a_restart(tmp_path):
    """Tokens a client keeps after closing a file are not reclaimed (the restarted metaserver
    never knew them): the client drops them, reopens asking for tokens again, and both it and
    another client read each other's bytes."""
    cluster = Cluster(tmp_path / "cluster", lease_seconds=LEASE, **COURSE).start()
    try:
        keeper, other = cluster.client(), cluster.client()
        write_file(keeper, "kept", b"k" * 3000)
        assert len(keeper._state.lockcache) == 1
        restart_metaserver(cluster)
        fd = keeper.pfs_open("kept", pfs.PFS_READ_WRITE)  # waits for the reclaim
        assert fd >= 0, pfs.pfs_last_error()
        assert len(keeper._state.lockcache) == 0
        assert keeper.pfs_write(fd, b"K" * 100, 100, 0) == 100
        assert keeper.pfs_close(fd) == 0
        assert read_file(other, "kept", 3000) == b"K" * 100 + b"k" * 2900
        fd = other.pfs_open("kept", pfs.PFS_READ_WRITE)
        assert other.pfs_write(fd, b"o" * 100, 100, 2900) == 100
        assert other.pfs_close(fd) == 0
        assert read_file(keeper, "kept", 3000) == b"K" * 100 + b"k" * 2800 + b"o" * 100
        for c in (keeper, other):
            assert c.pfs_finish(c.pfs_initialize()) == 0
    finally:
        cluster.stop()


def test_a_fileserver_away_keeps_no_reclaim_past_the_window(tmp_path):
    """A fileserver that stays away across a metaserver restart (hung) does not keep clients
    from reclaiming within a short recovery window: a reclaim waits for a fileserver only to
    check a size claimed beyond the durable one, and this client's is durable (fsynced)."""
    cluster = Cluster(tmp_path / "cluster", lease_seconds=1.0, **COURSE).start()  # a 2 s window
    writer = RemoteClient(cluster)
    hung = fileserver_pid(cluster, "fs3")
    try:
        assert writer.call("pfs_create", "open", 3) == 0
        fd = writer.call("pfs_open", "open", pfs.PFS_READ_WRITE)
        assert writer.call("pfs_write", fd, b"x" * 5000, 5000, 0) == 5000
        assert writer.call("pfs_fsync", fd) == 0
        os.kill(hung, signal.SIGSTOP)
        os.kill(cluster.server_pids("metaserver")[0], signal.SIGKILL)  # `pfs up` restarts it
        wait_until(lambda: "recovery over" in cluster.log.read_text(), timeout=60,
                   what="the restarted metaserver's recovery window to end")
        assert f"client {writer.client_id} reclaimed its session" in cluster.log.read_text()
        os.kill(hung, signal.SIGCONT)
        assert writer.call("pfs_close", fd) == 0, writer.call("last_error")
        assert writer.call("pfs_initialize") == writer.client_id  # the same session throughout
    finally:
        os.kill(hung, signal.SIGCONT)
        writer.close()
        cluster.stop()
