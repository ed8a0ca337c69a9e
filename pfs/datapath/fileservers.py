"""The fileservers as one session reaches them: each one's channel and call threads (shared by
every Client of the process, pfs/runtime/holdings.py), its address as the metaserver last said,
and how a call to it is tried again.

Invariant: a call fails only for a reason that stands: a fileserver that cannot be reached is
tried again within the retry window (`Fileservers.call_retrying`), and one that refuses the
session (the metaserver ended it) is final at once.
"""
from __future__ import annotations

import errno
import threading
import time
from concurrent.futures import Future
from typing import Callable

from pfs.protocol import errnos
from pfs.protocol.datacalls import FileServerCalls
from pfs.protocol.transport import Credentials
from pfs.runtime import holdings
from pfs.runtime.threads import Workers

#: Calls the Clients of one process have in flight to one fileserver at most (Lustre's
#: max_rpcs_in_flight); the threads making them start as calls need them.
RPCS_IN_FLIGHT = 8

#: What a call sends as proof of its token, chosen anew at every try (renewed ones count).
Capabilities = Callable[[], list[bytes]]


class _Server:
    """One fileserver as a process sees it: a channel, its calls, and the threads making them."""

    def __init__(self, index: int, address: str, credentials: Credentials) -> None:
        self.address = address
        self.channel = credentials.channel(address)
        self.calls = FileServerCalls(self.channel)
        self.threads = Workers(RPCS_IN_FLIGHT, f"pfs-fs{index}")

    def close(self) -> None:
        self.threads.shutdown()
        self.channel.close()


def all_of(futures: list[Future]) -> Future:
    """A future of all the futures: their results in order, or the first failure once all are
    done (so that nothing is left running unattended)."""
    combined: Future = Future()
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_: Future) -> None:
        with lock:
            left[0] -= 1
            if left[0]:
                return
        failure = next((f.exception() for f in futures if f.exception() is not None), None)
        if failure is not None:
            combined.set_exception(failure)
        else:
            combined.set_result([f.result() for f in futures])
    if not futures:
        combined.set_result([])
    for future in futures:
        future.add_done_callback(one_done)
    return combined


