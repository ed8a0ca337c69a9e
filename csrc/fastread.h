/* The cached-read fast path: a table of the fds allowed to read from the block cache without
 * the Client's Python checks. Each entry is a snapshot the Client takes under its lock (file id,
 * size, a range its READ-or-WRITE tokens cover, where a sequential read would start), and the
 * Client takes it back (deny) before any change that would make the general path refuse what
 * the snapshot allows; one lease deadline, a CLOCK_MONOTONIC time in nanoseconds, covers them
 * all. A read served here is served whole, or not at all (PFS_EMISS: nothing copied, touched or
 * counted). Not thread-safe: callers serialize access, with the block table's own callers. */
#ifndef PFS_FASTREAD_H
#define PFS_FASTREAD_H

#include <stddef.h>
#include <stdint.h>

#include "blocktable.h"

enum { PFS_FR_MAX_SLOTS = 1 << 20 };

typedef struct pfs_fastread pfs_fastread;

/* A table of `slots` fd entries (1..PFS_FR_MAX_SLOTS; fd n may use entry n % slots only), all
 * empty, lease deadline 0 (run out), over the block table bt, whose slot i's block is
 * memory[i * block_size, (i + 1) * block_size) and is valid while ready[i] != 0. NULL for a NULL
 * pointer, block_size 0, memory_len below capacity * block_size, ready_len below capacity, slots
 * out of range, or memory short. The caller keeps bt, memory and ready alive while it lives. */
pfs_fastread *pfs_fr_new(pfs_blocktable *bt, const uint8_t *memory, size_t memory_len,
                         uint64_t block_size, const uint8_t *ready, size_t ready_len,
                         uint32_t slots);
void pfs_fr_free(pfs_fastread *fr);

/* Lets fd (>= 0) read bytes of `file` in [start, end) below `size` here; read_next: a read
 * starting there is sequential and is left to the caller (its read-ahead). Replaces whatever
 * entry fd's place held. PFS_EINVAL for a NULL table, fd < 0 or start > end. */
int pfs_fr_allow(pfs_fastread *fr, int64_t fd, uint64_t file, uint64_t size, uint64_t start,
                 uint64_t end, uint64_t read_next);

/* Takes fd off the fast path: PFS_OK, with its read_next in *read_next, or PFS_ENOENT when it
 * had no entry (*read_next untouched). PFS_EINVAL for a NULL pointer. */
int pfs_fr_deny(pfs_fastread *fr, int64_t fd, uint64_t *read_next);

/* Takes every fd off the fast path. */
void pfs_fr_deny_all(pfs_fastread *fr);

/* Reads are served while the monotonic clock is below deadline_ns (0: none are). */
void pfs_fr_lease(pfs_fastread *fr, int64_t deadline_ns);

/* The number of blocks reads served here copied from since the last call (the cache's hits). */
uint64_t pfs_fr_take_hits(pfs_fastread *fr);

/* Copies file bytes [offset, offset + length) into dst and returns length, if: fd has an entry,
 * length > 0, the range lies in the entry's [start, end) and below its size, offset is not its
 * read_next, now_ns < the lease deadline, and every block of the range is in the table and
 * ready. Then each block becomes the most recently used, the hits count them, and the entry's
 * read_next becomes offset + length. Else PFS_EMISS, having changed nothing. PFS_EINVAL for a
 * NULL pointer or dst_len < length. */
int64_t pfs_fr_read_at(pfs_fastread *fr, int64_t now_ns, int64_t fd, uint64_t offset,
                       uint64_t length, uint8_t *dst, size_t dst_len);

/* pfs_fr_read_at at the time of CLOCK_MONOTONIC now (PFS_EMISS if it cannot be read). */
int64_t pfs_fr_read(pfs_fastread *fr, int64_t fd, uint64_t offset, uint64_t length,
                    uint8_t *dst, size_t dst_len);

#endif
