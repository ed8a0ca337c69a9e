"""Layouts as Lustre users know them: `pfs setstripe` gives a directory the stripe width,
stripe unit and replica count its new files get (or a file a new replica count), `pfs
getstripe` shows a directory's layout or a file's recipe (servers/metaserver/layouts.py keeps
them)."""
from __future__ import annotations

import argparse
import errno

from pfs._proto import metaserver_pb2 as pb
from pfs.protocol import errnos

from .arguments import add_command, at_least_one, byte_count, json_flag, pfs_path
from .cluster import recipe_servers
from .connection import call, session, stat
from .console import Console, human, print_json, shown


def cmd_setstripe(args: argparse.Namespace, console: Console) -> int:
    path, _ = pfs_path(args.path)
    if not (args.width or args.stripe_unit or args.replicas or args.clear):
        raise errnos.error(errno.EINVAL, "say what to set: --width, --stripe-unit, --replicas "
                                         "(or --clear)")
    with session() as client:
        blocks = 0
        if args.stripe_unit:
            block = client.layout().block_size
            if args.stripe_unit % block:
                raise errnos.error(errno.EINVAL, f"--stripe-unit must be a multiple of the "
                                                 f"cluster's block size, {block} bytes")
            blocks = args.stripe_unit // block
        added, dropped = client.set_layout(path, args.width or 0, blocks, args.replicas or 0)
    if added or dropped:
        print(f"{shown(path)}: {args.replicas} copies; "
              + (f"{added} new copies being made (`pfs status` shows the resync)" if added
                 else f"{dropped} copies dropped"))
    return 0


def _layout_text(layout: pb.Layout, block_size: int) -> str:
    return (f"stripe width {layout.stripe_width or '-'}, stripe unit "
            + (human(layout.stripe_blocks * block_size) if layout.stripe_blocks else "-")
            + f", replicas {layout.replicas or '-'}")


def cmd_getstripe(args: argparse.Namespace, console: Console) -> int:
    path, _ = pfs_path(args.path)
    meta = stat(path)
    if not meta.is_dir:
        r = meta.recipe
        shown_recipe = {"path": shown(path), "stripe_width": r.stripe_width,
                        "stripe_unit": r.block_size * r.stripe_blocks,
                        "block_size": r.block_size, "replicas": r.replicas or 1,
                        "fileservers": recipe_servers(r.servers, "getstripe").split(", ")}
        if args.json:
            print_json(shown_recipe)
        else:
            print(f"{shown(path)}: stripe width {r.stripe_width}, stripe unit "
                  f"{human(r.block_size * r.stripe_blocks)}, replicas {r.replicas or 1}, "
                  f"on {', '.join(shown_recipe['fileservers'])}")
        return 0
    reply = call("GetLayout", pb.GetLayoutRequest(path=path), f"getstripe {shown(path)}")
    block = call("Status", pb.StatusRequest(), "getstripe").block_size
    source = f"/{reply.source}" if reply.inherited else None
    if args.json:
        print_json({"path": shown(path),
                    "own": {"stripe_width": reply.own.stripe_width or None,
                            "stripe_unit": reply.own.stripe_blocks * block or None,
                            "replicas": reply.own.replicas or None},
                    "new_files": {"stripe_width": reply.effective.stripe_width,
                                  "stripe_unit": reply.effective.stripe_blocks * block,
                                  "replicas": reply.effective.replicas},
                    "from": source})
        return 0
    own = reply.own.stripe_width or reply.own.stripe_blocks or reply.own.replicas
    print(f"{shown(path)}: " + (f"layout {_layout_text(reply.own, block)}" if own
                                 else "no layout of its own"))
    print(f"  new files get: {_layout_text(reply.effective, block)} (from "
          + (f"the layout of {source}" if source else "the cluster's defaults") + ")")
    return 0


def register(sub) -> None:
    """setstripe, getstripe."""
    p = add_command(sub, "setstripe", "set a directory's layout, or a file's replica count",
                    """\
On a directory: the layout files created below it get, as `lfs setstripe DIR` sets it: the
stripe width (fileservers a file spans), the stripe unit (bytes per fileserver in turn, a
multiple of the cluster's block size) and the replica count. The nearest directory above a
new file that has a layout gives it, as a whole; what that layout leaves unset is the
cluster's default; what a create asks for (put --stripe-width, --replicas) wins over it. A
width wider than the cluster allows when a file is created is narrowed to what it allows.
Existing files keep their recipes. --clear removes the directory's layout.

On a file: --replicas N alone, its new replica count. New copies are made from the good ones
in the background (`pfs status` shows the resync); copies dropped are deleted, the stale ones
first. Refused while the file is open, and when the cluster has too few fileservers.""",
                    cmd_setstripe, graceful=True)
    p.add_argument("path", metavar="PATH", help="a directory, or a file (--replicas only)")
    p.add_argument("-c", "--width", type=at_least_one(int), metavar="N",
                   help="stripe width of new files (default: unset)")
    p.add_argument("-S", "--stripe-unit", type=byte_count, metavar="SIZE",
                   help="stripe unit of new files, e.g. 4M (default: unset)")
    p.add_argument("-r", "--replicas", type=at_least_one(int), metavar="N",
                   help="copies of each stripe unit (default: unset)")
    p.add_argument("--clear", action="store_true",
                   help="remove the directory's layout (default: off)")

    p = add_command(sub, "getstripe", "show a file's recipe or a directory's layout", """\
For a file, its recipe: stripe width, stripe unit, replicas and fileservers. For a
directory, its own layout (if any) and what files created in it get, and where that comes
from (its layout, an ancestor's, or the cluster's defaults). Needs no session.

--json prints one object: for a file "path", "stripe_width", "stripe_unit", "block_size",
"replicas", "fileservers"; for a directory "path", "own" and "new_files" (each with
"stripe_width", "stripe_unit", "replicas"; null where unset) and "from" (the directory whose
layout applies, null for the cluster's defaults).""", cmd_getstripe)
    p.add_argument("path", metavar="PATH", help="a file or a directory")
    json_flag(p, "the layout")
