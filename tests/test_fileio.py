"""pfs.open against a real cluster: standard buffered binary files over PFS files."""
import errno
import io
import os
import subprocess
import sys

import pytest

import pfs
import pfs.fileio

TEXT = b"0123456789abcdefghij"


def _make(client: pfs.Client, name: str, data: bytes = TEXT) -> None:
    with pfs.open(name, "wb", client=client) as f:
        f.write(data)


def test_write_then_read_back_with_context_managers(clients, name):
    c = clients()
    with pfs.open(name, "wb", client=c) as f:
        assert isinstance(f, io.BufferedWriter) and f.writable() and not f.readable()
        assert f.write(TEXT[:5]) == 5
        assert f.write(memoryview(TEXT)[5:]) == len(TEXT) - 5
    assert f.closed
    with pfs.open(name, "rb", client=c) as f:
        assert isinstance(f, io.BufferedReader) and f.name == name and f.mode == "rb"
        assert f.read() == TEXT
    # Closing the file object closed the PFS file: this client may open it again.
    fd = c.open(name, pfs.PFS_READ)
    assert c.fstat(fd).file_size == len(TEXT)
    c.close(fd)


def test_readinto_fills_the_callers_buffer_in_place(clients, name):
    c = clients()
    _make(c, name)
    buf = bytearray(b"." * 32)
    with pfs.open(name, "rb", client=c) as f:
        assert f.readinto(buf) == len(TEXT)
    assert buf == TEXT + b"." * 12
    with pfs.open(name, "rb", client=c, buffering=0) as raw:
        assert isinstance(raw, io.RawIOBase)
        assert raw.readinto(memoryview(buf)[2:6]) == 4
        assert raw.tell() == 4
    assert buf[:8] == b"010123" + TEXT[6:8]


def test_seek_tell_and_partial_reads_at_the_end(clients, name):
    c = clients()
    _make(c, name)
    with pfs.open(name, "rb", client=c) as f:
        assert f.seek(5) == 5 and f.tell() == 5
        assert f.read(3) == b"567"
        assert f.seek(-4, io.SEEK_END) == len(TEXT) - 4
        assert f.read(100) == TEXT[-4:]
        assert f.read(100) == b""
        assert f.seek(-10, io.SEEK_CUR) == len(TEXT) - 10
        assert f.read1(2) == b"ab"
        assert f.seek(len(TEXT) + 50) == len(TEXT) + 50
        assert f.read() == b""
        with pytest.raises(OSError) as e:
            f.seek(-1)
        assert e.value.errno == errno.EINVAL


def test_r_plus_b_overwrites_in_the_middle_and_extends(clients, name):
    c = clients()
    _make(c, name)
    with pfs.open(name, "r+b", client=c) as f:
        assert isinstance(f, io.BufferedRandom)
        f.seek(3)
        f.write(b"ABC")
        assert f.read(2) == b"67"
        f.seek(0, io.SEEK_END)
        f.write(b"tail")
    with pfs.open(name, "rb", client=c) as f:
        assert f.read() == b"012ABC" + TEXT[6:] + b"tail"


def test_writing_past_the_end_fails_pfs_files_have_no_holes(clients, name):
    c = clients()
    _make(c, name)
    with pfs.open(name, "r+b", client=c, buffering=0) as raw:
        raw.seek(len(TEXT) + 1)
        with pytest.raises(OSError) as e:
            raw.write(b"x")
        assert e.value.errno == errno.EINVAL


def test_wb_on_an_existing_name_fails_and_keeps_the_data(clients, name):
    c = clients()
    _make(c, name)
    with pytest.raises(FileExistsError):
        pfs.open(name, "wb", client=c)
    with pfs.open(name, "rb", client=c) as f:
        assert f.read() == TEXT


def test_missing_file_is_file_not_found(clients, name):
    c = clients()
    for mode in ("rb", "r+b"):
        with pytest.raises(FileNotFoundError):
            pfs.open(name, mode, client=c)


@pytest.mark.parametrize("mode", ["r", "w", "ab", "xb", "rt", "rbb", "w+b", "", 1])
def test_bad_mode_is_value_error(clients, name, mode):
    with pytest.raises(ValueError):
        pfs.open(name, mode, client=clients())


def test_mode_letters_in_any_order(clients, name):
    c = clients()
    _make(c, name)
    with pfs.open(name, "br", client=c) as f:
        assert f.read(2) == b"01"
    with pfs.open(name, "rb+", client=c) as f:
        assert f.mode == "r+b"


def test_wrong_direction_and_fileno_are_unsupported(clients, name):
    c = clients()
    with pfs.open(name, "wb", client=c) as f:
        with pytest.raises(io.UnsupportedOperation):
            f.read()
        with pytest.raises(io.UnsupportedOperation):
            f.fileno()
    with pfs.open(name, "rb", client=c, buffering=0) as raw:
        with pytest.raises(io.UnsupportedOperation):
            raw.write(b"x")
    with pytest.raises(ValueError):
        raw.read()


def test_stripe_width_defaults_to_every_fileserver(clients, cluster, name):
    c = clients()
    with pfs.open(name, "wb", client=c):
        pass
    with pfs.open(name + "-2", "wb", client=c, stripe_width=2):
        pass
    for each, width in ((name, cluster.fileservers), (name + "-2", 2)):
        fd = c.open(each, pfs.PFS_READ)
        assert c.fstat(fd).recipe.stripe_width == width
        c.close(fd)
    with pytest.raises(ValueError):
        pfs.open(name, "rb", client=c, stripe_width=2)
    with pytest.raises(OSError) as e:
        pfs.open(name + "-3", "wb", client=c, stripe_width=cluster.fileservers + 1)
    assert e.value.errno == errno.EINVAL


def test_megabytes_over_many_stripes_round_trip_between_clients(clients, name):
    writer, reader = clients(2)
    data = os.urandom(3 << 20)
    with pfs.open(name, "wb", client=writer) as f:
        f.write(data[:12345])
        f.write(data[12345:])
    with pfs.open(name, "rb", client=reader) as f:
        assert f.read() == data
    got, buf = bytearray(), bytearray(100_000)
    with pfs.open(name, "rb", client=reader) as f:
        while n := f.readinto(buf):
            got += buf[:n]
    assert got == data


def test_without_client_uses_one_lazily_made_process_wide_client(cluster, clients, name,
                                                                 monkeypatch):
    monkeypatch.setenv("PFS_METASERVER", cluster.address)
    monkeypatch.setattr(pfs.fileio, "_default", None)
    with pfs.open(name, "wb") as f:
        f.write(TEXT)
    default = pfs.fileio.default_client()
    try:
        with pfs.open(name, "rb") as f:
            assert f.read() == TEXT
        assert pfs.fileio.default_client() is default
    finally:
        default.finish(default.initialize())
    with pfs.open(name, "rb", client=clients()) as f:
        assert f.read() == TEXT


def test_files_left_open_are_written_back_at_exit(cluster, clients, name, tmp_path):
    script = f"import pfs\nf = pfs.open({name!r}, 'wb')\nf.write(b'left open')\n"
    # cwd: the child must import the installed package, not the source tree.
    subprocess.run([sys.executable, "-c", script], env=cluster.env(), cwd=tmp_path, timeout=60,
                   check=True)
    with pfs.open(name, "rb", client=clients()) as f:
        assert f.read() == b"left open"
