/* Stripe math: every result is derived from the formula in stripe.h, with each uint64 operation
 * checked before it can wrap. */
#include "stripe.h"

#include "pfs_errors.h"

/* Validates a layout and range, zeros (PFS_EINVAL) before ranges (PFS_ERANGE); on success *unit
 * is S*B. */
static int check_layout(uint64_t offset, uint64_t length, uint64_t block_size,
                        uint64_t stripe_blocks, uint32_t width, uint64_t *unit)
{
    if (block_size == 0 || stripe_blocks == 0 || width == 0)
        return PFS_EINVAL;
    if (width > PFS_MAX_WIDTH || stripe_blocks > UINT64_MAX / block_size)
        return PFS_ERANGE;
    if (length > UINT64_MAX - offset)
        return PFS_ERANGE;
    *unit = block_size * stripe_blocks;
    return PFS_OK;
}

/* Cannot overflow: (u / w) * unit <= u * unit <= off. */
static uint64_t local_of(uint64_t off, uint64_t unit, uint32_t width)
{
    return (off / unit / width) * unit + off % unit;
}

int pfs_stripe_count(uint64_t offset, uint64_t length, uint64_t block_size,
                     uint64_t stripe_blocks, size_t *count)
{
    uint64_t unit;
    int rc;

    if (count == NULL)
        return PFS_EINVAL;
    rc = check_layout(offset, length, block_size, stripe_blocks, 1, &unit);
    if (rc != PFS_OK)
        return rc;
    if (length == 0) {
        *count = 0;
        return PFS_OK;
    }
    uint64_t units = (offset + length - 1) / unit - offset / unit + 1;
#if SIZE_MAX < UINT64_MAX
    if (units > SIZE_MAX)
        return PFS_ERANGE;
#endif
    *count = (size_t)units;
    return PFS_OK;
}

int pfs_stripe_segments(uint64_t offset, uint64_t length, uint64_t block_size,
                        uint64_t stripe_blocks, uint32_t width,
                        pfs_segment *out, size_t cap, size_t *n)
{
    size_t count;
    uint64_t unit;
    int rc;

    if (n == NULL || (out == NULL && cap > 0))
        return PFS_EINVAL;
    rc = check_layout(offset, length, block_size, stripe_blocks, width, &unit);
    if (rc != PFS_OK)
        return rc;
    rc = pfs_stripe_count(offset, length, block_size, stripe_blocks, &count);
    if (rc != PFS_OK)
        return rc;
    if (count > cap) {
        *n = count;
        return PFS_ENOSPC;
    }

    uint64_t off = offset, left = length;
    for (size_t i = 0; i < count; i++) {
        uint64_t room = unit - off % unit; /* bytes to the end of this unit; never wraps */
        uint64_t len = left < room ? left : room;
        out[i].server = (uint32_t)(off / unit % width);
        out[i].local_offset = local_of(off, unit, width);
        out[i].file_offset = off;
        out[i].length = len;
        left -= len;
        off += len; /* <= offset + length, which fits */
    }
    *n = count;
    return PFS_OK;
}

int pfs_stripe_extents(uint64_t offset, uint64_t length, uint64_t block_size,
                       uint64_t stripe_blocks, uint32_t width,
                       uint64_t *local_start, uint64_t *local_len, size_t cap)
{
    uint64_t unit;
    int rc;

    if (local_start == NULL || local_len == NULL)
        return PFS_EINVAL;
    rc = check_layout(offset, length, block_size, stripe_blocks, width, &unit);
    if (rc != PFS_OK)
        return rc;
    if (cap < width)
        return PFS_ENOSPC;

    for (uint32_t s = 0; s < width; s++)
        local_start[s] = local_len[s] = 0;
    if (length == 0)
        return PFS_OK;

    uint64_t last_byte = offset + length - 1;
    uint64_t first = offset / unit, last = last_byte / unit;
    for (uint32_t s = 0; s < width; s++) {
        /* The server's first and last unit inside [first, last], found without a loop. */
        uint64_t ahead = ((uint64_t)s + width - first % width) % width;
        if (ahead > last - first)
            continue; /* the range is too short to reach this server */
        uint64_t u0 = first + ahead;
        uint64_t u1 = last - (last % width + width - s) % width;
        /* A partly covered end unit starts or stops mid-unit; any other unit is whole. */
        uint64_t start = u0 == first ? local_of(offset, unit, width) : (u0 / width) * unit;
        uint64_t stop = u1 == last ? local_of(last_byte, unit, width) + 1
                                   : (u1 / width) * unit + unit;
        local_start[s] = start;
        local_len[s] = stop - start;
    }
    return PFS_OK;
}
