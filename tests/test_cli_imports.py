"""The `pfs` command loads no server code to print its help or to run a file command: the servers
are imported only by the commands that start them (issue 22)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

#: Runs `pfs ARGS` in this process, then prints the server modules it imported, as JSON.
WRAPPER = """\
import json, sys
from pfs.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as e:
    status = e.code
print(json.dumps({"status": status,
                  "servers": sorted(m for m in sys.modules if m.split(".")[0] == "pfs_servers")}),
      file=sys.stderr)
"""


def _servers_loaded(env: dict[str, str], cwd, *args: str) -> tuple[object, list[str]]:
    done = subprocess.run([sys.executable, "-c", WRAPPER, *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["status"], report["servers"]


@pytest.mark.parametrize("args", [("--help",), ("ls", "--help"), ("put", "--help")])
def test_help_loads_no_server_module(cluster, tmp_path, args):
    status, servers = _servers_loaded(cluster.env(), tmp_path, *args)
    assert status == 0
    assert servers == []


def test_ls_and_stat_load_no_server_module(cluster, tmp_path):
    for args in (("ls", "-l"), ("stat", "/"), ("status",)):
        status, servers = _servers_loaded(cluster.env(), tmp_path, *args)
        assert status == 0, args
        assert servers == [], args


def test_starting_a_server_loads_it(tmp_path):
    """The check above can fail: a command that starts servers does load their code."""
    status, servers = _servers_loaded(dict(os.environ), tmp_path, "down", "--data-dir", str(tmp_path))
    assert status == 0
    assert "pfs_servers.instance" in servers
