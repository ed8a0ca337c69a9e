"""Running a cluster as an operator does, through the real `pfs` command on real clusters:
settings remembered across restarts, members added and removed, fileservers named the same
way everywhere, logs an operator can read, and temporaries of dead writers cleaned up.

Every cluster runs in a temporary directory on free loopback ports and is stopped at the end,
whatever happens; every wait is bounded."""
import contextlib
import functools
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import pytest

from clusters import COURSE, Cluster, wait_until
from pfs_servers.instance import data_dir_holder

run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=200)


def pfs(*args, cwd, env=None, check=True, input=None) -> subprocess.CompletedProcess:
    done = run([sys.executable, "-m", "pfs", *map(str, args)], cwd=cwd, input=input,
               env={**os.environ, **(env or {})})
    assert "Traceback" not in done.stderr, done.stderr
    if check:
        assert done.returncode == 0, done.stderr
    return done


@contextlib.contextmanager
def detached(tmp_path, *flags):
    """`pfs up --detach` on tmp_path/data with these flags; yields its PFS_METASERVER
    environment; stopped by `pfs down` (or killed) at the end."""
    data = tmp_path / "data"
    try:
        pfs("up", "--detach", "--data-dir", data, *flags, cwd=tmp_path)
        yield {"PFS_METASERVER": (data / "metaserver.address").read_text().strip()}
        pfs("down", "--data-dir", data, cwd=tmp_path)
    finally:
        pid = data_dir_holder(data)
        if pid:
            os.killpg(pid, signal.SIGKILL)


def test_settings_are_remembered_and_changes_are_said(tmp_path):
    log = tmp_path / "data" / "pfs.log"
    with detached(tmp_path, "--port", "0", "--block-size", "512", "--stripe-blocks", "2",
                  "--replicas", "2", "--lease-seconds", "3") as env:
        address = env["PFS_METASERVER"]
        status = json.loads(pfs("status", "--json", cwd=tmp_path, env=env).stdout)
        assert (status["replicas"], status["block_size"]) == (2, 512)
    recorded = json.loads((tmp_path / "data" / "meta" / "settings.json").read_text())
    assert recorded["port"] == int(address.rsplit(":", 1)[1]) and recorded["replicas"] == 2

    with detached(tmp_path) as env:  # no flags: as before, on the same port
        assert env["PFS_METASERVER"] == address
        status = json.loads(pfs("status", "--json", cwd=tmp_path, env=env).stdout)
        assert (status["replicas"], status["block_size"], status["stripe_blocks"]) == (2, 512, 2)
        pfs("put", "-", "two", "--replicas", "2", cwd=tmp_path, env=env, input="x")

    with detached(tmp_path, "--replicas", "1", "--lease-seconds", "4") as env:
        status = json.loads(pfs("status", "--json", cwd=tmp_path, env=env).stdout)
        assert status["replicas"] == 1
    said = log.read_text()
    assert "setting changed since the last start: --replicas 2 -> 1 (the default for new " \
           "files; existing files keep their copies)" in said, said
    assert "--lease-seconds 3 -> 4" in said, said

    refused = pfs("up", "--detach", "--data-dir", tmp_path / "data", "--block-size", "4096",
                  cwd=tmp_path, check=False)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith("pfs up: --block-size 4096 differs from the cluster's 512"), \
        refused.stderr
    assert data_dir_holder(tmp_path / "data") is None


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path / "data", lease_seconds=3.0, **COURSE).start()
    yield c
    c.stop()


