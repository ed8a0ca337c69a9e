"""A network namespace joined to this one by a veth pair: one side of a network partition, for
the tests. Needs root and `ip`.

Here, the veth's end has `host_ip`; servers that both sides must reach listen there. In the
namespace, `far_ip` is on the loopback device (routed to from here over the veth), so what
listens on it stays reachable from inside the namespace while the partition lasts, as a machine
on that side of a split would. `cut` takes the namespace's end of the link down: packets across
vanish without an answer. Whoever makes a Split deletes it (`delete`), which removes the link.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys


def can_make_namespaces() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"pfs-probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
    if made:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return made


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


class Split:
    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.netns, self.host_if, self.ns_if = f"pfs-{tag}", f"pf{tag}h", f"pf{tag}n"
        subnet = secrets.randbelow(250) + 1
        self.host_ip, self.ns_ip = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
        self.far_ip = f"10.214.{subnet}.1"
        self.prefix = ("ip", "netns", "exec", self.netns)  # runs a command inside
        sh("ip", "netns", "add", self.netns)
        try:
            sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            sh("ip", "link", "set", self.ns_if, "netns", self.netns)
            sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            sh("ip", "link", "set", self.host_if, "up")
            sh(*self.prefix, "ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
            sh(*self.prefix, "ip", "addr", "add", f"{self.far_ip}/32", "dev", "lo")
            sh(*self.prefix, "ip", "link", "set", "lo", "up")
            self.heal()
        except BaseException:
            self.delete()
            raise

    def cut(self) -> None:
        sh(*self.prefix, "ip", "link", "set", self.ns_if, "down")

    def heal(self) -> None:
        sh(*self.prefix, "ip", "link", "set", self.ns_if, "up")
        sh("ip", "route", "replace", f"{self.far_ip}/32", "via", self.ns_ip, "dev", self.host_if)

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30)


def far_fileserver(split: Split, data_dir, metaserver: str, key_file, log) -> subprocess.Popen:
    """A fileserver named `far` in the namespace, on `far_ip`, attached to `metaserver`; its
    output goes to the open file `log`. Whoever starts it stops it."""
    return subprocess.Popen(
        [*split.prefix, sys.executable, "-m", "pfs", "fileserver", "--data-dir", str(data_dir),
         "--metaserver", metaserver, "--name", "far", "--host", split.far_ip, "--insecure",
         "--cluster-key-file", str(key_file), "--die-with-parent"],
        stdout=log, stderr=log, cwd=data_dir.parent, start_new_session=True)
