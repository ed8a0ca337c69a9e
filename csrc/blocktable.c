/* Block table: a chained hash table over the slots (chains threaded through the entries, bucket
 * heads in `buckets`) gives O(1) expected lookup; a doubly linked list through the occupied slots,
 * newest first, gives O(1) touch and eviction; a stack holds the free slots. Invariant: a slot is
 * on exactly one of (its hash chain and the LRU list) or (the free stack). */
#include "blocktable.h"

#include <stdlib.h>
#include <string.h>

#include "pfs_errors.h"

#define NIL UINT32_MAX /* "no slot": larger than any slot index */

struct entry {
    uint64_t file;
    uint64_t block;
    uint32_t chain; /* next slot in the same hash bucket */
    uint32_t newer; /* LRU neighbours */
    uint32_t older;
    unsigned char used;
};

struct pfs_blocktable {
    uint32_t capacity;
    uint32_t count;
    uint32_t bucket_mask; /* bucket count - 1; the count is a power of two >= 2 * capacity */
    uint32_t newest;      /* LRU list ends, NIL when empty */
    uint32_t oldest;
    uint32_t nfree;
    uint32_t *buckets;
    uint32_t *free_slots;
    struct entry *entries;
};

/* splitmix64's finalizer: block numbers of one file are consecutive and must spread out. */
static uint32_t bucket_of(const pfs_blocktable *bt, uint64_t file, uint64_t block)
{
    uint64_t h = file * 0x9E3779B97F4A7C15u ^ block;
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9u;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBu;
    h ^= h >> 31;
    return (uint32_t)h & bt->bucket_mask;
}

pfs_blocktable *pfs_bt_new(uint32_t capacity)
{
    if (capacity > PFS_BT_MAX_CAPACITY)
        return NULL;
    pfs_blocktable *bt = calloc(1, sizeof *bt);
    if (bt == NULL)
        return NULL;
    uint32_t nbuckets = 1;
    while (nbuckets < 2 * capacity)
        nbuckets *= 2;
    size_t nslots = capacity > 0 ? capacity : 1; /* calloc(0) may legally return NULL */
    bt->capacity = capacity;
    bt->bucket_mask = nbuckets - 1;
    bt->newest = bt->oldest = NIL;
    bt->buckets = malloc(nbuckets * sizeof *bt->buckets);
    bt->free_slots = malloc(nslots * sizeof *bt->free_slots);
    bt->entries = calloc(nslots, sizeof *bt->entries);
    if (bt->buckets == NULL || bt->free_slots == NULL || bt->entries == NULL) {
        pfs_bt_free(bt);
        return NULL;
    }
    for (uint32_t i = 0; i < nbuckets; i++)
        bt->buckets[i] = NIL;
    /* Pushed highest first so that slots are handed out from 0 upwards. */
    for (uint32_t i = 0; i < capacity; i++)
        bt->free_slots[i] = capacity - 1 - i;
    bt->nfree = capacity;
    return bt;
}

void pfs_bt_free(pfs_blocktable *bt)
{
    if (bt == NULL)
        return;
    free(bt->buckets);
    free(bt->free_slots);
    free(bt->entries);
    free(bt);
}

uint32_t pfs_bt_capacity(const pfs_blocktable *bt)
{
    return bt == NULL ? 0 : bt->capacity;
}

uint32_t pfs_bt_count(const pfs_blocktable *bt)
{
    return bt == NULL ? 0 : bt->count;
}

/* The key's slot, or NIL; *link is then the chain link that points at it (for unlinking). */
static uint32_t find(pfs_blocktable *bt, uint64_t file, uint64_t block, uint32_t **link)
{
    uint32_t *at = &bt->buckets[bucket_of(bt, file, block)];
    while (*at != NIL) {
        struct entry *e = &bt->entries[*at];
        if (e->file == file && e->block == block)
            break;
        at = &e->chain;
    }
    if (link != NULL)
        *link = at;
    return *at;
}

static void lru_unlink(pfs_blocktable *bt, uint32_t slot)
{
    struct entry *e = &bt->entries[slot];
    if (e->newer != NIL)
        bt->entries[e->newer].older = e->older;
    else
        bt->newest = e->older;
    if (e->older != NIL)
        bt->entries[e->older].newer = e->newer;
    else
        bt->oldest = e->newer;
}

