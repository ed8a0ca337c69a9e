/* Scatter/gather: one validation pass over all segments, then one memcpy per segment, so a bad
 * argument is reported before any byte is written. */
#include "scatter.h"

#include <string.h>

#include "pfs_errors.h"

/* Checks that every segment lies inside the caller buffer and inside its server's buffer.
 * caller_short / server_short are the codes for a buffer that is too short on either side: the
 * input side is PFS_EINVAL, the output side PFS_ENOSPC. */
static int check_segments(uint64_t offset, const unsigned char *caller, uint64_t caller_len,
                          const pfs_segment *segs, size_t nsegs, const uint64_t *local_start,
                          const pfs_span *servers, uint32_t width,
                          int caller_short, int server_short)
{
    if (width == 0)
        return PFS_EINVAL;
    if (width > PFS_MAX_WIDTH)
        return PFS_ERANGE;
    if (nsegs > 0 && (segs == NULL || local_start == NULL || servers == NULL))
        return PFS_EINVAL;
    for (size_t i = 0; i < nsegs; i++) {
        const pfs_segment *sg = &segs[i];
        if (sg->server >= width)
            return PFS_EINVAL;
        if (sg->length == 0)
            continue;
        if (sg->file_offset < offset || sg->local_offset < local_start[sg->server])
            return PFS_EINVAL;
        uint64_t at = sg->file_offset - offset;
        if (caller == NULL || at > caller_len || sg->length > caller_len - at)
            return caller_short;
        const pfs_span *sv = &servers[sg->server];
        uint64_t local = sg->local_offset - local_start[sg->server];
        if (sv->data == NULL || local > sv->len || sg->length > sv->len - local)
            return server_short;
    }
    return PFS_OK;
}

/* One memcpy per segment, after check_segments: towards the servers or back. */
static void copy_segments(int to_servers, uint64_t offset, unsigned char *caller,
                          const pfs_segment *segs, size_t nsegs, const uint64_t *local_start,
                          const pfs_span *servers)
{
    for (size_t i = 0; i < nsegs; i++) {
        const pfs_segment *sg = &segs[i];
        if (sg->length == 0)
            continue;
        unsigned char *here = caller + (sg->file_offset - offset);
        unsigned char *there = servers[sg->server].data
                               + (sg->local_offset - local_start[sg->server]);
        if (to_servers)
            memcpy(there, here, (size_t)sg->length);
        else
            memcpy(here, there, (size_t)sg->length);
    }
}

int pfs_scatter(uint64_t offset, const unsigned char *src, uint64_t src_len,
                const pfs_segment *segs, size_t nsegs, const uint64_t *local_start,
                const pfs_span *servers, uint32_t width)
{
    int rc = check_segments(offset, src, src_len, segs, nsegs, local_start, servers, width,
                            PFS_EINVAL, PFS_ENOSPC);
    if (rc == PFS_OK)  /* src is only read: the cast drops const for the shared copier */
        copy_segments(1, offset, (unsigned char *)src, segs, nsegs, local_start, servers);
    return rc;
}

int pfs_gather(uint64_t offset, unsigned char *dst, uint64_t dst_len,
               const pfs_segment *segs, size_t nsegs, const uint64_t *local_start,
               const pfs_span *servers, uint32_t width)
{
    int rc = check_segments(offset, dst, dst_len, segs, nsegs, local_start, servers, width,
                            PFS_ENOSPC, PFS_EINVAL);
    if (rc == PFS_OK)
        copy_segments(0, offset, dst, segs, nsegs, local_start, servers);
    return rc;
}
