"""Where bytes live: each fileserver's object holds exactly the bytes the striping formula (docs/design.md) assigns to it."""
import os
import pathlib

import grpc

import pfs
from pfs._proto import fileserver_pb2, fileserver_pb2_grpc, metaserver_pb2, metaserver_pb2_grpc


def test_bytes_on_disk_follow_the_striping_formula(cluster, clients, name):
    B, S, width = 512, 2, 3
    size = 7 * S * B + 333  # several rounds over the servers, and a partial last unit
    data = os.urandom(size)
    client = clients(1)
    assert client.pfs_create(name, width) == 0
    fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
    assert client.pfs_write(fd, data, size, 0) == size
    assert client.pfs_close(fd) == 0

    with grpc.insecure_channel(cluster.address) as channel:
        meta_stub = metaserver_pb2_grpc.MetaServerStub(channel)
        meta = meta_stub.Stat(metaserver_pb2.StatRequest(path=name)).meta
        addresses = {f.index: f.address for f in meta_stub.Status(
            metaserver_pb2.StatusRequest()).fileservers}
    directory_of = {}  # fileserver index -> its data directory, matched by uuid
    for index, address in addresses.items():
        with grpc.insecure_channel(address) as channel:
            uuid = fileserver_pb2_grpc.FileServerStub(channel).Health(
                fileserver_pb2.HealthRequest()).server_uuid
        directory_of[index] = next(d for d in cluster.data_dir.glob("fs*")
                                   if (d / "fileserver.uuid").read_text().strip() == uuid)

    objects = {}
    for position, index in enumerate(meta.recipe.servers):
        path = directory_of[index] / "objects" / f"{meta.file_id % 256:02x}" / str(meta.file_id)
        objects[position] = pathlib.Path(path).read_bytes()
    for off in range(size):
        u = (off // B) // S
        local = (u // width) * S * B + off % (S * B)
        assert objects[u % width][local] == data[off], f"byte {off}"
    assert sum(len(o) for o in objects.values()) == size  # nothing stored twice
