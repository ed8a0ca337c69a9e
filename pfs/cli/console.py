"""One command's terminal: its progress lines, warnings and summary, and its Ctrl-C.

Invariant: every failure a file command meets is one line "pfs CMD: message" and status 1,
Ctrl-C one line "pfs CMD: interrupted" and status 130; and a graceful command stops only at a
safe point (`checkpoint`, or a wait on local input or output), never inside a PFS call.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import signal
import sys
from typing import Callable, Iterable, Iterator, TextIO, TypeVar

from tqdm import tqdm

#: Bytes moved per call by put/get: a multiple of the default stripe unit over 4 servers.
COPY_CHUNK = 8 << 20

_Item = TypeVar("_Item")
#: A copy's progress as a line of its own, into a file or pipe (tqdm's fields; sizes in KiB,
#: MiB... as tqdm writes them with unit "iB").
_LINE = "{n_fmt}{unit} / {total_fmt}{unit} ({rate_fmt}, {remaining} left)"
_LINE_NO_TOTAL = "{n_fmt}{unit} ({rate_fmt})"  # the size is not known (standard input)


# --- how things are written -------------------------------------------------------------------
def human(size: int) -> str:
    """A byte count as people read it: "512 B", "1.5 KiB", "3.0 GiB"."""
    if size < 1024:
        return f"{size} B"
    value, units = float(size), ("KiB", "MiB", "GiB", "TiB", "PiB")
    for unit in units:
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"


def size_text(size: int, human_sizes: bool) -> str:
    return human(size) if human_sizes else str(size)


def when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def shown(path: str) -> str:
    """A canonical PFS path as messages show it."""
    return f"pfs:/{path}"


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


# --- Ctrl-C -------------------------------------------------------------------------------------
class _CtrlC:
    """SIGINT while a file command runs.

    A KeyboardInterrupt raised at an arbitrary point could leave a lock of gRPC (or of the
    client) held, and the cleanup that follows (removing put's temporary, closing files, ending
    the session) could then wait forever. So a graceful command stops at the next safe point:
    while it waits on local input or output (a slow stdin, say), at once; otherwise between two
    chunks, files or paths (`checkpoint`). A command that has nothing to clean up stops at once.
    A second Ctrl-C exits at once, whatever is going on."""

    def __init__(self, console: "Console", graceful: bool) -> None:
        self.console, self.graceful = console, graceful
        self.pending = False  # Ctrl-C was pressed
        self.delivered = False  # ... and the KeyboardInterrupt raised
        self.local_io = 0  # waiting on local input or output: safe to stop at once

    def __call__(self, signum, frame) -> None:
        if self.pending:
            os._exit(interrupted(self.console.command, self.console))
        self.pending = True
        if not self.graceful or self.local_io:
            self.delivered = True
            raise KeyboardInterrupt

    def checkpoint(self) -> None:
        if self.pending and not self.delivered:
            self.delivered = True
            raise KeyboardInterrupt


# --- the console ------------------------------------------------------------------------------
class _Bar(tqdm):
    """tqdm without its monitor thread: a bar is refreshed by the copy's own updates, and a
    command's process keeps no thread of its own beyond the client's."""
    monitor_interval = 0


class _Lines:
    """A file for tqdm that makes each of its refreshes a line (tqdm rewrites one line in place
    with "\\r", which a log file or pipe would get as one long line). Left out: the refresh
    tqdm makes as the bar is made (nothing copied yet), and one that repeats the one before
    (tqdm's last, at close)."""

    def __init__(self, out: TextIO) -> None:
        self.out, self.last = out, None

    def write(self, text: str) -> None:
        for part in text.split("\r"):
            line = part.strip()
            if line and self.last is None:
                self.last = ""
            elif line and line != self.last:
                print(f"  {line}", file=self.out, flush=True)
                self.last = line

    def flush(self) -> None:
        self.out.flush()


class Console:
    """The terminal of one run of a command: `progress` is "auto" (on a terminal, for copies of
    more than a few chunks), "always" (--progress) or "never" (--quiet, which also drops the
    line that sums a copy up)."""

    def __init__(self, command: str, progress: str = "auto", graceful: bool = False) -> None:
        self.command = command
        self.progress_mode = progress
        self.progress_shown = False  # a progress line without its newline is on stderr
        self.bar: tqdm | None = None  # the progress of the copy going on, once shown
        self.ctrl_c = _CtrlC(self, graceful)

    def progress(self, done: int, total: int | None) -> None:
        """The bytes copied so far, with the rate and (when `total` is known: it is None for
        standard input) the time left, on stderr; a copy gives 0 before it starts. On a
        terminal a bar rewritten in place; into a file or pipe (with --progress) a line per
        count."""
        terminal = sys.stderr.isatty()
        big = done > 4 * COPY_CHUNK or (total is not None and total > 4 * COPY_CHUNK)
        if self.progress_mode == "never" or (self.progress_mode == "auto"
                                             and not (terminal and big)):
            return
        if self.bar is None:  # the rate counts from here (the first count a copy gives is 0)
            self.bar = _Bar(total=total, initial=done, unit="iB", unit_scale=True,
                            unit_divisor=1024,
                            file=sys.stderr if terminal else _Lines(sys.stderr),
                            mininterval=0.2 if terminal else 0,
                            bar_format=None if terminal else
                            _LINE if total is not None else _LINE_NO_TOTAL)
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)

    def progress_line(self, text: str) -> None:
        """A progress line of a long command on a terminal, rewritten in place."""
        if sys.stderr.isatty() and self.progress_mode != "never":
            print(f"\r  {text}\033[K", end="", file=sys.stderr, flush=True)
            self.progress_shown = True

    def progress_end(self) -> None:
        """Ends the progress bar or line, if one is showing, so the next message starts a
        line."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.progress_shown:
            print(file=sys.stderr, flush=True)
            self.progress_shown = False

    def done(self, message: str) -> None:
        """The line that sums up a copy (not with --quiet)."""
        if self.progress_mode != "never":
            print(message)

    def warn(self, message: str) -> None:
        self.progress_end()
        print(f"pfs {self.command}: {message}", file=sys.stderr, flush=True)

    def checkpoint(self) -> None:
        """A safe point to stop at if Ctrl-C was pressed (KeyboardInterrupt)."""
        self.ctrl_c.checkpoint()

    @contextlib.contextmanager
    def local_io(self) -> Iterator[None]:
        """Around a wait on local input or output, where Ctrl-C stops the command at once."""
        self.ctrl_c.checkpoint()
        self.ctrl_c.local_io += 1
        try:
            yield
        finally:
            self.ctrl_c.local_io -= 1

    def each(self, items: Iterable[_Item], action: Callable[[_Item], None]) -> int:
        """Runs `action` on every item (a path, or its index); a failure is reported and the
        rest still done. 1 if any failed."""
        status = 0
        for item in items:
            self.checkpoint()
            try:
                action(item)
            except BrokenPipeError:  # the reader is gone: nothing more is wanted
                raise
            except OSError as e:
                self.warn(str(e.strerror or e))
                status = 1
        return status


def interrupted(command: str | None, console: Console | None = None) -> int:
    """What Ctrl-C ends a command with: one line, status 130 (128 + SIGINT)."""
    if console is not None:
        console.progress_end()
    print(f"pfs {command}: interrupted" if command else "pfs: interrupted", file=sys.stderr,
          flush=True)
    return 130


def reporting_errors(run: Callable[[argparse.Namespace, Console], int], graceful: bool = False):
    """`run(args, console)` as a command: an OSError becomes one line on stderr and exit status
    1, Ctrl-C one line and status 130, and a closed standard output (`pfs ls -R | head`,
    `pfs get x - | head`) a quiet exit with status 0, as the reader has what it wanted.
    `graceful`: the command cleans up after Ctrl-C (see _CtrlC)."""
    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        console = Console(args.command, "never" if getattr(args, "quiet", False) else
                          "always" if getattr(args, "progress", False) else "auto", graceful)
        previous = signal.signal(signal.SIGINT, console.ctrl_c)
        try:
            status = run(args, console)
            sys.stdout.flush()  # a closed pipe shows here, rather than as noise at exit
            console.checkpoint()  # pressed after the last safe point: still interrupted
            return status
        except KeyboardInterrupt:
            return interrupted(args.command, console)
        except BrokenPipeError:
            # Nothing more can be written there, not even at exit.
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except OSError as e:
            if console.ctrl_c.pending:  # what failed was cut short by Ctrl-C
                return interrupted(args.command, console)
            console.warn(str(e.strerror or e))
            return 1
        finally:
            signal.signal(signal.SIGINT, previous)
    return wrapper
