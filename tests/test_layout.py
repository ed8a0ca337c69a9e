"""Where bytes live: each fileserver's object holds exactly the bytes the striping formula (docs/design.md) assigns to it."""
import ast
import os
import pathlib
import re
import subprocess
import sys

import grpc

import pfs
from pfs._proto import fileserver_pb2, fileserver_pb2_grpc, metaserver_pb2, metaserver_pb2_grpc


def test_bytes_on_disk_follow_the_striping_formula(cluster, clients, name):
    B, S, width = 512, 2, 3
    size = 7 * S * B + 333  # several rounds over the servers, and a partial last unit
    data = os.urandom(size)
    client = clients(1)
    assert client.pfs_create(name, width) == 0
    fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
    assert client.pfs_write(fd, data, size, 0) == size
    assert client.pfs_close(fd) == 0

    with grpc.insecure_channel(cluster.address) as channel:
        meta_stub = metaserver_pb2_grpc.MetaServerStub(channel)
        meta = meta_stub.Stat(metaserver_pb2.StatRequest(path=name)).meta
        addresses = {f.index: f.address for f in meta_stub.Status(
            metaserver_pb2.StatusRequest()).fileservers}
    directory_of = {}  # fileserver index -> its data directory, matched by uuid
    for index, address in addresses.items():
        with grpc.insecure_channel(address) as channel:
            uuid = fileserver_pb2_grpc.FileServerStub(channel).Health(
                fileserver_pb2.HealthRequest()).server_uuid
        directory_of[index] = next(d for d in cluster.data_dir.glob("fs*")
                                   if (d / "fileserver.uuid").read_text().strip() == uuid)

    objects = {}
    for position, index in enumerate(meta.recipe.servers):
        path = directory_of[index] / "objects" / f"{meta.file_id % 256:02x}" / str(meta.file_id)
        objects[position] = pathlib.Path(path).read_bytes()
    for off in range(size):
        u = (off // B) // S
        local = (u // width) * S * B + off % (S * B)
        assert objects[u % width][local] == data[off], f"byte {off}"
    assert sum(len(o) for o in objects.values()) == size  # nothing stored twice


# --- the layers of pfs/ (docs/design.md, "The layers") ------------------------------------------
ROOT = pathlib.Path(__file__).resolve().parent.parent
#: What a server module may import of pfs.
SERVER_MAY_IMPORT = ("pfs.protocol", "pfs._native", "pfs._proto", "pfs.metadata")
#: What each layer of pfs may import of pfs, besides itself.
LAYER_MAY_IMPORT = {
    "pfs.protocol": SERVER_MAY_IMPORT,
    "pfs.runtime": ("pfs.protocol",),
    "pfs.datapath": SERVER_MAY_IMPORT + ("pfs.runtime",),
    "pfs.client": SERVER_MAY_IMPORT + ("pfs.runtime", "pfs.datapath"),
    "pfs.mount": SERVER_MAY_IMPORT + ("pfs.runtime", "pfs.datapath", "pfs.client"),
}
#: The command line, the one part of pfs that starts servers.
COMMAND_LINE = ("pfs.cli", "pfs.tools", "pfs.bench", "pfs.__main__")
CLIENT_INTERNALS = ("pfs.client", "pfs.datapath", "pfs.runtime", "pfs.api", "pfs.fileio", "pfs.fs")


def _module_name(path: pathlib.Path, top: str) -> str:
    parts = list(path.relative_to(ROOT / top.replace("pfs_servers", "servers")).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([top, *parts])


def _imports(path: pathlib.Path, module: str) -> list[str]:
    """The absolute names of the modules a source file imports (relative imports resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            names += [f"{base}.{alias.name}" for alias in node.names] if not node.module \
                else [base]
    return names


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _sources(top: str):
    for path in sorted((ROOT / top.replace("pfs_servers", "servers")).rglob("*.py")):
        if "_pb2" not in path.name:
            yield path, _module_name(path, top)


def test_servers_import_only_the_protocol_layer_of_pfs():
    wrong = [f"{module} imports {name}" for path, module in _sources("pfs_servers")
             for name in _imports(path, module)
             if _within(name, ("pfs",)) and not _within(name, SERVER_MAY_IMPORT)]
    assert not wrong, "\n".join(wrong)


def test_each_layer_of_pfs_imports_only_the_layers_below_it():
    wrong = []
    for path, module in _sources("pfs"):
        if _within(module, COMMAND_LINE):
            continue
        for name in _imports(path, module):
            if _within(name, ("pfs_servers",)):
                wrong.append(f"{module} imports the server module {name}")
            for layer, allowed in LAYER_MAY_IMPORT.items():
                if (_within(module, (layer,)) and _within(name, ("pfs",))
                        and not _within(name, (layer, *allowed))):
                    wrong.append(f"{module} imports {name}, above its layer")
    assert not wrong, "\n".join(wrong)


def _loaded_after(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code + "\nimport sys\n"
                           "print('\\n'.join(sorted(sys.modules)))"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT / "tests")
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_import_pfs_loads_no_server_code():
    loaded = _loaded_after("import pfs, pfs.api, pfs.fileio, pfs.fs\n"
                           "pfs.Client, pfs.open, pfs.pfs_read, pfs.pfs_last_error")
    assert "pfs.client.front" in loaded  # (the names were used)
    assert not [m for m in loaded if _within(m, ("pfs_servers",))]


def test_a_server_loads_no_client_cache_data_plane_or_session():
    """Every module of both servers imported in one process, as a server process imports them:
    none of the client's machinery comes with them."""
    loaded = _loaded_after(
        "import importlib, pkgutil, pfs_servers\n"
        "for m in pkgutil.walk_packages(pfs_servers.__path__, 'pfs_servers.'):\n"
        "    importlib.import_module(m.name)")
    assert "pfs_servers.metaserver.service" in loaded and "pfs_servers.fileserver.service" in loaded
    assert "pfs.protocol.datacalls" in loaded
    assert not [m for m in loaded if _within(m, CLIENT_INTERNALS)]


def test_every_subpackage_is_in_the_wheel_and_imports_from_the_installed_package():
    import importlib
    import pkgutil
    listed = re.search(r"^packages = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(),
                       re.S | re.M).group(1)
    shipped = set(re.findall(r'"([^"]+)"', listed))
    packages = {_module_name(p.parent / "__init__.py", "pfs") for p in (ROOT / "pfs").rglob(
        "__init__.py")}
    assert packages - shipped == set()
    for package in ("pfs.protocol", "pfs.runtime", "pfs.datapath", "pfs.client"):
        imported = importlib.import_module(package)
        assert pathlib.Path(imported.__file__).parent.parent == pathlib.Path(pfs.__file__).parent
        assert "May import" in imported.__doc__  # its rule, first thing a reader sees
        for m in pkgutil.iter_modules(imported.__path__, package + "."):
            importlib.import_module(m.name)


def test_server_processes_load_no_client_cache_data_plane_or_session(tmp_path):
    """A real `pfs up` (its metaserver and fileserver processes, and itself), with Python's
    import log on (PYTHONPROFILEIMPORTTIME names every module a process imports): the servers'
    code is loaded, none of the client's machinery is."""
    from clusters import Cluster
    saved = os.environ.get("PYTHONPROFILEIMPORTTIME")
    os.environ["PYTHONPROFILEIMPORTTIME"] = "1"  # (inherited by `pfs up` and its servers)
    try:
        cluster = Cluster(tmp_path / "cluster", fileservers=2).start()
    finally:
        os.environ.pop("PYTHONPROFILEIMPORTTIME") if saved is None else None
    cluster.stop()
    imported = {line.rsplit("|", 1)[-1].strip() for line in cluster.log.read_text().splitlines()
                if line.startswith("import time:")}
    assert {"pfs_servers.metaserver.service", "pfs_servers.fileserver.service"} <= imported
    assert not [m for m in imported if _within(m, CLIENT_INTERNALS)]
