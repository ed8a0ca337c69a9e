"""Held writes (pfs/inflight.py) over a fileserver stand-in that stores requests or fails them:
a write is held until stored, a failure is sticky until a retry stores it, order is kept, and
only a lost session lets go of unstored bytes."""
import errno
import threading
from concurrent.futures import Future

import pytest

from pfs.datapath.writebehind import InFlight, Request, Unstored


class Fileservers:
    """Stores every request it is sent, or fails it while `down` is set; finishes requests at
    once, or only on `release()` while `held` is set."""

    def reset(self) -> "Fileservers":
        self.stored: list[bytes] = []
        self.down: OSError | None = None
        self.held = False
        self._pending: list[tuple[Future, bytes]] = []
        return self

    def send(self, payload: bytes) -> Future:
        future: Future = Future()
        self._pending.append((future, payload))
        if not self.held:
            self.release()
        return future

    def release(self) -> None:
        pending, self._pending = self._pending, []
        for future, payload in pending:
            if self.down is not None:
                future.set_exception(self.down)
            else:
                self.stored.append(payload)
                future.set_result(b"")


def requests(servers: Fileservers, *payloads: bytes) -> list[Request]:
    return [Request(payload, servers.send) for payload in payloads]


def test_a_failed_write_stays_unstored_until_a_retry_stores_it():
    servers = Fileservers().reset()
    held = InFlight(1 << 20)
    servers.down = OSError(errno.ETIMEDOUT, "write on fileserver 1: Deadline Exceeded")
    held.write(7, "data.bin", 100, 300, requests(servers, b"a" * 100, b"b" * 100))
    assert held.unstored(7) == [(100, 300)]
    for _ in range(2):  # sticky: every wait fails, naming the bytes and the cause
        with pytest.raises(Unstored) as failure:
            held.wait_for(7)
        assert failure.value.errno == errno.ETIMEDOUT
        assert "100-299" in str(failure.value) and "data.bin" in str(failure.value)
        assert "Deadline Exceeded" in str(failure.value)
    held.wait_for(8)  # another file's wait is not held up
    servers.down = None
    held.wait_for(7)  # sent again, as it was: now stored
    assert servers.stored == [b"a" * 100, b"b" * 100]
    assert held.unstored(7) == []
    held.wait_for(7)


def test_only_the_failed_requests_are_sent_again():
    servers = Fileservers().reset()
    held = InFlight(1 << 20)
    servers.held = True
    held.write(1, "f", 0, 200, requests(servers, b"x" * 100, b"y" * 100))
    servers.release()  # both stored...
    servers.held, servers.down = False, OSError(errno.EHOSTDOWN, "unreachable")
    held.write(1, "f", 200, 300, requests(servers, b"z" * 100))  # ...this one fails
    servers.down = None
    held.wait_for(1)
    assert servers.stored == [b"x" * 100, b"y" * 100, b"z" * 100]


def test_a_write_over_unstored_bytes_waits_for_them_and_fails_while_they_fail():
    """Order: newer bytes must never be overwritten by an older write sent again later."""
    servers = Fileservers().reset()
    held = InFlight(1 << 20)
    servers.down = OSError(errno.EHOSTDOWN, "unreachable")
    held.write(1, "f", 0, 100, requests(servers, b"old"))
    with pytest.raises(Unstored):
        held.write(1, "f", 50, 150, requests(servers, b"new"))
    held.write(1, "f", 100, 200, requests(servers, b"beside"))  # not overlapping: held, and failing too
    servers.down = None
    held.write(1, "f", 50, 150, requests(servers, b"new"))
    held.wait_for(1)
    assert servers.stored.index(b"old") < servers.stored.index(b"new")


def test_room_taken_by_unstored_writes_is_freed_by_storing_them_or_the_write_fails():
    servers = Fileservers().reset()
    held = InFlight(100)
    servers.down = OSError(errno.ENOSPC, "the fileserver's disk is full")
    held.write(1, "f", 0, 100, requests(servers, b"first"))
    with pytest.raises(Unstored) as failure:
        held.write(2, "g", 0, 100, requests(servers, b"second"))
    assert failure.value.errno == errno.ENOSPC
    servers.down = None
    held.write(2, "g", 0, 100, requests(servers, b"second"))
    assert servers.stored == [b"first", b"second"]


def test_writes_wait_for_room_while_others_are_on_the_wire():
    servers = Fileservers().reset()
    held = InFlight(100)
    servers.held = True
    held.write(1, "f", 0, 100, requests(servers, b"first"))
    started = threading.Event()

    def second() -> None:
        started.set()
        held.write(1, "f", 100, 200, requests(servers, b"second"))
    thread = threading.Thread(target=second)
    thread.start()
    started.wait()
    thread.join(0.2)
    assert thread.is_alive() and servers.stored == []  # no room until the first is stored
    servers.held = False
    servers.release()
    thread.join(5)
    assert servers.stored == [b"first", b"second"]


def test_drop_all_lets_go_of_unstored_bytes_and_counts_them():
    servers = Fileservers().reset()
    held = InFlight(1 << 20)
    servers.down = OSError(errno.EHOSTDOWN, "unreachable")
    held.write(1, "f", 0, 100, requests(servers, b"a"))
    held.write(2, "g", 0, 40, requests(servers, b"b"))
    lost = OSError(errno.ENOTCONN, "the session was lost")
    assert held.drop_all(lost) == {1: 100, 2: 40}
    assert held.unstored(1) == []
    for later in (lambda: held.wait_for(1), lambda: held.write(3, "h", 0, 1, requests(servers, b"c"))):
        with pytest.raises(OSError) as failure:
            later()
        assert failure.value is lost