def test_fileservers_are_named_alike_everywhere_and_restarts_are_said(cluster, tmp_path):
    env = cluster.env()
    status = pfs("status", cwd=tmp_path, env=env).stdout
    rows = [line.split() for line in status.splitlines() if line.startswith("  fs")]
    assert sorted(row[0] for row in rows) == ["fs0", "fs1", "fs2", "fs3"], status
    assert "[" not in status, status
    df = pfs("df", cwd=tmp_path, env=env).stdout
    assert sorted(line.split()[0] for line in df.splitlines()[1:-1]) == \
        ["fs0", "fs1", "fs2", "fs3"], df
    pfs("put", "-", "named", "--stripe-width", "2", cwd=tmp_path, env=env, input="x" * 3000)
    shown = pfs("stat", "named", cwd=tmp_path, env=env).stdout
    servers = next(line for line in shown.splitlines() if line.startswith("fileservers:"))
    assert [s.strip() for s in servers.split(":", 1)[1].split(",")][0].startswith("fs"), shown

    victim = next(pid for pid in cluster.server_pids("fileserver")
                  if b"fs2" in open(f"/proc/{pid}/cmdline", "rb").read())
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: "fileserver fs2 was killed (signal 9, SIGKILL); restarted"
               in cluster.log.read_text(), timeout=30, what="pfs up to restart fs2")
    wait_until(lambda: pfs("status", cwd=tmp_path, env=env, check=False).returncode == 0,
               timeout=30, what="fs2 to be back")
    said = cluster.log.read_text()
    assert "fileserver fs2 detached" in said and "fileserver fs2 attached from" in said, said


def test_repeated_warnings_are_merged_with_a_count(caplog):
    import logging

    from pfs_servers.repeats import Repeats
    logger = logging.getLogger("test.repeats")
    repeats = Repeats(logger, window=0.3)

    def said():  # other loggers (a client's background threads) may warn meanwhile
        return [r.getMessage() for r in caplog.records if r.name == "test.repeats"]
    with caplog.at_level(logging.WARNING, logger="test.repeats"):
        for i in range(162):
            repeats.log(logging.WARNING, "fs2", "copies on fileserver fs2 missed bytes",
                        "copy %d missed bytes", i)
        repeats.log(logging.WARNING, "fs3", "copies on fs3", "copy on fs3 missed bytes")
        wait_until(lambda: len(said()) == 3, timeout=5, what="the summary")
    assert said() == [
        "copy 0 missed bytes", "copy on fs3 missed bytes",
        "copies on fileserver fs2 missed bytes: 161 more like it in the last 0.3s"]


@contextlib.contextmanager
def extra_fileservers(cluster, tmp_path):
    """start(name) runs one more fileserver by hand, as an operator adds one to a running
    cluster; every one is killed at the end."""
    started = {}

    def start(name: str) -> subprocess.Popen:
        started[name] = subprocess.Popen(
            [sys.executable, "-m", "pfs", "fileserver", "--data-dir", str(tmp_path / name),
             "--metaserver", cluster.address, "--name", name, "--cluster-key-file",
             str(cluster.key_file), "--die-with-parent"], cwd=tmp_path,
            stderr=open(tmp_path / f"{name}.log", "ab"))
        return started[name]
    try:
        yield start
    finally:
        for process in started.values():
            process.kill()
            process.wait(20)


def members(tmp_path, env) -> dict[str, bool]:
    status = pfs("status", "--json", cwd=tmp_path, env=env, check=False)
    return {f["name"]: f["online"] for f in json.loads(status.stdout)["fileservers"]}


