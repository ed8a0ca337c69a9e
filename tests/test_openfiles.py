"""Sizes of open files at the metaserver (servers/metaserver/openfiles.py): a size told by a client
that may still hold its bytes is withdrawn when that client's session ends with the file open,
so no reader is shown bytes no fileserver holds."""
from pfs_servers.metaserver.namespace import Node
from pfs_servers.metaserver.openfiles import OpenFiles

A, B, READER = 1, 2, 3


def opened(size: int = 100):
    files = OpenFiles()
    node = Node(7, False, size, 0.0, 0.0, 512, 2, (0, 1))
    for client in (A, B, READER):
        f = files.open(client, node)
    return files, f


def test_a_provisional_size_is_withdrawn_when_its_client_ends_uncleanly():
    files, f = opened()
    files.told(f, A, 300, stored=False)  # a glimpse: A may hold bytes 100-299 in its cache
    assert (f.size, f.size_epoch) == (300, 0)
    files.close_all(A)  # A's session ended with the file open
    assert (f.size, f.size_epoch) == (100, 1)  # a new epoch: clients take the smaller size


def test_a_clean_close_keeps_the_size():
    files, f = opened()
    files.told(f, A, 300, stored=False)
    files.close(A, 7)
    assert (f.size, f.size_epoch) == (300, 0)


def test_a_size_told_with_the_tail_is_stored_and_stays():
    files, f = opened()
    files.told(f, A, 300, stored=False)
    files.told(f, A, 300, stored=True)  # A gave up the tail: it stored everything first
    files.close_all(A)
    assert (f.size, f.stored, f.size_epoch) == (300, 300, 0)


def test_withdrawal_falls_back_to_the_largest_size_still_standing():
    files, f = opened()
    files.told(f, A, 200, stored=False)
    files.told(f, B, 250, stored=True)
    files.told(f, A, 400, stored=False)
    files.close_all(A)
    assert f.size == 250
    files.told(f, B, 500, stored=False)
    files.close_all(READER)  # a reader that told nothing changes nothing
    assert f.size == 500
