/* CRC32C (Castagnoli: polynomial 0x1EDC6F41, reflected 0x82F63B78, register started at all ones
 * and inverted at the end, as iSCSI and ext4 use it): crc32c("123456789") == 0xE3069283.
 *
 * A CRC continues: pass 0 to start, or the CRC of the bytes before to go on, so that
 * crc(a + b) == pfs_crc32c(pfs_crc32c(0, a), b). Each routine returns a non-negative result (a
 * CRC, a count, an index) or a negative PFS_E* status (pfs_errors.h); a CRC is below 2^32.
 *
 * Units: the storage path keeps one CRC per unit of U bytes (a file's units are aligned on
 * multiples of U). A buffer whose byte 0 lies first_offset bytes into its unit (0 <= first_offset
 * < U) is cut at every unit boundary into pieces: the first min(len, U - first_offset) bytes,
 * then U bytes each, the last piece what remains. len 0 has no piece. The argument checks, in
 * order: PFS_EINVAL for a NULL pointer with a nonzero length or a unit of 0; PFS_ERANGE for
 * first_offset >= unit, or a count of pieces above INT64_MAX; then the array checks of each
 * routine. Nothing is written on an error. */
#ifndef PFS_CRC32C_H
#define PFS_CRC32C_H

#include <stdint.h>

/* The CRC of crc's bytes followed by data[0..len), by the fastest implementation this CPU has.
 * PFS_EINVAL if data is NULL and len > 0. */
int64_t pfs_crc32c(uint32_t crc, const uint8_t *data, uint64_t len);

/* The same by the portable slicing-by-8 tables, whatever the CPU: what pfs_crc32c is checked
 * and measured against. */
int64_t pfs_crc32c_sw(uint32_t crc, const uint8_t *data, uint64_t len);

/* The name of the implementation pfs_crc32c uses on this CPU: "sse4.2" (x86-64 crc32 and
 * pclmulqdq instructions, three streams interleaved) or "slicing-by-8". */
const char *pfs_crc32c_implementation(void);

/* Writes the CRC of each piece (see above) to out[0..count) and returns count. PFS_ENOSPC if
 * out_len < count. */
int64_t pfs_crc32c_units(const uint8_t *data, uint64_t len, uint64_t unit,
                         uint64_t first_offset, uint32_t *out, uint64_t out_len);

/* Compares the CRC of each piece with expected[0..n) in order and returns the number of leading
 * pieces that match: n when all do, otherwise the index of the first that does not. PFS_EINVAL
 * unless n is exactly the number of pieces (a missing or extra CRC is a caller's error, never a
 * match). */
int64_t pfs_crc32c_verify(const uint8_t *data, uint64_t len, uint64_t unit,
                          uint64_t first_offset, const uint32_t *expected, uint64_t n);

/* The CRC of a + b from crc1 = CRC(a), crc2 = CRC(b) and len2 = len(b), without the bytes:
 * crc1 times x^(8 * len2) modulo the polynomial, plus crc2. O(log len2). */
uint32_t pfs_crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t len2);

#endif
