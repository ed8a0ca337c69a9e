"""`pfs mount`: PFS as a POSIX file system through FUSE (libfuse 3, via mfusepy: the extra
`pfs[mount]`). One mount is one Client session; every operation goes to PFS under its tokens,
with the kernel's page and attribute caches kept out, so the mount is sequentially consistent
with every other mount and client.

    daemon.py      the mount's life: options, mount, serve, unmount, write back
    unmounting.py  `pfs umount`, and the guard that unmounts a mount whose process died
    operations.py  the FUSE operations over the Client, and what is refused
    handles.py     FUSE file handles over the Client's fds
    binding.py     mfusepy against libfuse 3, zero-copy reads and writes

May import `pfs.client` and the layers below it; never the command line.
"""
