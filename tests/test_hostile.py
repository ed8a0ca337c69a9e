"""Bad requests straight over gRPC: each gets a clear error, and nothing stored changes."""
import grpc
import pytest

import pfs
from pfs._proto import fileserver_pb2 as fs_pb
from pfs._proto import fileserver_pb2_grpc as fs_grpc
from pfs._proto import metaserver_pb2 as meta_pb
from pfs._proto import metaserver_pb2_grpc as meta_grpc
from pfs.protocol import wire
from pfs.protocol.transport import CHANNEL_OPTIONS, MAX_MESSAGE
from pfs_servers import clusterkey
from clusters import read_file, write_file

CONTENT = bytes(range(256)) * 4


@pytest.fixture
def stored(clients, name):
    """A file holding CONTENT on every fileserver, and its id; checked intact afterwards."""
    client = clients(1)
    write_file(client, name, CONTENT)
    file_id = client._session.call("Stat", meta_pb.StatRequest(path=name), "stat").meta.file_id
    yield client, file_id
    assert read_file(client, name, len(CONTENT)) == CONTENT


def refused(call, code=grpc.StatusCode.INVALID_ARGUMENT) -> str:
    with pytest.raises(grpc.RpcError) as e:
        call()
    assert e.value.code() in (code if isinstance(code, tuple) else (code,)), e.value
    assert e.value.details()
    return e.value.details()


def data_calls(channel):
    """The raw-bytes read and write calls of a fileserver (pfs/wire.py)."""
    return channel.unary_unary(wire.READ_METHOD), channel.unary_unary(wire.WRITE_METHOD)


def test_fileserver_validates_every_request(stored):
    client, file_id = stored
    session = client._session.metadata  # a live session: only the numbers are wrong
    address = next(iter(client.fileservers().values()))
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        read, write = data_calls(channel)
        assert "file id" in refused(lambda: read(wire.read_request(0, 0, 1), metadata=session))
        refused(lambda: write(wire.write_request((1 << 64) - 1, 0, b"x"), metadata=session))
        assert "per request" in refused(lambda: read(wire.read_request(file_id, 0, 1 << 40),
                                                     metadata=session))
        refused(lambda: write(wire.write_request(file_id, (1 << 64) - 1, b"x"),
                              metadata=session))
        stub = fs_grpc.FileServerStub(channel)
        refused(lambda: stub.Fsync(fs_pb.FsyncRequest(file_id=0), metadata=session))
        refused(lambda: stub.Truncate(fs_pb.TruncateRequest(file_id=file_id, length=1 << 62),
                                      metadata=session))


def test_truncated_and_oversized_messages_are_refused(stored):
    client, file_id = stored
    session = client._session.metadata
    address = next(iter(client.fileservers().values()))
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        read, write = data_calls(channel)
        assert "header" in refused(lambda: write(b"\xff" * 7, metadata=session))  # cut short
        assert "24 bytes" in refused(lambda: read(wire.read_request(file_id, 0, 4)[:-3],
                                                  metadata=session))
        assert "24 bytes" in refused(lambda: read(b"", metadata=session))
        raw_truncate = channel.unary_unary("/pfs.fileserver.FileServer/Truncate")
        assert "not a valid TruncateRequest" in refused(  # not protobuf
            lambda: raw_truncate(b"\xff" * 7, metadata=session))
    with grpc.insecure_channel(address) as small_channel:  # default limits on our side only
        _, write = data_calls(small_channel)
        refused(lambda: write(wire.write_request(file_id, 0, b"z" * MAX_MESSAGE),
                              metadata=session), grpc.StatusCode.RESOURCE_EXHAUSTED)


