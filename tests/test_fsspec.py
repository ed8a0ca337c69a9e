"""PFS through fsspec ("pfs://") against a real cluster."""
import datetime
import errno
import io
import pickle
import subprocess
import sys

import fsspec
import pytest

from pfs.fs import PFSFileSystem

TEXT = b"a,b\n1,2\n3,4\n"
NEW = b"a,b\n5,6\n"


@pytest.fixture
def fs(clients) -> PFSFileSystem:
    return fsspec.filesystem("pfs", client=clients(), skip_instance_cache=True)


@pytest.fixture
def other(clients) -> PFSFileSystem:
    """The same cluster through another client (as another process would see it)."""
    return fsspec.filesystem("pfs", client=clients(), skip_instance_cache=True)


def _tree(fs: PFSFileSystem, top: str) -> dict[str, bytes | None]:
    """Every path under top: a file's bytes, None for a directory."""
    found = fs.find(top, withdirs=True, detail=True)
    return {p: None if i["type"] == "directory" else fs.cat_file(p) for p, i in found.items()}


def test_the_protocol_is_registered():
    assert fsspec.get_filesystem_class("pfs") is PFSFileSystem


def test_fsspec_open_round_trip_with_the_metaserver_option(cluster, name):
    opened = fsspec.open(f"pfs://{name}/dir/data.csv", "wb", metaserver=cluster.address)
    try:
        with opened as f:
            f.write(TEXT)
        with fsspec.open(f"pfs://{name}/dir/data.csv", "rb", metaserver=cluster.address) as f:
            assert f.read() == TEXT
        with fsspec.open(f"pfs:///{name}/dir/data.csv", "r", metaserver=cluster.address) as f:
            assert f.read().splitlines() == ["a,b", "1,2", "3,4"]
    finally:
        client = opened.fs.client
        client.finish(client.initialize())


def test_a_metaserver_filesystem_pickles_into_another_process(cluster, name, tmp_path):
    """As dask sends filesystems to its workers: the copy makes a client of its own."""
    fs = fsspec.filesystem("pfs", metaserver=cluster.address)
    try:
        fs.pipe_file(f"{name}/shipped", TEXT)
        script = ("import pickle, sys\n"
                  "fs = pickle.loads(sys.stdin.buffer.read())\n"
                  f"sys.stdout.buffer.write(fs.cat_file({name + '/shipped'!r}))\n")
        done = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(fs),
                              capture_output=True, cwd=tmp_path, timeout=60, check=True)
        assert done.stdout == TEXT
    finally:
        fs.client.finish(fs.client.initialize())


def test_strip_protocol_gives_the_canonical_path():
    for path in ("pfs://a/b", "pfs:///a/b", "/a/b", "a/b", "a/b/", "pfs://a/b/"):
        assert PFSFileSystem._strip_protocol(path) == "a/b"
    for path in ("pfs://", "pfs:///", "/", ""):
        assert PFSFileSystem._strip_protocol(path) == ""
    assert PFSFileSystem._strip_protocol(["pfs://x", "/y/z"]) == ["x", "y/z"]
    assert PFSFileSystem._parent("pfs://a/b/c") == "a/b" and PFSFileSystem._parent("a") == ""


