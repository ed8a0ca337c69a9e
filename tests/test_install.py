"""Installing PFS as the README says: an unbuilt checkout says so on import, `pip install -e .`
makes a checkout that works where it is, and the extras name the data tools.

The editable install runs pip in a fresh virtual environment on a copy of the checkout (with
build isolation, as a user's pip would): it takes a few seconds, and the registry that
`pip install ".[test]"` used."""
import importlib.metadata
import pathlib
import re
import shutil
import subprocess
import sys
import venv

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: What a checkout never holds (.gitignore): build products and caches.
BUILT = ("build", "dist", "*.egg-info", "__pycache__", "*.so", "*.o", "*_pb2*.py", "*_pb2*.pyi",
         ".git", ".hypothesis", ".pytest_cache", ".venv", "data")


def checkout(where: pathlib.Path) -> pathlib.Path:
    """A copy of the source tree as a fresh clone has it."""
    shutil.copytree(ROOT, where, ignore=shutil.ignore_patterns(*BUILT))
    return where


def test_an_unbuilt_checkout_says_how_to_build_it(tmp_path):
    source = checkout(tmp_path / "src")
    done = subprocess.run([sys.executable, "-c", "import pfs"], cwd=source,  # source first
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith(f"ImportError: PFS is not built in {source / 'pfs'}")
    assert "pip install ." in message and "pip install -e ." in message


def test_an_editable_install_works_where_the_checkout_is(cluster, tmp_path, name):
    source = checkout(tmp_path / "src")
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    install = subprocess.run([python, "-m", "pip", "install", "-e", source],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    # The build made the protocol modules and the C core inside the checkout...
    assert sorted(p.name for p in (source / "pfs" / "_proto").glob("*_pb2*.py")) == [
        "fileserver_pb2.py", "fileserver_pb2_grpc.py", "metaserver_pb2.py",
        "metaserver_pb2_grpc.py"]
    assert list((source / "pfs" / "_native").glob("_core*.so"))
    # ... which is what Python imports from anywhere, edits included, and it works.
    with open(source / "pfs" / "protocol" / "paths.py", "a") as f:
        f.write("\nEDITED = 'in place'\n")
    script = ("import pfs, pfs.protocol.paths, pfs_servers.rpc\n"
              "print(pfs.__file__, pfs_servers.rpc.__file__, pfs.protocol.paths.EDITED)\n"
              f"client = pfs.Client({cluster.address!r})\n"
              "client_id = client.pfs_initialize()\n"
              f"assert client.pfs_create({name!r}, 2) == 0, pfs.pfs_last_error()\n"
              f"fd = client.pfs_open({name!r}, pfs.PFS_READ_WRITE)\n"
              "assert client.pfs_write(fd, b'editable', 8, 0) == 8\n"
              "buf = bytearray(8)\n"
              "assert client.pfs_read(fd, buf, 8, 0) == 8 and buf == b'editable'\n"
              "assert client.pfs_close(fd) == 0 and client.pfs_finish(client_id) == 0\n")
    done = subprocess.run([python, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(source / "pfs" / "__init__.py"),
                                   str(source / "servers" / "rpc.py"), "in", "place"]
    # The pfs command of that environment is the checkout's too.
    ls = subprocess.run([environment / "bin" / "pfs", "ls", "-l", name], cwd=tmp_path,
                        capture_output=True, text=True, timeout=60, env=cluster.env())
    assert ls.returncode == 0 and ls.stdout.split()[0] == "8", ls.stderr


def test_the_data_extra_installs_the_data_tools_and_the_test_extra_it():
    requires = importlib.metadata.requires("pfs")

    def extra(which: str) -> set[str]:
        names = set()
        for requirement in requires:
            if f'extra == "{which}"' in requirement:
                names.add(re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower())
        return names
    assert {"fsspec", "pandas", "pyarrow", "zarr", "h5py", "dask", "numpy"} <= extra("data")
    assert any(r.startswith("pfs[data]") and 'extra == "test"' in r for r in requires)
    assert extra("fsspec") == {"fsspec"}
    readme = (ROOT / "README.md").read_text()
    assert 'pip install ".[data]"' in readme
    for tool in ("pandas", "pyarrow", "zarr", "h5py", "dask"):
        assert tool in readme
