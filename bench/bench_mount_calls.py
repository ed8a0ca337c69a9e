"""The calls the mount makes to the servers for each small-file operation, against the API's:
where a small file's time goes through the mount (every call is a round trip).

    python bench/bench_mount_calls.py [--depth 1]

Starts a cluster (`pfs up`, shipped defaults) and a mount of it whose daemon counts every unary
call its Client makes (a gRPC interceptor on its channels, as tests/test_round_trips.py counts
the API's), then runs each small-file phase once on a file --depth directories down, through
the mount (os calls) and through the API, and prints the calls by method. With zero timeouts
the kernel asks again for every name it walks and for the attributes of every directory whose
permissions it checks (`default_permissions`), each a Stat.
"""
from __future__ import annotations

import argparse
import collections
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import grpc

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from clusters import SHIPPED, temporary_cluster, wait_until  # noqa: E402

KiB = 1 << 10


def count_calls_into(log_path: str) -> None:
    """Every channel this process's Clients make from now on appends each call's method to
    `log_path`, one line each."""
    from pfs.protocol import transport
    log = open(log_path, "a", buffering=1)

    class Calls(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation, details, request):
            log.write(details.method.rsplit("/", 1)[-1] + "\n")
            return continuation(details, request)

    plain = transport.Credentials.channel
    transport.Credentials.channel = lambda self, address: grpc.intercept_channel(
        plain(self, address), Calls())


def serve(mountpoint: str, log_path: str) -> None:
    """The mount daemon, counting (run as `--serve MOUNTPOINT LOG`)."""
    count_calls_into(log_path)
    from pfs.mount.daemon import serve as serve_mount
    serve_mount(mountpoint)


class Counter:
    """Calls logged to one file, taken phase by phase."""

    def __init__(self, log_path: pathlib.Path) -> None:
        self.log_path = log_path
        self.seen = 0

    def during(self, action) -> collections.Counter:
        action()
        time.sleep(0.2)  # a mount's release comes after close() returns
        calls = self.log_path.read_text().split()
        made, self.seen = calls[self.seen:], len(calls)
        return collections.Counter(made)


def phases(create, stat, cat, delete) -> dict:
    return {"create+write 4 KiB+close": create, "stat": stat, "open+read+close": cat,
            "delete": delete}


def mount_phases(path: str) -> dict:
    def create() -> None:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.pwrite(fd, b"x" * (4 * KiB), 0)
        os.close(fd)

    def cat() -> None:
        fd = os.open(path, os.O_RDONLY)
        os.pread(fd, 4 * KiB, 0)
        os.close(fd)
    return phases(create, lambda: os.stat(path), cat, lambda: os.unlink(path))


def api_phases(client, name: str) -> dict:
    import pfs

    def create() -> None:
        client.create(name, 1)
        fd = client.open(name, pfs.PFS_READ_WRITE)
        client.write(fd, b"x" * (4 * KiB), 4 * KiB, 0)
        client.close(fd)

    def cat() -> None:
        fd = client.open(name, pfs.PFS_READ)
        client.read(fd, bytearray(4 * KiB), 4 * KiB, 0)
        client.close(fd)
    return phases(create, lambda: client.stat(name), cat, lambda: client.delete(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=1, help="directories above the file")
    parser.add_argument("--serve", nargs=2, metavar=("MOUNTPOINT", "LOG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(*args.serve)
    with tempfile.TemporaryDirectory() as scratch, temporary_cluster(**SHIPPED) as cluster:
        mountpoint, mount_log = pathlib.Path(scratch, "mnt"), pathlib.Path(scratch, "mount.calls")
        api_log = pathlib.Path(scratch, "api.calls")
        mountpoint.mkdir()
        mount_log.touch()
        daemon = subprocess.Popen([sys.executable, __file__, "--serve", str(mountpoint),
                                   str(mount_log)], env=cluster.env(), start_new_session=True)
        try:
            wait_until(lambda: os.path.ismount(mountpoint), 60, "the mount")
            directory = "/".join(f"d{i}" for i in range(args.depth))
            if directory:
                os.makedirs(mountpoint / directory)
            name = f"{directory}/f" if directory else "f"
            count_calls_into(str(api_log))
            api_log.touch()
            client = cluster.client()
            through = {"mount": (Counter(mount_log), mount_phases(str(mountpoint / name))),
                       "API": (Counter(api_log), api_phases(client, name + "-api"))}
            for counter, _ in through.values():
                counter.during(lambda: None)  # what setting up made
            print(f"calls to the servers per operation, a file {args.depth} directories down")
            for phase in phases(*range(4)):
                for side, (counter, actions) in through.items():
                    made = counter.during(actions[phase])
                    detail = ", ".join(f"{m} {n}" for m, n in sorted(made.items()))
                    print(f"  {phase:26} {side:6} {sum(made.values()):3}   {detail}")
            client.finish(client.initialize())
        finally:
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True,
                           timeout=60)
            daemon.wait(timeout=60)


if __name__ == "__main__":
    main()