def test_ls_info_exists_of_nested_directories(fs, name):
    fs.pipe_file(f"{name}/top.csv", TEXT)
    fs.pipe_file(f"{name}/sub/mid.csv", TEXT * 2)
    fs.pipe_file(f"{name}/sub/deeper/low.csv", TEXT * 3)
    fs.mkdir(f"{name}/sub/empty")

    listed = fs.ls(f"pfs://{name}")
    assert [(e["name"], e["type"]) for e in listed] == [(f"{name}/sub", "directory"),
                                                        (f"{name}/top.csv", "file")]
    assert listed[1]["size"] == len(TEXT) and listed[0]["size"] == 0
    assert fs.ls(f"/{name}/sub/", detail=False) == [
        f"{name}/sub/deeper", f"{name}/sub/empty", f"{name}/sub/mid.csv"]
    assert fs.ls(f"{name}/sub/empty") == []
    low = fs.info(f"pfs://{name}/sub/deeper/low.csv")
    assert (low["name"], low["size"], low["type"]) == (f"{name}/sub/deeper/low.csv",
                                                        3 * len(TEXT), "file")
    assert fs.ls(f"{name}/sub/deeper/low.csv") == [low]  # a file's ls is itself
    assert fs.info(f"{name}/sub")["type"] == "directory"
    assert name in fs.ls("", detail=False) and fs.info("")["type"] == "directory"

    assert fs.isdir(f"{name}/sub") and not fs.isfile(f"{name}/sub")
    assert fs.isfile(f"{name}/top.csv") and not fs.isdir(f"{name}/top.csv")
    assert fs.isdir("/") and fs.exists("pfs://")
    assert fs.find(name) == sorted([f"{name}/top.csv", f"{name}/sub/mid.csv",
                                    f"{name}/sub/deeper/low.csv"])
    assert fs.glob(f"pfs://{name}/**/*.csv") == sorted([
        f"{name}/top.csv", f"{name}/sub/mid.csv", f"{name}/sub/deeper/low.csv"])
    assert fs.du(name) == 6 * len(TEXT)
    walked = {top: (sorted(dirs), sorted(files)) for top, dirs, files in fs.walk(name)}
    assert walked[f"{name}/sub"] == (["deeper", "empty"], ["mid.csv"])


def test_created_and_modified_are_utc_datetimes(fs, name):
    before = datetime.datetime.now(datetime.timezone.utc)
    fs.pipe_file(f"{name}/f", TEXT)
    created, modified = fs.created(f"{name}/f"), fs.modified(f"{name}/f")
    assert created.tzinfo is datetime.timezone.utc
    after = datetime.datetime.now(datetime.timezone.utc)
    slack = datetime.timedelta(seconds=5)
    assert before - slack <= created <= modified <= after + slack


def test_missing_files_are_file_not_found(fs, name):
    assert not fs.exists(name) and not fs.exists(f"{name}/no/such")
    for call in (fs.info, fs.ls, fs.cat_file, fs.rm, fs.rm_file, fs.rmdir, fs.created,
                 lambda p: fs.open(p, "rb"), lambda p: fs.mv(p, f"{p}-moved")):
        with pytest.raises(FileNotFoundError):
            call(f"{name}/missing")
    with pytest.raises(FileNotFoundError):
        fs.rm(f"{name}/missing", recursive=True)
    with pytest.raises(FileNotFoundError):
        fs.mkdir(f"{name}/a/b", create_parents=False)


@pytest.mark.parametrize("bad", ["a//b", "a/./b", "a/../b", "x\0y", "n" * 256])
def test_bad_paths_raise_einval_and_do_not_exist(fs, name, bad):
    path = f"{name}/{bad}"
    assert not fs.exists(path) and not fs.isdir(path) and not fs.isfile(path)
    for call in (fs.info, fs.ls, fs.mkdir, lambda p: fs.open(p, "wb"),
                 lambda p: fs.pipe_file(p, TEXT), lambda p: fs.open(p, "rb")):
        with pytest.raises(OSError) as e:
            call(path)
        assert e.value.errno in (errno.EINVAL, errno.ENAMETOOLONG)
    assert not fs.exists(name)  # nothing was created on the way


def test_files_and_directories_in_the_way(fs, name):
    fs.pipe_file(f"{name}/file", TEXT)
    fs.mkdir(f"{name}/dir")
    with pytest.raises(NotADirectoryError):
        fs.info(f"{name}/file/x")
    with pytest.raises(NotADirectoryError):
        fs.pipe_file(f"{name}/file/x", TEXT)
    with pytest.raises(NotADirectoryError):
        fs.mkdir(f"{name}/file/x")
    assert not fs.exists(f"{name}/file/x")
    for mode in ("rb", "wb", "ab"):
        with pytest.raises(IsADirectoryError):
            fs.open(f"{name}/dir", mode)
    with pytest.raises(IsADirectoryError):
        fs.open("pfs://", "rb")
    with pytest.raises(IsADirectoryError):
        fs.rm_file(f"{name}/dir")
    with pytest.raises(IsADirectoryError):
        fs.rm_file("")
    assert fs.cat_file(f"{name}/file") == TEXT and fs.ls(f"{name}/dir") == []


