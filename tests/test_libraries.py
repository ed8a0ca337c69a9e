"""The data tools on pfs:// against a real cluster: pandas, pyarrow, zarr, h5py and dask write and
read PFS through its fsspec filesystem, and every test checks the data it reads back."""
import gc
import time

import fsspec
import numpy
import pytest

import pfs
from pfs.fs import PFSFileSystem

pandas = pytest.importorskip("pandas")


@pytest.fixture
def options(cluster):
    """The storage options that name the shared cluster. fsspec caches one filesystem (and so one
    client) per set of options; its session is finished after the test."""
    yield {"metaserver": cluster.address}
    gc.collect()  # file objects the libraries dropped without closing them close now
    for fs in list(PFSFileSystem._cache.values()):
        client = fs._own
        if client is not None and client._session is not None and not client._session.lost:
            # pyarrow closes the files it read on its own threads, a little later.
            deadline = time.monotonic() + 10
            while client._fds and time.monotonic() < deadline:
                time.sleep(0.01)
            client.finish(client._session.client_id)


@pytest.fixture
def fs(options) -> PFSFileSystem:
    return fsspec.filesystem("pfs", **options)


def test_pandas_writes_a_nested_csv_overwrites_it_and_reads_it_back(fs, options, name):
    url = f"pfs://{name}/tables/2026/a.csv"
    first = pandas.DataFrame({"x": range(100), "y": [f"r{i}" for i in range(100)]})
    first.to_csv(url, index=False, storage_options=options)  # makes tables/ and tables/2026/
    pandas.testing.assert_frame_equal(pandas.read_csv(url, storage_options=options), first)
    second = pandas.DataFrame({"x": [7, 8, 9], "y": ["p", "q", "r"], "z": [0.5, 1.5, 2.5]})
    second.to_csv(url, index=False, storage_options=options)  # replaces it ("file exists" no more)
    pandas.testing.assert_frame_equal(pandas.read_csv(url, storage_options=options), second)
    # Shorter data replaced longer: nothing of the first file is left, nor any temporary.
    assert fs.cat_file(f"{name}/tables/2026/a.csv") == second.to_csv(index=False).encode()
    assert fs.ls(f"{name}/tables/2026", detail=False) == [f"{name}/tables/2026/a.csv"]
    assert fs.isdir(f"{name}/tables")


def test_pyarrow_writes_a_partitioned_parquet_dataset_and_reads_it_back(fs, options, name):
    pa = pytest.importorskip("pyarrow")
    ds = pytest.importorskip("pyarrow.dataset")
    rows = 300
    table = pa.table({"id": list(range(rows)),
                      "city": [("oslo", "lima", "pune")[i % 3] for i in range(rows)],
                      "value": [i * 0.25 for i in range(rows)]})
    ds.write_dataset(table, f"{name}/sales", format="parquet", filesystem=fs,
                     partitioning=ds.partitioning(pa.schema([("city", pa.string())]),
                                                  flavor="hive"))
    assert sorted(fs.ls(f"{name}/sales", detail=False)) == [
        f"{name}/sales/city={c}" for c in ("lima", "oslo", "pune")]
    expected = table.to_pandas().sort_values("id").reset_index(drop=True)

    back = ds.dataset(f"{name}/sales", filesystem=fs, format="parquet",
                      partitioning="hive").to_table().to_pandas()
    back["city"] = back["city"].astype(str)
    pandas.testing.assert_frame_equal(
        back.sort_values("id").reset_index(drop=True)[expected.columns], expected)

    frame = pandas.read_parquet(f"pfs://{name}/sales", storage_options=options)
    frame["city"] = frame["city"].astype(str)
    pandas.testing.assert_frame_equal(
        frame.sort_values("id").reset_index(drop=True)[expected.columns], expected)


def test_dask_reads_a_parquet_dataset_and_counts_its_rows(fs, options, name):
    """len() of a dask frame reads the row counts from the Parquet footers, opening each file
    with options for fsspec's read caches (default_cache="none")."""
    dd = pytest.importorskip("dask.dataframe")
    parts = [pandas.DataFrame({"day": [day] * (10 + day), "hits": range(10 + day)})
             for day in range(3)]
    for day, part in enumerate(parts):
        part.to_parquet(f"pfs://{name}/hits/day{day}.parquet", storage_options=options)
    for filesystem in ("fsspec", None):
        frame = dd.read_parquet(f"pfs://{name}/hits", storage_options=options,
                                filesystem=filesystem)
        assert len(frame) == sum(len(p) for p in parts)
        got = frame.compute().sort_values(["day", "hits"]).reset_index(drop=True)
        pandas.testing.assert_frame_equal(got, pandas.concat(parts).reset_index(drop=True),
                                          check_dtype=False)


