"""The cache policy of docs/consistency.md, without servers: BlockCache over an in-memory backing
store that counts what reaches it (the fileservers' part)."""
import threading
from dataclasses import dataclass

import pytest

from pfs.datapath.blockcache import BlockCache

B = 8


@dataclass
class File:
    file_id: int
    size: int
    block_size: int = B

    @property
    def read_next(self) -> int:
        return -1  # no read is sequential: read-ahead would add fetches in the background

    @read_next.setter
    def read_next(self, _value: int) -> None:
        pass


class Locked:
    """The cache as the client calls it: every call under the client's lock (the cache
    releases it around fetches and waits on its condition)."""

    def __init__(self, cache: BlockCache, changed: threading.Condition) -> None:
        self._cache, self._changed = cache, changed

    def __getattr__(self, name: str):
        attr = getattr(self._cache, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            with self._changed:
                return attr(*args, **kwargs)
        return call


class Memory:
    """The bytes 'on the fileservers', and every read and write that reached them."""

    def __init__(self) -> None:
        self.data: dict[int, bytearray] = {}
        self.reads: list[tuple[int, int, int]] = []
        self.writes: list[tuple[int, int, bytes]] = []

    def read(self, f, offset, length, dst):
        self.reads.append((f.file_id, offset, length))
        stored = self.data.setdefault(f.file_id, bytearray())
        piece = stored[offset:offset + length]
        dst[:len(piece)] = piece

    def write(self, f, offset, src):
        self.writes.append((f.file_id, offset, bytes(src)))
        stored = self.data.setdefault(f.file_id, bytearray())
        if len(stored) < offset + len(src):
            stored.extend(bytes(offset + len(src) - len(stored)))
        stored[offset:offset + len(src)] = src


def covered(_start, _end):
    return True


def nothing_covered(_start, _end):
    return False


def setup(capacity=4, size=64, **options):
    memory = Memory()
    memory.data[1] = bytearray(i % 251 for i in range(size))
    changed = threading.Condition(threading.RLock())
    return (Locked(BlockCache(capacity, B, memory, changed, **options), changed), memory,
            File(1, size))


def read(cache, f, offset, length, cacheable=covered):
    buf = bytearray(length)
    cache.read(f, offset, memoryview(buf), cacheable)
    return bytes(buf)


def write(cache, f, offset, data, cacheable=covered):
    old = f.size
    f.size = max(f.size, offset + len(data))
    cache.write(f, offset, memoryview(data), cacheable, old)


def test_second_read_is_a_hit_per_block():
    cache, memory, f = setup()
    assert read(cache, f, 4, 8) == bytes(range(4, 12))  # blocks 0 and 1
    assert cache.stats.num_read_hits == 0
    assert read(cache, f, 6, 4) == bytes(range(6, 10))
    assert cache.stats.num_read_hits == 2
    assert len(memory.reads) == 1  # both blocks came in one fetch


def test_least_recently_used_block_is_evicted():
    cache, memory, f = setup(capacity=2)
    read(cache, f, 0, 1)    # block 0
    read(cache, f, 8, 1)    # block 1
    read(cache, f, 0, 1)    # block 0 again: now block 1 is the oldest
    read(cache, f, 16, 1)   # block 2 evicts block 1
    assert cache.stats.num_evictions == 1
    hits = cache.stats.num_read_hits
    read(cache, f, 0, 1)
    assert cache.stats.num_read_hits == hits + 1     # block 0 stayed
    read(cache, f, 8, 1)
    assert cache.stats.num_read_hits == hits + 1     # block 1 was gone


def test_dirty_block_is_written_back_before_eviction():
    cache, memory, f = setup(capacity=1)
    write(cache, f, 0, b"ABCDEFGH")  # a whole block: no read first
    assert memory.reads == [] and memory.writes == []
    read(cache, f, 8, 1)             # evicts the dirty block
    assert cache.stats.num_evictions == 1 and cache.stats.num_writebacks == 1
    assert memory.data[1][:8] == b"ABCDEFGH"
    read(cache, f, 16, 1)            # evicting a clean block writes nothing
    assert cache.stats.num_writebacks == 1 and len(memory.writes) == 1


def test_partial_write_reads_the_block_first_and_hits_count():
    cache, memory, f = setup()
    write(cache, f, 2, b"xy")
    assert memory.reads == [(1, 0, 8)]
    assert cache.stats.num_write_hits == 0
    write(cache, f, 4, b"z")
    assert cache.stats.num_write_hits == 1
    assert read(cache, f, 0, 8) == bytes([0, 1]) + b"xyz" + bytes([5, 6, 7])


def test_write_past_the_end_reads_only_existing_bytes():
    cache, memory, f = setup(size=20)  # block 2 holds bytes 16-19 only
    write(cache, f, 20, b"abcd")       # block 2 keeps its bytes 16-19: they are read first
    assert memory.reads == [(1, 16, 4)]  # bytes 16-19 exist and are kept
    memory.reads.clear()
    write(cache, f, 24, b"12345678")     # block 3 is new: nothing to read
    assert memory.reads == []
    assert read(cache, f, 16, 16) == bytes([16, 17, 18, 19]) + b"abcd12345678"


def test_partly_covered_blocks_go_straight_to_the_fileservers():
    cache, memory, f = setup()
    assert read(cache, f, 0, 16, nothing_covered) == bytes(range(16))
    write(cache, f, 0, b"direct", nothing_covered)
    assert memory.data[1][:6] == b"direct"
    assert read(cache, f, 0, 6, nothing_covered) == b"direct"
    assert cache.stats.num_read_hits == 0 and cache.stats.num_write_hits == 0
    assert cache.stats == type(cache.stats)()  # nothing was cached


def test_cached_block_is_used_even_when_no_longer_cacheable():
    """While a revocation is pending a block may stop being cacheable; its cached (dirty) copy
    is still the newest and must serve reads and take writes until the revocation writes it
    back (bypassing it lost writes once)."""
    cache, memory, f = setup()
    write(cache, f, 0, b"cached!!")  # dirty, only in the cache
    assert read(cache, f, 0, 8, nothing_covered) == b"cached!!"
    write(cache, f, 0, b"C", nothing_covered)
    assert memory.writes == []
    cache.revoke(f, 0, 8, drop=True)
    assert memory.data[1][:8] == b"Cached!!"


@pytest.mark.parametrize("drop", [True, False])
def test_revocation_writes_back_then_drops_or_keeps(drop):
    cache, memory, f = setup()
    write(cache, f, 0, b"12345678")   # block 0, dirty
    read(cache, f, 8, 8)               # block 1, clean
    read(cache, f, 32, 8)              # block 4, clean, outside the revoked range
    cache.revoke(f, 4, 12, drop=drop)  # touches blocks 0 and 1
    assert cache.stats.num_writebacks == 1
    assert memory.data[1][:8] == b"12345678"
    assert cache.stats.num_invalidations == (2 if drop else 0)
    hits = cache.stats.num_read_hits
    read(cache, f, 0, 16)
    assert cache.stats.num_read_hits == hits + (0 if drop else 2)
    read(cache, f, 32, 1)
    assert cache.stats.num_read_hits == hits + (0 if drop else 2) + 1


def test_close_counts_only_close_counters():
    cache, memory, f = setup()
    write(cache, f, 0, b"abcdefgh")
    write(cache, f, 8, b"ijklmnop")
    read(cache, f, 16, 8)
    cache.close(f)
    s = cache.stats
    assert (s.num_close_writebacks, s.num_close_evictions) == (2, 3)
    assert (s.num_writebacks, s.num_evictions, s.num_invalidations) == (0, 0, 0)
    assert memory.data[1][:16] == b"abcdefghijklmnop"
    assert len(memory.writes) == 1  # consecutive dirty blocks go back in one write
    read(cache, f, 0, 1)
    assert cache.stats.num_read_hits == 0  # nothing stayed


def test_flush_writes_back_and_keeps_blocks_clean():
    cache, memory, f = setup()
    write(cache, f, 0, b"abcdefgh")
    cache.flush(f)
    assert memory.data[1][:8] == b"abcdefgh" and len(memory.writes) == 1
    cache.flush(f)
    assert len(memory.writes) == 1  # clean now: nothing more to write
    read(cache, f, 0, 8)
    assert cache.stats.num_read_hits == 1


def test_write_back_stops_at_the_end_of_the_file():
    cache, memory, f = setup(size=10)
    write(cache, f, 8, b"xy")  # block 1 holds bytes 8-9 only
    cache.flush(f)
    assert memory.writes == [(1, 8, b"xy")]


def test_zero_capacity_caches_nothing():
    cache, memory, f = setup(capacity=0)
    assert read(cache, f, 0, 16) == bytes(range(16))
    write(cache, f, 0, b"abc")
    assert memory.data[1][:3] == b"abc"
    cache.close(f)
    assert cache.stats == type(cache.stats)()


def test_operations_larger_than_half_the_cache_go_around_it():
    """A big scan neither evicts the cached blocks nor writes back block by block; cached
    blocks it touches are still used."""
    cache, memory, f = setup(capacity=4)
    write(cache, f, 0, b"dirty!!!")           # block 0 cached, dirty
    read(cache, f, 56, 8)                     # block 7 cached, clean
    memory.reads.clear()
    assert read(cache, f, 0, 48)[:8] == b"dirty!!!"  # 6 blocks > 4 // 2
    assert memory.reads == [(1, 8, 40)]       # one transfer for blocks 1-5
    write(cache, f, 8, bytes(range(40)))      # blocks 1-5: around, in one write
    assert memory.writes == [(1, 8, bytes(range(40)))]
    assert cache.stats.num_evictions == 0 and cache.stats.num_read_hits == 1
    read(cache, f, 56, 8)
    assert cache.stats.num_read_hits == 2     # block 7 stayed


def test_failed_write_back_keeps_the_blocks_dirty_until_stored():
    """A write-back that fails at a revocation or a close leaves every block as it was, dirty
    ones dirty: the bytes are not lost, and the next try stores them."""
    cache, memory, f = setup()

    def unreachable(*_args):
        raise OSError(112, "fileserver unreachable")
    write(cache, f, 0, b"kept....")
    memory.write = unreachable
    with pytest.raises(OSError):
        cache.revoke(f, 0, 8, drop=True)
    write(cache, f, 8, b"kept too")
    with pytest.raises(OSError):
        cache.close(f)
    assert read(cache, f, 0, 16) == b"kept....kept too"  # still cached, both blocks
    memory.write = Memory.write.__get__(memory)
    cache.revoke(f, 0, 8, drop=True)
    assert memory.writes == [(1, 0, b"kept....")]
    cache.close(f)
    assert memory.writes[1:] == [(1, 8, b"kept too")]
    assert bytes(memory.data[1][:16]) == b"kept....kept too"


def test_a_write_whose_excess_write_back_fails_keeps_its_bytes():
    """Past the dirty bound a write hands old runs back; if that fails, the write itself still
    succeeds, its bytes cached, and the old runs are written back later."""
    cache, memory, f = setup(capacity=8, size=0, max_dirty_bytes=2 * B)

    def unreachable(*_args):
        raise OSError(112, "fileserver unreachable")
    memory.write = unreachable
    for block in range(3):
        write(cache, f, block * B, bytes([block + 1]) * B)
    memory.write = Memory.write.__get__(memory)
    cache.close(f)
    assert bytes(memory.data[1]) == b"".join(bytes([k + 1]) * B for k in range(3))


def test_too_many_dirty_bytes_write_back_the_oldest_runs():
    """Once more than max_dirty_bytes are dirty, a write writes back the oldest dirty runs
    (each in one write) until half that is; they stay cached, clean, and count as no
    writeback."""
    cache, memory, f = setup(capacity=8, max_dirty_bytes=4 * B)
    write(cache, f, 0, bytes(24))        # blocks 0-2: one run
    write(cache, f, 40, b"5" * 16)       # blocks 5 and 6: now 5 of 8 are dirty
    assert memory.writes == [(1, 0, bytes(24))]
    assert cache.stats.num_writebacks == 0
    read(cache, f, 0, 24)
    assert cache.stats.num_read_hits == 3  # still cached
    cache.close(f)
    assert cache.stats.num_close_writebacks == 2  # blocks 5 and 6 were still dirty


def test_eviction_takes_the_least_recently_used_block_dirty_or_not():
    cache, memory, f = setup(capacity=4)
    write(cache, f, 0, b"dirty!!!")      # block 0: dirty, and the least recently used
    for block in (1, 2, 3):
        read(cache, f, block * B, B)
    read(cache, f, 4 * B, B)              # evicts block 0, writing it back first
    assert (cache.stats.num_evictions, cache.stats.num_writebacks) == (1, 1)
    assert memory.writes == [(1, 0, b"dirty!!!")]
    read(cache, f, B, B)                  # block 1 stayed
    assert cache.stats.num_read_hits == 1


def test_small_cache_counts_as_strict_lru_write_back():
    """Below the dirty bound, the counters follow LRU write-back exactly: 20 one-block writes
    through a 16-block cache write 4 blocks back on eviction and 16 at close."""
    cache, memory, f = setup(capacity=16, size=0)
    for block in range(20):
        write(cache, f, block * B, bytes([block]) * B)
    assert (cache.stats.num_evictions, cache.stats.num_writebacks) == (4, 4)
    cache.close(f)
    assert (cache.stats.num_close_writebacks, cache.stats.num_close_evictions) == (16, 16)
    assert bytes(memory.data[1]) == b"".join(bytes([k]) * B for k in range(20))


def test_a_write_counts_hits_on_cached_blocks_after_an_uncached_one():
    cache, memory, f = setup(capacity=8)
    read(cache, f, B, 2 * B)                  # blocks 1 and 2 cached
    write(cache, f, 0, bytes(3 * B))          # block 0 is not: 2 hits all the same
    assert cache.stats.num_write_hits == 2


def test_sequential_reads_are_read_ahead():
    """A read that starts where the last one ended fetches the next blocks in the background,
    so the next read finds them cached."""
    memory = Memory()
    memory.data[1] = bytearray(range(64))
    changed = threading.Condition(threading.RLock())
    cache = Locked(BlockCache(16, B, memory, changed), changed)

    @dataclass
    class Sequential:
        file_id: int = 1
        size: int = 64
        block_size: int = B
        read_next: int = 0
        stripe_bytes: int = B  # one column of one-block units
    f = Sequential()
    assert read(cache, f, 0, 8) == bytes(range(8))
    with changed:
        assert changed.wait_for(lambda: len(memory.reads) == 2, timeout=10)
    assert memory.reads[1] == (1, 8, 16)  # the next two blocks, in one fetch
    assert read(cache, f, 8, 16) == bytes(range(8, 24))
    assert cache.stats.num_read_hits == 2
    cache.stop()


def test_sequential_reads_keep_a_stripe_ahead_in_flight():
    """Reads narrower than a stripe (a mount's 1 MiB requests on a 4 MiB stripe, say) keep a
    whole stripe ahead of them cached or being fetched, so every fileserver stays busy: each
    read fetches only what its step exposed of that window."""
    memory = Memory()
    memory.data[1] = bytearray(range(128))
    changed = threading.Condition(threading.RLock())
    cache = Locked(BlockCache(32, B, memory, changed), changed)

    @dataclass
    class Sequential:
        file_id: int = 1
        size: int = 128
        block_size: int = B
        read_next: int = 0
        stripe_bytes: int = 4 * B
    f = Sequential()
    assert read(cache, f, 0, B) == bytes(range(B))
    with changed:
        assert changed.wait_for(lambda: len(memory.reads) == 2, timeout=10)
    assert memory.reads[1] == (1, B, 4 * B)  # a stripe ahead
    assert read(cache, f, B, B) == bytes(range(B, 2 * B))
    with changed:
        assert changed.wait_for(lambda: len(memory.reads) == 3, timeout=10)
    assert memory.reads[2] == (1, 5 * B, B)  # the block the step exposed
    cache.stop()


def test_a_small_random_read_fetches_only_its_units():
    """With blocks larger than the checksum unit (4 KiB), a random 4 KiB read fetches its units
    alone, straight into the caller's buffer, and caches nothing (no block is ever cached part
    fetched); missed a second time, the block is fetched whole and cached. A sequential read
    still fetches whole blocks."""
    block, size = 64 << 10, 1 << 20
    memory = Memory()
    memory.data[1] = bytearray(i % 251 for i in range(size))
    changed = threading.Condition(threading.RLock())
    cache = Locked(BlockCache(16, block, memory, changed), changed)
    f = File(1, size, block_size=block)  # every read is random (read_next)
    assert read(cache, f, 5 * block + 8192, 4096) == bytes(memory.data[1][5 * block + 8192:
                                                                          5 * block + 12288])
    assert memory.reads == [(1, 5 * block + 8192, 4096)]
    assert read(cache, f, 5 * block + 8192, 100) == bytes(memory.data[1][5 * block + 8192:
                                                                         5 * block + 8292])
    assert memory.reads[1] == (1, 5 * block, block)  # missed again: fetched whole, cached
    assert cache.stats.num_read_hits == 0
    assert read(cache, f, 5 * block, 4096) == bytes(memory.data[1][5 * block:5 * block + 4096])
    assert cache.stats.num_read_hits == 1 and len(memory.reads) == 2
    read(cache, f, block - 2048, 4096)  # two blocks, neither cached: one fetch of its bytes
    assert memory.reads[2] == (1, block - 2048, 4096)
    assert read(cache, f, 9 * block, 1 << 16) == bytes(memory.data[1][9 * block:10 * block])
    assert memory.reads[3] == (1, 9 * block, block)  # a whole block: cached as before


def test_streaming_operations_go_around_the_cache():
    """Operations of a megabyte or more do not fill the cache: one transfer, no copy more."""
    cache, memory, f = setup(capacity=1 << 18, size=2 << 20)
    read(cache, f, 0, 1 << 20)
    read(cache, f, 0, 1 << 20)
    assert len(memory.reads) == 2 and cache.stats.num_read_hits == 0
    write(cache, f, 0, bytes(1 << 20))
    assert memory.writes == [(1, 0, bytes(1 << 20))]  # straight to the backing


def test_a_write_dirties_only_blocks_its_tokens_cover_whole():
    """A write into a cached block that WRITE tokens cover only in part goes through to the
    fileservers (a write-back would write the whole block) and updates the cached copy, which
    stays clean."""
    cache, memory, f = setup(capacity=4)
    read(cache, f, 0, 2 * B)                      # blocks 0 and 1 cached, clean

    def only_bytes_2_to_6(start, end):
        return 2 <= start and end <= 6
    write(cache, f, 2, b"wxyz", only_bytes_2_to_6)
    assert memory.writes == [(1, 2, b"wxyz")]     # straight through, just those bytes
    assert read(cache, f, 0, 8) == bytes([0, 1]) + b"wxyz" + bytes([6, 7])
    cache.close(f)
    assert memory.writes == [(1, 2, b"wxyz")]     # the block was never dirty
    assert cache.stats.num_close_writebacks == 0