def test_cat_file_and_ranges(fs, name):
    fs.pipe_file(name, TEXT)
    assert fs.cat_file(name) == TEXT == fs.cat(f"pfs://{name}")
    assert fs.cat_file(name, 2, 7) == TEXT[2:7]
    assert fs.cat_file(name, -4) == TEXT[-4:]
    assert fs.cat_file(name, 3, -3) == TEXT[3:-3]
    assert fs.cat_file(name, 100) == b""
    assert fs.cat_ranges([name, name], [0, 4], [2, 7]) == [TEXT[:2], TEXT[4:7]]


def test_writes_create_missing_parents(fs, name):
    fs.pipe_file(f"pfs://{name}/p/q/piped", TEXT)
    with fs.open(f"{name}/w/x/y/opened", "wb") as f:
        f.write(TEXT)
    with fs.open(f"{name}/t/text", "w") as f:
        f.write("text\n")
    with fs.open(f"{name}/x/created", "xb") as f:
        f.write(TEXT)
    with fs.open(f"{name}/a/appended", "ab") as f:
        f.write(TEXT)
    fs.touch(f"{name}/e/empty")
    assert {p: d for p, d in _tree(fs, name).items() if d is not None} == {
        f"{name}/p/q/piped": TEXT, f"{name}/w/x/y/opened": TEXT, f"{name}/t/text": b"text\n",
        f"{name}/x/created": TEXT, f"{name}/a/appended": TEXT, f"{name}/e/empty": b""}
    assert fs.isdir(f"{name}/w/x")


def test_wb_replaces_an_existing_file(fs, name):
    fs.pipe_file(name, TEXT * 10)
    with fs.open(name, "wb") as f:
        assert (f.name, f.mode, f.writable(), f.readable()) == (name, "wb", True, False)
        f.write(NEW)
    assert fs.cat_file(name) == NEW
    fs.pipe_file(f"pfs://{name}", TEXT)
    assert fs.cat_file(name) == TEXT
    with pytest.raises(FileExistsError):
        fs.pipe_file(name, NEW, mode="create")
    with pytest.raises(FileExistsError):
        fs.open(name, "xb")
    with fs.open(name, "ab") as f:
        f.write(NEW)
    assert fs.cat_file(name) == TEXT + NEW


def test_wb_replace_is_atomic_for_a_reader_in_another_client(fs, other, name):
    path = f"{name}/data.csv"
    fs.pipe_file(path, TEXT)
    with fs.open(path, "wb") as f:
        f.write(NEW[:3])
        f.flush()
        assert other.cat_file(path) == TEXT  # the old file, whole, while the new one is written
        assert other.info(path)["size"] == len(TEXT)
        f.write(NEW[3:])
        f.flush()
        with other.open(path, "rb") as reading:
            assert reading.read(4) == TEXT[:4]
        assert other.cat_file(path) == TEXT
        # The new data lives under a hidden temporary in the same directory meanwhile.
        assert [p.rpartition("/")[2][:10] for p in other.ls(name, detail=False)] == [
            ".data.csv.", "data.csv"]
    assert other.cat_file(path) == NEW
    assert other.ls(name, detail=False) == [path]  # no temporary left


def test_replacing_a_file_being_read_leaves_the_readers_the_old_one(fs, other, name):
    """POSIX: the rename on close replaces a file open anywhere; its readers (another client's
    and this one's) keep the old bytes until they close, new opens get the new file."""
    path = f"{name}/data"
    fs.pipe_file(path, TEXT)
    with other.open(path, "rb") as elsewhere, fs.open(path, "rb") as here:
        assert elsewhere.read(3) == TEXT[:3]
        with fs.open(path, "wb") as f:
            f.write(here.read().upper())
        assert other.cat_file(path) == TEXT.upper()
        assert elsewhere.read() == TEXT[3:]
    fs.rm_file(path)
    assert other.ls(name, detail=False) == []


