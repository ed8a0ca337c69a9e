"""The protocol layer: what every PFS process agrees on, clients and servers alike.

Channels and credentials (transport), the raw data messages (wire) and their checksums, byte
ranges, paths, heartbeats and leases, capabilities, token modes, the errno convention of failed
calls (errnos), and the raw fileserver data calls (datacalls).

May import only the standard library, grpc, `pfs._native`, `pfs._proto` and `pfs.metadata`:
never the client (`pfs.client`, `pfs.datapath`, `pfs.runtime`) nor the servers. Servers import
nothing of `pfs` but this package, `pfs._native`, `pfs._proto` and `pfs.metadata`
(tests/test_layout.py checks both).
"""
