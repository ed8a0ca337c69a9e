"""A PFS client process for the tests: reads JSON calls on stdin, answers on stdout.

Each line is [op, *args]; bytes arrive as {"hex": ...}. `op` is a pfs_* call of the C-like API
(run on this process's own pfs.Client), or one of the helpers below; the answer is
{"result": ...} or {"error": ...}. PFS_METASERVER and PFS_CACHE_BLOCKS come from the environment.
"""
import errno
import faulthandler
import json
import random
import signal
import sys
import time

import pfs

faulthandler.register(signal.SIGUSR1)  # a test that waits for us in vain shows where we are
client = pfs.Client()
LOST_CALLS = 5
#: Seconds a worker keeps trying to close a file whose bytes are not all stored yet.
CLOSE_SECONDS = 30


def c_read(fd, num_bytes, offset):
    buf = bytearray(num_bytes)
    n = client.pfs_read(fd, buf, num_bytes, offset)
    return {"n": n, "hex": bytes(buf[:max(n, 0)]).hex()}


def fast_read(fd, num_bytes, offset):
    """The read as the cache's fast path alone serves it (pfs_read tries it first): -1 if not."""
    buf = bytearray(num_bytes)
    n = client._state.cache.fast_read(fd, buf, num_bytes, offset)
    return {"n": n, "hex": bytes(buf[:max(n, 0)]).hex()}


def c_fstat(fd):
    meta = pfs.Metadata()
    assert client.pfs_fstat(fd, meta) == 0, pfs.pfs_last_error()
    return {"size": meta.file_size, "mtime": meta.mtime, "servers": meta.recipe.servers}


def c_execstat():
    stats = pfs.ExecStat()
    assert client.pfs_execstat(stats) == 0, pfs.pfs_last_error()
    return vars(stats)


def write_pattern(fd, byte, length, offset):
    """pfs_write of `length` copies of `byte` (made here: large writes need not cross the pipe);
    [result, errno of the failure or 0]."""
    n = client.pfs_write(fd, bytes([byte]) * length, length, offset)
    return [n, getattr(pfs.pfs_last_error(), "errno", 0) if n < 0 else 0]


def open_write_close(name, byte, length, offset, chunk=4 << 20):
    """Opens the file, writes `length` copies of `byte` at `offset` in `chunk`-sized calls,
    closes; 0, or the failure's message."""
    fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
    data = bytes([byte]) * chunk
    for at in range(offset, offset + length, chunk):
        n = min(chunk, offset + length - at)
        if fd < 0 or client.pfs_write(fd, data, n, at) != n:
            return str(pfs.pfs_last_error())
    return 0 if client.pfs_close(fd) == 0 else str(pfs.pfs_last_error())


def write_files(prefix, count, size):
    """Creates files prefix0... (width 2, the cluster's default copies), each written with
    pattern(i) of tests/test_replicas.py in 16 KiB calls and closed, one after the other; the
    numbers of those whose every call succeeded."""
    closed = []
    for i in range(count):
        data = bytes((i * 7 + k) % 251 for k in range(size))
        name = f"{prefix}{i}"
        ok = client.pfs_create(name, 2) == 0
        fd = client.pfs_open(name, pfs.PFS_READ_WRITE) if ok else -1
        for at in range(0, size, 16384):
            ok = ok and client.pfs_write(fd, data[at:at + 16384], min(16384, size - at), at) > 0
        if fd > 0 and client.pfs_close(fd) == 0 and ok:
            closed.append(i)
    return closed


def rounds_of_writes(name, offset, length, rounds):
    """Opens, writes [offset, offset+length) with the round number's byte, closes; `rounds`
    times. The last round's byte is (rounds - 1) % 256 + 1."""
    for r in range(rounds):
        fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
        assert fd > 0, pfs.pfs_last_error()
        data = bytes([r % 256 + 1]) * length
        assert client.pfs_write(fd, data, length, offset) == length, pfs.pfs_last_error()
        assert client.pfs_close(fd) == 0, pfs.pfs_last_error()
    return rounds


