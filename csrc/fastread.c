/* The fast path's fd table: entry fd % slots holds fd's snapshot, or fd -1 when empty. A read
 * checks the entry, then every block (lookups that do not touch), and only then copies and
 * touches, so that a miss changes nothing. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c11 */

#include "fastread.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pfs_errors.h"

struct fd_entry {
    int64_t fd; /* -1: empty */
    uint64_t file, size, start, end, read_next;
};

struct pfs_fastread {
    pfs_blocktable *bt;
    const uint8_t *memory;
    const uint8_t *ready;
    uint64_t block_size;
    int64_t deadline_ns;
    uint64_t hits;
    uint32_t nslots;
    struct fd_entry *entries;
};

pfs_fastread *pfs_fr_new(pfs_blocktable *bt, const uint8_t *memory, size_t memory_len,
                         uint64_t block_size, const uint8_t *ready, size_t ready_len,
                         uint32_t slots)
{
    if (bt == NULL || memory == NULL || ready == NULL || block_size == 0 || slots == 0
        || slots > PFS_FR_MAX_SLOTS)
        return NULL;
    uint32_t capacity = pfs_bt_capacity(bt);
    /* capacity * block_size > memory_len, without a product that may wrap */
    if (ready_len < capacity || (capacity > 0 && block_size > memory_len / capacity))
        return NULL;
    pfs_fastread *fr = calloc(1, sizeof *fr);
    if (fr == NULL)
        return NULL;
    fr->entries = malloc(slots * sizeof *fr->entries);
    if (fr->entries == NULL) {
        free(fr);
        return NULL;
    }
    fr->bt = bt;
    fr->memory = memory;
    fr->ready = ready;
    fr->block_size = block_size;
    fr->nslots = slots;
    pfs_fr_deny_all(fr);
    return fr;
}

void pfs_fr_free(pfs_fastread *fr)
{
    if (fr == NULL)
        return;
    free(fr->entries);
    free(fr);
}

/* fd's entry if it has one, else NULL. */
static struct fd_entry *entry_of(pfs_fastread *fr, int64_t fd)
{
    if (fd < 0)
        return NULL;
    struct fd_entry *e = &fr->entries[(uint64_t)fd % fr->nslots];
    return e->fd == fd ? e : NULL;
}

int pfs_fr_allow(pfs_fastread *fr, int64_t fd, uint64_t file, uint64_t size, uint64_t start,
                 uint64_t end, uint64_t read_next)
{
    if (fr == NULL || fd < 0 || start > end)
        return PFS_EINVAL;
    struct fd_entry *e = &fr->entries[(uint64_t)fd % fr->nslots];
    *e = (struct fd_entry){fd, file, size, start, end, read_next};
    return PFS_OK;
}

int pfs_fr_deny(pfs_fastread *fr, int64_t fd, uint64_t *read_next)
{
    if (fr == NULL || read_next == NULL)
        return PFS_EINVAL;
    struct fd_entry *e = entry_of(fr, fd);
    if (e == NULL)
        return PFS_ENOENT;
    *read_next = e->read_next;
    e->fd = -1;
    return PFS_OK;
}

void pfs_fr_deny_all(pfs_fastread *fr)
{
    if (fr == NULL)
        return;
    for (uint32_t i = 0; i < fr->nslots; i++)
        fr->entries[i].fd = -1;
}

void pfs_fr_lease(pfs_fastread *fr, int64_t deadline_ns)
{
    if (fr != NULL)
        fr->deadline_ns = deadline_ns;
}

uint64_t pfs_fr_take_hits(pfs_fastread *fr)
{
    if (fr == NULL)
        return 0;
    uint64_t hits = fr->hits;
    fr->hits = 0;
    return hits;
}

/* Whether every block of [offset, end) of `file` is in the table and ready (touching none). */
static int all_ready(const pfs_fastread *fr, uint64_t file, uint64_t offset, uint64_t end)
{
    for (uint64_t b = offset / fr->block_size; b <= (end - 1) / fr->block_size; b++) {
        int slot = pfs_bt_lookup(fr->bt, file, b, 0);
        if (slot < 0 || fr->ready[slot] == 0)
            return 0;
    }
    return 1;
}

int64_t pfs_fr_read_at(pfs_fastread *fr, int64_t now_ns, int64_t fd, uint64_t offset,
                       uint64_t length, uint8_t *dst, size_t dst_len)
{
    if (fr == NULL || dst == NULL || dst_len < length)
        return PFS_EINVAL;
    struct fd_entry *e = entry_of(fr, fd);
    /* offset + length <= e->end is checked without a sum that may wrap */
    if (e == NULL || length == 0 || length > INT64_MAX || offset < e->start || offset > e->end
        || length > e->end - offset || offset == e->read_next || now_ns >= fr->deadline_ns)
        return PFS_EMISS;
    uint64_t end = offset + length;
    if (end > e->size || !all_ready(fr, e->file, offset, end))
        return PFS_EMISS;
    uint64_t B = fr->block_size, done = 0;
    while (done < length) {
        uint64_t at = offset + done, within = at % B;
        uint64_t piece = B - within < length - done ? B - within : length - done;
        int slot = pfs_bt_lookup(fr->bt, e->file, at / B, 1); /* found above: >= 0 */
        memmove(dst + done, fr->memory + (size_t)slot * B + within, (size_t)piece);
        done += piece;
        fr->hits++;
    }
    e->read_next = end;
    return (int64_t)length;
}

int64_t pfs_fr_read(pfs_fastread *fr, int64_t fd, uint64_t offset, uint64_t length,
                    uint8_t *dst, size_t dst_len)
{
    struct timespec now;
    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0)
        return PFS_EMISS;
    return pfs_fr_read_at(fr, (int64_t)now.tv_sec * 1000000000 + now.tv_nsec, fd, offset,
                          length, dst, dst_len);
}