@pytest.mark.parametrize("mode", ["wb", "w"])
def test_an_exception_inside_with_keeps_the_old_file(fs, other, name, mode):
    path = f"{name}/data.csv"
    fs.pipe_file(path, TEXT)
    with pytest.raises(RuntimeError):
        with fs.open(path, mode) as f:
            f.write(NEW if "b" in mode else NEW.decode())
            f.flush()
            raise RuntimeError("the computation failed half-way")
    assert f.closed
    assert other.cat_file(path) == TEXT
    assert other.ls(name, detail=False) == [path]  # the temporary is gone
    # A new file that was never committed does not appear at all.
    with pytest.raises(RuntimeError):
        with fs.open(f"{name}/new/file", mode) as f:
            raise RuntimeError("nothing written")
    assert not other.exists(f"{name}/new/file")


def test_transactions_commit_together_or_not_at_all(fs, other, name):
    fs.pipe_file(f"{name}/before", TEXT)
    with fs.transaction:
        fs.pipe_file(f"{name}/one", TEXT)
        with fs.open(f"{name}/two", "wb") as f:
            f.write(NEW)
        assert not other.exists(f"{name}/one") and not other.exists(f"{name}/two")
        with fs.open(f"{name}/before", "rb") as f:  # reading in a transaction works
            assert f.read() == TEXT
    assert other.cat_file(f"{name}/one") == TEXT and other.cat_file(f"{name}/two") == NEW
    with pytest.raises(RuntimeError):
        with fs.transaction:
            fs.pipe_file(f"{name}/one", NEW)
            raise RuntimeError("abort")
    assert other.cat_file(f"{name}/one") == TEXT
    assert other.ls(name, detail=False) == [f"{name}/before", f"{name}/one", f"{name}/two"]
    with pytest.raises(NotImplementedError):
        with fs.transaction:
            fs.open(f"{name}/one", "ab")


def test_mkdir_makedirs_rmdir(fs, name):
    fs.mkdir(f"{name}/a/b/c")  # parents by default
    assert fs.isdir(f"{name}/a/b")
    with pytest.raises(FileExistsError):
        fs.mkdir(f"{name}/a/b/c")
    fs.mkdir(f"{name}/a/flat", create_parents=False)
    fs.makedirs(f"{name}/a/b/c", exist_ok=True)
    with pytest.raises(FileExistsError):
        fs.makedirs(f"{name}/a/b/c")
    fs.makedirs(f"{name}/x/y/z")
    assert fs.isdir(f"{name}/x/y/z")
    fs.pipe_file(f"{name}/a/file", TEXT)
    with pytest.raises(FileExistsError):
        fs.makedirs(f"{name}/a/file", exist_ok=True)  # a file is in the way, as os.makedirs
    with pytest.raises(OSError) as e:
        fs.rmdir(f"{name}/a/b")
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(NotADirectoryError):
        fs.rmdir(f"{name}/a/file")
    fs.rmdir(f"{name}/a/b/c")
    assert fs.ls(f"{name}/a/b") == []
    with pytest.raises(OSError) as e:
        fs.rmdir("")
    assert e.value.errno == errno.EBUSY


