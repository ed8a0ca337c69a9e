/* CRC32C on the register (the CRC without its inversions): every routine here moves a raw
 * register, and only the public entry points invert it on the way in and out. Two
 * implementations, chosen per call from what the CPU reports (libgcc's CPU model, not state of
 * ours): the x86-64 crc32 instruction, three streams at a time, and slicing-by-8 tables
 * everywhere else. Both give the same register for the same bytes. */
#include "crc32c.h"

#include <string.h>

#include "crc32c_tables.h"
#include "pfs_errors.h"

#define ONES 0xFFFFFFFFu
#define POLY 0x82F63B78u
#define X0 0x80000000u /* the polynomial 1 (x^0), reflected */

typedef uint32_t crc_fn(uint32_t reg, const uint8_t *p, uint64_t n);

/* Slicing-by-8: eight bytes per step, each looked up in the table that moves it past the bytes
 * after it in the step. Bytes are read one by one, so neither alignment nor byte order matter. */
static uint32_t crc_table(uint32_t reg, const uint8_t *p, uint64_t n)
{
    for (; n >= 8; n -= 8, p += 8) {
        uint32_t lo = reg ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16
                             | (uint32_t)p[3] << 24);
        reg = crc32c_table[7][lo & 0xff] ^ crc32c_table[6][(lo >> 8) & 0xff]
              ^ crc32c_table[5][(lo >> 16) & 0xff] ^ crc32c_table[4][lo >> 24]
              ^ crc32c_table[3][p[4]] ^ crc32c_table[2][p[5]] ^ crc32c_table[1][p[6]]
              ^ crc32c_table[0][p[7]];
    }
    for (; n > 0; n--, p++)
        reg = (reg >> 8) ^ crc32c_table[0][(reg ^ *p) & 0xff];
    return reg;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_SSE42 1
#include <nmmintrin.h>
#include <wmmintrin.h>

/* Stream lengths in bytes: the long one for bulk, the short one so that a 4 KiB buffer is still
 * mostly done three streams at a time. Multiples of 8. */
enum { LONG = 8192, SHORT = 256 };

/* x^(8n - 33) mod P for n = 2 * LONG, LONG, then 2 * SHORT, SHORT (reference.xpow): see join. */
static const uint32_t SHIFT_LONG[2] = {0x1dc403cc, 0x54a86326};
static const uint32_t SHIFT_SHORT[2] = {0xdd7e3b0c, 0xb9e02b86};

static uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v); /* x86-64 is little-endian, as crc32q reads its operand */
    return v;
}

/* The register after three consecutive streams, given each stream's register computed alone
 * (the first from the incoming register, the others from 0): r0 * x^(16n) + r1 * x^(8n) + r2.
 * crc32q(0, v) is v * x^32 mod P for a 64-bit v, and a carry-less product of two reflected
 * 32-bit values is their product times x (reflected, 64 bits), so crc32q(0, clmul(r, k)) with
 * k = x^(8n - 33) is r * x^(8n) mod P. */
__attribute__((target("sse4.2,pclmul")))
static uint32_t join(uint32_t r0, uint32_t r1, uint32_t r2, const uint32_t shift[2])
{
    __m128i a = _mm_clmulepi64_si128(_mm_cvtsi64_si128((long long)r0),
                                     _mm_cvtsi64_si128((long long)shift[0]), 0x00);
    __m128i b = _mm_clmulepi64_si128(_mm_cvtsi64_si128((long long)r1),
                                     _mm_cvtsi64_si128((long long)shift[1]), 0x00);
    uint64_t both = (uint64_t)_mm_cvtsi128_si64(_mm_xor_si128(a, b));
    return (uint32_t)_mm_crc32_u64(0, both) ^ r2;
}

/* 3 * len bytes as three streams of len bytes run side by side: crc32q takes three cycles but
 * starts one per cycle, so one stream alone would leave the unit idle two cycles in three. */
__attribute__((target("sse4.2,pclmul")))
static uint32_t crc_3way(uint32_t reg, const uint8_t *p, uint64_t len, const uint32_t shift[2])
{
    uint64_t r0 = reg, r1 = 0, r2 = 0;
    for (uint64_t i = 0; i < len; i += 8) {
        r0 = _mm_crc32_u64(r0, load64(p + i));
        r1 = _mm_crc32_u64(r1, load64(p + len + i));
        r2 = _mm_crc32_u64(r2, load64(p + 2 * len + i));
    }
    return join((uint32_t)r0, (uint32_t)r1, (uint32_t)r2, shift);
}

