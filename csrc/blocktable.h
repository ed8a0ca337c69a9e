/* The cache block table: a fixed number of slots, each holding at most one key (file id, block
 * number), with every key in at most one slot, and the occupied slots kept in least-recently-used
 * order. The caller owns the block bytes and the per-slot flags; this table decides which slot a
 * block lives in and which one to evict next, and (pfs_bt_read/pfs_bt_write) moves the bytes of
 * a cache hit in one call. Not thread-safe: callers serialize access. */
#ifndef PFS_BLOCKTABLE_H
#define PFS_BLOCKTABLE_H

#include <stddef.h>
#include <stdint.h>

enum { PFS_BT_MAX_CAPACITY = 1 << 24 };

typedef struct pfs_blocktable pfs_blocktable;

/* A table of `capacity` slots (0..PFS_BT_MAX_CAPACITY), all free; NULL if capacity is out of
 * range or memory is short. */
pfs_blocktable *pfs_bt_new(uint32_t capacity);
void pfs_bt_free(pfs_blocktable *bt);

uint32_t pfs_bt_capacity(const pfs_blocktable *bt);
uint32_t pfs_bt_count(const pfs_blocktable *bt);

/* The key's slot, or PFS_ENOENT. touch != 0 makes the key the most recently used. */
int pfs_bt_lookup(pfs_blocktable *bt, uint64_t file, uint64_t block, int touch);

/* Puts the key in a free slot, now the most recently used, and returns that slot. PFS_EEXIST if
 * the key is present, PFS_ENOSPC if no slot is free (the caller evicts first). */
int pfs_bt_insert(pfs_blocktable *bt, uint64_t file, uint64_t block);

/* Frees the key's slot and returns it, or PFS_ENOENT. */
int pfs_bt_remove(pfs_blocktable *bt, uint64_t file, uint64_t block);

/* The least recently used slot (the eviction candidate), or PFS_ENOENT when empty. */
int pfs_bt_lru(const pfs_blocktable *bt);

/* The key held in slot: PFS_EINVAL if slot >= capacity, PFS_ENOENT if the slot is free. */
int pfs_bt_key(const pfs_blocktable *bt, uint32_t slot, uint64_t *file, uint64_t *block);

/* Every slot holding a block of `file`, in no particular order, in out[0..*n). PFS_ENOSPC if
 * more than cap: *n is then the number needed and out[0..cap) holds some of them. O(count). */
int pfs_bt_file_slots(const pfs_blocktable *bt, uint64_t file, uint32_t *out, size_t cap,
                      size_t *n);

/* The hit path. The caller's block memory is one buffer of capacity slots of block_size bytes
 * (slot i at byte i * block_size; memory_len >= capacity * block_size), and its per-slot flag
 * arrays have capacity entries each: ready (nonzero: the slot's bytes are valid; a slot being
 * filled is in the table but not ready), dirty and busy (nonzero: not to be evicted now). Block
 * b of a file covers file bytes [b * block_size, (b + 1) * block_size); the first and last
 * blocks of a range may be partly covered. Each block's bytes move with one memmove, so a caller
 * buffer overlapping the block memory is not undefined behaviour; but as blocks are copied in
 * turn, it sees the ones already copied. */

/* Copies file bytes [offset, offset + length) of `file` from the cache into dst, block by block
 * from the first, for as long as each block is in the table and ready[slot] != 0; each block
 * copied from becomes the most recently used. Returns the number of bytes copied (all of length
 * when every block is there; less when it stopped at a block that is not), and *blocks the number
 * of blocks copied from. length 0 copies nothing and returns 0. PFS_EINVAL for a NULL pointer,
 * block_size 0, memory_len below capacity * block_size, dst_len below length; then PFS_ERANGE if
 * offset + length overflows or length exceeds INT64_MAX (the result must fit). Nothing is copied,
 * touched or stored in *blocks on an error. */
int64_t pfs_bt_read(pfs_blocktable *bt, uint64_t file, uint64_t offset, uint64_t length,
                    const uint8_t *memory, size_t memory_len, uint64_t block_size,
                    const uint8_t *ready, uint8_t *dst, size_t dst_len, uint32_t *blocks);

/* Copies src into the cached blocks of file bytes [offset, offset + length), block by block from
 * the first, for as long as each block is in the table and ready; sets dirty[slot] = 1 and makes
 * the block the most recently used, for each block written. Returns the number of bytes copied
 * and *blocks as above; the same errors (src_len for dst_len). */
int64_t pfs_bt_write(pfs_blocktable *bt, uint64_t file, uint64_t offset, uint64_t length,
                     uint8_t *memory, size_t memory_len, uint64_t block_size,
                     const uint8_t *ready, uint8_t *dirty, const uint8_t *src, size_t src_len,
                     uint32_t *blocks);

/* The least recently used slot whose busy[slot] is 0, or PFS_ENOENT (also when empty);
 * PFS_EINVAL for a NULL pointer. busy has capacity bytes. O(number of busy slots older). */
int pfs_bt_evictable(const pfs_blocktable *bt, const uint8_t *busy);

#endif
