"""Regression tests for races and error paths found in review (each failed before its fix).

Delays are injected only where a real interleaving needs a thread to be slow (a revocation
worker waiting for the client lock, say); every wait is bounded.
"""
from __future__ import annotations

import errno
import threading
from dataclasses import dataclass

import pfs
from pfs.datapath.blockcache import BlockCache
from clusters import wait_until

B = 8


# --- helpers ----------------------------------------------------------------------------------
def in_thread(call, *args) -> threading.Thread:
    """Runs call(*args) on a daemon thread; its result lands in thread.result."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(call(*args)), daemon=True)
    thread.result = result
    thread.start()
    return thread


def hold_back_revocations(client: pfs.Client) -> threading.Event:
    """The client's revocation worker waits for the returned event before handling a
    revocation (as it does when another operation holds the client lock for a while)."""
    release = threading.Event()
    handle = client._session._on_revoke
    client._session._on_revoke = lambda revoke: (release.wait(30), handle(revoke))[1]
    return release


def note_revocations(client: pfs.Client) -> threading.Event:
    """An event set when a revocation reaches the client's stream."""
    received = threading.Event()
    mark = client._session._on_revoke_received
    client._session._on_revoke_received = lambda revoke: (mark(revoke), received.set())
    return received


def leak_a_grant_after_close(y: pfs.Client, h: pfs.Client, name: str) -> threading.Event:
    """Makes the metaserver grant h a token on `name` after h has closed it.

    y writes (holding the write token, slow to give it up); h reads on one thread, so its token
    request waits for y, and closes the file on another meanwhile (the client lock is free while
    a request waits). Then y gives up its token and h's request is granted: the metaserver now
    counts h as a holder of a file h does not have open. Returns y's release event (set)."""
    fy = y.pfs_open(name, pfs.PFS_READ_WRITE)
    assert y.pfs_write(fy, b"y" * 100, 100, 0) == 100
    release_y = hold_back_revocations(y)
    fh = h.pfs_open(name, pfs.PFS_READ)
    reader = in_thread(h.pfs_read, fh, bytearray(10), 10, 0)
    wait_until(lambda: y._fds[fy].revoking, timeout=10, what="h's request to reach y")
    assert h.pfs_close(fh) == 0            # while h's token request still waits
    release_y.set()
    reader.join(10)
    assert reader.result == [-1]           # EBADF: the fd was closed under it
    assert y.pfs_close(fy) == 0
    return release_y


# --- 1. cache: a failed read-before-write leaves a zero-filled block cached --------------------
@dataclass
class _File:
    file_id: int
    size: int
    block_size: int = B
    read_next: int = -1


class _FlakyMemory:
    """A backing store whose next read can be made to fail (a fileserver hiccup)."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)
        self.fail_next_read = False

    def read(self, f, offset, length, dst):
        if self.fail_next_read:
            self.fail_next_read = False
            raise OSError(errno.EHOSTDOWN, "fileserver unreachable (simulated)")
        piece = self.data[offset:offset + length]
        dst[:len(piece)] = piece

    def write(self, f, offset, src):
        self.data[offset:offset + len(src)] = src


def test_failed_read_before_partial_write_does_not_cache_a_zero_block():
    """A partial write of an uncached block first reads the block; when that read fails, the
    write fails -- but the slot it took stays in the cache, zero-filled and clean. Later reads
    'hit' zeros, and the caller's retry of the write hits the zero block, marks it dirty, and
    its write-back overwrites the block's other bytes on the fileservers with zeros."""
    original = bytes(range(1, 65))
    memory = _FlakyMemory(original)
    changed = threading.Condition(threading.RLock())  # the client's lock, held by its calls
    cache, f = BlockCache(4, B, memory, changed), _File(1, 64)
    covered = lambda s, e: True  # noqa: E731
    memory.fail_next_read = True
    with changed:
        try:
            cache.write(f, 2, memoryview(b"xy"), covered, 64)
        except OSError:
            pass  # the write fails: fine, the caller retries it
        cache.write(f, 2, memoryview(b"xy"), covered, 64)
        cache.flush(f)
    assert bytes(memory.data[:8]) == original[:2] + b"xy" + original[4:8]


