"""Bytes that are not a protobuf message, sent straight to a server's method: the call gets
INVALID_ARGUMENT naming the message it expected, the server logs no traceback, and it serves on."""
import grpc

from pfs._proto import metaserver_pb2 as meta_pb
from clusters import read_file, write_file

GARBAGE = b"\xff\xff\xff\x07 not a message"


def refused(call) -> str:
    try:
        call()
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        return e.details()
    raise AssertionError("garbage was accepted")


def test_garbage_is_invalid_argument_without_a_traceback(cluster, clients, name):
    log_before = cluster.log.stat().st_size
    fileserver = next(iter(clients(1).fileservers().values()))
    with grpc.insecure_channel(cluster.address) as meta, \
            grpc.insecure_channel(fileserver) as data:
        for _ in range(3):  # each call, not only the first
            assert "not a valid StatRequest" in refused(
                lambda: meta.unary_unary("/pfs.metaserver.MetaServer/Stat")(GARBAGE, timeout=10))
            assert "not a valid RegisterRequest" in refused(
                lambda: meta.unary_unary("/pfs.metaserver.MetaServer/Register")(GARBAGE,
                                                                                timeout=10))
            assert "not a valid FsyncRequest" in refused(
                lambda: data.unary_unary("/pfs.fileserver.FileServer/Fsync")(GARBAGE,
                                                                             timeout=10))
            # A stream that starts with garbage: it ends there.
            stream = meta.stream_stream("/pfs.metaserver.MetaServer/Sessions")
            refused(lambda: list(stream(iter([GARBAGE]), timeout=10)))

        # Well-formed calls still work, on the same channel.
        reply = meta.unary_unary("/pfs.metaserver.MetaServer/Status",
                                 request_serializer=meta_pb.StatusRequest.SerializeToString,
                                 response_deserializer=meta_pb.StatusReply.FromString)(
            meta_pb.StatusRequest(), timeout=10)
        assert sum(f.online for f in reply.fileservers) == 4
    client = clients(1)
    write_file(client, name, b"still serving")
    assert read_file(client, name) == b"still serving"

    with open(cluster.log, "rb") as log:
        log.seek(log_before)
        logged = log.read().decode(errors="replace")
    assert "Traceback" not in logged and "DecodeError" not in logged, logged
