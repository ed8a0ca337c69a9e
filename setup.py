"""Build steps that pyproject.toml cannot declare: protobuf generation and the cffi extension."""
import pathlib
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).parent.resolve()


class BuildPyWithProtos(build_py):
    """Generates pfs/_proto/*_pb2*.py from protos/*.proto (never committed: .gitignore) into the
    build tree; for an editable install (`pip install -e .`), whose package is the source tree
    itself, into the source tree, next to the C core that build_ext puts there too."""

    def run(self) -> None:
        super().run()
        from grpc_tools import protoc  # a build requirement

        out = ROOT if self.editable_mode else pathlib.Path(self.build_lib).resolve()
        (out / "pfs" / "_proto").mkdir(parents=True, exist_ok=True)
        protos = sorted(str(p) for p in (ROOT / "protos").glob("*.proto"))
        # Mapping protos/ to the import path pfs/_proto makes the generated imports package-absolute.
        args = ["grpc_tools.protoc", f"-Ipfs/_proto={ROOT / 'protos'}",
                f"--python_out={out}", f"--grpc_python_out={out}", f"--pyi_out={out}"]
        args += [f"pfs/_proto/{pathlib.Path(p).name}" for p in protos]
        if protoc.main(args) != 0:
            sys.exit("protoc failed on " + ", ".join(protos))


setup(cmdclass={"build_py": BuildPyWithProtos}, cffi_modules=["build_native.py:ffibuilder"])
