"""Session identity (docs/consistency.md): no call can act for another client by naming its id. Each attempt
below names a victim's client id with a key that is not the victim's (a guess, or the attacker's
own valid key) and must be refused without changing anything: the victim's dirty cached bytes
still reach the next reader, through the victim's own write-back."""
import errno
import secrets

import grpc
import pytest

import pfs
from pfs.protocol import wire
from pfs._proto import metaserver_pb2 as pb
from pfs._proto import metaserver_pb2_grpc as pb_grpc
from pfs.protocol.transport import session_metadata
from clusters import read_file, write_file

VICTIM_BYTES = b"v" * 700


@pytest.fixture
def victim(clients, name):
    """A client holding the write token on `name` with dirty bytes in its cache."""
    v = clients(1)
    return v, write_file(v, name, VICTIM_BYTES, width=2, close=False)


def impostor_keys(victim_client: pfs.Client, attacker: pfs.Client):
    """Metadata naming the victim's id with keys that are not the victim's."""
    victim_id = victim_client._session.client_id
    attacker_key = bytes.fromhex(attacker._session.metadata[0][1].split(":")[1])
    return [session_metadata(victim_id, secrets.token_bytes(32)),
            session_metadata(victim_id, attacker_key),
            ()]  # no session at all


def refused(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call()
    assert e.value.code() in (grpc.StatusCode.PERMISSION_DENIED,
                              grpc.StatusCode.UNAUTHENTICATED), e.value
    return e.value.code()


def join_refused(channel, client_id: int, key: bytes, then=()) -> str:
    """Opens a process stream of our own, asks for session `client_id` to join it with `key`
    and sends `then` (messages acting for that session); the refusal's reason."""
    stream = pb_grpc.MetaServerStub(channel).Sessions(iter([
        pb.ClientMessage(join=pb.JoinSession(client_id=client_id, session_key=key)), *then]))
    try:
        for message in stream:
            kind = message.WhichOneof("body")
            assert kind not in ("joined", "revoke", "size_query"), message
            if kind == "refused":
                assert message.refused.client_id == client_id
                return message.refused.reason
        raise AssertionError("the stream ended without refusing the join")
    finally:
        stream.cancel()


def assert_victim_data_reaches_a_reader(clients, name) -> None:
    assert read_file(clients(1), name, len(VICTIM_BYTES)) == VICTIM_BYTES


def test_no_call_acts_for_another_client(cluster, clients, victim, name):
    v, vfd = victim
    attacker = clients(1)
    file_id = v._fds[vfd].file_id
    victim_id = v._session.client_id
    with grpc.insecure_channel(cluster.address) as channel:
        stub = pb_grpc.MetaServerStub(channel)
        for metadata in impostor_keys(v, attacker):
            refused(lambda: stub.Close(pb.CloseRequest(file_id=file_id, size=1), metadata=metadata))
            refused(lambda: stub.Acquire(pb.AcquireRequest(file_id=file_id, start=0, end=10,
                                                           mode=pb.WRITE),
                                         metadata=metadata, timeout=10))
            refused(lambda: stub.ReportSize(pb.ReportSizeRequest(file_id=file_id, size=1),
                                            metadata=metadata))
            refused(lambda: stub.Finish(pb.FinishRequest(), metadata=metadata))
            refused(lambda: stub.Create(pb.CreateRequest(path=name + "-x", stripe_width=1),
                                        metadata=metadata))
            key = bytes.fromhex(metadata[0][1].split(":")[1]) if metadata else b""
            # Its stream: the join is refused, and what follows for the victim is ignored.
            assert join_refused(channel, victim_id, key, then=[
                pb.ClientMessage(revoke_ack=pb.RevokeAck(revoke_id=1, client_id=victim_id)),
                pb.ClientMessage(size_reply=pb.SizeReply(query_id=1, size=1 << 40,
                                                         client_id=victim_id)),
                pb.ClientMessage(leave=pb.LeaveSession(client_id=victim_id))])
    # The victim's session, tokens and dirty bytes are untouched: a reader gets them.
    assert_victim_data_reaches_a_reader(clients, name)
    assert v.pfs_close(vfd) == 0
    assert v.pfs_finish(v.pfs_initialize()) == 0


def test_a_session_has_one_stream(cluster, victim, clients, name):
    """Even with the right key a second stream is refused: revocations reach only the first."""
    v, vfd = victim
    key = bytes.fromhex(v._session.metadata[0][1].split(":")[1])
    with grpc.insecure_channel(cluster.address) as channel:
        assert "already has its session stream" in join_refused(channel, v._session.client_id,
                                                                key)
    assert_victim_data_reaches_a_reader(clients, name)
    assert v.pfs_close(vfd) == 0


def test_finish_of_another_or_unknown_id_fails(clients):
    a, b = clients(2)
    assert a.pfs_finish(b.pfs_initialize()) == -1
    assert pfs.pfs_last_error().errno == errno.EINVAL
    assert a.pfs_finish(123456789) == -1
    with grpc.insecure_channel(a.metaserver) as channel:
        with pytest.raises(grpc.RpcError) as e:  # an id that has no session
            pb_grpc.MetaServerStub(channel).Finish(
                pb.FinishRequest(), metadata=session_metadata(987654321, secrets.token_bytes(32)))
        assert e.value.code() == grpc.StatusCode.ABORTED
    assert b.pfs_create(f"still-working-{secrets.token_hex(4)}", 1) == 0  # b unharmed


def test_fileservers_refuse_calls_without_the_session_key(victim):
    v, vfd = victim
    file_id = v._fds[vfd].file_id
    for address in v.fileservers().values():
        with grpc.insecure_channel(address) as channel:
            read = channel.unary_unary(wire.READ_METHOD)
            write = channel.unary_unary(wire.WRITE_METHOD)
            for metadata in (session_metadata(v._session.client_id, secrets.token_bytes(32)), ()):
                refused(lambda: write(wire.write_request(file_id, 0, b"evil"), metadata=metadata))
                refused(lambda: read(wire.read_request(file_id, 0, 4), metadata=metadata))


def test_tools_outside_a_session_may_look(cluster, victim, name):
    """Status, List and Stat by name answer without a session: `pfs ls`, `pfs status`."""
    with grpc.insecure_channel(cluster.address) as channel:
        stub = pb_grpc.MetaServerStub(channel)
        assert stub.Status(pb.StatusRequest()).fileservers
        assert name in [f.path for f in stub.List(pb.ListRequest()).entries]
        assert stub.Stat(pb.StatRequest(path=name)).meta.size == len(VICTIM_BYTES)  # a glimpse
