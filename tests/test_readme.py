"""The README's Python examples run as written against a cluster, twice in a row (a second run
must not fail because the first left a file behind)."""
import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def test_readme_examples_run_twice(cluster, tmp_path):
    examples = python_examples()
    assert examples, "the README has no Python example"
    for example in examples:
        for run in (1, 2):
            done = subprocess.run([sys.executable, "-c", example], cwd=tmp_path,
                                  env=cluster.env(), capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"run {run} of:\n{example}\n{done.stderr}"
