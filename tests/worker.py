"""A PFS client process for the tests: reads JSON calls on stdin, answers on stdout.

Each line is [op, *args]; bytes arrive as {"hex": ...}. `op` is a pfs_* call of the C-like API
(run on this process's own pfs.Client), or one of the helpers below; the answer is
{"result": ...} or {"error": ...}. PFS_METASERVER and PFS_CACHE_BLOCKS come from the environment.
"""
import json
import random
import sys
import time

import pfs

client = pfs.Client()


def c_read(fd, num_bytes, offset):
    buf = bytearray(num_bytes)
    n = client.pfs_read(fd, buf, num_bytes, offset)
    return {"n": n, "hex": bytes(buf[:max(n, 0)]).hex()}


def c_fstat(fd):
    meta = pfs.Metadata()
    assert client.pfs_fstat(fd, meta) == 0, pfs.pfs_last_error()
    return {"size": meta.file_size, "mtime": meta.mtime, "servers": meta.recipe.servers}


def c_execstat():
    stats = pfs.ExecStat()
    assert client.pfs_execstat(stats) == 0, pfs.pfs_last_error()
    return vars(stats)


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


def random_ops(name, seed, count, file_size, writable_end, max_len):
    """`count` random reads and writes on the open file; the history, each op as
    [kind, offset, data hex, start ns, end ns]. Writes stay below writable_end."""
    rng = random.Random(seed)
    fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
    assert fd > 0, pfs.pfs_last_error()
    history = []
    for _ in range(count):
        length = rng.randint(1, max_len)
        offset = rng.randint(0, file_size - length)
        kind = "write" if rng.random() < 0.5 and offset + length <= writable_end else "read"
        if kind == "write":
            data = rng.randbytes(length)
            start = time.monotonic_ns()
            assert client.pfs_write(fd, data, length, offset) == length, pfs.pfs_last_error()
        else:
            buf = bytearray(length)
            start = time.monotonic_ns()
            assert client.pfs_read(fd, buf, length, offset) == length, pfs.pfs_last_error()
            data = bytes(buf)
        history.append([kind, offset, data.hex(), start, time.monotonic_ns()])
    assert client.pfs_close(fd) == 0, pfs.pfs_last_error()
    return history


HELPERS = {"pfs_read": c_read, "pfs_fstat": c_fstat, "pfs_execstat": c_execstat,
           "rounds_of_writes": rounds_of_writes, "random_ops": random_ops, "last_error": lambda: str(pfs.pfs_last_error())}

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
