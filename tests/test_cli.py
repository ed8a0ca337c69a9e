"""The pfs command against a running cluster: copying files and trees in and out (atomically)
and within PFS, listing, measuring, moving and removing in the directory tree, JSON output, its
errors (argument errors included), Ctrl-C, its help, and running a cluster in the background.

Every command runs as a subprocess (`python -m pfs`) in a temporary directory of its own, never
the source tree, and each test works under a top-level directory no other test uses."""
import argparse
import functools
import json
import os
import stat
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from clusters import COURSE, wait_until
from commands import fails, listing
from pfs_servers.instance import data_dir_holder

ENVIRONMENT = ("PFS_METASERVER", "PFS_CACHE_BLOCKS", "PFS_SECRET", "PFS_TLS_CA",
               "PFS_RETRY_SECONDS")


def local_tree(top):
    """{relative path: bytes or None for a directory} of a local tree."""
    found = {}
    for here, dirs, files in os.walk(top):
        rel = os.path.relpath(here, top)
        for d in dirs:
            found[os.path.normpath(os.path.join(rel, d))] = None
        for f in files:
            with open(os.path.join(here, f), "rb") as fh:
                found[os.path.normpath(os.path.join(rel, f))] = fh.read()
    return found


def test_put_get_ls_stat_rm(pfs, tmp_path, name):
    local = tmp_path / "in.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    local.write_bytes(data)
    pfs("put", local, name, "--stripe-width", "3")
    assert name in listing(pfs, "")
    stat = pfs("stat", name).out
    assert f"size:          {len(data)}" in stat and "stripe width:  3" in stat
    assert f"path:          /{name}" in stat and "type:          file" in stat
    out = tmp_path / "out.bin"
    pfs("get", name, out)
    assert out.read_bytes() == data
    pfs("rm", name)
    assert name not in listing(pfs, "")


def test_status_and_errors_say_what_is_wrong(cluster, pfs, tmp_path, name):
    status = pfs("status").out
    assert "4 online of 4 expected" in status
    fails(pfs("get", name, tmp_path / "x", check=False), "no such file")
    for command in ("ls", "status", "df", "du"):  # status itself does not say "check status"
        unreachable = fails(pfs(command, check=False, env={"PFS_METASERVER": "127.0.0.1:1"}),
                            f"pfs {command}: no metaserver answers at 127.0.0.1:1", "`pfs up`",
                            "PFS_METASERVER")
        assert "check `pfs status`" not in unreachable.err


@pytest.mark.parametrize("address", ["127.0.0.1:99999", "127.0.0.1:0", "127.0.0.1:", "nohost",
                                     "127.0.0.1:5x"])
def test_a_bad_metaserver_address_is_refused_in_one_line(pfs, address):
    """Not a port modulo 65536, nor anything else that is not HOST:PORT."""
    for command in ("ls", "status", "put"):
        args = ["put", "-", "x"] if command == "put" else [command]
        fails(pfs(*args, check=False, input=b"x", env={"PFS_METASERVER": address}),
              f"pfs {command}: PFS_METASERVER={address!r}")


def test_a_setting_that_is_not_a_number_is_one_line(pfs, name):
    fails(pfs("put", "-", name, input=b"x", check=False, env={"PFS_CACHE_BLOCKS": "abc"}),
          "pfs put: PFS_CACHE_BLOCKS must be a number, not 'abc'")
    assert name not in listing(pfs, "", "-a")


@pytest.mark.parametrize("args, words", [
    (["ls", "--bogus"], ["pfs ls: unrecognized arguments: --bogus", "pfs ls --help"]),
    (["ls", "-l", "-x"], ["pfs ls: unrecognized arguments: -x"]),
    (["lss"], ["pfs: argument COMMAND: invalid choice: 'lss'"]),
    ([], ["pfs: the following arguments are required: COMMAND"]),
    (["put", "only-one"], ["pfs put: the following arguments are required: PATH"]),
    (["put", "--quiet", "--progress", "a", "b"], ["pfs put: argument --progress"]),
    (["bench", "--size-mib", "0"], ["pfs bench: argument --size-mib: '0' is not a positive"]),
    (["bench", "--rounds", "x"], ["pfs bench: argument --rounds: 'x' is not a positive"]),
    (["put", "--stripe-width", "0", "a", "b"], ["pfs put: argument --stripe-width"]),
    (["up", "--port", "99999"], ["pfs up: argument --port: '99999' is not a port"]),
    (["up", "--fileservers", "0"], ["pfs up: argument --fileservers"]),
    (["metaserver", "--data-dir", "d", "--port", "-1"], ["pfs metaserver: argument --port"]),
    (["fileserver", "--data-dir", "d", "--metaserver", "127.0.0.1:70000"],
     ["pfs fileserver: argument --metaserver: '127.0.0.1:70000'"]),
    (["fileserver", "--data-dir", "d", "--advertise", "h"], ["pfs fileserver: argument --adv"]),
])
def test_argument_errors_are_one_line_and_status_1(pfs, args, words):
    """As every other failure (README), not argparse's usage block and status 2; nothing is
    started or touched."""
    fails(pfs(*args, check=False), *words)
    assert not (pfs.cwd / "d").exists()


