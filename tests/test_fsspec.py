"""PFS through fsspec ("pfs://") against a real cluster."""
import fsspec
import pytest

from pfs.fs import PFSFileSystem

TEXT = b"a,b\n1,2\n3,4\n"


@pytest.fixture
def fs(clients) -> PFSFileSystem:
    return fsspec.filesystem("pfs", client=clients(), skip_instance_cache=True)


def test_the_protocol_is_registered():
    assert fsspec.get_filesystem_class("pfs") is PFSFileSystem


def test_fsspec_open_round_trip_with_the_metaserver_option(cluster, name):
    opened = fsspec.open(f"pfs://{name}", "wb", metaserver=cluster.address)
    try:
        with opened as f:
            f.write(TEXT)
        with fsspec.open(f"pfs://{name}", "rb", metaserver=cluster.address) as f:
            assert f.read() == TEXT
        with fsspec.open(f"pfs:///{name}", "r", metaserver=cluster.address) as f:
            assert f.read().splitlines() == ["a,b", "1,2", "3,4"]
    finally:
        client = opened.fs.client
        client.finish(client.initialize())


def test_strip_protocol_gives_the_flat_name():
    for path in ("pfs://x", "pfs:///x", "/x", "x", "x/"):
        assert PFSFileSystem._strip_protocol(path) == "x"
    for path in ("pfs://", "/", ""):
        assert PFSFileSystem._strip_protocol(path) == ""


def test_ls_info_exists(fs, name):
    with fs.open(name, "wb") as f:
        f.write(TEXT)
    info = fs.info(f"pfs://{name}")
    assert (info["name"], info["size"], info["type"]) == (name, len(TEXT), "file")
    assert fs.exists(name) and fs.isfile(name) and not fs.isdir(name)
    assert fs.info("")["type"] == "directory" and fs.isdir("/")
    for root in ("", "/", "pfs://"):
        listed = {e["name"]: e for e in fs.ls(root)}
        assert listed[name]["size"] == len(TEXT)
        assert name in fs.ls(root, detail=False)
    assert fs.ls(name) == [info]


def test_missing_files_are_file_not_found(fs, name):
    assert not fs.exists(name) and not fs.exists("no/such")
    with pytest.raises(FileNotFoundError):
        fs.info(name)
    with pytest.raises(FileNotFoundError):
        fs.ls(name)
    with pytest.raises(FileNotFoundError):
        fs.cat_file(name)
    with pytest.raises(FileNotFoundError):
        fs.open(name, "rb")
    with pytest.raises(FileNotFoundError):
        fs.rm(name)


def test_cat_file_and_ranges(fs, name):
    fs.pipe_file(name, TEXT)
    assert fs.cat_file(name) == TEXT == fs.cat(f"pfs://{name}")
    assert fs.cat_file(name, 2, 7) == TEXT[2:7]
    assert fs.cat_file(name, -4) == TEXT[-4:]
    assert fs.cat_file(name, 3, -3) == TEXT[3:-3]
    assert fs.cat_file(name, 100) == b""


def test_rm_deletes(fs, name):
    fs.pipe_file(name, TEXT)
    fs.rm(f"pfs://{name}")
    assert not fs.exists(name)
    fs.pipe_file(name, TEXT)
    fs.rm_file(name)
    assert name not in fs.ls("", detail=False)


def test_wb_on_an_existing_file_and_the_root(fs, name):
    fs.pipe_file(name, TEXT)
    with pytest.raises(FileExistsError):
        fs.open(name, "wb")
    with pytest.raises(IsADirectoryError):
        fs.open("pfs://", "rb")
    with pytest.raises(IsADirectoryError):
        fs.rm_file("")


def test_stripe_width_passes_through(fs, name):
    with fs.open(name, "wb", stripe_width=1) as f:
        f.write(TEXT)
    assert fs.info(name)["stripe_width"] == 1


def test_pandas_reads_pfs_urls(fs, name):
    pandas = pytest.importorskip("pandas")
    fs.pipe_file(name, TEXT)
    frame = pandas.read_csv(f"pfs://{name}", storage_options={"client": fs.client})
    assert frame.to_dict("list") == {"a": [1, 3], "b": [2, 4]}