def test_rm_files_and_recursive_trees(fs, name):
    fs.pipe_file(f"{name}/keep", TEXT)
    fs.pipe_file(f"{name}/f1.csv", TEXT)
    fs.pipe_file(f"{name}/f2.csv", TEXT)
    for i in range(3):
        fs.pipe_file(f"{name}/tree/d{i}/e/f{i}", TEXT)
    fs.mkdir(f"{name}/tree/empty")
    fs.mkdir(f"{name}/lonely")

    fs.rm(f"pfs://{name}/*.csv")  # a glob
    with pytest.raises(IsADirectoryError):
        fs.rm(f"{name}/tree")
    with pytest.raises(IsADirectoryError):
        fs.rm(f"{name}/lonely")  # even an empty one: rmdir it, or pass recursive
    with pytest.raises(IsADirectoryError):
        fs.rm("pfs://")
    assert fs.exists(f"{name}/tree/d0/e/f0")
    fs.rm(f"{name}/tree", recursive=True)
    fs.rm(f"{name}/lonely", recursive=True)
    assert fs.ls(name, detail=False) == [f"{name}/keep"]
    fs.rm_file(f"{name}/keep")
    assert fs.ls(name) == []


def test_mv_files_and_whole_directories(fs, other, name):
    fs.pipe_file(f"{name}/src/a", TEXT)
    fs.pipe_file(f"{name}/src/sub/b", NEW)
    before = _tree(fs, f"{name}/src")

    fs.mv(f"pfs://{name}/src", f"{name}/moved/here")  # a directory, parents made
    assert not fs.exists(f"{name}/src")
    assert _tree(other, f"{name}/moved/here") == {
        p.replace(f"{name}/src", f"{name}/moved/here"): d for p, d in before.items()}

    fs.mv(f"{name}/moved/here/a", f"{name}/a-renamed")  # a file
    assert fs.cat_file(f"{name}/a-renamed") == TEXT
    fs.pipe_file(f"{name}/target", NEW)
    fs.mv(f"{name}/a-renamed", f"{name}/target")  # replaces a file
    assert fs.cat_file(f"{name}/target") == TEXT and not fs.exists(f"{name}/a-renamed")

    fs.mkdir(f"{name}/box")
    fs.mv(f"{name}/target", f"{name}/box")  # into an existing directory
    fs.mv(f"{name}/moved/here", f"{name}/box/")  # a directory into one
    assert fs.find(f"{name}/box") == [f"{name}/box/here/sub/b", f"{name}/box/target"]

    with pytest.raises(OSError) as e:
        fs.mv(f"{name}/box", f"{name}/box/here/inside")
    assert e.value.errno == errno.EINVAL
    fs.mv(f"{name}/box", f"{name}/box")  # onto itself: nothing happens
    assert fs.isdir(f"{name}/box")
    with other.open(f"{name}/box/target", "rb") as reading:  # POSIX: an open file moves too
        fs.mv(f"{name}/box/target", f"{name}/elsewhere")
        assert reading.read() == other.cat_file(f"{name}/elsewhere")


def test_mv_of_several_sources_into_a_directory(fs, name):
    for part in ("p1", "p2", "p3"):
        fs.pipe_file(f"{name}/in/{part}.csv", part.encode())
    fs.mv(f"{name}/in/*.csv", f"{name}/out")
    assert fs.ls(f"{name}/in") == []
    assert {p: fs.cat_file(p) for p in fs.find(f"{name}/out")} == {
        f"{name}/out/{p}.csv": p.encode() for p in ("p1", "p2", "p3")}


def test_cp_file_and_recursive_copy(fs, name):
    fs.pipe_file(f"{name}/src/a", TEXT)
    fs.pipe_file(f"{name}/src/deep/b", NEW * 1000)
    fs.cp_file(f"{name}/src/a", f"{name}/copies/a")
    assert fs.cat_file(f"{name}/copies/a") == TEXT
    fs.copy(f"{name}/src", f"{name}/tree", recursive=True)
    assert {p: fs.cat_file(p) for p in fs.find(f"{name}/tree")} == {
        f"{name}/tree/a": TEXT, f"{name}/tree/deep/b": NEW * 1000}
    assert fs.cat_file(f"{name}/src/a") == TEXT  # the source is untouched


