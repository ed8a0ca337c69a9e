"""pfs.open against a real cluster: standard buffered binary files over PFS files."""
import errno
import io
import os
import subprocess
import sys
import threading

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


def test_writing_past_the_end_fills_the_gap_with_zeros_as_python_does(clients, name):
    c = clients()
    _make(c, name)
    with pfs.open(name, "r+b", client=c, buffering=0) as raw:
        raw.seek(len(TEXT) + 3)
        assert raw.write(b"xy") == 2
        assert raw.tell() == len(TEXT) + 5
    with pfs.open(name, "rb", client=c) as f:
        assert f.read() == TEXT + b"\0\0\0xy"
    # The C-like API itself still refuses a hole.
    fd = c.open(name, pfs.PFS_READ_WRITE)
    try:
        with pytest.raises(OSError) as e:
            c.write(fd, b"z", 1, len(TEXT) + 10)
        assert e.value.errno == errno.EINVAL
    finally:
        c.close(fd)


def test_wb_truncates_an_existing_file(clients, name):
    c = clients()
    _make(c, name, TEXT * 100)
    with pfs.open(name, "wb", client=c) as f:
        assert f.tell() == 0
        f.write(b"short")
    with pfs.open(name, "rb", client=c) as f:
        assert f.read() == b"short"
    # Truncated at open, as Python does, even if nothing is written.
    with pfs.open(name, "wb", client=c):
        pass
    assert c.stat(name).file_size == 0


def test_wb_truncation_is_seen_by_another_client(clients, name):
    writer, reader = clients(2)
    _make(writer, name, TEXT * 50)
    with pfs.open(name, "rb", client=reader) as f:
        assert f.read() == TEXT * 50
    with pfs.open(name, "wb", client=writer) as f:
        f.write(b"new")
    with pfs.open(name, "rb", client=reader) as f:
        assert f.read() == b"new"


def test_wb_keeps_the_striping_of_an_existing_file(clients, name):
    c = clients()
    with pfs.open(name, "wb", client=c, stripe_width=1) as f:
        f.write(TEXT)
    with pfs.open(name, "wb", client=c, stripe_width=3) as f:
        f.write(TEXT[:4])
    meta = c.stat(name)
    assert (meta.recipe.stripe_width, meta.file_size) == (1, 4)


def test_xb_creates_and_refuses_an_existing_name(clients, name):
    c = clients()
    with pfs.open(name, "xb", client=c) as f:
        assert isinstance(f, io.BufferedWriter) and f.mode == "xb"
        f.write(TEXT)
    with pytest.raises(FileExistsError):
        pfs.open(name, "xb", client=c)
    with pytest.raises(FileExistsError):
        pfs.open(name, "bx+", client=c)
    with pfs.open(name, "rb", client=c) as f:
        assert f.read() == TEXT


def test_ab_creates_and_every_write_goes_to_the_end(clients, name):
    c = clients()
    with pfs.open(name, "ab", client=c) as f:  # missing: created
        assert isinstance(f, io.BufferedWriter) and f.mode == "ab"
        f.write(b"one,")
    with pfs.open(name, "ab", client=c) as f:
        assert f.tell() == 4  # positioned at the end, as Python does
        f.write(b"two,")
        f.seek(0)  # the position does not matter: writes go to the end
        f.write(b"three")
    with pfs.open(name, "rb", client=c) as f:
        assert f.read() == b"one,two,three"


def test_ab_appends_after_what_another_client_wrote(clients, name):
    first, second = clients(2)
    with pfs.open(name, "ab", client=first, buffering=0) as a:
        a.write(b"a1|")
        _append(second, name, b"b1|")
        a.write(b"a2|")
    with pfs.open(name, "rb", client=second) as f:
        assert f.read() == b"a1|b1|a2|"


def _append(client: pfs.Client, name: str, data: bytes) -> None:
    with pfs.open(name, "ab", client=client) as f:
        f.write(data)


def test_plus_modes_read_and_write(clients, name):
    c = clients()
    with pfs.open(name, "w+b", client=c) as f:
        assert isinstance(f, io.BufferedRandom) and f.mode == "w+b"
        f.write(TEXT)
        f.seek(2)
        assert f.read(3) == TEXT[2:5]
    with pfs.open(name, "a+b", client=c) as f:
        assert f.read() == b""  # at the end
        f.seek(0)
        assert f.read(4) == TEXT[:4]
        f.write(b"!")  # at the end (reading back through this buffer is stale, as in Python)
    with pfs.open(name, "rb", client=c) as f:
        assert f.read() == TEXT + b"!"
    with pfs.open(name, "w+b", client=c) as f:  # truncated
        assert f.read() == b""


def test_truncate_cuts_and_extends(clients, name):
    c = clients()
    _make(c, name)
    with pfs.open(name, "r+b", client=c) as f:
        f.seek(5)
        assert f.truncate() == 5
        assert f.tell() == 5
        assert f.truncate(8) == 8
        f.seek(0)
        assert f.read() == TEXT[:5] + b"\0\0\0"
    with pfs.open(name, "rb", client=c) as f:
        with pytest.raises(io.UnsupportedOperation):
            f.truncate(0)