__attribute__((target("sse4.2,pclmul")))
static uint32_t crc_sse42(uint32_t reg, const uint8_t *p, uint64_t n)
{
    for (; n > 0 && ((uintptr_t)p & 7) != 0; n--, p++)
        reg = _mm_crc32_u8(reg, *p);
    for (; n >= 3 * LONG; n -= 3 * LONG, p += 3 * LONG)
        reg = crc_3way(reg, p, LONG, SHIFT_LONG);
    for (; n >= 3 * SHORT; n -= 3 * SHORT, p += 3 * SHORT)
        reg = crc_3way(reg, p, SHORT, SHIFT_SHORT);
    uint64_t r = reg;
    for (; n >= 8; n -= 8, p += 8)
        r = _mm_crc32_u64(r, load64(p));
    reg = (uint32_t)r;
    for (; n > 0; n--, p++)
        reg = _mm_crc32_u8(reg, *p);
    return reg;
}
#endif

static crc_fn *fastest(void)
{
#ifdef HAVE_SSE42
    if (__builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("pclmul"))
        return crc_sse42;
#endif
    return crc_table;
}

const char *pfs_crc32c_implementation(void)
{
    return fastest() == crc_table ? "slicing-by-8" : "sse4.2";
}

static int64_t crc_with(crc_fn *fn, uint32_t crc, const uint8_t *data, uint64_t len)
{
    if (data == NULL && len > 0)
        return PFS_EINVAL;
    return fn(crc ^ ONES, data, len) ^ ONES;
}

int64_t pfs_crc32c(uint32_t crc, const uint8_t *data, uint64_t len)
{
    return crc_with(fastest(), crc, data, len);
}

int64_t pfs_crc32c_sw(uint32_t crc, const uint8_t *data, uint64_t len)
{
    return crc_with(crc_table, crc, data, len);
}

/* The common checks of the unit routines (crc32c.h), crcs being their CRC array of crcs_len
 * entries; on success *count is the number of pieces. */
static int count_pieces(const uint8_t *data, uint64_t len, uint64_t unit, uint64_t first_offset,
                        const uint32_t *crcs, uint64_t crcs_len, uint64_t *count)
{
    if ((data == NULL && len > 0) || (crcs == NULL && crcs_len > 0) || unit == 0)
        return PFS_EINVAL;
    if (first_offset >= unit)
        return PFS_ERANGE;
    uint64_t head = unit - first_offset; /* the first piece, when len reaches that far */
    if (len <= head) {
        *count = len > 0;
        return PFS_OK;
    }
    uint64_t rest = len - head;
    uint64_t n = 1 + rest / unit + (rest % unit != 0);
    if (n > INT64_MAX)
        return PFS_ERANGE;
    *count = n;
    return PFS_OK;
}

/* Walks the pieces in order: stores each CRC in out, or when out is NULL compares it with
 * expected and stops at the first that differs. Returns the number of pieces done. */
static uint64_t each_piece(const uint8_t *data, uint64_t len, uint64_t unit,
                           uint64_t first_offset, uint32_t *out, const uint32_t *expected,
                           uint64_t count)
{
    crc_fn *fn = fastest();
    uint64_t room = unit - first_offset;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t n = len < room ? len : room;
        uint32_t crc = fn(ONES, data, n) ^ ONES;
        if (out != NULL)
            out[i] = crc;
        else if (crc != expected[i])
            return i;
        data += n;
        len -= n;
        room = unit;
    }
    return count;
}

int64_t pfs_crc32c_units(const uint8_t *data, uint64_t len, uint64_t unit,
                         uint64_t first_offset, uint32_t *out, uint64_t out_len)
{
    uint64_t count;
    int rc = count_pieces(data, len, unit, first_offset, out, out_len, &count);
    if (rc != PFS_OK)
        return rc;
    if (count > out_len)
        return PFS_ENOSPC;
    return (int64_t)each_piece(data, len, unit, first_offset, out, NULL, count);
}

int64_t pfs_crc32c_verify(const uint8_t *data, uint64_t len, uint64_t unit,
                          uint64_t first_offset, const uint32_t *expected, uint64_t n)
{
    uint64_t count;
    int rc = count_pieces(data, len, unit, first_offset, expected, n, &count);
    if (rc != PFS_OK)
        return rc;
    if (n != count)
        return PFS_EINVAL;
    return (int64_t)each_piece(data, len, unit, first_offset, NULL, expected, count);
}

/* a * b mod P, both reflected: b is multiplied by x once per bit of a, from x^0 (bit 31) up. */
static uint32_t multmodp(uint32_t a, uint32_t b)
{
    uint32_t product = 0;
    for (int i = 0; i < 32; i++) {
        product ^= b & (0u - (a >> 31));
        a <<= 1;
        b = (b >> 1) ^ (POLY & (0u - (b & 1)));
    }
    return product;
}

uint32_t pfs_crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t len2)
{
    uint32_t shift = X0; /* x^(8 * len2), one bit of len2 at a time */
    for (int k = 0; len2 != 0; k++, len2 >>= 1)
        if (len2 & 1)
            shift = multmodp(crc32c_x8_pow2[k], shift);
    return multmodp(shift, crc1) ^ crc2;
}