def test_put_and_get_recursive(fs, name, tmp_path):
    local = tmp_path / "up"
    (local / "sub" / "deeper").mkdir(parents=True)
    (local / "one.bin").write_bytes(TEXT)
    (local / "sub" / "two.bin").write_bytes(NEW)
    (local / "sub" / "deeper" / "three.bin").write_bytes(bytes(range(256)) * 100)

    fs.put(str(local) + "/", f"{name}/remote", recursive=True)
    assert {p: fs.cat_file(p) for p in fs.find(f"{name}/remote")} == {
        f"{name}/remote/one.bin": TEXT, f"{name}/remote/sub/two.bin": NEW,
        f"{name}/remote/sub/deeper/three.bin": bytes(range(256)) * 100}
    fs.put_file(str(local / "one.bin"), f"{name}/single/one.bin")
    assert fs.cat_file(f"{name}/single/one.bin") == TEXT

    down = tmp_path / "down"
    fs.get(f"pfs://{name}/remote/", str(down) + "/", recursive=True)
    got = {str(p.relative_to(down)): p.read_bytes() for p in down.rglob("*") if p.is_file()}
    assert got == {"one.bin": TEXT, "sub/two.bin": NEW,
                   "sub/deeper/three.bin": bytes(range(256)) * 100}
    buffer = io.BytesIO()
    fs.get_file(f"{name}/remote/sub/two.bin", buffer)
    assert buffer.getvalue() == NEW


def test_one_client_may_read_a_file_it_has_open_already(fs, name):
    fs.pipe_file(name, TEXT)
    with fs.open(name, "rb") as first, fs.open(name, "rb") as second:
        assert first.read(2) == TEXT[:2] and second.read() == TEXT
        assert fs.cat_file(name, 1, 3) == TEXT[1:3]


def test_stripe_width_passes_through(fs, name):
    with fs.open(name, "wb", stripe_width=1) as f:
        f.write(TEXT)
    assert fs.info(name)["stripe_width"] == 1
    with fs.open(name, "wb", stripe_width=2) as f:  # a replacement is a new file
        f.write(TEXT)
    assert fs.info(name)["stripe_width"] == 2


def test_options_for_fsspec_read_caches_are_accepted_and_ignored(fs, name):
    """Tools pass options that tune fsspec's own read caches (dask passes default_cache when it
    reads Parquet footers); PFS files have a cache of their own, so these change nothing."""
    with fs.open(name, "wb", stripe_width=1, cache_type="none", default_cache="none") as f:
        f.write(TEXT)
    assert fs.info(name)["stripe_width"] == 1
    for options in ({"default_cache": "none"}, {"cache_type": "readahead"},
                    {"default_cache": "bytes", "default_fill_cache": False,
                     "cache_options": {"maxblocks": 2}}):
        with fs.open(name, "rb", **options) as f:
            assert f.read() == TEXT, options
        with fs.open(name, "r", **options) as f:
            assert f.read() == TEXT.decode(), options


def test_pfs_fs_without_fsspec_says_how_to_install_it(tmp_path):
    """pip install . does not bring fsspec: importing pfs.fs then says which extra does."""
    done = subprocess.run([sys.executable, "-c", "import sys\n"
                           "sys.modules['fsspec'] = None  # as if it were not installed\n"
                           "import pfs.fs"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)  # not the source tree
    assert done.returncode == 1
    assert "ImportError: pfs.fs needs fsspec" in done.stderr
    assert 'pip install "pfs[data]"' in done.stderr


def test_pandas_reads_pfs_urls(fs, name):
    pandas = pytest.importorskip("pandas")
    fs.pipe_file(name, TEXT)
    frame = pandas.read_csv(f"pfs://{name}", storage_options={"client": fs.client})
    assert frame.to_dict("list") == {"a": [1, 3], "b": [2, 4]}


def test_rm_of_the_root_recursively_empties_it(fresh_cluster):
    client = fresh_cluster.client()
    try:
        fs = fsspec.filesystem("pfs", client=client, skip_instance_cache=True)
        fs.pipe_file("top", TEXT)
        fs.pipe_file("a/b/c", TEXT)
        fs.mkdir("empty")
        fs.rm("pfs://", recursive=True)
        assert fs.ls("") == [] and fs.isdir("")
    finally:
        client.finish(client.initialize())