def test_ls_lh_is_long_with_human_sizes_and_help_is_long_only(pfs, tmp_path, name):
    local = tmp_path / "f"
    local.write_bytes(b"x" * 3_000_000)
    pfs("put", "--parents", local, f"{name}/f")
    pfs("put", "-", f"{name}/small", input=b"12345")
    long = listing(pfs, name, "-lh")
    assert long[0].split()[:2] == ["2.9", "MiB"] and long[0].endswith(" f")
    assert long[1].split()[:2] == ["5", "B"] and long[1].endswith(" small")
    assert listing(pfs, name, "-l")[0].split()[0] == "3000000"
    assert listing(pfs, name, "-h") == ["f", "small"]
    helped = pfs("ls", "--help").out
    assert helped.startswith("usage: pfs ls") and "--human-readable" in helped


def test_pfs_urls_are_paths(pfs, tmp_path, name):
    """The URLs the command prints (pfs:/a/b), and fsspec's (pfs://a/b, pfs:///a/b), are taken
    wherever a PFS path is."""
    local = tmp_path / "big.bin"
    local.write_bytes(b"data" * 1000)
    pfs("mkdir", f"pfs:/{name}", f"pfs://{name}/sub", f"pfs:///{name}/sub/deeper/")
    printed = pfs("put", local, f"pfs://{name}/").out  # into the directory, under its name
    assert printed == f"{local} -> pfs:/{name}/big.bin (4000 bytes)\n"
    url = printed.split(" -> ")[1].split()[0]
    assert pfs("get", url, "-").stdout == b"data" * 1000
    assert pfs("cat", f"pfs:///{name}/big.bin").stdout == b"data" * 1000
    assert f"path:          /{name}/big.bin" in pfs("stat", url).out
    assert listing(pfs, f"pfs:/{name}") == ["big.bin", "sub/"]
    assert listing(pfs, f"pfs://{name}/sub/") == ["deeper/"]
    assert f"{name}/" in listing(pfs, "pfs:/") and f"{name}/" in listing(pfs, "pfs://")
    pfs("mv", url, f"pfs://{name}/sub")
    pfs("cp", f"pfs:/{name}/sub/big.bin", f"pfs:///{name}/copy")
    assert f"4000\tpfs:/{name}/sub" in pfs("du", f"pfs:/{name}").out
    pfs("rm", "-r", f"pfs:/{name}/sub", f"pfs://{name}/copy")
    assert listing(pfs, name) == []
    fails(pfs("ls", "pfs:nothing", check=False), "pfs:nothing")  # no slash: a name


def test_put_and_get_progress_and_quiet(pfs, tmp_path, name):
    local = tmp_path / "f"
    local.write_bytes(os.urandom(20 << 20))  # more than two copy chunks
    pfs("mkdir", name)
    put = pfs("put", "--progress", local, f"{name}/f")
    counts = put.err.splitlines()  # not a terminal: a line per chunk, with rate and time left
    assert len(counts) >= 3 and counts[-1].startswith("  20.0MiB / 20.0MiB ("), put.err
    assert all(re.fullmatch(r"  [\d.]+[KM]?iB / 20.0MiB \([\d.]+[KMG]?iB/s, \d\d:\d\d left\)",
                            line) for line in counts), put.err
    assert put.out == f"{local} -> pfs:/{name}/f ({20 << 20} bytes)\n"
    quiet = pfs("put", "--quiet", "--force", local, f"{name}/f")
    assert quiet.out == "" and quiet.err == ""
    plain = pfs("get", f"{name}/f", tmp_path / "back")
    assert plain.err == "" and plain.out.endswith(f"({20 << 20} bytes)\n")  # no terminal
    got = pfs("get", "--progress", f"{name}/f", tmp_path / "b2")
    assert got.err.splitlines()[-1].startswith("  20.0MiB / 20.0MiB (")
    assert pfs("get", "-q", f"{name}/f", tmp_path / "b3").out == ""
    for copy in ("back", "b2", "b3"):
        assert (tmp_path / copy).read_bytes() == local.read_bytes()


