"""The pfs command as users of `hdfs dfs`, `lfs` and s3fs use it: get refusing to replace a
local file, errors that name what the user named, quiet pipes, recursive listings, globs,
find, head and tail, touch and checksum.

Every command runs as a subprocess against the shared cluster (the `pfs` fixture), each test
under a top-level directory no other test uses."""
import os
import subprocess
import sys

from commands import fails, listing


def test_get_replaces_a_local_file_only_with_force(pfs, tmp_path, name):
    pfs("put", "-", name, input=b"new")
    local = tmp_path / "out"
    local.write_bytes(b"old")
    fails(pfs("get", name, local, check=False), f"local file {local} exists", "--force")
    assert local.read_bytes() == b"old"
    pfs("get", "--force", name, local)
    assert local.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["cwd", "out"]  # no local temporary left

    # A tree: into an existing local directory only with --force, as put -r into PFS.
    pfs("mkdir", f"{name}-d")
    pfs("put", "-", f"{name}-d/f", input=b"tree")
    tree = tmp_path / "tree"
    (tree / f"{name}-d").mkdir(parents=True)
    fails(pfs("get", "-r", f"{name}-d", tree, check=False), "exists", "--force")
    pfs("get", "-rf", f"{name}-d", tree)
    assert (tree / f"{name}-d" / "f").read_bytes() == b"tree"


def test_errors_name_the_target_and_say_what_to_do(pfs, tmp_path, name):
    """Never the temporary the copy writes first (which is gone by then)."""
    local = tmp_path / "f"
    local.write_bytes(b"data")
    pfs("mkdir", name)
    wide = fails(pfs("put", "--stripe-width", "5", local, f"{name}/w5", check=False),
                 f"pfs:/{name}/w5", "--stripe-width")
    assert "pfs-tmp" not in wide.err
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "g").write_bytes(b"g")
    deep = fails(pfs("put", "-r", "--replicas", "5", tmp_path / "tree", name, check=False),
                 f"pfs:/{name}/tree/g", "--replicas")
    assert "pfs-tmp" not in deep.err
    assert listing(pfs, name, "-a") == []


def closed_stdout(cluster, *args):
    """`pfs ARGS` writing to a pipe whose reader has gone (as `| head` leaves it)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "pfs", *map(str, args)], stdout=write,
                              stderr=subprocess.PIPE, env=cluster.env(), timeout=120)
    finally:
        os.close(write)


def test_a_reader_that_stops_reading_ends_a_command_quietly(cluster, pfs, name):
    pfs("mkdir", "-p", f"{name}/d")
    pfs("put", "-", f"{name}/d/f", input=os.urandom(200_000))
    for args in (["ls", name], ["ls", "-l", name], ["du", name], ["cat", f"{name}/d/f"],
                 ["get", f"{name}/d/f", "-"], ["status"], ["stat", name]):
        done = closed_stdout(cluster, *args)
        assert (done.returncode, done.stderr) == (0, b""), (args, done.stderr)
