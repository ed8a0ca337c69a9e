"""The commands that look after a running cluster as an operator does: status, df, member and
scrub. Fileservers are named by their member names, as the servers' logs name them.

Invariant: none of them opens a session (they work on a cluster short of fileservers), and each
exits 1 when the cluster is not whole: a fileserver offline or not answering, damage found, a
member change refused.
"""
from __future__ import annotations

import argparse
import functools
import os
import pathlib

import grpc

from pfs._proto import fileserver_pb2 as fs_pb
from pfs._proto import fileserver_pb2_grpc as fs_pb_grpc
from pfs._proto import metaserver_pb2 as pb
from pfs.protocol import errnos
from pfs.protocol.transport import Credentials

from .arguments import add_command, json_flag, metaserver, pfs_path
from .connection import call, metaserver_stub
from .console import Console, human, print_json, shown, size_text, when


# --- status -----------------------------------------------------------------------------------
def _status_json(reply: pb.StatusReply) -> dict[str, object]:
    return {"metaserver": metaserver(), "active": reply.active or None,
            "standbys": list(reply.standbys), "epoch": reply.epoch or None,
            "files": reply.files,
            "sessions": reply.sessions, "block_size": reply.block_size,
            "stripe_blocks": reply.stripe_blocks, "replicas": reply.replicas,
            "degraded_files": reply.degraded_files,
            "resync_ranges": reply.resync_ranges, "resync_bytes": reply.resync_bytes,
            "degraded": [{"path": d.path, "fileserver": d.fileserver,
                          "missed_bytes": d.missed_bytes or None}
                         for d in reply.degraded],
            "expected_fileservers": reply.expected_fileservers,
            "fileservers": [{"index": f.index, "name": f.name, "address": f.address,
                             "online": f.online, "lost_data_at": f.lost_data_at or None,
                             "offline_seconds": None if f.online else f.offline_seconds,
                             "draining": f.draining}
                            for f in reply.fileservers]}


def member_name(server: pb.Fileserver) -> str:
    """A fileserver as every command and log names it: its member name (`pfs up` names them
    fs0, fs1...), not its index, which only recipes use."""
    return server.name or f"#{server.index}"


def member_names(reply: pb.StatusReply) -> dict[int, str]:
    """Fileserver index -> member name, for showing recipes and stale copies."""
    return {f.index: member_name(f) for f in reply.fileservers}


def recipe_servers(servers, what: str) -> str:
    """A recipe's fileservers by member name ("fs0, fs1, fs2"), as `pfs stat` shows them."""
    names = member_names(call("Status", pb.StatusRequest(), what))
    return ", ".join(names.get(s, f"#{s}") for s in servers)


def _print_status(reply: pb.StatusReply, online: int) -> None:
    print(f"metaserver {metaserver()}: {reply.files} files, {reply.sessions} client "
          f"sessions, block {reply.block_size} B x {reply.stripe_blocks} per stripe unit")
    if reply.active:
        print(f"active metaserver {reply.active} (epoch {reply.epoch}); standing by: "
              f"{', '.join(reply.standbys) or 'none'}")
    members = len(reply.fileservers)
    print(f"fileservers: {online} online of {reply.expected_fileservers} expected"
          + (f" ({members} members)" if members != reply.expected_fileservers else ""))
    if reply.degraded_files:
        whole = " and whole copies" if any(not d.missed_bytes for d in reply.degraded) else ""
        print(f"copies: {reply.degraded_files} files degraded (a copy stale), resyncing: "
              f"{reply.resync_ranges} byte ranges to go ({human(reply.resync_bytes)}{whole})")
        names = member_names(reply)
        for d in reply.degraded:
            print(f"  {shown(d.path)}: its copy on fileserver "
                  f"{names.get(d.fileserver, d.fileserver)} is stale, "
                  + (f"{human(d.missed_bytes)} to resync" if d.missed_bytes else
                     "all of it to resync"))
    else:
        print(f"copies: all in sync ({reply.replicas} per stripe unit by default)")
    for f in reply.fileservers:
        notes = f"  lost its data {when(f.lost_data_at)}" if f.lost_data_at else ""
        notes += "  draining: new files go elsewhere" if f.draining else ""
        print(f"  {member_name(f)[:16]:<16} {f.address:<22} "
              f"{'online' if f.online else f'OFFLINE for {f.offline_seconds:.0f}s'}{notes}")


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    reply = call("Status", pb.StatusRequest(), "status")
    online = sum(1 for f in reply.fileservers if f.online)
    if args.json:
        print_json(_status_json(reply))
    else:
        _print_status(reply, online)
    offline = [member_name(f) for f in reply.fileservers if not f.online]
    if offline:
        console.warn(f"offline: {', '.join(offline)}; a `pfs up` restarts its own fileservers "
                     "by itself (its log says why one stopped); start others with `pfs "
                     "fileserver --name NAME ...`, or remove one gone for good with `pfs member "
                     "remove NAME`")
    return 0 if online >= reply.expected_fileservers and not offline else 1