class Fileservers:
    """The fileservers of one session, known by index (every call carries the capabilities
    of the file's tokens, pfs/protocol/capability.py).

    A fileserver that is unreachable (restarting, say, perhaps on a new address) is retried for
    up to `retry_seconds`, asking the metaserver for the addresses of those online again
    (`lookup()`) in between, but never beyond `retry_seconds` after the metaserver lost it: a
    fileserver it has known offline for that long is given up at once, with EHOSTDOWN naming
    it (a restart within the window stays invisible; a copy another copy stood in for is
    given up as soon as the metaserver says its fileserver is offline);
    every call is idempotent (reads, and writes of the same bytes at the same offsets). A
    fileserver that refuses the session (the metaserver ended it) is final: `on_fenced(reason)`
    is told, and the call fails with ENOTCONN."""

    def __init__(self, addresses: dict[int, str], names: dict[int, str], credentials: Credentials,
                 retry_seconds: float,
                 lookup: Callable[[], tuple[dict[int, str], dict[int, float]]],
                 on_fenced: Callable[[str], None]) -> None:
        self._addresses = dict(addresses)
        self._names = names  # as the cluster's members are named everywhere (never renamed)
        self._credentials = credentials
        self._retry_seconds = retry_seconds
        self._lookup = lookup
        self._on_fenced = on_fenced
        self._servers: dict[int, _Server] = {}  # those this session holds (pfs/runtime/holdings.py)
        self._holdings = holdings.Holdings()
        self._holdings.watch(self)
        self._lock = threading.Lock()
        # index -> since when (time.monotonic()) it is offline, as the metaserver last said
        self._offline: dict[int, float] = {}

    def close(self) -> None:
        with self._lock:
            self._servers.clear()
            self._holdings.release_all()

    def _server(self, index: int) -> _Server:
        with self._lock:
            if index not in self._servers:
                if index not in self._addresses:
                    raise errnos.error(errno.EIO, f"{self.named(index)} is unknown to this "
                                                  "client; re-initialize to learn the cluster")
                address = self._addresses[index]
                self._servers[index] = self._holdings.hold(
                    _server_key(address, self._credentials),
                    lambda: _Server(index, address, self._credentials))
            return self._servers[index]

    def threads(self, index: int) -> Workers:
        """The threads that make the calls to fileserver `index` (for work best done there)."""
        return self._server(index).threads

    def submit(self, index: int, method: str, request, what: str,
               capabilities: Capabilities, spared: Callable[[], bool] = lambda: False) -> Future:
        """Starts one call on a thread of its fileserver (see call_retrying)."""
        return self._server(index).threads.submit(self.call_retrying, index, method, request,
                                                  what, capabilities, spared)

    def call_all(self, calls: list[tuple[int, str, object, Capabilities]], what: str) -> list:
        """Makes the calls (fileserver index, method, request, capabilities) at once and waits
        for all of them; the first failure is raised once all are done. A lone call is made
        right here: with nothing to overlap, a hand-off to another thread only adds latency."""
        if len(calls) == 1:
            index, method, request, capabilities = calls[0]
            return [self.call_retrying(index, method, request, what, capabilities)]
        return all_of([self.submit(index, method, request, what, capabilities)
                       for index, method, request, capabilities in calls]).result()

    def call_retrying(self, index: int, method: str, request, what: str,
                      capabilities: Capabilities, spared: Callable[[], bool] = lambda: False):
        """One call; a fileserver that cannot be reached is tried again until retry_seconds
        have passed (since the call began, or since the metaserver lost it if that is
        sooner), at its new address if it moved, or, once another copy can do without it
        (`spared()`), until the metaserver says it is offline. One that answers but is not
        back in contact with the metaserver yet (EAGAIN) is alive: it is tried again for the
        whole window, whatever the metaserver says."""
        give_up, pause = time.monotonic() + self._retry_seconds, 0.05
        while True:
            server = self._server(index)
            try:
                return self._call(server, index, method, request, what, capabilities())
            except OSError as e:
                if e.errno not in (errno.EHOSTDOWN, errno.EAGAIN):
                    raise
                moved = self._relearn_addresses()
                since = self._offline.get(index)
                if since is not None and (spared() or e.errno == errno.EHOSTDOWN and (
                        time.monotonic() >= min(give_up, since + self._retry_seconds))):
                    raise self._gone(index, what, since) from None
                if time.monotonic() >= give_up:
                    raise errnos.error(errno.EHOSTDOWN, e.strerror) from None
                if not moved:
                    time.sleep(min(pause, max(0.0, give_up - time.monotonic())))
                    pause = min(2 * pause, 1.0)

    def _call(self, server: _Server, index: int, method: str, request, what: str,
              capabilities: list[bytes]):
        try:
            return server.calls.call(method, request, capabilities,
                                     lambda: f"{what} on {self.named(index)}")
        except OSError as failure:
            if failure.errno == errno.ENOTCONN:  # the session was fenced: final
                self._on_fenced(failure.strerror)
            raise

    def _gone(self, index: int, what: str, since: float) -> OSError:
        """EHOSTDOWN for a call on a fileserver that the metaserver says is offline."""
        name = self._names.get(index) or index
        return errnos.error(errno.EHOSTDOWN, f"{what} on {self.named(index)}: fileserver "
                                             f"{name} is offline (for "
                                             f"{time.monotonic() - since:.0f} s, as the "
                                             "metaserver knows); start it again, or see "
                                             "`pfs status`")

    def named(self, index: int) -> str:
        """A fileserver as every message names it: its member name, and where it is."""
        return f"fileserver {self._names.get(index) or index} ({self._addresses.get(index)})"

    def _relearn_addresses(self) -> bool:
        """Asks which fileservers are online, at which addresses; True if one moved."""
        try:
            fresh, offline = self._lookup()
        except OSError:
            return False
        now = time.monotonic()
        with self._lock:
            self._offline = {i: now - seconds for i, seconds in offline.items()}
            changed = {i for i, a in fresh.items() if self._addresses.get(i) != a}
            for index in changed:
                if index in self._servers:
                    self._holdings.release(_server_key(self._servers.pop(index).address,
                                                       self._credentials))
            self._addresses.update(fresh)
        return bool(changed)


def _server_key(address: str, credentials: Credentials) -> tuple:
    """The process's shared channel and threads for the fileserver at `address`."""
    return ("fileserver", address, credentials.identity())