# --- 2. stat(name) misses this client's own cached writes --------------------------------------
def test_stat_by_name_includes_this_clients_cached_writes(clients, name):
    """Client.stat(name) is 'like fstat, by name'; the metaserver's glimpse skips the asking
    client, and stat (unlike fstat) does not add the size the client itself knows. So a client
    that appended (bytes still cached) gets the old size from stat -- also through fsspec's
    info()/size(), which use it."""
    a = clients(1)
    assert a.pfs_create(name, 2) == 0
    fd = a.pfs_open(name, pfs.PFS_READ_WRITE)
    assert a.pfs_write(fd, b"x" * 100, 100, 0) == 100
    meta = pfs.Metadata()
    assert a.pfs_fstat(fd, meta) == 0 and meta.file_size == 100
    assert a.stat(name).file_size == 100


# --- 3. close: a failed Close call leaves the file open at the metaserver forever --------------
def test_close_whose_metaserver_call_fails_can_be_retried(clients, name):
    """close() forgets the fd before the Close call; when that call fails (metaserver briefly
    unreachable) the client has no fd to retry with, yet the metaserver still counts the file
    open by it and keeps its tokens: reopening fails (EBUSY, 'already open in this client'),
    and nobody can delete the file, until the whole session is re-initialized."""
    a, b = clients(2)
    assert a.pfs_create(name, 2) == 0
    fd = a.pfs_open(name, pfs.PFS_READ_WRITE)
    assert a.pfs_write(fd, b"x" * 10, 10, 0) == 10
    session = a._session
    real_call = session.call

    def call(method, request, what):
        if method == "Close":
            raise OSError(errno.EHOSTDOWN, f"{what}: metaserver unreachable (simulated)")
        return real_call(method, request, what)
    session.call = call
    try:
        assert a.pfs_close(fd) == -1
    finally:
        del session.call  # the metaserver is reachable again
    # Either the close can be retried, or the file is closed as far as anyone can tell.
    if a.pfs_close(fd) != 0:
        fd2 = a.pfs_open(name, pfs.PFS_READ)
        assert fd2 > 0, pfs.pfs_last_error()
        assert a.pfs_close(fd2) == 0
    assert b.pfs_delete(name) == 0, pfs.pfs_last_error()


# --- 4. a token granted after close, then a revocation nobody acknowledges ---------------------
def test_revocation_of_token_granted_after_close_is_acknowledged(clients, name):
    """The metaserver grants a token request that was waiting when its client closed the file
    (Close does not cancel it; Acquire checked 'open' only on arrival). When that stray token is
    revoked while the client has the file closed, the stream thread marks nothing; if the client
    reopens the file before its worker handles the revocation, `_revoke` finds the new open file,
    `f.revoking.remove(...)` raises ValueError, and no acknowledgement is ever sent: the
    conflicting writer waits for the revoke timeout and the client is evicted (session lost,
    its cached writes gone)."""
    y, h, a = clients(3)
    assert y.pfs_create(name, 2) == 0
    release_y = leak_a_grant_after_close(y, h, name)
    release_h = hold_back_revocations(h)
    received = note_revocations(h)
    try:
        fa = a.pfs_open(name, pfs.PFS_READ_WRITE)
        writer = in_thread(a.pfs_write, fa, b"a" * 10, 10, 0)  # conflicts with h's stray token
        received.wait(3)  # (with no stray token, no revocation comes: nothing to wait for)
        fh = h.pfs_open(name, pfs.PFS_READ)  # h opens the file again before handling it
        assert fh > 0
        release_h.set()
        writer.join(4)  # the metaserver's revoke timeout is 6 s in the tests' clusters
        assert writer.result == [10], "a's write waited for an acknowledgement h never sent"
        assert h._session.lost is None
        assert h.pfs_close(fh) == 0 and a.pfs_close(fa) == 0
    finally:
        release_y.set()
        release_h.set()