def test_metaserver_validates_every_request(cluster, stored, name):
    client, file_id = stored
    session = client._session.metadata
    with grpc.insecure_channel(client.metaserver) as channel:
        stub = meta_grpc.MetaServerStub(channel)
        refused(lambda: stub.Create(meta_pb.CreateRequest(path="../etc/passwd", stripe_width=1),
                                    metadata=session))
        refused(lambda: stub.Create(meta_pb.CreateRequest(path="x", stripe_width=99),
                                    metadata=session))
        refused(lambda: stub.Acquire(meta_pb.AcquireRequest(
            file_id=file_id, start=10, end=5, mode=meta_pb.WRITE), metadata=session))  # not open
        refused(lambda: stub.SetAttr(meta_pb.SetAttrRequest(file_id=file_id, mode=0o777),
                                     metadata=session))  # by id: only a file the caller has open
        fd = client.pfs_open(name, pfs.PFS_READ)
        refused(lambda: stub.Acquire(meta_pb.AcquireRequest(
            file_id=file_id, start=10, end=5, mode=meta_pb.WRITE), metadata=session))
        refused(lambda: stub.Acquire(meta_pb.AcquireRequest(
            file_id=file_id, start=0, end=5, mode=0), metadata=session))
        refused(lambda: stub.Acquire(meta_pb.AcquireRequest(
            file_id=file_id, start=0, end=1 << 63, mode=meta_pb.READ), metadata=session))
        assert client.pfs_close(fd) == 0
        refused(lambda: stub.Stat(meta_pb.StatRequest(path="no-such-file")),
                grpc.StatusCode.NOT_FOUND)
        long_name = "n" * 1_000_000  # quoted back only briefly, so the error still fits
        assert len(refused(lambda: stub.Stat(meta_pb.StatRequest(path=long_name)))) < 300
        proof = ((clusterkey.ATTACH_HEADER, clusterkey.attach_proof(clusterkey.load(
            cluster.key_file))),)  # the operator's: only fileservers of the cluster hold it
        attach = stub.Attach(iter([meta_pb.FileserverMessage(heartbeat=meta_pb.Heartbeat())]),
                             metadata=proof)
        refused(lambda: list(attach))
        attach = stub.Attach(iter([meta_pb.FileserverMessage(hello=meta_pb.FileserverHello(
            server_uuid="u", address="no-port"))]), metadata=proof)
        refused(lambda: list(attach))


def test_sizes_no_writer_could_have_produced_are_refused(clients, name):
    """A size is believed only from a client that could have written it: beyond 1 PiB, beyond
    the bytes its WRITE tokens cover, or beyond what the fileservers hold. A refused call
    changes nothing: the file keeps its size and can still be closed, read and deleted."""
    client = clients(1)
    fd = write_file(client, name, CONTENT, close=False)  # holds [0, inf)
    assert client.pfs_fsync(fd) == 0
    file_id = client._fds[fd].file_id
    session = client._session.metadata
    with grpc.insecure_channel(client.metaserver) as channel:
        stub = meta_grpc.MetaServerStub(channel)
        refused(lambda: stub.Close(meta_pb.CloseRequest(file_id=file_id, size=(1 << 64) - 1,
                                                        wrote=True), metadata=session))
        assert "never written" in refused(lambda: stub.ReportSize(
            meta_pb.ReportSizeRequest(file_id=file_id, size=10 ** 12), metadata=session))
        assert "never written" in refused(lambda: stub.Close(
            meta_pb.CloseRequest(file_id=file_id, size=len(CONTENT) + 1, wrote=True),
            metadata=session))
    other = clients(1)
    assert other.stat(name).file_size == len(CONTENT)
    assert client.pfs_close(fd) == 0
    assert other.stat(name).file_size == len(CONTENT)
    fd = other.pfs_open(name, pfs.PFS_READ)
    with grpc.insecure_channel(client.metaserver) as channel:  # no WRITE token at all
        stub = meta_grpc.MetaServerStub(channel)
        assert "WRITE token" in refused(lambda: stub.ReportSize(meta_pb.ReportSizeRequest(
            file_id=file_id, size=len(CONTENT) + 5), metadata=other._session.metadata))
    buf = bytearray(len(CONTENT) + 10)
    assert other.pfs_read(fd, buf, len(buf), 0) == len(CONTENT)
    assert other.pfs_close(fd) == 0
    assert other.pfs_delete(name) == 0