def test_members_are_added_by_hand_and_removed_only_when_nothing_is_lost(cluster, tmp_path):
    env = {**cluster.env(), "PFS_CLUSTER_KEY_FILE": str(cluster.key_file)}
    wide, five = os.urandom(6000), os.urandom(3000)
    with extra_fileservers(cluster, tmp_path) as start:
        fs4 = start("fs4")  # added to the running cluster: new files use it
        wait_until(lambda: members(tmp_path, env).get("fs4"), timeout=30, what="fs4 to join")
        pfs("put", "-", "wide", "--stripe-width", "5", cwd=tmp_path, env=env, input=wide.hex())
        assert "fs4" in pfs("stat", "wide", cwd=tmp_path, env=env).stdout
        pfs("put", "-", "five", "--stripe-width", "1", "--replicas", "5", cwd=tmp_path,
            env=env, input=five.hex())

        def remove(name: str, *words: str) -> None:
            done = pfs("member", "remove", name, cwd=tmp_path, env=env, check=False)
            assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
            assert done.stderr.startswith("pfs member: "), done.stderr
            for word in words:
                assert word in done.stderr, done.stderr
        remove("fs-4", "no fileserver 'fs-4' is a member", "fs0")
        remove("fs4", "fs4 is online: stop it first")
        fs4.kill()
        wait_until(lambda: not members(tmp_path, env)["fs4"], timeout=30, what="fs4 offline")
        remove("fs4", "the only good copy of 1 file(s): '/wide'")
        pfs("rm", "wide", cwd=tmp_path, env=env)
        remove("fs4", "no other fileserver can take its copies of 1 file(s): '/five'",
               "add a fileserver first")
        without_key = pfs("member", "remove", "fs4", cwd=tmp_path, check=False,
                          env={**cluster.env(), "PFS_CLUSTER_KEY_FILE": ""})
        assert "--cluster-key-file" in without_key.stderr and without_key.returncode == 1

        start("fs5")
        wait_until(lambda: members(tmp_path, env).get("fs5"), timeout=30, what="fs5 to join")
        done = pfs("member", "remove", "fs4", cwd=tmp_path, env=env)
        assert done.stdout == ("removed fileserver fs4; 5 members left; its copies of 1 file(s) "
                               "are being re-made on other fileservers (`pfs status` shows the "
                               "resync)\n"), done.stdout
        assert "fs4" not in members(tmp_path, env)
        wait_until(lambda: pfs("status", cwd=tmp_path, env=env, check=False).returncode == 0
                   and "all in sync" in pfs("status", cwd=tmp_path, env=env).stdout,
                   timeout=60, what="the copy on fs5 to be resynced")
        assert "fs5" in pfs("stat", "five", cwd=tmp_path, env=env).stdout
        assert pfs("cat", "five", cwd=tmp_path, env=env).stdout == five.hex()
        usage = json.loads(pfs("df", "--json", cwd=tmp_path, env=env).stdout)["fileservers"]
        assert next(f for f in usage if f["name"] == "fs5")["bytes_stored"] == len(five.hex())