# --- df ---------------------------------------------------------------------------------------
def _fileserver_usage(server: pb.Fileserver, credentials: Credentials) -> dict[str, object]:
    """What a fileserver stores and how much room its disk has, as `df --json` shows it; with
    "error" instead when it does not answer."""
    row: dict[str, object] = {"name": member_name(server), "index": server.index,
                              "address": server.address, "online": server.online}
    if not server.online:
        return row
    try:
        with credentials.channel(server.address) as channel:
            health = fs_pb_grpc.FileServerStub(channel).Health(fs_pb.HealthRequest(), timeout=10)
    except grpc.RpcError as e:
        row["error"] = str(errnos.from_rpc(e, f"fileserver {member_name(server)} at "
                                              f"{server.address}").strerror)
        return row
    row.update(objects=health.objects, bytes_stored=health.bytes_stored,
               disk_total_bytes=health.disk_total_bytes, disk_free_bytes=health.disk_free_bytes)
    return row


def _print_df(rows: list[dict], totals: dict[str, int], human_sizes: bool) -> None:
    size = functools.partial(size_text, human_sizes=human_sizes)
    print(f"{'fileserver':<16} {'address':<22} {'stored':>12} {'objects':>8} "
          f"{'disk size':>12} {'disk free':>12} {'use':>4}")
    for r in rows:
        where = f"{str(r['name'])[:16]:<16} {r['address']:<22}"
        if "bytes_stored" not in r:
            print(f"{where} {'OFFLINE' if not r['online'] else 'not answering'}")
            continue
        used = r["disk_total_bytes"] - r["disk_free_bytes"]
        use = f"{100 * used // r['disk_total_bytes']}%" if r["disk_total_bytes"] else "-"
        print(f"{where} {size(r['bytes_stored']):>12} {r['objects']:>8} "
              f"{size(r['disk_total_bytes']):>12} {size(r['disk_free_bytes']):>12} {use:>4}")
    print(f"{'total':<39} {size(totals['bytes_stored']):>12} {totals['objects']:>8}")


def cmd_df(args: argparse.Namespace, console: Console) -> int:
    reply = call("Status", pb.StatusRequest(), "df")
    credentials = Credentials()
    rows = [_fileserver_usage(f, credentials) for f in reply.fileservers]
    answered = [r for r in rows if "bytes_stored" in r]
    totals = {"bytes_stored": sum(r["bytes_stored"] for r in answered),
              "objects": sum(r["objects"] for r in answered)}
    for r in rows:
        if "error" in r:
            console.warn(str(r["error"]))
    if args.json:
        print_json({"fileservers": rows, **totals})
    else:
        _print_df(rows, totals, args.human)
    short = len(answered) < max(len(rows), reply.expected_fileservers)
    return 1 if short else 0


# --- member -----------------------------------------------------------------------------------
def cmd_member(args: argparse.Namespace, console: Console) -> int:
    """`pfs member remove NAME`: the metaserver refuses it, changing nothing, unless no byte
    is lost (servers/metaserver/members.py); `pfs member drain NAME` moves its copies away
    first (servers/metaserver/replication.py)."""
    from pfs_servers import (
        clusterkey,  # the proof that only the cluster key's holders make
    )
    if not args.cluster_key_file:
        raise SystemExit("give it the metaserver's cluster key: --cluster-key-file (the "
                         "metaserver's DATA_DIR/cluster.key) or PFS_CLUSTER_KEY_FILE")
    proof = clusterkey.attach_proof(clusterkey.load(pathlib.Path(args.cluster_key_file)))
    if args.action == "drain":
        return _drain(args.name, ((clusterkey.ATTACH_HEADER, proof),), console)
    with metaserver_stub(f"remove {args.name!r}") as stub:
        reply = stub.RemoveMember(pb.RemoveMemberRequest(name=args.name), timeout=60,
                                  metadata=((clusterkey.ATTACH_HEADER, proof),))
    print(f"removed fileserver {args.name}; {reply.members} members left"
          + (f"; its copies of {reply.files_moved} file(s) are being re-made on other "
             "fileservers (`pfs status` shows the resync)" if reply.files_moved else ""))
    return 0


def _drain(name: str, metadata: tuple, console: Console) -> int:
    last = pb.DrainProgress()
    with metaserver_stub(f"drain {name!r}") as stub:
        for last in stub.DrainMember(pb.RemoveMemberRequest(name=name), metadata=metadata):
            if last.current:
                console.progress_line(f"{last.moved} of {last.files} files moved off {name}; "
                                      f"now {shown(last.current)}")
    console.progress_end()
    print(f"drained fileserver {name}: its copies of {last.files} file(s) are on other "
          f"fileservers now, and no new file goes to it; stop it, then `pfs member remove "
          f"{name}` (which then moves nothing)")
    return 0