static void lru_push_newest(pfs_blocktable *bt, uint32_t slot)
{
    struct entry *e = &bt->entries[slot];
    e->newer = NIL;
    e->older = bt->newest;
    if (bt->newest != NIL)
        bt->entries[bt->newest].newer = slot;
    else
        bt->oldest = slot;
    bt->newest = slot;
}

/* Makes an occupied slot the most recently used. */
static void touch_slot(pfs_blocktable *bt, uint32_t slot)
{
    if (slot != bt->newest) {
        lru_unlink(bt, slot);
        lru_push_newest(bt, slot);
    }
}

int pfs_bt_lookup(pfs_blocktable *bt, uint64_t file, uint64_t block, int touch)
{
    if (bt == NULL)
        return PFS_EINVAL;
    uint32_t slot = find(bt, file, block, NULL);
    if (slot == NIL)
        return PFS_ENOENT;
    if (touch)
        touch_slot(bt, slot);
    return (int)slot;
}

int pfs_bt_insert(pfs_blocktable *bt, uint64_t file, uint64_t block)
{
    uint32_t *link;
    if (bt == NULL)
        return PFS_EINVAL;
    if (find(bt, file, block, &link) != NIL)
        return PFS_EEXIST;
    if (bt->nfree == 0)
        return PFS_ENOSPC;
    uint32_t slot = bt->free_slots[--bt->nfree];
    struct entry *e = &bt->entries[slot];
    e->file = file;
    e->block = block;
    e->used = 1;
    e->chain = NIL;
    *link = slot; /* link is the chain's NIL end */
    lru_push_newest(bt, slot);
    bt->count++;
    return (int)slot;
}

int pfs_bt_remove(pfs_blocktable *bt, uint64_t file, uint64_t block)
{
    uint32_t *link;
    if (bt == NULL)
        return PFS_EINVAL;
    uint32_t slot = find(bt, file, block, &link);
    if (slot == NIL)
        return PFS_ENOENT;
    struct entry *e = &bt->entries[slot];
    *link = e->chain;
    lru_unlink(bt, slot);
    e->used = 0;
    bt->free_slots[bt->nfree++] = slot;
    bt->count--;
    return (int)slot;
}

int pfs_bt_lru(const pfs_blocktable *bt)
{
    if (bt == NULL)
        return PFS_EINVAL;
    return bt->oldest == NIL ? PFS_ENOENT : (int)bt->oldest;
}

int pfs_bt_key(const pfs_blocktable *bt, uint32_t slot, uint64_t *file, uint64_t *block)
{
    if (bt == NULL || file == NULL || block == NULL || slot >= bt->capacity)
        return PFS_EINVAL;
    const struct entry *e = &bt->entries[slot];
    if (!e->used)
        return PFS_ENOENT;
    *file = e->file;
    *block = e->block;
    return PFS_OK;
}

int pfs_bt_file_slots(const pfs_blocktable *bt, uint64_t file, uint32_t *out, size_t cap,
                      size_t *n)
{
    if (bt == NULL || n == NULL || (out == NULL && cap > 0))
        return PFS_EINVAL;
    size_t found = 0;
    for (uint32_t s = bt->newest; s != NIL; s = bt->entries[s].older) {
        if (bt->entries[s].file != file)
            continue;
        if (found < cap)
            out[found] = s;
        found++;
    }
    *n = found;
    return found > cap ? PFS_ENOSPC : PFS_OK;
}

/* The checks pfs_bt_read and pfs_bt_write share, zeros and short buffers (PFS_EINVAL) before
 * ranges (PFS_ERANGE). Once they pass, every slot's block lies inside memory (slot < capacity and
 * capacity * block_size <= memory_len), and byte counts fit the int64_t result. */
