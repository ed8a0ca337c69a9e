/* Scatter/gather between a caller buffer holding file bytes [offset, offset + length) and one
 * contiguous buffer per server holding that server's extent (see stripe.h). Segment i goes to
 * servers[seg.server].data + (seg.local_offset - local_start[seg.server]). Every segment is
 * checked against every buffer length before the first byte moves: a short input is PFS_EINVAL,
 * a short output PFS_ENOSPC, and nothing is written then. A server that no segment names may have
 * a NULL buffer. The caller's buffer must not overlap the server buffers. */
#ifndef PFS_SCATTER_H
#define PFS_SCATTER_H

#include <stddef.h>
#include <stdint.h>

#include "stripe.h"

/* One server's buffer. gather only reads through data. */
typedef struct pfs_span {
    unsigned char *data;
    uint64_t len;
} pfs_span;

/* Copies from src (src_len bytes; src[0] is file offset `offset`) into servers[0..width). */
int pfs_scatter(uint64_t offset, const unsigned char *src, uint64_t src_len,
                const pfs_segment *segs, size_t nsegs, const uint64_t *local_start,
                const pfs_span *servers, uint32_t width);

/* The inverse: copies from servers[0..width) into dst (dst_len bytes; dst[0] is file offset
 * `offset`). */
int pfs_gather(uint64_t offset, unsigned char *dst, uint64_t dst_len,
               const pfs_segment *segs, size_t nsegs, const uint64_t *local_start,
               const pfs_span *servers, uint32_t width);

#endif