# --- scrub ------------------------------------------------------------------------------------
def cmd_scrub(args: argparse.Namespace, console: Console) -> int:
    path, _ = pfs_path(args.path)
    last, unrepairable = pb.ScrubProgress(), []
    with metaserver_stub(f"scrub {shown(path)}") as stub:
        for last in stub.Scrub(pb.ScrubRequest(path=path)):
            unrepairable += last.unrepairable
            if not last.done:
                console.progress_line(f"{last.files} files, {human(last.bytes)} checked; "
                                      f"now {shown(last.current)}")
    console.progress_end()
    found = [f"{last.damaged} damaged or differing pieces of copies"] * bool(last.damaged) + \
        [f"{len(unrepairable)} files damaged beyond repair"] * bool(unrepairable)
    print(f"scrubbed {last.files} files ({human(last.bytes)} of copies read): "
          + (", ".join(found) or "all good"))
    if last.damaged:
        print("  the damaged copies are stale now, and being resynced from good ones: "
              "`pfs status` shows the progress")
    for damaged in unrepairable:
        print(f"  {shown(damaged)} has no other copy to repair it from: reads of its damaged "
              "bytes fail with EIO; restore it from a backup")
    return 1 if last.damaged or unrepairable else 0


# --- the command line -------------------------------------------------------------------------
def _register_looking(sub) -> None:
    """df, status."""
    p = add_command(sub, "df", "show each fileserver's stored bytes and free disk", """\
Show, for each fileserver, the bytes of file data it stores, its number of objects (one per
file it holds stripes of), and the size and free space of the disk that holds its data
directory, and the cluster's totals of stored bytes and objects. Fileservers on one machine
share its disk. Exit status 1 when a fileserver is offline or does not answer.

--json prints one object: "fileservers" (each with "name", "index", "address", "online" and, when it
answers, "bytes_stored", "objects", "disk_total_bytes", "disk_free_bytes"; else "error"),
"bytes_stored" and "objects".""", cmd_df, human_flag=True)
    json_flag(p, "the figures")

    p = add_command(sub, "status", "show the cluster's servers", """\
Show the metaserver's fileservers (online or not), its client sessions and its file count.
Exit status 1 when fewer fileservers are online than expected. Needs no session.

--json prints one object: "metaserver", "active", "standbys" and "epoch" (with etcd: which
metaserver is active, which stand by, the active one's epoch; else null, [] and null),
"files", "sessions", "block_size", "stripe_blocks", "expected_fileservers" and "fileservers"
(each with "name", "index", "address", "online", "lost_data_at", "offline_seconds", how long
the metaserver has known it offline, and "draining"). Fileservers are named by their member
names (fs0, fs1... under `pfs up`) in
status, df, stat and the servers' logs alike.""",
                    cmd_status)
    json_flag(p, "the cluster's state")


def _register_member(sub) -> None:
    p = add_command(sub, "member", "drain or remove a fileserver", """\
remove: remove the fileserver NAME from the cluster's members, for good: one
that will not come back (a machine retired, a mistyped --name). It must be
offline. Its copies of replicated files are re-made on other fileservers from
the good copies, in the background (`pfs status` shows the resync). Refused,
changing nothing, while it holds the only good copy of anything (a single-copy
file that is not empty, or bytes whose other copies are stale), while a file it
holds is open, or when no other fileserver can take one of its copies.

drain: move every copy the online fileserver NAME holds to other fileservers,
single copies included, file by file, showing the progress: each file first
gets a new copy of each stripe column elsewhere, filled from the good copies,
then its copy on NAME is dropped. New files are not placed on NAME from the
start. Refused, changing nothing, while NAME is offline, while a file it holds
is open, or when a file it holds is too wide for the other fileservers to take
one more copy of each column (add a fileserver first). Afterwards stop it and
remove it. Both need the cluster key, as a fileserver does.""", cmd_member,
                    graceful=True)
    p.add_argument("action", choices=["remove", "drain"], help="what to do")
    p.add_argument("name", metavar="NAME", help="the member's name, as `pfs status` shows it")
    p.add_argument("--cluster-key-file", default=os.environ.get("PFS_CLUSTER_KEY_FILE"),
                   help="the metaserver's cluster key (its DATA_DIR/cluster.key; under `pfs "
                        "up`, DATA_DIR/meta/cluster.key) (default: $PFS_CLUSTER_KEY_FILE)")


def _register_scrub(sub) -> None:
    p = add_command(sub, "scrub", "check every copy of files against checksums and each other",
                    """\
Read every copy of every file at or below PATH (default: the whole tree), check each unit
against its CRC32C and the copies of each stripe unit against each other, and repair: a copy
found damaged or differing is marked stale and resynced from a good one in the background
(`pfs status` shows the progress). Damage in a file with a single copy cannot be repaired: it
is reported by path, and reads of the damaged bytes fail with EIO. Clients keep working
meanwhile: scrub reads a few MiB at a time under a read token. Exit status 1 when anything
was damaged. Needs no session.""", cmd_scrub)
    p.add_argument("path", metavar="PATH", nargs="?", default="/",
                   help="file or directory to check (default: the root)")


def register(sub) -> None:
    """df, status, member, scrub."""
    _register_looking(sub)
    _register_member(sub)
    _register_scrub(sub)