static int check_io(const pfs_blocktable *bt, uint64_t offset, uint64_t length,
                    const uint8_t *memory, size_t memory_len, uint64_t block_size,
                    const uint8_t *ready, const uint8_t *caller, size_t caller_len,
                    const uint32_t *blocks)
{
    if (bt == NULL || memory == NULL || ready == NULL || caller == NULL || blocks == NULL)
        return PFS_EINVAL;
    if (block_size == 0 || caller_len < length)
        return PFS_EINVAL;
    /* capacity * block_size > memory_len, without computing a product that may wrap */
    if (bt->capacity > 0 && block_size > memory_len / bt->capacity)
        return PFS_EINVAL;
    if (length > UINT64_MAX - offset || length > INT64_MAX)
        return PFS_ERANGE;
    return PFS_OK;
}

/* The slot of the block holding file byte `at` if that block is in the table and ready, else
 * NIL; *within is the byte's offset in its block and *piece the bytes from there to the end of
 * the block or of the range (`left` bytes), whichever comes first. */
static uint32_t ready_slot(pfs_blocktable *bt, uint64_t file, uint64_t at, uint64_t left,
                           uint64_t block_size, const uint8_t *ready, uint64_t *within,
                           uint64_t *piece)
{
    uint32_t slot = find(bt, file, at / block_size, NULL);
    if (slot == NIL || ready[slot] == 0)
        return NIL;
    *within = at % block_size;
    *piece = block_size - *within < left ? block_size - *within : left;
    return slot;
}

/* Copies between a caller's buffer and the cached, ready blocks of [offset, offset + length),
 * block by block from the first, stopping at the first block that is not there: out of the cache
 * into `out`, or, when `dirty` is given, from `in` into the cache, marking each block dirty. */
static int64_t copy_hits(pfs_blocktable *bt, uint64_t file, uint64_t offset, uint64_t length,
                         uint8_t *memory, uint64_t block_size, const uint8_t *ready,
                         uint8_t *dirty, uint8_t *out, const uint8_t *in, uint32_t *blocks)
{
    uint64_t done = 0, within, piece;
    uint32_t n = 0;
    while (done < length) {
        uint32_t slot = ready_slot(bt, file, offset + done, length - done, block_size, ready,
                                   &within, &piece);
        if (slot == NIL)
            break;
        uint8_t *cached = memory + (size_t)slot * block_size + within;
        if (dirty != NULL) {
            memmove(cached, in + done, (size_t)piece);
            dirty[slot] = 1;
        } else {
            memmove(out + done, cached, (size_t)piece);
        }
        touch_slot(bt, slot);
        done += piece;
        n++;
    }
    *blocks = n;
    return (int64_t)done;
}

int64_t pfs_bt_read(pfs_blocktable *bt, uint64_t file, uint64_t offset, uint64_t length,
                    const uint8_t *memory, size_t memory_len, uint64_t block_size,
                    const uint8_t *ready, uint8_t *dst, size_t dst_len, uint32_t *blocks)
{
    int rc = check_io(bt, offset, length, memory, memory_len, block_size, ready, dst, dst_len,
                      blocks);
    if (rc != PFS_OK)
        return rc;
    /* Read-only here: copy_hits writes the cache's memory only when given `dirty`. */
    return copy_hits(bt, file, offset, length, (uint8_t *)memory, block_size, ready, NULL, dst,
                     NULL, blocks);
}

int64_t pfs_bt_write(pfs_blocktable *bt, uint64_t file, uint64_t offset, uint64_t length,
                     uint8_t *memory, size_t memory_len, uint64_t block_size,
                     const uint8_t *ready, uint8_t *dirty, const uint8_t *src, size_t src_len,
                     uint32_t *blocks)
{
    if (dirty == NULL)
        return PFS_EINVAL;
    int rc = check_io(bt, offset, length, memory, memory_len, block_size, ready, src, src_len,
                      blocks);
    if (rc != PFS_OK)
        return rc;
    return copy_hits(bt, file, offset, length, memory, block_size, ready, dirty, NULL, src,
                     blocks);
}

int pfs_bt_evictable(const pfs_blocktable *bt, const uint8_t *busy)
{
    if (bt == NULL || busy == NULL)
        return PFS_EINVAL;
    for (uint32_t s = bt->oldest; s != NIL; s = bt->entries[s].newer)
        if (busy[s] == 0)
            return (int)s;
    return PFS_ENOENT;
}
