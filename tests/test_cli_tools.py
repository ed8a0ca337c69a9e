"""The pfs command as users of `hdfs dfs`, `lfs` and s3fs use it: get refusing to replace a
local file, errors that name what the user named, quiet pipes, recursive listings, globs,
find, head and tail, touch and checksum, and progress with its rate and time left.

Every command runs as a subprocess against the shared cluster (the `pfs` fixture), each test
under a top-level directory no other test uses."""
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios

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
                              stderr=subprocess.PIPE, env=cluster.env(), timeout=120,
                              cwd=cluster.data_dir)  # not the source tree, which -m would run
    finally:
        os.close(write)


def test_a_reader_that_stops_reading_ends_a_command_quietly(cluster, pfs, name):
    pfs("mkdir", "-p", f"{name}/d")
    pfs("put", "-", f"{name}/d/f", input=os.urandom(200_000))
    for args in (["ls", name], ["ls", "-l", name], ["ls", "-R", name], ["du", name],
                 ["find", name], ["cat", f"{name}/d/f"], ["get", f"{name}/d/f", "-"],
                 ["status"], ["stat", name], ["checksum", f"{name}/d/f"]):
        done = closed_stdout(cluster, *args)
        assert (done.returncode, done.stderr) == (0, b""), (args, done.stderr)


def make_tree(pfs, name):
    """name/{a.csv, b.csv, .hidden.csv, notes.txt, logs/{x.csv, y.log}, logs/deep/z.csv}."""
    pfs("mkdir", "-p", f"{name}/logs/deep")
    for path, data in (("a.csv", b"a" * 100), ("b.csv", b"b" * 3000), (".hidden.csv", b"h"),
                       ("notes.txt", b""), ("logs/x.csv", b"x" * 5000), ("logs/y.log", b"y"),
                       ("logs/deep/z.csv", b"z" * 2048)):
        pfs("put", "-", f"{name}/{path}", input=data)


def test_ls_recursive_and_globs(pfs, name):
    make_tree(pfs, name)
    assert pfs("ls", "-R", name).out == (
        f"pfs:/{name}:\na.csv\nb.csv\nlogs/\nnotes.txt\n\n"
        f"pfs:/{name}/logs:\ndeep/\nx.csv\ny.log\n\npfs:/{name}/logs/deep:\nz.csv\n")
    assert [e["path"] for e in json.loads(pfs("ls", "-R", "--json", f"{name}/logs").out)] == \
        [f"/{name}/logs/deep", f"/{name}/logs/x.csv", f"/{name}/logs/y.log",
         f"/{name}/logs/deep/z.csv"]
    assert listing(pfs, f"{name}/*.csv") == [f"{name}/a.csv", f"{name}/b.csv"]
    assert listing(pfs, f"pfs://{name}/.*.csv") == [f"{name}/.hidden.csv"]
    assert listing(pfs, f"{name}/*/*.csv") == [f"{name}/logs/x.csv"]  # in a directory too
    assert listing(pfs, f"{name}/l?gs/[xy].*") == [f"{name}/logs/x.csv", f"{name}/logs/y.log"]
    assert listing(pfs, f"{name}/*/deep") == ["z.csv"]  # one directory: no heading, as ls
    fails(pfs("ls", f"{name}/*.parquet", check=False), f"no match for {name}/*.parquet")
    assert pfs("du", "-s", f"{name}/*.csv").out == \
        f"100\tpfs:/{name}/a.csv\n3000\tpfs:/{name}/b.csv\n"
    assert pfs("cat", f"{name}/logs/*.log").stdout == b"y"

    pfs("rm", f"{name}/*.csv")
    assert listing(pfs, name, "-a") == [".hidden.csv", "logs/", "notes.txt"]
    fails(pfs("rm", f"{name}/*.csv", check=False), "no match")
    pfs("rm", "-f", f"{name}/*.csv")  # -f: nothing to remove is no error
    pfs("rm", "-r", f"{name}/l*")
    assert listing(pfs, name, "-a") == [".hidden.csv", "notes.txt"]


def test_find_by_name_size_and_type(pfs, name):
    make_tree(pfs, name)

    def found(*tests):
        return pfs("find", name, *tests).out.splitlines()
    assert found("-name", "*.csv") == [f"pfs:/{name}/{p}" for p in (
        ".hidden.csv", "a.csv", "b.csv", "logs/x.csv", "logs/deep/z.csv")]
    assert found("-name", "*.csv", "-size", "+4k") == [f"pfs:/{name}/logs/x.csv"]
    assert found("-size", "-2k", "-name", "*.csv") == [
        f"pfs:/{name}/{p}" for p in (".hidden.csv", "a.csv")]
    assert found("-size", "2k") == [f"pfs:/{name}/logs/deep/z.csv"]  # exactly
    assert found("-type", "d") == [f"pfs:/{name}", f"pfs:/{name}/logs", f"pfs:/{name}/logs/deep"]
    assert pfs("find", f"{name}/logs/x.csv").out == f"pfs:/{name}/logs/x.csv\n"
    assert pfs("find", f"{name}/l*", "--type", "f", "--name", "*.log").out == \
        f"pfs:/{name}/logs/y.log\n"
    fails(pfs("find", name, "-size", "3x", check=False), "-size", "'3x'")
    fails(pfs("find", f"{name}/nothing", check=False), "no such file")