def test_json_of_ls_and_status(pfs, tmp_path, name):
    local = tmp_path / "f"
    local.write_bytes(b"z" * 1234)
    pfs("mkdir", "-p", f"{name}/d")
    pfs("put", "--stripe-width", "2", local, f"{name}/f")
    before = time.time()
    entries = json.loads(pfs("ls", "--json", name).out)
    assert [e["name"] for e in entries] == ["d", "f"]
    directory, file = entries
    assert directory["path"] == f"/{name}/d" and directory["type"] == "directory"
    assert file == {"path": f"/{name}/f", "name": "f", "type": "file", "size": 1234,
                    "stripe_width": 2, "ctime": file["ctime"], "mtime": file["mtime"]}
    assert before - 120 < file["ctime"] <= file["mtime"] <= before
    assert json.loads(pfs("ls", "--json", f"{name}/f").out) == [file]
    assert json.loads(pfs("ls", "--json", f"{name}/d").out) == []
    several = pfs("ls", "--json", f"{name}/d", f"{name}/nothing", name, check=False)
    fails(several, "nothing")
    assert [e["name"] for e in json.loads(several.out)] == ["d", "f"]

    status = json.loads(pfs("status", "--json").out)
    assert status["expected_fileservers"] == 4 and len(status["fileservers"]) == 4
    assert all(f["online"] for f in status["fileservers"])
    assert status["block_size"] == COURSE["block_size"] and status["files"] >= 1
    assert status["metaserver"] == pfs("status").out.split()[1].rstrip(":")


def test_cat_cp_du(pfs, tmp_path, name):
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_bytes(b"first\n")
    two.write_bytes(os.urandom(70_000))
    pfs("mkdir", "-p", f"{name}/t/sub/deep", f"{name}/t/empty")
    pfs("put", "--stripe-width", "1", one, f"{name}/t/one")
    pfs("put", two, f"{name}/t/sub/deep/two")
    assert pfs("cat", f"{name}/t/one", f"{name}/t/one").stdout == b"first\nfirst\n"
    cat = pfs("cat", f"{name}/t/one", f"{name}/missing", f"{name}/t", f"{name}/t/one",
              check=False)
    assert cat.returncode == 1 and cat.stdout == b"first\nfirst\n"
    assert cat.err.count("\n") == 2 and "missing" in cat.err and "is a directory" in cat.err

    # cp: a file keeps its striping, as put it is atomic and replaces only with --force.
    assert pfs("cp", f"{name}/t/one", f"{name}/t/sub").out == \
        f"pfs:/{name}/t/one -> pfs:/{name}/t/sub/one (6 bytes)\n"
    assert "stripe width:  1" in pfs("stat", f"{name}/t/sub/one").out
    fails(pfs("cp", f"{name}/t/sub/deep/two", f"{name}/t/sub/one", check=False), "--force")
    pfs("cp", "--force", "--stripe-width", "3", f"{name}/t/sub/deep/two", f"{name}/t/sub/one")
    assert pfs("cat", f"{name}/t/sub/one").stdout == two.read_bytes()
    assert "stripe width:  3" in pfs("stat", f"{name}/t/sub/one").out
    fails(pfs("cp", f"{name}/t", f"{name}/u", check=False), "is a directory", "-r")
    fails(pfs("cp", "-f", f"{name}/t/one", f"{name}/t/one", check=False), "both source")
    fails(pfs("cp", f"{name}/t/one", f"{name}/no/such", check=False), "no such directory")
    fails(pfs("cp", "-r", f"{name}/t", f"{name}/t/sub", check=False), "into itself")

    # cp -r: a new tree appears whole; an existing directory receives it.
    assert "(3 files, 140006 bytes)" in pfs("cp", "-r", f"{name}/t", f"{name}/u").out
    assert listing(pfs, f"{name}/u", "-a") == ["empty/", "one", "sub/"]
    pfs("cp", "-r", f"{name}/t/sub/deep", f"{name}/u")
    assert listing(pfs, f"{name}/u", "-a") == ["deep/", "empty/", "one", "sub/"]
    # Onto a directory that is there: merged, file by file, only with --force.
    fails(pfs("cp", "-r", f"{name}/t/sub", f"{name}/u", check=False), "exists", "--force")
    pfs("put", "-", f"{name}/t/sub/new", input=b"new")
    pfs("cp", "-r", "--force", f"{name}/t/sub", f"{name}/u")
    assert listing(pfs, f"{name}/u/sub", "-a") == ["deep/", "new", "one"]
    assert listing(pfs, name, "-a") == ["t/", "u/"]  # no temporaries left
    pfs("rm", f"{name}/t/sub/new")

    du = pfs("du", f"{name}/t").out.splitlines()
    assert du == [f"0\tpfs:/{name}/t/empty", f"70000\tpfs:/{name}/t/sub/deep",
                  f"140000\tpfs:/{name}/t/sub", f"140006\tpfs:/{name}/t"]
    assert pfs("du", "-s", f"{name}/t", f"{name}/u").out == \
        f"140006\tpfs:/{name}/t\n210009\tpfs:/{name}/u\n"  # u: t, deep/ again, sub/new
    assert pfs("du", "-sh", f"{name}/t").out == f"136.7 KiB\tpfs:/{name}/t\n"
    assert pfs("du", f"{name}/t/one").out == f"6\tpfs:/{name}/t/one\n"
    fails(pfs("du", f"{name}/nothing", check=False), "no such file")