def receipts_of(client, fd) -> list[bytes]:
    """The receipts the client keeps for its writes through fd (pfs/protocol/receipts.py)."""
    return [r.blob for r in client._fds[fd].receipts._furthest.values()]


def test_receipts_that_do_not_show_the_bytes_are_refused(clients, name):
    """A receipt is believed only as the fileserver signed it, for its own file: a forged or
    altered one, or one of another file, says nothing, the fileserver is asked, and a size
    beyond what it holds is refused as before."""
    client = clients(1, cache_blocks=0)
    fd = write_file(client, name, CONTENT, close=False)  # column 0's first stripe unit
    other = write_file(client, name + "-other", CONTENT * 8, close=False)  # 2 KiB per column
    assert client.pfs_fsync(fd) == 0 and client.pfs_fsync(other) == 0  # (written behind)
    own = receipts_of(client, fd)
    assert len(own) == 1
    others = receipts_of(client, other)
    assert len(others) == 4
    lie = 4 * len(CONTENT) + 100  # its last byte: column 0, local 1123, never written
    altered = bytearray(own[0])
    altered[26:34] = (1 << 20).to_bytes(8, "little")  # the end of the range it shows
    file_id = client._fds[fd].file_id
    session = client._session.metadata
    with grpc.insecure_channel(client.metaserver) as channel:
        stub = meta_grpc.MetaServerStub(channel)
        for receipts in ([bytes(altered)], others, [bytes(74)], [b"short"]):
            assert "never written" in refused(lambda: stub.Close(meta_pb.CloseRequest(
                file_id=file_id, size=lie, wrote=True, receipts=receipts), metadata=session))
            assert "never written" in refused(lambda: stub.ReportSize(meta_pb.ReportSizeRequest(
                file_id=file_id, size=lie, receipts=receipts), metadata=session))
    assert client.pfs_close(fd) == 0 and client.pfs_close(other) == 0
    assert client.stat(name).file_size == len(CONTENT)


def test_a_receipt_from_before_another_clients_truncate_is_refused(clients, name):
    """Bytes a receipt showed stored, cut since by another client's truncate, are not believed
    stored: neither from the writer, which takes a WRITE token on them again, nor from the
    client that cut them (a receipt is its writer's only)."""
    writer, cutter = clients(2, cache_blocks=0)
    fd = write_file(writer, name, CONTENT, close=False)
    assert writer.pfs_fsync(fd) == 0  # (written behind)
    receipts = receipts_of(writer, fd)
    assert len(receipts) == 1
    cut = cutter.pfs_open(name, pfs.PFS_READ_WRITE)
    assert cutter.pfs_ftruncate(cut, 0) == 0  # takes the writer's WRITE token first
    assert receipts_of(writer, fd) == []  # which let its receipts go
    file_id = writer._fds[fd].file_id
    with grpc.insecure_channel(writer.metaserver) as channel:
        stub = meta_grpc.MetaServerStub(channel)
        assert "never written" in refused(lambda: stub.Close(meta_pb.CloseRequest(
            file_id=file_id, size=len(CONTENT), wrote=True, receipts=receipts),
            metadata=cutter._session.metadata))
        stub.Acquire(meta_pb.AcquireRequest(file_id=file_id, start=0, end=len(CONTENT),
                                            mode=meta_pb.WRITE), metadata=writer._session.metadata)
        assert "never written" in refused(lambda: stub.Close(meta_pb.CloseRequest(
            file_id=file_id, size=len(CONTENT), wrote=True, receipts=receipts),
            metadata=writer._session.metadata))
    assert writer.pfs_close(fd) == 0 and cutter.pfs_close(cut) == 0
    assert writer.stat(name).file_size == 0