def random_ops(name, seed, count, file_size, writable_end, max_len, journal=None,
               seconds=None, syncs=False):
    """Random reads and writes on the open file, `count` of them (or as many as fit in
    `seconds`); the history, each call as [kind, offset, length, data hex, errno, start ns,
    end ns]: data is what a write wrote or a read returned, errno 0 when the call succeeded.
    Writes stay below writable_end. With `syncs`, one call in ten, and every call after one
    that failed with EHOSTDOWN (a server is down: now they wait for it), is instead an "fsync",
    or a "close" of the file (tried again until it succeeds, as a careful program does) and an
    open of it again. With `journal`, each call is also appended to that file as it begins and as
    it ends, so the calls of a client killed meanwhile are known too. Once a call fails with
    ENOTCONN (the session is lost), LOST_CALLS more are made, then it stops."""
    rng = random.Random(seed)
    log = open(journal, "a") if journal else None
    fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
    assert fd > 0, pfs.pfs_last_error()
    until = time.monotonic() + seconds if seconds else float("inf")
    history, lost, err = [], 0, 0
    for i in range(count):
        if time.monotonic() > until or lost > LOST_CALLS:
            break
        length = rng.randint(1, max_len)
        offset = rng.randint(0, file_size - length)
        kind = "write" if rng.random() < 0.5 and offset + length <= writable_end else "read"
        if syncs and (rng.random() < 0.1 or err == errno.EHOSTDOWN):
            kind, offset, length = rng.choice(["fsync", "close"]), 0, 0
        data = rng.randbytes(length) if kind == "write" else b""
        start = time.monotonic_ns()
        if log:
            log.write(json.dumps({"i": i, "kind": kind, "offset": offset, "length": length,
                                  "data": data.hex(), "start": start}) + "\n")
            log.flush()
        if fd < 0:  # a reopen after a close failed (no metaserver was active): again first
            fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
        if fd < 0:
            n = -1  # (its errno is the open's)
        elif kind == "write":
            n = client.pfs_write(fd, data, length, offset)
        elif kind == "fsync":
            n = client.pfs_fsync(fd)
        elif kind == "close":
            n = close_until_stored(fd)
            fd = client.pfs_open(name, pfs.PFS_READ_WRITE) if n == 0 else fd
            n = n if fd > 0 else -1
        else:
            buf = bytearray(length)
            n = client.pfs_read(fd, buf, length, offset)
            data = bytes(buf[:max(n, 0)])
        end = time.monotonic_ns()
        err = 0 if n == length else getattr(pfs.pfs_last_error(), "errno", -1)
        history.append([kind, offset, length, data.hex(), err, start, end])
        lost += lost > 0 or err == errno.ENOTCONN
        if log:
            log.write(json.dumps({"i": i, "errno": err, "data": data.hex() if kind == "read"
                                  else "", "end": end}) + "\n")
            log.flush()
    close_until_stored(fd)
    return history


def close_until_stored(fd, seconds=CLOSE_SECONDS):
    """Closes the file as a careful program does: a close that fails because bytes are not
    stored yet (a fileserver or the metaserver down) is tried again, for `seconds`; one whose
    session is lost cannot succeed (that is for the test to judge). 0 once closed, else -1."""
    give_up = time.monotonic() + seconds
    while client.pfs_close(fd) == -1:
        if pfs.pfs_last_error().errno in (errno.ENOTCONN, errno.EBADF) \
                or time.monotonic() >= give_up:
            return -1
        time.sleep(0.5)
    return 0