def test_df_shows_what_each_fileserver_stores_and_its_free_disk(cluster, pfs, tmp_path, name):
    local = tmp_path / "f"
    local.write_bytes(os.urandom(400_000))
    pfs("put", "--parents", local, f"{name}/f")
    report = json.loads(pfs("df", "--json").out)
    servers = report["fileservers"]
    assert [s["index"] for s in servers] == [0, 1, 2, 3] and all(s["online"] for s in servers)
    disk = os.statvfs(cluster.data_dir)  # the fileservers' data directories are on this disk
    for s in servers:
        assert s["bytes_stored"] >= 97 * 1024 and s["objects"] >= 1  # 97 or 98 of its 391 units
        assert s["disk_total_bytes"] == disk.f_blocks * disk.f_frsize
        assert 0 < s["disk_free_bytes"] <= s["disk_total_bytes"]
    assert report["bytes_stored"] == sum(s["bytes_stored"] for s in servers)
    assert report["objects"] == sum(s["objects"] for s in servers)

    text = pfs("df").out.splitlines()
    assert text[0].split() == ["fileserver", "address", "stored", "objects", "disk", "size",
                               "disk", "free", "use"]
    rows = [line.split() for line in text[1:5]]
    assert [r[0] for r in rows] == [s["name"] for s in servers]  # named as in `pfs status`
    assert sorted(r[0] for r in rows) == ["fs0", "fs1", "fs2", "fs3"]
    assert [r[1] for r in rows] == [s["address"] for s in servers]
    assert all(r[-1].endswith("%") for r in rows)
    assert text[5].split()[0] == "total"
    human = pfs("df", "-h").out.splitlines()[1].split()
    assert human[3] in ("KiB", "MiB", "GiB") and human[-1].endswith("%")


def test_rm_f_ignores_missing_paths(pfs, name):
    pfs("put", "-", f"{name}", input=b"x")
    done = pfs("rm", "-f", f"{name}-missing", name, f"{name}-missing/deeper")
    assert done.out == "" and done.err == ""
    assert name not in listing(pfs, "", "-a")
    fails(pfs("rm", name, check=False), "no such file or directory", name)
    pfs("mkdir", "-p", f"{name}/d")
    pfs("rm", "-rf", name, name)
    assert name not in listing(pfs, "", "-a")


def test_a_port_in_use_is_one_line_without_grpc_noise(cluster, tmp_path):
    port = cluster.address.rsplit(":", 1)[1]
    done = subprocess.run([sys.executable, "-m", "pfs", "metaserver", "--data-dir",
                           str(tmp_path / "meta"), "--port", port], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"pfs metaserver: cannot listen on 127.0.0.1:{port}: the port "
                                  "is in use by PID ")
    assert done.stderr.count("\n") == 1, done.stderr  # no line of gRPC's own before it


def gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped counts)."""
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_up_detach_and_down(tmp_path):
    """pfs up --detach returns once the cluster serves, in the background; pfs down stops it.
    Whatever happens, every process is gone at the end."""
    data = tmp_path / "data"
    run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=200,
                            cwd=tmp_path)
    up = [sys.executable, "-m", "pfs", "up", "--detach", "--data-dir", str(data), "--port", "0",
          "--block-size", "512", "--stripe-blocks", "2"]
    try:
        started = run(up)
        assert started.returncode == 0, started.stderr
        address = (data / "metaserver.address").read_text().strip()
        pid = data_dir_holder(data)
        assert started.stdout.splitlines() == [
            f"PFS is up in the background (PID {pid}): metaserver {address}, 4 fileservers, "
            f"data in {data}",
            f"  export PFS_METASERVER={address}",
            f"Its log is {data / 'pfs.log'}; `pfs down --data-dir {data}` stops it."]
        env = {**os.environ, "PFS_METASERVER": address}
        status = run([sys.executable, "-m", "pfs", "status"], env=env)
        assert "4 online of 4 expected" in status.stdout, status.stderr
        assert run([sys.executable, "-m", "pfs", "put", "-", "kept"], input="data",
                   env=env).returncode == 0

        again = run(up)  # its data directory is taken: said at once, in one line
        assert again.returncode == 1 and again.stdout == ""
        assert again.stderr == (f"pfs up: {data} is in use by another pfs up (PID {pid}); stop "
                                "it first, or give this one another --data-dir\n")

        down = run([sys.executable, "-m", "pfs", "down", "--data-dir", str(data)])
        assert down.returncode == 0, down.stderr
        assert down.stdout == f"stopped the pfs up on {data} (PID {pid})\n"
        assert data_dir_holder(data) is None and gone(pid)
        assert "stopping the cluster" in (data / "pfs.log").read_text()  # a clean stop
        nothing = run([sys.executable, "-m", "pfs", "down", "--data-dir", str(data)])
        assert nothing.returncode == 0 and "nothing to stop" in nothing.stdout

        # Started again on the same data directory, it serves what it stored.
        assert run(up).returncode == 0
        address = (data / "metaserver.address").read_text().strip()
        kept = run([sys.executable, "-m", "pfs", "cat", "kept"],
                   env={**os.environ, "PFS_METASERVER": address})
        assert kept.stdout == "data", kept.stderr
        assert run([sys.executable, "-m", "pfs", "down", "--data-dir", str(data)]).returncode == 0
    finally:
        pid = data_dir_holder(data)
        if pid:  # the test failed with the cluster up: its whole session goes
            os.killpg(pid, signal.SIGKILL)


def test_down_stops_nothing_but_a_pfs_up(cluster, pfs, tmp_path):
    """A server's own data directory is not a cluster's: refused, and the cluster serves on."""
    fails(pfs("down", "--data-dir", cluster.data_dir / "meta", check=False), "not by a pfs up",
          "metaserver")
    assert "4 online of 4 expected" in pfs("status").out
    assert pfs("down", "--data-dir", tmp_path / "never").out.endswith("nothing to stop\n")
    fails(pfs("up", "--data-dir", "/proc/none", check=False), "pfs up: No such file")


def test_up_detach_says_why_a_cluster_did_not_start(cluster, tmp_path):
    port = cluster.address.rsplit(":", 1)[1]
    data = tmp_path / "data"
    try:
        done = subprocess.run([sys.executable, "-m", "pfs", "up", "--detach", "--data-dir",
                               str(data), "--port", port], capture_output=True, text=True,
                              timeout=200, cwd=tmp_path)
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.startswith(f"pfs up: the cluster did not start ({data / 'pfs.log'} "
                                      f"has its log): pfs metaserver: cannot listen on "
                                      f"127.0.0.1:{port}: the port is in use")
        assert done.stderr.count("\n") == 1
        assert data_dir_holder(data) is None  # nothing left running
    finally:
        pid = data_dir_holder(data)
        if pid:
            os.killpg(pid, signal.SIGKILL)


def test_bench_measures_and_leaves_nothing_behind(pfs):
    before = listing(pfs, "/")
    out = pfs("bench", "--size-mib", 1, "--rounds", 1).out
    for line in ("stripe width 1: write", "stripe width 4: write", "width 4 vs width 1",
                 "create, open, close, delete:", "4 KiB random read, cache off:"):
        assert line in out, out
    assert listing(pfs, "/") == before


def test_mkdir_and_ls_of_nested_directories(pfs, tmp_path, name):
    fails(pfs("mkdir", f"{name}/a/b", check=False), "no such file or directory")
    pfs("mkdir", "-p", f"{name}/a/b/c", f"/{name}/x/")
    pfs("mkdir", "-p", f"{name}/a/b")  # already there: fine with -p
    fails(pfs("mkdir", f"{name}/a", check=False), "exists")
    local = tmp_path / "f.bin"
    local.write_bytes(b"x" * 1000)
    pfs("put", "--stripe-width", "2", local, f"{name}/a/f.bin")
    pfs("put", local, f"{name}/a/.hidden")
    fails(pfs("mkdir", "-p", f"{name}/a/f.bin/d", check=False), "not a directory")

    assert f"{name}/" in listing(pfs, "")
    assert f"{name}/" in listing(pfs, "/")
    assert listing(pfs, name) == ["a/", "x/"]
    assert listing(pfs, f"/{name}/a/") == ["b/", "f.bin"]
    assert listing(pfs, f"{name}/a", "-a") == [".hidden", "b/", "f.bin"]
    assert listing(pfs, f"{name}/a/b") == ["c/"]
    assert listing(pfs, f"{name}/a/b/c") == []
    assert listing(pfs, f"{name}/a/f.bin") == [f"{name}/a/f.bin"]  # a file: that file

    long = listing(pfs, f"{name}/a", "-l")
    assert len(long) == 2
    directory, file = (line.split() for line in long)
    assert directory[0] == "-" and directory[-1] == "b/"
    assert file[0] == "1000" and file[3] == "w=2" and file[-1] == "f.bin"
    assert file[1].count("-") == 2 and file[2].count(":") == 2  # date and time
    fails(pfs("ls", f"{name}/nothing", check=False), "no such file")

    stat = pfs("stat", f"{name}/a").out
    assert "type:          directory" in stat and f"path:          /{name}/a" in stat
    several = pfs("ls", f"{name}/a/b", f"{name}/x").out
    assert several == f"pfs:/{name}/a/b:\nc/\n\npfs:/{name}/x:\n"


def test_get_of_a_long_non_ascii_name(pfs, tmp_path, name):
    """The local temporary of get stays within 255 bytes however long (in bytes) the name."""
    long = "é" * 120  # 240 bytes of UTF-8
    local = tmp_path / "in"
    local.write_bytes(b"data")
    pfs("put", local, f"{name}/{long}", "--parents")
    pfs("get", f"{name}/{long}", tmp_path)
    assert (tmp_path / long).read_bytes() == b"data"


def test_ls_of_the_same_directory_twice_lists_it_twice(pfs, name):
    pfs("mkdir", "-p", f"{name}/d/e")
    twice = pfs("ls", f"{name}/d", f"{name}/d").out
    assert twice == f"pfs:/{name}/d:\ne/\n\npfs:/{name}/d:\ne/\n"


def test_mv_moves_files_and_directories(pfs, tmp_path, name):
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_bytes(b"one")
    two.write_bytes(b"two")
    pfs("mkdir", "-p", f"{name}/d/sub", f"{name}/e")
    pfs("put", one, f"{name}/d/sub/file")
    pfs("put", two, f"{name}/two")

    pfs("mv", f"{name}/two", f"{name}/renamed")
    assert listing(pfs, name) == ["d/", "e/", "renamed"]
    pfs("mv", f"{name}/renamed", f"{name}/e")  # into an existing directory, as mv does
    assert listing(pfs, f"{name}/e") == ["renamed"]

    # An existing file is replaced only with --force.
    fails(pfs("mv", f"{name}/e/renamed", f"{name}/d/sub/file", check=False), "--force")
    assert pfs("get", f"{name}/d/sub/file", "-").stdout == b"one"
    assert listing(pfs, f"{name}/e") == ["renamed"]
    pfs("mv", "--force", f"{name}/e/renamed", f"{name}/d/sub/file")
    assert pfs("get", f"{name}/d/sub/file", "-").stdout == b"two"
    assert listing(pfs, f"{name}/e") == []

    # A directory moves with everything in it.
    pfs("mv", f"{name}/d", f"{name}/moved")
    assert listing(pfs, name) == ["e/", "moved/"]
    assert pfs("get", f"{name}/moved/sub/file", "-").stdout == b"two"
    pfs("mv", f"{name}/moved", f"{name}/e")
    assert listing(pfs, f"{name}/e/moved/sub") == ["file"]
    fails(pfs("mv", f"{name}/e", f"{name}/e/moved/sub", check=False), "into itself")
    fails(pfs("mv", f"{name}/nothing", f"{name}/x", check=False), "no such file")


def test_rm_needs_r_for_a_directory_and_removes_a_tree(pfs, tmp_path, name):
    local = tmp_path / "f"
    local.write_bytes(b"data")
    pfs("mkdir", "-p", f"{name}/t/a/b", f"{name}/t/c")
    for path in ("t/top", "t/a/one", "t/a/b/two", "t/a/b/.hidden", "keep"):
        pfs("put", local, f"{name}/{path}")

    fails(pfs("rm", f"{name}/t", check=False), "is a directory", "-r")
    assert listing(pfs, f"{name}/t") == ["a/", "c/", "top"]
    pfs("rm", "-r", f"{name}/t")
    assert listing(pfs, name) == ["keep"]

    # Several paths: a failure is reported, the others are still removed.
    pfs("mkdir", f"{name}/d")
    done = pfs("rm", "-r", f"{name}/missing", f"{name}/d", f"{name}/keep", check=False)
    fails(done, "missing")
    assert listing(pfs, name, "-a") == []
    fails(pfs("rm", "-r", "/", check=False), "root")


def test_put_and_get_a_tree(pfs, tmp_path, name):
    src = tmp_path / "src"
    (src / "sub" / "deep").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "a.txt").write_bytes(b"alpha\n")
    (src / "sub" / "b.bin").write_bytes(os.urandom(70_000))
    (src / "sub" / "deep" / "c.bin").write_bytes(b"")
    (src / "sub" / ".dot").write_bytes(b"dot")
    pfs("mkdir", name)

    done = pfs("put", "-r", src, f"{name}/copy")
    assert "4 files" in done.out
    assert listing(pfs, f"{name}/copy") == ["a.txt", "empty/", "sub/"]
    assert listing(pfs, f"{name}/copy/sub", "-a") == [".dot", "b.bin", "deep/"]
    assert listing(pfs, name, "-a") == ["copy/"]  # no temporaries left

    # Onto an existing directory: into it, under the source's name, as cp -r does.
    pfs("put", "-r", src, f"{name}/copy")
    assert listing(pfs, f"{name}/copy") == ["a.txt", "empty/", "src/", "sub/"]
    # Once more: that directory is there now, and is merged into only with --force.
    fails(pfs("put", "-r", src, f"{name}/copy", check=False), "exists", "--force")
    (src / "a.txt").write_bytes(b"changed\n")
    (src / "new").write_bytes(b"new")
    pfs("put", "-r", "--force", src, f"{name}/copy")
    assert pfs("get", f"{name}/copy/src/a.txt", "-").stdout == b"changed\n"
    assert listing(pfs, f"{name}/copy/src") == ["a.txt", "empty/", "new", "sub/"]
    # The contents of a directory (DIR/.), merged into an existing one.
    pfs("put", "-r", "--force", f"{src}/.", f"{name}/copy")
    assert pfs("get", f"{name}/copy/a.txt", "-").stdout == b"changed\n"
    assert listing(pfs, f"{name}/copy") == ["a.txt", "empty/", "new", "src/", "sub/"]
    assert ".pfs-tmp-" not in pfs("ls", "-a", f"{name}/copy").out

    out = tmp_path / "out"
    pfs("get", "-r", f"{name}/copy/src", out)
    assert local_tree(out) == local_tree(src)
    pfs("get", "-r", f"{name}/copy/src", out)  # an existing local directory: into it
    assert local_tree(out / "src") == local_tree(src)

    fails(pfs("get", f"{name}/copy", tmp_path / "x", check=False), "is a directory", "-r")
    assert not (tmp_path / "x").exists()


def test_get_of_a_tree_skips_symlinks_and_special_files_saying_so(pfs, clients, tmp_path, name):
    c = clients(1)
    c.mkdir(name)
    c.create(f"{name}/f", 1)
    fd = c.open(f"{name}/f", 2)
    c.pwrite(fd, b"data", 4, 0)
    c.close(fd)
    c.symlink("f", f"{name}/link")
    c.mknod(f"{name}/fifo", stat.S_IFIFO | 0o644)
    done = pfs("get", "-r", name, tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == ["f"]
    assert (tmp_path / "out" / "f").read_bytes() == b"data"
    assert f"skipping pfs:/{name}/fifo" in done.err and f"skipping pfs:/{name}/link" in done.err


def test_put_replaces_an_existing_file_only_with_force(pfs, tmp_path, name):
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_bytes(b"old contents")
    new.write_bytes(b"new contents, longer")
    pfs("mkdir", name)
    pfs("put", old, f"{name}/f")
    fails(pfs("put", new, f"{name}/f", check=False), "exists", "--force")
    assert pfs("get", f"{name}/f", "-").stdout == b"old contents"
    pfs("put", "--force", new, f"{name}/f")
    assert pfs("get", f"{name}/f", "-").stdout == b"new contents, longer"
    assert listing(pfs, name, "-a") == ["f"]


def test_put_from_stdin_and_get_to_stdout(pfs, name):
    data = os.urandom(1_500_000)
    pfs("mkdir", name)
    done = pfs("put", "-", f"{name}/piped", input=data)
    assert f"({len(data)} bytes)" in done.out
    got = pfs("get", f"{name}/piped", "-")
    assert got.stdout == data and got.err == ""
    assert not (pfs.cwd / "-").exists()  # never a file called "-"
    assert listing(pfs, name, "-a") == ["piped"]
    fails(pfs("put", "-", name, input=b"x", check=False), "is a directory")


def test_put_names_a_missing_local_file_and_creates_nothing(pfs, name):
    done = fails(pfs("put", "x.bin", f"{name}", check=False))
    assert done.err == "pfs put: no such local file: x.bin\n"
    assert name not in listing(pfs, "", "-a")


def test_put_of_a_directory_without_r_fails_and_leaves_nothing(pfs, tmp_path, name):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "f").write_bytes(b"f")
    pfs("mkdir", name)
    fails(pfs("put", tmp_path / "dir", f"{name}/target", check=False), "is a directory", "-r")
    assert listing(pfs, name, "-a") == []
    fails(pfs("stat", f"{name}/target", check=False), "no such file")


def test_put_creates_missing_parents_only_when_asked(pfs, tmp_path, name):
    local = tmp_path / "f"
    local.write_bytes(b"f")
    fails(pfs("put", local, f"{name}/a/b/f", check=False), "no such directory", "mkdir -p")
    assert name not in listing(pfs, "")
    pfs("put", "--parents", local, f"{name}/a/b/f")
    assert listing(pfs, f"{name}/a/b") == ["f"]


def test_an_interrupted_put_leaves_nothing(cluster, pfs, name):
    """Ctrl-C while `pfs put` streams a large file from a slow pipe: one line, status 130, and
    neither the target nor a temporary remains."""
    pfs("mkdir", name)
    put = subprocess.Popen([sys.executable, "-m", "pfs", "put", "-", f"{name}/big"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=cluster.env(), cwd=pfs.cwd)
    try:
        chunk = os.urandom(1 << 20)
        for _ in range(12):  # more than one copy chunk: some of it is in PFS already
            put.stdin.write(chunk)
        put.stdin.flush()
        wait_until(lambda: any(".pfs-tmp-" in line for line in listing(pfs, name, "-a")),
                   what="the temporary of the put")
        time.sleep(0.3)
        put.send_signal(signal.SIGINT)
        out, err = put.communicate(timeout=30)
    finally:
        if put.poll() is None:
            put.kill()
            put.wait()
    assert put.returncode == 130, err
    assert err.decode() == "pfs put: interrupted\n"
    assert listing(pfs, name, "-a") == []


def test_help_lists_the_environment_and_every_option(pfs):
    top = pfs("--help").out
    for variable in ENVIRONMENT:
        assert variable in top
    assert "127.0.0.1:50050" in top  # with its default
    for command in ("put", "get", "ls", "mkdir", "mv", "rm", "stat"):
        assert command in top

    from pfs.cli import _parser
    parser = _parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helped = {a.dest: a.help for a in subparsers._choices_actions}
    for command, sub in subparsers.choices.items():
        assert helped.get(command) and sub.description, command
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            assert action.help, (command, action.dest)
            if action.option_strings and not action.required:
                assert "default" in action.help, (command, action.dest)
    put_help = pfs("put", "--help").out
    assert "--force" in put_help and "--parents" in put_help and "atomic" in put_help
    for command in ("cat", "cp", "du", "df", "down"):
        assert command in top