def test_creating_modes_make_missing_parents(clients, name):
    c = clients()
    for mode, leaf in (("wb", "w"), ("xb", "x"), ("ab", "a"), ("w+b", "wp")):
        path = f"{name}/{leaf}/deep/er/file"
        with pfs.open(path, mode, client=c) as f:
            f.write(mode.encode())
        with pfs.open("/" + path, "rb", client=c) as f:
            assert f.read() == mode.encode()
        assert c.stat(f"{name}/{leaf}/deep").is_dir
    assert sorted(m.filename for m in c.listdir(name)) == [
        f"{name}/{leaf}" for leaf in ("a", "w", "wp", "x")]
    for mode in ("rb", "r+b"):  # never created
        with pytest.raises(FileNotFoundError):
            pfs.open(f"{name}/nope/file", mode, client=c)
    with pytest.raises(FileNotFoundError):
        c.stat(f"{name}/nope")


def test_clients_creating_the_same_parents_at_once_all_succeed(clients, name):
    many = clients(6)
    for round_ in range(3):
        barrier = threading.Barrier(len(many))
        failures = []

        def write(i: int, c: pfs.Client) -> None:
            try:
                barrier.wait(10)
                with pfs.open(f"{name}/{round_}/shared/dir/f{i}", "wb", client=c) as f:
                    f.write(b"%d" % i)
            except Exception as e:  # noqa: BLE001 - reported below
                failures.append(e)
        threads = [threading.Thread(target=write, args=(i, c)) for i, c in enumerate(many)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not failures
        listed = sorted(m.filename for m in many[0].listdir(f"{name}/{round_}/shared/dir"))
        assert listed == sorted(f"{name}/{round_}/shared/dir/f{i}" for i in range(len(many)))


def test_directories_and_files_in_the_way(clients, name):
    c = clients()
    c.mkdir(name)
    _make(c, f"{name}/file")
    for mode in ("rb", "r+b", "wb", "ab", "w+b"):
        with pytest.raises(IsADirectoryError):
            pfs.open(name, mode, client=c)
        with pytest.raises(NotADirectoryError):
            pfs.open(f"{name}/file/below", mode, client=c)
    with pytest.raises(FileExistsError):
        pfs.open(name, "xb", client=c)
    with pytest.raises(IsADirectoryError):
        pfs.open("/", "rb", client=c)
    with pfs.open(f"{name}/file", "rb", client=c) as f:
        assert f.read() == TEXT


@pytest.mark.parametrize("path", ["a//b", "a/./b", "../b", "a/..", "a/b/", "x\0y",
                                  "n" * 256])
def test_bad_paths_are_rejected_before_anything_is_created(clients, name, path):
    c = clients()
    for mode in ("rb", "wb", "xb", "ab"):
        with pytest.raises(OSError) as e:
            pfs.open(f"{name}/{path}", mode, client=c)
        assert e.value.errno in (errno.EINVAL, errno.ENAMETOOLONG)
    with pytest.raises(FileNotFoundError):
        c.stat(name)


def test_one_client_may_open_a_file_several_times(clients, name):
    c = clients()
    _make(c, name)
    first = pfs.open(name, "rb", client=c)
    second = pfs.open(name, "r+b", client=c)
    try:
        assert first.read(3) == TEXT[:3]
        assert second.read(5) == TEXT[:5]  # positions are each file object's own
        second.seek(0, io.SEEK_END)
        second.write(b"+more")
        second.flush()
        assert first.read() == TEXT[3:] + b"+more"
        second.close()  # the other one is still open and working
        first.seek(0)
        assert first.read(2) == TEXT[:2]
    finally:
        first.close()
        second.close()
    # The last close closed the PFS file: the C-like API may open it again.
    fd = c.open(name, pfs.PFS_READ)
    assert c.fstat(fd).file_size == len(TEXT) + 5
    c.close(fd)


def test_closing_one_of_two_writers_writes_its_data_back(cluster, clients, name, tmp_path):
    """While another file object keeps the PFS file open, closing one that wrote fsyncs it: the
    process then dies without writing anything back, and the data is still there."""
    script = (f"import os, pfs\n"
              f"keep = pfs.open({name!r}, 'wb')\n"
              f"with pfs.open({name!r}, 'r+b') as f:\n"
              f"    f.write(b'closed, so stored')\n"
              f"os._exit(0)\n")  # no atexit: `keep` is never closed, the cache never flushed
    subprocess.run([sys.executable, "-c", script], env=cluster.env(), cwd=tmp_path, timeout=60,
                   check=True)
    with pfs.open(name, "rb", client=clients()) as f:
        assert f.read() == b"closed, so stored"


@pytest.mark.parametrize("mode", ["r", "w", "a", "x", "rt", "rbb", "r++b", "rwb", "axb", "b", "+b",
                                  "rbU", "", None, 1])
def test_bad_mode_is_value_error(clients, name, mode):
    with pytest.raises(ValueError):
        pfs.open(name, mode, client=clients())


def test_mode_letters_in_any_order(clients, name):
    c = clients()
    _make(c, name)
    with pfs.open(name, "br", client=c) as f:
        assert f.read(2) == b"01"
    for spelling, mode in (("rb+", "r+b"), ("+rb", "r+b"), ("bw+", "w+b"), ("b+a", "a+b"),
                           ("bx", "xb"), ("ba", "ab")):
        assert pfs.fileio.parse_mode(spelling) == mode


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