# --- 5. an Acquire that fails after its grant was numbered wedges every later revocation -------
def test_failed_acquire_does_not_wedge_later_revocations(clients, name):
    """Acquire numbers the grant (tokens.acquire) and only then looks the file up; if the file
    was deleted while the request waited, the client gets ENOENT and never applies that grant
    number. MetaSession._revoke then waits forever for it: every later revocation of this client,
    on any file, goes unacknowledged until the metaserver evicts the client.
    (The deleted-while-waiting request comes from the same close-while-waiting gap as above;
    any Acquire reply lost after the grant -- a deadline, a reset -- does the same.)"""
    y, h, a = clients(3)
    assert y.pfs_create(name, 2) == 0
    release_y = leak_a_grant_after_close(y, h, name)  # h holds a token on a file it closed
    release_h = hold_back_revocations(h)
    received = note_revocations(h)
    other = name + "-g"
    try:
        fa = a.pfs_open(name, pfs.PFS_READ_WRITE)
        writer = in_thread(a.pfs_write, fa, b"a" * 10, 10, 0)  # waits for h
        received.wait(3)  # (with no stray token, a's write is not held up at all)
        assert a.pfs_close(fa) == 0            # a's request still waits
        assert y.pfs_delete(name) == 0         # nobody has the file open any more
        release_h.set()                        # h gives its stray token up; a is granted...
        writer.join(10)
        assert writer.result in ([-1], [10])   # (as reviewed: ENOENT, grant number unapplied)
        # a now works on another file; y's conflicting write must not wait for a timeout.
        assert a.pfs_create(other, 2) == 0
        ga = a.pfs_open(other, pfs.PFS_READ_WRITE)
        assert a.pfs_write(ga, b"a" * 10, 10, 0) == 10
        gy = y.pfs_open(other, pfs.PFS_READ_WRITE)
        writer = in_thread(y.pfs_write, gy, b"y" * 10, 10, 0)
        writer.join(4)  # the metaserver's revoke timeout is 6 s in the tests' clusters
        assert writer.result == [10], (
            f"y's write waited for a revocation a could never handle (a applied grants below "
            f"{a._session._applied_below}, and {sorted(a._session._applied_ahead)} ahead)")
        assert a._session.lost is None
    finally:
        release_y.set()
        release_h.set()


# --- 6. close retried after its reply was lost: the fd keeps tokens the metaserver released ----
def test_close_whose_reply_is_lost_leaves_no_stale_tokens(clients, name):
    """When the Close call fails after the metaserver carried it out (the reply lost to a
    deadline or a reset), close keeps the fd -- with its token table -- for a retry. But the
    metaserver has released those tokens: the client still reads through the fd under tokens
    it no longer has, so it misses another client's write (a stale cached block), and every
    retry of close fails ('does not have file ... open', EINVAL), so the fd can never go."""
    a, b = clients(2)
    assert a.pfs_create(name, 2) == 0
    fd = a.pfs_open(name, pfs.PFS_READ_WRITE)
    assert a.pfs_write(fd, b"a" * 512, 512, 0) == 512
    session = a._session
    real_call = session.call

    def call(method, request, what):
        reply = real_call(method, request, what)
        if method == "Close":
            raise OSError(errno.ETIMEDOUT, f"{what}: deadline exceeded (simulated lost reply)")
        return reply
    session.call = call
    try:
        assert a.pfs_close(fd) == -1
    finally:
        del session.call
    buf = bytearray(512)
    if a.pfs_read(fd, buf, 512, 0) == 512:  # the fd still works: it must stay coherent
        fb = b.pfs_open(name, pfs.PFS_READ_WRITE)
        assert b.pfs_write(fb, b"b" * 512, 512, 0) == 512
        assert b.pfs_close(fb) == 0
        n = a.pfs_read(fd, buf, 512, 0)
        assert n == -1 or bytes(buf) == b"b" * 512, "a read its stale cached block"
    # A retried close succeeds, or the fd is already gone (the close did happen).
    assert a.pfs_close(fd) == 0 or pfs.pfs_last_error().errno == errno.EBADF, \
        pfs.pfs_last_error()
