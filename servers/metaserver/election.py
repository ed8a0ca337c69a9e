"""Which of the metaservers sharing one etcd cluster is active: the one that put the leader key,
under an etcd lease it keeps alive. The others stand by (they answer every call with the
active's address) and take the key when its lease runs out, which is a takeover: the new active
loads the store and opens the recovery window, as a restarted metaserver does.

The leader key's create revision is the active's *epoch*. Every write it makes to etcd is a
transaction that holds only while the leader key still has that revision (etcd.py), so a
deposed metaserver's late writes fail; fileservers are told the epoch and refuse an older one.

Invariant: the active stops granting before etcd can have let its lease go. Its term ends at
the moment it *sent* the last keepalive etcd answered, plus the TTL etcd gave, less a margin
(`term_end`, on its own monotonic clock: etcd's countdown began no earlier than that send).
Calls are refused once the term is over (ActiveOnly), and the process stops: a metaserver that
was deposed starts again as a standby (`pfs up --ha` restarts it; else its service manager).
"""
from __future__ import annotations

import logging
import threading
import time

import grpc
from aetcd import rpc

from .etcd import EtcdStore
from .etcdclient import CALL_SECONDS, put

log = logging.getLogger("pfs.metaserver")

LEADER_KEY = "leader"
#: Every running metaserver's address, under its lease (what `pfs status` lists).
PRESENT = "metaservers/"
#: Seconds of the etcd lease on the leader key (a takeover waits at most this long).
DEFAULT_TTL = 5
#: Part of the TTL the active gives up: keepalives late or clocks that run a little apart.
MARGIN = 0.2
#: How often a standby looks whether the leader key is gone.
POLL_SECONDS = 0.25


class Election:
    def __init__(self, store: EtcdStore, address: str, ttl: int = DEFAULT_TTL) -> None:
        self.store, self.address, self.ttl = store, address, ttl
        self.etcd = store.etcd.another()  # (keepalives wait for no change of the store's)
        self.leader_key = store.key(LEADER_KEY)
        self.epoch = 0
        self.term_end = 0.0  # while active: when it must have stopped granting (monotonic)
        self.lease_id = 0
        self._lease_end = 0.0
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    # --- the lease --------------------------------------------------------------------------
    def _grant(self) -> None:
        sent = time.monotonic()
        reply = self.etcd.call(lambda c: c.lease.LeaseGrant(rpc.LeaseGrantRequest(TTL=self.ttl),
                                                            timeout=CALL_SECONDS))
        self.lease_id, self._lease_end = reply.ID, sent + reply.TTL * (1 - MARGIN)
        self.store.put_leased(PRESENT + self.address, self.address, self.lease_id)

    def _keep_alive_once(self) -> bool:
        """One keepalive; whether the lease lives on."""
        sent = time.monotonic()
        request = rpc.LeaseKeepAliveRequest(ID=self.lease_id)
        replies = self.etcd.lease.LeaseKeepAlive(iter([request]), timeout=CALL_SECONDS)
        try:
            reply = next(replies)
        finally:
            replies.cancel()
        if reply.TTL <= 0:
            return False
        self._lease_end = sent + reply.TTL * (1 - MARGIN)
        if self.epoch:
            self.term_end = self._lease_end
        return True

    def _keep(self) -> None:
        """Keeps the lease alive (a keepalive every quarter TTL) until stopped or lost."""
        while not self._stop.wait(self.ttl / 4):
            turn = self.etcd.turn
            try:
                if not self._keep_alive_once():
                    break
            except grpc.RpcError as e:
                log.warning("keepalive of this metaserver's etcd lease failed (%s)",
                            e.code().name)
                self.etcd.next_member(turn, e.code().name)
            if time.monotonic() > self._lease_end:
                break
        if not self._stop.is_set():
            log.error("this metaserver's etcd lease is over (etcd unreachable, or this process "
                      "was stopped past it)%s", ": it is no longer active" if self.epoch else "")
            self._lease_end = self.term_end = 0.0

    def lease_alive(self) -> bool:
        return time.monotonic() < self._lease_end

    # --- standing by and taking over --------------------------------------------------------
    def start(self) -> None:
        """Takes a lease and keeps it alive (again, if the last one was lost meanwhile)."""
        self._grant()
        self._keeper = threading.Thread(target=self._keep, name="etcd-lease", daemon=True)
        self._keeper.start()

    def campaign(self) -> int:
        """Waits until this metaserver holds the leader key; its epoch (0: stopped meanwhile).
        Blocking: run it on a thread."""
        while not self._stop.is_set():
            try:
                if not self.lease_alive():  # (etcd was unreachable longer than the TTL)
                    self._keeper.join()
                    self.start()
                request = rpc.TxnRequest(
                    compare=[rpc.Compare(key=self.leader_key, target=rpc.Compare.CREATE,
                                         result=rpc.Compare.EQUAL, create_revision=0)],
                    success=[put(self.leader_key, self.address, self.lease_id)])
                reply = self.etcd.call(lambda c: c.kv.Txn(request, timeout=CALL_SECONDS))
            except (grpc.RpcError, OSError) as e:
                log.warning("cannot reach etcd to stand for election: %s", e)
                self._stop.wait(POLL_SECONDS)
                continue
            if reply.succeeded:
                self.term_end = self._lease_end
                self.epoch = reply.header.revision
                self.store.guard_with(self.leader_key, self.epoch)
                return self.epoch
            self._stop.wait(POLL_SECONDS)
        return 0

    def active(self) -> bool:
        """Whether this metaserver may still act as the active one (its term is not over)."""
        return self.epoch != 0 and time.monotonic() < self.term_end

    def active_address(self) -> str:
        """The active metaserver's address ("" while there is none)."""
        value = self.etcd.get(self.leader_key)
        return value.decode() if value else ""

    def metaservers(self) -> list[str]:
        """Every running metaserver's address."""
        return sorted(value.decode() for value in self.store.values(PRESENT))

    def stop(self) -> None:
        """Gives the lease back, so that a standby takes over at once."""
        self._stop.set()
        if self.lease_id:
            try:
                self.etcd.lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=self.lease_id),
                                            timeout=CALL_SECONDS)
            except grpc.RpcError as e:
                log.warning("could not give back this metaserver's etcd lease (%s): a standby "
                            "takes over once it runs out", e.code().name)
        self.etcd.close()