def random_growing_ops(name, seed, count, max_len, max_size):
    """`count` random calls on the open file while it grows: reads inside it, reads that cross,
    start at or start past its end, writes inside it, appends at the end this client believes
    (which may be stale: another client may have appended since), writes a little past that end
    (they fail with EINVAL unless someone else grew the file that far), and pfs_fstat calls.
    Appends stop once the believed size reaches max_size (writes then stay inside).

    The history, each call as [kind, offset, length, data hex, errno, start ns, end ns]: kind is
    "read", "write" or "fstat"; for a read, length is num_bytes and data what came back (short
    near the end); for a write, data is what it wrote; for an fstat, offset is 0, length the
    size it reported and data empty. errno is 0 when the call succeeded, else it returned -1
    with that errno (and a read's data is empty)."""
    rng = random.Random(seed)
    fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
    assert fd > 0, pfs.pfs_last_error()
    known = 0  # a size the file had at some point: sizes only grow, so it is never too large
    history = []
    for i in range(count):
        length = rng.randint(1, max_len)
        dice = rng.random() if i else 0.0  # first learn the size
        if dice < 0.12:
            kind = "fstat"
        elif dice < 0.27:  # a read inside the (believed) file
            kind, offset = "read", rng.randint(0, max(0, known - 1))
            length = max(1, min(length, known - offset))
        elif dice < 0.45:  # a read crossing the end, starting at it, or starting past it
            kind = "read"
            offset = rng.choice([rng.randint(max(0, known - length), known), known,
                                 known + rng.randint(1, 700)])
        elif dice < 0.6 or known >= max_size:  # a write inside
            kind = "write"
            length = min(length, max(1, known))
            offset = rng.randint(0, max(0, known - length))
        elif dice < 0.8:  # an append at the believed end
            kind, offset = "write", known
        elif dice < 0.9:  # a write crossing the believed end
            kind, offset = "write", rng.randint(max(0, known - length + 1), known)
        else:  # a write past the believed end: EINVAL, unless the file grew that far meanwhile
            kind, offset = "write", known + rng.randint(1, 700)
        err = 0
        if kind == "fstat":
            meta = pfs.Metadata()
            start = time.monotonic_ns()
            n = client.pfs_fstat(fd, meta)
            end = time.monotonic_ns()
            offset, length, data = 0, meta.file_size, b""
            if n == 0:
                known = max(known, meta.file_size)
        elif kind == "write":
            data = rng.randbytes(length)
            start = time.monotonic_ns()
            n = client.pfs_write(fd, data, length, offset)
            end = time.monotonic_ns()
            if n == length:
                known = max(known, offset + length)
        else:
            buf = bytearray(length)
            start = time.monotonic_ns()
            n = client.pfs_read(fd, buf, length, offset)
            end = time.monotonic_ns()
            data = bytes(buf[:max(n, 0)])
            if n >= 0:
                known = max(known, offset + n)
        if n < 0:
            e = pfs.pfs_last_error()
            err, data = getattr(e, "errno", None) or -1, (data if kind == "write" else b"")
        history.append([kind, offset, length, data.hex(), err, start, end])
    assert client.pfs_close(fd) == 0, pfs.pfs_last_error()
    return history


HELPERS = {"pfs_read": c_read, "fast_read": fast_read, "pfs_fstat": c_fstat,
           "pfs_execstat": c_execstat,
           "write_pattern": write_pattern, "open_write_close": open_write_close,
           "rounds_of_writes": rounds_of_writes, "write_files": write_files,
           "random_ops": random_ops,
           "random_growing_ops": random_growing_ops,
           "stat_size": lambda path: client.stat(path).file_size,
           "last_error": lambda: str(pfs.pfs_last_error()),
           "last_errno": lambda: getattr(pfs.pfs_last_error(), "errno", None)}

for line in sys.stdin:
    op, *args = json.loads(line)
    args = [bytes.fromhex(a["hex"]) if isinstance(a, dict) else a for a in args]
    if op == "exit":
        print(json.dumps({"result": 0}), flush=True)
        break
    try:
        result = HELPERS[op](*args) if op in HELPERS else getattr(client, op)(*args)
        print(json.dumps({"result": result}), flush=True)
    except Exception as e:  # noqa: BLE001 - report to the test, which fails with it
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
