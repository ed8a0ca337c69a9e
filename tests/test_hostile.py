"""Bad requests straight over gRPC: each gets a clear error, and nothing stored changes."""
import grpc
import pytest

import pfs
from pfs._proto import fileserver_pb2 as fs_pb
from pfs._proto import fileserver_pb2_grpc as fs_grpc
from pfs._proto import metaserver_pb2 as meta_pb
from pfs._proto import metaserver_pb2_grpc as meta_grpc
from pfs.transport import CHANNEL_OPTIONS, MAX_MESSAGE

CONTENT = bytes(range(256)) * 4


@pytest.fixture
def stored(clients, name):
    """A file holding CONTENT on every fileserver, and its id; checked intact afterwards."""
    client = clients(1)
    assert client.pfs_create(name, 4) == 0
    fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
    assert client.pfs_write(fd, CONTENT, len(CONTENT), 0) == len(CONTENT)
    assert client.pfs_close(fd) == 0
    file_id = client._session.call("Stat", meta_pb.StatRequest(name=name), "stat").meta.file_id
    yield client, file_id
    fd = client.pfs_open(name, pfs.PFS_READ)
    buf = bytearray(len(CONTENT))
    assert client.pfs_read(fd, buf, len(buf), 0) == len(CONTENT) and buf == CONTENT
    assert client.pfs_close(fd) == 0


def refused(call, code=grpc.StatusCode.INVALID_ARGUMENT) -> str:
    with pytest.raises(grpc.RpcError) as e:
        call()
    assert e.value.code() == code, e.value
    assert e.value.details()
    return e.value.details()


def test_fileserver_validates_every_request(stored):
    client, file_id = stored
    address = next(iter(client.fileservers().values()))
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = fs_grpc.FileServerStub(channel)
        assert "file id" in refused(lambda: stub.Read(fs_pb.ReadRequest(file_id=0, length=1)))
        refused(lambda: stub.Write(fs_pb.WriteRequest(file_id=1 << 63, data=b"x")))
        assert "per request" in refused(lambda: stub.Read(
            fs_pb.ReadRequest(file_id=file_id, offset=0, length=1 << 40)))
        refused(lambda: stub.Write(fs_pb.WriteRequest(file_id=file_id, offset=(1 << 64) - 1,
                                                      data=b"x")))
        refused(lambda: stub.Delete(fs_pb.DeleteRequest(file_id=0)))


def test_truncated_and_oversized_messages_are_refused(stored):
    client, file_id = stored
    address = next(iter(client.fileservers().values()))
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        raw_write = channel.unary_unary("/pfs.fileserver.FileServer/Write",
                                        request_serializer=lambda b: b,
                                        response_deserializer=lambda b: b)
        whole = fs_pb.WriteRequest(file_id=file_id, offset=0, data=b"y" * 100).SerializeToString()
        refused(lambda: raw_write(whole[:-10]), grpc.StatusCode.INTERNAL)  # cut short
        refused(lambda: raw_write(b"\xff" * 7), grpc.StatusCode.INTERNAL)  # not protobuf
    with grpc.insecure_channel(address) as small_channel:  # default limits on our side only
        stub = fs_grpc.FileServerStub(small_channel)
        refused(lambda: stub.Write(fs_pb.WriteRequest(file_id=file_id, data=b"z" * MAX_MESSAGE)),
                grpc.StatusCode.RESOURCE_EXHAUSTED)


def test_metaserver_validates_every_request(stored, name):
    client, file_id = stored
    with grpc.insecure_channel(client.metaserver) as channel:
        stub = meta_grpc.MetaServerStub(channel)
        cid = client._session.client_id
        refused(lambda: stub.Create(meta_pb.CreateRequest(client_id=cid, name="../etc/passwd",
                                                          stripe_width=1)))
        refused(lambda: stub.Create(meta_pb.CreateRequest(client_id=cid, name="x",
                                                          stripe_width=99)))
        refused(lambda: stub.Create(meta_pb.CreateRequest(client_id=987654321, name="x",
                                                          stripe_width=1)),
                grpc.StatusCode.ABORTED)  # no such session
        refused(lambda: stub.Acquire(meta_pb.AcquireRequest(
            client_id=cid, file_id=file_id, start=10, end=5, mode=meta_pb.WRITE)))  # not open
        fd = client.pfs_open(name, pfs.PFS_READ)
        refused(lambda: stub.Acquire(meta_pb.AcquireRequest(
            client_id=cid, file_id=file_id, start=10, end=5, mode=meta_pb.WRITE)))
        refused(lambda: stub.Acquire(meta_pb.AcquireRequest(
            client_id=cid, file_id=file_id, start=0, end=5, mode=0)))
        assert client.pfs_close(fd) == 0
        refused(lambda: stub.RegisterFileserver(meta_pb.RegisterFileserverRequest()))
        refused(lambda: stub.Stat(meta_pb.StatRequest(name="no-such-file")),
                grpc.StatusCode.NOT_FOUND)
