/* Stripe math (docs/design.md). A file is cut into stripe units of S*B bytes, dealt round-robin over w
 * servers; a server keeps its units back to back, so any contiguous file range maps onto ONE
 * contiguous local range ("extent") per server. For a byte at file offset off:
 *     u = off / B / S;  server = u % w;  local = (u / w) * S * B + off % (S * B)
 * A range [offset, offset + length) must fit in uint64 and S*B must not overflow (PFS_ERANGE);
 * B, S or w of 0 is PFS_EINVAL; otherwise w above PFS_MAX_WIDTH is PFS_ERANGE. Output arrays
 * that are too short (PFS_ENOSPC) are reported after those. */
#ifndef PFS_STRIPE_H
#define PFS_STRIPE_H

#include <stddef.h>
#include <stdint.h>

enum { PFS_MAX_WIDTH = 1024 };

/* The part of a file range that lies inside one stripe unit. */
typedef struct pfs_segment {
    uint32_t server;       /* index into the file's server list */
    uint64_t local_offset; /* offset inside that server's object */
    uint64_t file_offset;  /* absolute offset in the file */
    uint64_t length;
} pfs_segment;

/* *count = number of stripe units touched by the range (0 when length is 0). */
int pfs_stripe_count(uint64_t offset, uint64_t length, uint64_t block_size,
                     uint64_t stripe_blocks, size_t *count);

/* Fills out[0..*n) with the range's segments in file order. PFS_ENOSPC if cap is below the
 * count, in which case *n is set to the count needed and out is untouched. */
int pfs_stripe_segments(uint64_t offset, uint64_t length, uint64_t block_size,
                        uint64_t stripe_blocks, uint32_t width,
                        pfs_segment *out, size_t cap, size_t *n);

/* For each server s < width: local_start[s], local_len[s] = its contiguous extent of the range
 * (both 0 when untouched). cap is the length of both arrays and must be >= width. O(width). */
int pfs_stripe_extents(uint64_t offset, uint64_t length, uint64_t block_size,
                       uint64_t stripe_blocks, uint32_t width,
                       uint64_t *local_start, uint64_t *local_len, size_t cap);

#endif
