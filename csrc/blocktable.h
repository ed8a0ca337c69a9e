/* The cache block table: a fixed number of slots, each holding at most one key (file id, block
 * number), with every key in at most one slot, and the occupied slots kept in least-recently-used
 * order. The caller owns the block bytes (slot i is its i-th block buffer); this table only
 * decides which slot a block lives in and which one to evict next. Not thread-safe: callers
 * serialize access. */
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

#endif
