"""The `pfs` command as the tests run it: through `python -m pfs` in a subprocess (the `pfs`
fixture of conftest.py), and what they check of a run.

A failed command is one line on stderr, "pfs CMD: message", and exit status 1 (README).
"""


def fails(done, *words):
    """The command failed with one line on stderr containing every word."""
    assert done.returncode == 1, done.err
    assert done.err.count("\n") == 1 and done.err.startswith(("pfs ", "pfs: ")), done.err
    for word in words:
        assert word in done.err, done.err
    return done


def listing(pfs, path, *flags):
    """The lines of `pfs ls FLAGS PATH`."""
    return pfs("ls", *flags, path).out.splitlines()
