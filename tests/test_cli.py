"""The pfs command against a running cluster: copying files and trees in and out (atomically),
listing, moving and removing in the directory tree, its errors, Ctrl-C and its help.

Every command runs as a subprocess (`python -m pfs`) in a temporary directory of its own, never
the source tree, and each test works under a top-level directory no other test uses."""
import argparse
import os
import signal
import subprocess
import sys
import time

import pytest

from clusters import wait_until

ENVIRONMENT = ("PFS_METASERVER", "PFS_CACHE_BLOCKS", "PFS_SECRET", "PFS_TLS_CA",
               "PFS_RETRY_SECONDS")


@pytest.fixture
def pfs(cluster, tmp_path):
    """pfs(*args, check=True, input=None) -> the finished `python -m pfs ARGS` (bytes out),
    run in a scratch directory (tmp_path/"cwd") against the shared cluster."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    def run(*args, check=True, input=None):
        done = subprocess.run([sys.executable, "-m", "pfs", *map(str, args)], env=cluster.env(),
                              input=input, capture_output=True, timeout=120, cwd=cwd)
        done.out, done.err = done.stdout.decode(errors="replace"), done.stderr.decode()
        if check:
            assert done.returncode == 0, done.err
        assert "Traceback" not in done.err, done.err
        return done
    run.cwd = cwd
    return run


def fails(done, *words):
    """The command failed with one line on stderr containing every word."""
    assert done.returncode == 1, done.err
    assert done.err.count("\n") == 1 and done.err.startswith("pfs "), done.err
    for word in words:
        assert word in done.err, done.err
    return done


def listing(pfs, path, *flags):
    return pfs("ls", *flags, path).out.splitlines()


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
    unreachable = subprocess.run([sys.executable, "-m", "pfs", "ls"], capture_output=True,
                                 text=True, timeout=60, cwd=pfs.cwd,
                                 env={**os.environ, "PFS_METASERVER": "127.0.0.1:1"})
    assert unreachable.returncode == 1 and "pfs status" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


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