def test_zarr_writes_and_reads_a_chunked_array(options, fs, name):
    zarr = pytest.importorskip("zarr")
    data = numpy.arange(60 * 50, dtype="int32").reshape(60, 50)
    store = zarr.storage.FsspecStore.from_url(f"pfs://{name}/cube.zarr", storage_options=options)
    array = zarr.create_array(store, shape=data.shape, chunks=(16, 16), dtype="int32")
    array[:] = data
    array[5:9, 40:44] = -1
    data[5:9, 40:44] = -1

    reread = zarr.open_array(zarr.storage.FsspecStore.from_url(
        f"pfs://{name}/cube.zarr", storage_options=options, read_only=True), mode="r")
    numpy.testing.assert_array_equal(reread[:], data)
    numpy.testing.assert_array_equal(reread[10:30, 3:7], data[10:30, 3:7])
    # One object per chunk (4 x 4) under c/, and the array's metadata.
    assert fs.exists(f"{name}/cube.zarr/zarr.json")
    assert len(fs.find(f"{name}/cube.zarr/c")) == 16


def test_h5py_reads_an_hdf5_file_through_a_pfs_file_object(fs, name, tmp_path):
    h5py = pytest.importorskip("h5py")
    temps = numpy.linspace(-5, 35, 4000).reshape(40, 100)
    local = tmp_path / "weather.h5"
    with h5py.File(local, "w") as h:
        h.create_dataset("temps", data=temps, chunks=(10, 100), compression="gzip")
        h.create_dataset("stations/ids", data=numpy.arange(40, dtype="int64"))
        h.attrs["source"] = "pfs test"
    fs.put_file(str(local), f"{name}/h5/weather.h5")
    assert fs.size(f"{name}/h5/weather.h5") == local.stat().st_size

    with fs.open(f"{name}/h5/weather.h5", "rb") as f, h5py.File(f, "r") as h:
        numpy.testing.assert_array_equal(h["temps"][:], temps)
        numpy.testing.assert_array_equal(h["temps"][12:14, 50:60], temps[12:14, 50:60])
        numpy.testing.assert_array_equal(h["stations/ids"][:], numpy.arange(40))
        assert h.attrs["source"] == "pfs test"


def test_h5py_writes_through_a_pfs_file_object(fs, name):
    h5py = pytest.importorskip("h5py")
    values = numpy.random.default_rng(7).normal(size=(64, 32))
    with pfs.open(f"{name}/h5/direct.h5", "w+b", client=fs.client) as f:
        with h5py.File(f, "w") as h:
            h.create_dataset("values", data=values, chunks=(8, 32))
    with pfs.open(f"{name}/h5/direct.h5", "rb", client=fs.client) as f, h5py.File(f, "r") as h:
        numpy.testing.assert_array_equal(h["values"][:], values)


def test_dask_reads_a_glob_of_csvs(fs, options, name):
    dd = pytest.importorskip("dask.dataframe")
    parts = [pandas.DataFrame({"day": [day] * 50, "hits": [day * 100 + i for i in range(50)]})
             for day in range(4)]
    for day, part in enumerate(parts):
        fs.pipe_file(f"{name}/logs/day{day}.csv", part.to_csv(index=False).encode())
    fs.pipe_file(f"{name}/logs/readme.txt", b"not a csv\n")

    frame = dd.read_csv(f"pfs://{name}/logs/*.csv", storage_options=options)
    assert frame.npartitions == 4
    got = frame.compute().sort_values("hits").reset_index(drop=True)
    expected = pandas.concat(parts).sort_values("hits").reset_index(drop=True)
    pandas.testing.assert_frame_equal(got, expected)


def test_dask_reads_blocks_of_one_file_in_parallel(fs, options, name):
    """Several partitions of one file: dask's threads open it at the same time, through one
    client, which has it open once."""
    dd = pytest.importorskip("dask.dataframe")
    expected = pandas.DataFrame({"n": range(20_000), "sq": [i * i for i in range(20_000)]})
    fs.pipe_file(f"{name}/big.csv", expected.to_csv(index=False).encode())
    frame = dd.read_csv(f"pfs://{name}/big.csv", blocksize=40_000, storage_options=options)
    assert frame.npartitions >= 4
    got = frame.compute(scheduler="threads").reset_index(drop=True)
    pandas.testing.assert_frame_equal(got, expected)


def test_pyarrow_needs_the_filesystem_rather_than_a_pfs_url(fs, options, name):
    """As the README says: pyarrow's own readers know only its built-in URL schemes; with
    `filesystem=` they take PFS paths and pfs:// URLs alike. (The README's snippet itself runs
    in test_readme.py.)"""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"city": ["oslo", "lima", "pune"], "value": [1.5, 2.5, 3.5]})
    pq.write_table(table, f"{name}/cities.parquet", filesystem=fs)
    with pytest.raises(pa.ArrowInvalid, match="Unrecognized filesystem type in URI"):
        pq.read_table(f"pfs://{name}/cities.parquet")
    assert pq.read_table(f"pfs://{name}/cities.parquet", filesystem=fs).equals(table)
    assert pq.read_table(f"{name}/cities.parquet", filesystem=fs).equals(table)
    assert pandas.read_parquet(f"pfs://{name}/cities.parquet",  # pandas: the URL as it is
                               storage_options=options).equals(table.to_pandas())
