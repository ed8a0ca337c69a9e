"""`pfs systemd`: the systemd unit files shipped in the wheel (pfs/systemd/), for the
metaserver, a fileserver and a mount, written where systemd looks, naming this `pfs`."""
from __future__ import annotations

import argparse
import importlib.resources
import os
import pathlib
import shutil
import sys

from .arguments import add_command
from .console import Console

#: What the shipped units' ExecStart names (a system-wide `pip install`); replaced on writing.
SHIPPED_PFS = "/usr/local/bin/pfs"


def unit_files() -> dict[str, str]:
    """The shipped unit files by name."""
    folder = importlib.resources.files("pfs") / "systemd"
    return {f.name: f.read_text() for f in sorted(folder.iterdir(), key=lambda f: f.name)
            if f.name.endswith(".service")}


def this_pfs() -> str:
    """The absolute path of the `pfs` command of this installation."""
    found = shutil.which("pfs", path=os.path.dirname(sys.executable)) or shutil.which("pfs")
    return os.path.abspath(found or SHIPPED_PFS)


def cmd_systemd(args: argparse.Namespace, console: Console) -> int:
    if args.directory is None:
        print(importlib.resources.files("pfs") / "systemd")
        return 0
    target = pathlib.Path(args.directory)
    command = this_pfs()
    for name, text in unit_files().items():
        path = target / name
        if path.exists() and not args.force:
            raise FileExistsError(f"{path} exists (--force replaces it)")
        path.write_text(text.replace(SHIPPED_PFS, command))
        print(f"{path} (ExecStart: {command})")
    return 0


def register(sub) -> None:
    """systemd."""
    p = add_command(sub, "systemd", "write the systemd unit files of the servers and a mount",
                    """\
Write pfs-metaserver.service, pfs-fileserver.service and pfs-mount.service into DIRECTORY
(/etc/systemd/system, say), their ExecStart naming this installation's pfs command. Without
DIRECTORY, print where the wheel keeps them. Each file says what to put in its environment
file under /etc/pfs/ (README, "Running on several hosts"); then `systemctl daemon-reload`
and `systemctl enable --now pfs-...`. The servers run as the user pfs (`useradd --system
pfs`), their data under /var/lib/pfs/.""", cmd_systemd)
    p.add_argument("directory", metavar="DIRECTORY", nargs="?",
                   help="where to write them (default: print where they are)")
    p.add_argument("--force", action="store_true",
                   help="replace unit files that exist (default: refuse)")
