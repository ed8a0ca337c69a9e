"""Who may do what (README, "Who may do what"): only fileservers holding the cluster key attach,
fileservers never see a session's key, and every data call needs a capability, signed by the
metaserver, for its file, range, mode and fileserver. Each attack below is refused and changes
nothing stored."""
import errno
import time

import grpc
import pytest

import pfs
from pfs.protocol import capability, wire
from pfs.protocol.datacalls import read_units
from pfs._proto import fileserver_pb2 as fs_pb
from pfs._proto import fileserver_pb2_grpc as fs_grpc
from pfs._proto import metaserver_pb2 as pb
from pfs._proto import metaserver_pb2_grpc as pb_grpc
from pfs.protocol.errnos import ERRNO_HEADER
from pfs.protocol.ranges import INFINITY
from pfs_servers import clusterkey
from clusters import read_file, wait_until, write_file

CONTENT = bytes(range(256)) * 8  # 2 KiB: 1 KiB stripe units, so columns 0 and 1


@pytest.fixture
def held(clients, name):
    """A client that holds a READ token on all of `name` (and its capabilities), the file's id
    and the fileservers of its two columns; the file is checked intact afterwards."""
    writer = clients(1)
    write_file(writer, name, CONTENT, width=2)
    reader = clients(1)
    fd = reader.pfs_open(name, pfs.PFS_READ)
    assert reader.pfs_read(fd, bytearray(len(CONTENT)), len(CONTENT), 0) == len(CONTENT)
    f = reader._fds[fd]
    servers = [reader.fileservers()[i] for i in f.recipe.servers]
    yield reader, f, servers
    assert read_file(clients(1), name, len(CONTENT)) == CONTENT


def call(address: str, method: str, request: bytes, capabilities) -> grpc.RpcError | bytes:
    """A raw data call with `capabilities` (signed blobs); its reply, or its error."""
    with grpc.insecure_channel(address) as channel:
        try:
            return channel.unary_unary(method)(
                request, timeout=10, metadata=[(capability.HEADER, c) for c in capabilities])
        except grpc.RpcError as e:
            return e


def refused(result, code: int = errno.EACCES) -> str:
    assert isinstance(result, grpc.RpcError), f"accepted: {result!r}"
    assert result.code() == grpc.StatusCode.PERMISSION_DENIED, result
    assert dict(result.trailing_metadata() or ()).get(ERRNO_HEADER) == str(code), result
    return result.details()


def test_a_read_capability_reads_and_nothing_more(held):
    reader, f, servers = held
    read_caps = f.held.for_call(0, 0, INFINITY, capability.READ)
    assert read_caps
    reply = call(servers[0], wire.READ_METHOD, wire.read_request(f.file_id, 0, 16), read_caps)
    assert wire.parse_read_reply(reply)[2][:16] == CONTENT[:16]
    # Not a write, not another file, not another column's fileserver, not without it.
    assert "write" in refused(call(servers[0], wire.WRITE_METHOD,
                                   wire.write_request(f.file_id, 0, b"EVIL"), read_caps))
    refused(call(servers[0], wire.READ_METHOD, wire.read_request(f.file_id + 1, 0, 16),
                 read_caps))
    refused(call(servers[1], wire.READ_METHOD, wire.read_request(f.file_id, 0, 16), read_caps))
    refused(call(servers[0], wire.READ_METHOD, wire.read_request(f.file_id, 0, 16), []))
    with grpc.insecure_channel(servers[0]) as channel:
        truncate = fs_grpc.FileServerStub(channel).Truncate
        with pytest.raises(grpc.RpcError) as e:
            truncate(fs_pb.TruncateRequest(file_id=f.file_id, length=0, keep=0), timeout=10,
                     metadata=[(capability.HEADER, c) for c in read_caps])
        refused(e.value)


def test_a_capability_cannot_be_widened_or_forged(held):
    reader, f, servers = held
    blob = f.held.for_call(0, 0, INFINITY, capability.READ)[0]
    parsed = capability.Capability.parse(blob)
    request = wire.write_request(f.file_id, 0, b"EVIL")
    # Its fields changed (a WRITE mode, another client) break the signature.
    as_write = blob[:16] + bytes([capability.WRITE]) + blob[17:]
    assert "signature" in refused(call(servers[0], wire.WRITE_METHOD, request, [as_write]))
    other_client = (parsed.client_id + 1).to_bytes(8, "little")
    assert "signature" in refused(call(servers[0], wire.READ_METHOD,
                                       wire.read_request(f.file_id, 0, 4),
                                       [blob[:8] + other_client + blob[16:]]))
    # One signed with another key is not this cluster's.
    forged = capability.Signer(b"k" * 32).sign(f.file_id, parsed.client_id, capability.WRITE,
                                               0, INFINITY, parsed.expires, parsed.servers)
    refused(call(servers[0], wire.WRITE_METHOD, request, [forged]))
    assert "short" in refused(call(servers[0], wire.READ_METHOD,
                                   wire.read_request(f.file_id, 0, 4), [b"junk"]))


def test_a_capability_served_before_still_expires(held, cluster):
    """A fileserver checks a capability's signature once (it remembers the bytes it verified),
    but its expiry on every call: the same bytes, good a moment ago, are refused once it ran
    out."""
    reader, f, servers = held
    parsed = capability.Capability.parse(f.held.for_call(0, 0, INFINITY, capability.READ)[0])
    expires = time.time() + 3
    blob = capability.Signer(clusterkey.load(cluster.key_file)).sign(
        f.file_id, parsed.client_id, capability.READ, 0, INFINITY, expires, parsed.servers)
    request = wire.read_request(f.file_id, 0, 16)
    reply = call(servers[0], wire.READ_METHOD, request, [blob])
    assert isinstance(reply, bytes), reply
    assert bytes(read_units(reply).data[:16]) == CONTENT[:16]
    time.sleep(max(0.0, expires - time.time()))
    wait_until(lambda: isinstance(call(servers[0], wire.READ_METHOD, request, [blob]),
                                  grpc.RpcError), what="the capability to expire")
    assert "expired" in refused(call(servers[0], wire.READ_METHOD, request, [blob]),
                                errno.EKEYEXPIRED)


def test_a_stolen_session_key_writes_nothing(held, clients, name):
    """With a victim's session key but no token, no byte of its file can be written: data
    calls are judged by capabilities, and a key proves nothing to a fileserver."""
    reader, f, servers = held
    for address in servers:
        result = call(address, wire.WRITE_METHOD, wire.write_request(f.file_id, 0, b"EVIL"), [])
        refused(result)


def test_only_holders_of_the_cluster_key_attach_as_fileservers(cluster, clients):
    hello = pb.FileserverMessage(hello=pb.FileserverHello(
        server_uuid="impostor", address="127.0.0.1:1", name="impostor"))
    with grpc.insecure_channel(cluster.address) as channel:
        stub = pb_grpc.MetaServerStub(channel)
        for proof in ((), ((clusterkey.ATTACH_HEADER, clusterkey.attach_proof(b"g" * 32)),)):
            with pytest.raises(grpc.RpcError) as e:
                list(stub.Attach(iter([hello]), metadata=proof, timeout=10))
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "cluster key" in e.value.details()
        status = stub.Status(pb.StatusRequest(), timeout=10)
    assert len(status.fileservers) == 4 and all(f.name != "impostor" for f in status.fileservers)