def test_head_tail_touch_and_checksum(pfs, tmp_path, name):
    data = os.urandom(300_000)
    pfs("mkdir", name)
    pfs("put", "-", f"{name}/f", input=data)
    assert pfs("head", f"{name}/f").stdout == data[:1024]  # 1 KiB, as hdfs dfs -head
    assert pfs("tail", f"{name}/f").stdout == data[-1024:]
    assert pfs("head", "-c", "100k", f"{name}/f").stdout == data[:100 << 10]
    assert pfs("tail", "-c", "5", f"{name}/f").stdout == data[-5:]
    assert pfs("tail", "-c", "1M", f"{name}/f").stdout == data  # all of a shorter file
    fails(pfs("head", name, check=False), "is a directory")

    pfs("touch", f"{name}/empty", f"{name}/f", name)  # a new file; the others as they were
    assert pfs("cat", f"{name}/empty").stdout == b""
    assert pfs("cat", f"{name}/f").stdout == data
    fails(pfs("touch", f"{name}/no/such", check=False), "no such")

    # The CRC32C of the bytes, whatever their striping: "123456789" has the standard 0xE3069283.
    pfs("put", "--stripe-width", "1", "-", f"{name}/nine", input=b"123456789")
    pfs("cp", "--stripe-width", "4", f"{name}/f", f"{name}/wide")
    from pfs._native import crc32c
    assert pfs("checksum", f"{name}/nine", f"{name}/empty", f"{name}/f", f"{name}/wide").out == (
        f"pfs:/{name}/nine\tCRC32C\te3069283\npfs:/{name}/empty\tCRC32C\t00000000\n"
        f"pfs:/{name}/f\tCRC32C\t{crc32c(data):08x}\npfs:/{name}/wide\tCRC32C\t"
        f"{crc32c(data):08x}\n")
    assert json.loads(pfs("checksum", "--json", f"{name}/n*").out) == [
        {"path": f"/{name}/nine", "size": 9, "crc32c": "e3069283"}]
    fails(pfs("checksum", name, check=False), "is a directory")


def on_a_terminal(cluster, *args):
    """What `pfs ARGS` writes to a terminal (a pseudo-terminal of 100 columns) as it runs."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    run = subprocess.Popen([sys.executable, "-m", "pfs", *map(str, args)], stdin=terminal,
                           stdout=terminal, stderr=terminal, env=cluster.env(),
                           cwd=cluster.data_dir)  # not the source tree, which -m would run
    os.close(terminal)
    shown = b""
    try:
        while chunk := os.read(controller, 1 << 16):
            shown += chunk
    except OSError:  # EIO: the command has exited and the terminal closed
        pass
    finally:
        os.close(controller)
        assert run.wait(timeout=120) == 0, shown
    return shown.decode()


def test_progress_shows_rate_and_time_left(cluster, pfs, tmp_path, name):
    """On a terminal, a bar rewritten in place for copies over 32 MiB; --progress into a pipe
    gives lines (test_cli.py); --quiet nothing."""
    local = tmp_path / "big"
    local.write_bytes(os.urandom(40 << 20))
    pfs("mkdir", name)
    shown = on_a_terminal(cluster, "put", local, f"{name}/big")
    bars = [update for update in shown.split("\r") if "%|" in update]
    assert len(bars) >= 2 and "100%" in bars[-1] and "40.0M/40.0M" in bars[-1], shown
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, [\d.]+[KMG]?iB/s\]", bars[-1]), shown
    assert shown.endswith(f"{local} -> pfs:/{name}/big ({40 << 20} bytes)\r\n")
    got = on_a_terminal(cluster, "get", f"{name}/big", tmp_path / "back")
    assert "100%" in got and "iB/s" in got
    assert on_a_terminal(cluster, "get", "-q", f"{name}/big", tmp_path / "b2") == ""
    assert (tmp_path / "back").read_bytes() == (tmp_path / "b2").read_bytes() == \
        local.read_bytes()


def test_scrub_progress_moves_within_a_big_file(cluster, pfs, tmp_path, name):
    """The metaserver reports each chunk it checked (4 MiB of a column), not only each file."""
    local = tmp_path / "big"
    local.write_bytes(os.urandom(13 << 20))
    pfs("mkdir", name)
    pfs("put", "--stripe-width", "1", local, f"{name}/big")
    shown = on_a_terminal(cluster, "scrub", f"{name}/big")
    within = re.findall(r"0 files, ([\d.]+ MiB) checked; now pfs:/" + name + "/big", shown)
    assert len(set(within)) >= 3, shown  # 4, 8, 12 MiB before the file is done
    assert shown.rstrip().endswith("all good"), shown
