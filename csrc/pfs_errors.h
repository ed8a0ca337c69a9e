/* Status codes shared by every routine of the C core: 0 (or a non-negative result such as a slot
 * index) means success, a negative value names the failure. The Python wrapper turns each negative
 * value into pfs._native.NativeError, in one place. */
#ifndef PFS_ERRORS_H
#define PFS_ERRORS_H

enum pfs_status {
    PFS_OK = 0,
    PFS_EINVAL = -1, /* bad argument: zero size, NULL pointer, input buffer too short, bad slot */
    PFS_ERANGE = -2, /* uint64 arithmetic would overflow, or a value is out of range */
    PFS_ENOSPC = -3, /* output too small, or table full */
    PFS_ENOENT = -4, /* not found */
    PFS_EEXIST = -5, /* already present */
    PFS_EMISS = -6   /* the fast path cannot serve this call: the caller takes the general one */
};

#endif