def test_a_killed_puts_temporary_shows_its_size_and_is_removed(cluster, tmp_path):
    env = cluster.env()

    def temporaries() -> dict[str, int]:
        listed = json.loads(pfs("ls", "-a", "--json", "/", cwd=tmp_path, env=env).stdout)
        return {e["name"]: e["size"] for e in listed if ".pfs-tmp-" in e["name"]}
    put = subprocess.Popen([sys.executable, "-m", "pfs", "put", "-", "victim"], cwd=tmp_path,
                           env=env, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        put.stdin.write(b"x" * (8 << 20))  # a chunk of the put's, which it writes at once
        put.stdin.flush()
        # Being written, it is shown as large as its writer has made it (asked, as fstat does).
        wait_until(lambda: list(temporaries().values()) == [8 << 20], timeout=30,
                   what="the temporary's size to be shown")
        (name,) = temporaries()
        assert name.startswith(".victim.pfs-tmp-")
    finally:
        put.kill()
        put.wait(20)
    # Its session ends with its stream; once fenced and its lease (3 s) over, it is removed,
    # and its objects with it.
    wait_until(lambda: not temporaries(), timeout=30, what="the temporary to be removed")
    wait_until(lambda: json.loads(pfs("df", "--json", cwd=tmp_path, env=env).stdout)["objects"]
               == 0, timeout=30, what="its objects to be deleted")
    assert "a temporary its writer" in cluster.log.read_text()


def test_a_server_refusal_has_one_prefix(tmp_path):
    done = pfs("fileserver", "--data-dir", tmp_path / "fs", cwd=tmp_path, check=False,
               env={"PFS_CLUSTER_KEY_FILE": ""})
    assert done.returncode == 1 and done.stderr.startswith("pfs fileserver: give it"), done.stderr
    assert done.stderr.count("pfs fileserver:") == 1, done.stderr


def test_a_read_from_a_fileserver_long_offline_fails_at_once_naming_it(cluster, tmp_path):
    """A single-copy file's bytes on a fileserver the metaserver has known offline for longer
    than the retry window: the read fails at once with EHOSTDOWN naming the fileserver, not
    after another retry window with gRPC's words. (A restart within the window stays
    invisible: tests/test_api_errors.py.)"""
    env = cluster.env(PFS_RETRY_SECONDS="2")
    pfs("put", "-", "spread", "--stripe-width", "4", cwd=tmp_path, env=env, input="y" * 8000)
    os.kill(cluster.process.pid, signal.SIGSTOP)  # so that `pfs up` does not restart it
    try:
        victim = next(pid for pid in cluster.server_pids("fileserver")
                      if b"fs1" in open(f"/proc/{pid}/cmdline", "rb").read())
        os.kill(victim, signal.SIGKILL)

        def offline_for() -> float:
            status = json.loads(pfs("status", "--json", cwd=tmp_path, env=env,
                                    check=False).stdout)
            return next(f["offline_seconds"] or 0 for f in status["fileservers"]
                        if f["name"] == "fs1")
        wait_until(lambda: offline_for() > 2, timeout=30, what="fs1 offline beyond the window")
        assert "fs1" in pfs("status", cwd=tmp_path, env=env, check=False).stdout
        done = pfs("cat", "spread", cwd=tmp_path, env=env, check=False)
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        assert "fileserver fs1 is offline (for " in done.stderr, done.stderr
        assert "start it again, or see `pfs status`" in done.stderr, done.stderr
        assert "grpc" not in done.stderr.lower() and "unavailable" not in done.stderr.lower(), \
            done.stderr
    finally:
        os.kill(cluster.process.pid, signal.SIGCONT)


def recipe(tmp_path, env, path) -> dict:
    return json.loads(pfs("getstripe", "--json", path, cwd=tmp_path, env=env).stdout)


def in_sync(tmp_path, env) -> bool:
    return "all in sync" in pfs("status", cwd=tmp_path, env=env, check=False).stdout


def test_directory_layouts_are_inherited_and_a_files_copies_change(cluster, tmp_path):
    env = cluster.env()
    pfs("mkdir", "-p", "runs/big/deep", cwd=tmp_path, env=env)
    pfs("setstripe", "runs", "--width", "2", "--stripe-unit", "2k", "--replicas", "2",
        cwd=tmp_path, env=env)
    shown = pfs("getstripe", "runs/big/deep", cwd=tmp_path, env=env).stdout
    assert "no layout of its own" in shown and "from the layout of /runs" in shown, shown
    assert "stripe width 2, stripe unit 2.0 KiB, replicas 2" in shown, shown

    data = os.urandom(9000).hex()
    pfs("put", "-", "runs/big/deep/a", cwd=tmp_path, env=env, input=data)
    made = recipe(tmp_path, env, "runs/big/deep/a")
    assert (made["stripe_width"], made["stripe_unit"], made["replicas"]) == (2, 2048, 2), made
    pfs("put", "-", "runs/big/narrow", "--stripe-width", "1", cwd=tmp_path, env=env, input="x")
    made = recipe(tmp_path, env, "runs/big/narrow")  # what the create asks for wins
    assert (made["stripe_width"], made["replicas"]) == (1, 2), made

    client = cluster.client()  # the API alike: what create leaves open comes from the layout
    try:
        client.create("runs/big/deep/api")
        assert client.pfs_create("runs/big/deep/one", 1) == 0
        made = {n: client.stat(f"runs/big/deep/{n}").recipe for n in ("api", "one")}
    finally:
        client.pfs_finish(client.pfs_initialize())
    assert [(r.stripe_width, r.stripe_blocks, r.replicas) for r in made.values()] == \
        [(2, 4, 2), (1, 4, 2)]
    pfs("setstripe", "runs/big", "--width", "2", "--replicas", "1", cwd=tmp_path, env=env)
    pfs("put", "-", "runs/big/deep/b", cwd=tmp_path, env=env, input=data)
    made = recipe(tmp_path, env, "runs/big/deep/b")
    assert (made["stripe_width"], made["stripe_unit"], made["replicas"]) == (2, 1024, 1), made
    # (the nearest layout wins as a whole: the stripe unit is the cluster's, not /runs's)
    listed = json.loads(pfs("getstripe", "--json", "runs/big", cwd=tmp_path, env=env).stdout)
    assert listed["own"] == {"stripe_width": 2, "stripe_unit": None, "replicas": 1}, listed
    pfs("setstripe", "runs/big", "--clear", cwd=tmp_path, env=env)
    assert recipe(tmp_path, env, "runs/big")["from"] == "/runs"
    refused = pfs("setstripe", "runs/big/deep/b", "--width", "2", cwd=tmp_path, env=env,
                  check=False)
    assert refused.returncode == 1 and "fixed at create" in refused.stderr, refused.stderr

    # An existing file's replica count, raised (copies made by the resync) and lowered.
    said = pfs("setstripe", "runs/big/deep/b", "--replicas", "2", cwd=tmp_path, env=env).stdout
    assert "2 new copies being made" in said, said
    assert recipe(tmp_path, env, "runs/big/deep/b")["replicas"] == 2
    wait_until(lambda: in_sync(tmp_path, env), timeout=60, what="the new copies")

    def stored() -> int:
        return json.loads(pfs("df", "--json", cwd=tmp_path, env=env).stdout)["bytes_stored"]
    assert stored() == 2 * len(data) + 2 + 2 * len(data), stored()  # a, narrow, b: 2 copies
    said = pfs("setstripe", "runs/big/deep/a", "--replicas", "1", cwd=tmp_path, env=env).stdout
    assert "2 copies dropped" in said, said
    wait_until(lambda: stored() == len(data) + 2 + 2 * len(data), timeout=30,
               what="the dropped copies' objects to be deleted")
    assert pfs("cat", "runs/big/deep/a", cwd=tmp_path, env=env).stdout == data

    os.kill(cluster.process.pid, signal.SIGSTOP)  # so that `pfs up` does not restart it
    try:  # b's copies are real: with any one fileserver gone, it reads whole
        os.kill(cluster.server_pids("fileserver")[0], signal.SIGKILL)
        assert pfs("cat", "runs/big/deep/b", cwd=tmp_path, env=env).stdout == data
    finally:
        os.kill(cluster.process.pid, signal.SIGCONT)


def test_a_member_is_drained_with_its_single_copies_then_removed(cluster, tmp_path):
    env = {**cluster.env(), "PFS_CLUSTER_KEY_FILE": str(cluster.key_file)}
    contents = {name: os.urandom(3000 + 100 * n).hex() for n, name in enumerate("abcdef")}
    with extra_fileservers(cluster, tmp_path) as start:
        fs4 = start("fs4")
        wait_until(lambda: members(tmp_path, env).get("fs4"), timeout=30, what="fs4 to join")
        for name, (width, replicas) in zip(contents, [(2, 1), (1, 2), (1, 1), (1, 1), (1, 1),
                                                      (2, 2)]):
            pfs("put", "-", name, "--stripe-width", width, "--replicas", replicas,
                cwd=tmp_path, env=env, input=contents[name])
        pfs("put", "-", "wide", "--stripe-width", "5", cwd=tmp_path, env=env, input="w" * 9000)

        def drain() -> subprocess.CompletedProcess:
            return pfs("member", "drain", "fs4", cwd=tmp_path, env=env, check=False)
        refused = drain()
        assert refused.returncode == 1 and "'/wide' cannot be moved" in refused.stderr, \
            refused.stderr
        assert "add a fileserver first" in refused.stderr, refused.stderr
        pfs("rm", "wide", cwd=tmp_path, env=env)
        on_fs4 = [n for n in contents
                  if "fs4" in recipe(tmp_path, env, n)["fileservers"]]
        assert on_fs4, "placement put nothing on fs4"

        done = drain()
        assert done.returncode == 0, done.stderr
        assert f"its copies of {len(on_fs4)} file(s) are on other fileservers" in done.stdout
        assert "draining fileserver fs4" in cluster.log.read_text()
        shown = pfs("status", cwd=tmp_path, env=env).stdout
        assert "draining: new files go elsewhere" in shown, shown
        for name, data in contents.items():
            assert "fs4" not in recipe(tmp_path, env, name)["fileservers"], name
            assert pfs("cat", name, cwd=tmp_path, env=env).stdout == data
        pfs("put", "-", "later", "--stripe-width", "4", cwd=tmp_path, env=env, input="z")
        assert "fs4" not in recipe(tmp_path, env, "later")["fileservers"]  # not placed there

        def objects_on_fs4() -> int:
            usage = json.loads(pfs("df", "--json", cwd=tmp_path, env=env).stdout)
            return next(f for f in usage["fileservers"] if f["name"] == "fs4")["objects"]
        wait_until(lambda: objects_on_fs4() == 0, timeout=30, what="fs4's objects to go")
        fs4.kill()
        wait_until(lambda: not members(tmp_path, env)["fs4"], timeout=30, what="fs4 offline")
        removed = pfs("member", "remove", "fs4", cwd=tmp_path, env=env).stdout
        assert removed.startswith("removed fileserver fs4; 4 members left"), removed
        assert "re-made" not in removed, removed


def test_checksum_is_combined_from_the_stored_unit_checksums(tmp_path):
    """`pfs checksum` of a file whose stripe unit is whole 4 KiB units reads none of its
    bytes but a last partial unit: it equals the CRC32C computed locally, and still does
    when a byte on a fileserver's disk is damaged (which a read refuses)."""
    from pfs._native import crc32c
    c = Cluster(tmp_path / "data", block_size=4096, stripe_blocks=2).start()
    try:
        env = c.env()
        data = os.urandom(300_000 + 123)
        local = tmp_path / "local"
        local.write_bytes(data)
        pfs("put", "--stripe-width", "3", local, "f", cwd=tmp_path, env=env)
        pfs("put", "-", "empty", cwd=tmp_path, env=env, input="")
        said = pfs("checksum", "f", "empty", cwd=tmp_path, env=env).stdout
        assert said == f"pfs:/f\tCRC32C\t{crc32c(data):08x}\npfs:/empty\tCRC32C\t00000000\n"

        objects = sorted(p for p in (tmp_path / "data").rglob("objects/*/*") if p.name.isdigit()
                         and p.stat().st_size > 8192)
        with open(objects[0], "r+b") as damaged:  # a byte inside a whole unit
            damaged.seek(5000)
            byte = damaged.read(1)
            damaged.seek(5000)
            damaged.write(bytes([byte[0] ^ 0xFF]))
        assert pfs("checksum", "f", cwd=tmp_path, env=env).stdout == \
            f"pfs:/f\tCRC32C\t{crc32c(data):08x}\n"
        read = pfs("get", "f", tmp_path / "copy", cwd=tmp_path, env=env, check=False)
        assert read.returncode == 1 and "fails its checksum" in read.stderr, read.stderr[-300:]
    finally:
        c.stop()


def test_the_systemd_units_are_shipped_and_pass_systemd_analyze_verify(tmp_path):
    shipped = pathlib.Path(pfs("systemd", cwd=tmp_path).stdout.strip())
    names = ["pfs-fileserver.service", "pfs-metaserver.service", "pfs-mount.service"]
    assert sorted(p.name for p in shipped.glob("*.service")) == names
    units = tmp_path / "units"
    units.mkdir()
    pfs("systemd", units, cwd=tmp_path)
    command = pathlib.Path(sys.executable).with_name("pfs")
    for name in names:
        assert f"ExecStart={command} " in (units / name).read_text(), name
    refused = pfs("systemd", units, cwd=tmp_path, check=False)
    assert refused.returncode == 1 and "--force" in refused.stderr, refused.stderr
    pfs("systemd", "--force", units, cwd=tmp_path)
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here: the units were not verified")
    done = run(["systemd-analyze", "verify", *sorted(units.glob("*.service"))])
    assert done.returncode == 0 and done.stderr == "", done.stderr
