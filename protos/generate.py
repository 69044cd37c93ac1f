"""Regenerate the committed gRPC/protobuf code from the ``.proto`` files: ``python -m protos.generate``.

Run from the project root. The generated modules live next to their ``.proto`` files, so
``protos/holder.proto`` becomes ``protos.holder_pb2`` (the path mirrors the import path).
``--check`` regenerates into a temporary folder and exits 1 if the committed code differs.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (from grpcio-tools, pinned in the dev extras) into ``out_dir``; return the outputs."""
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p.relative_to(ROOT)) for p in proto_files()],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    return sorted((out_dir / "protos").glob("*_pb2*.py*"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        outputs = generate(Path(tmp))
        stale = []
        for out in outputs:
            committed = PROTO_DIR / out.name
            if opts.check:
                if not committed.exists() or not filecmp.cmp(out, committed, shallow=False):
                    stale.append(out.name)
            else:
                shutil.copyfile(out, committed)
        if opts.check:
            expected = {o.name for o in outputs}
            extra = [p.name for p in PROTO_DIR.glob("*_pb2*.py*") if p.name not in expected]
            stale += [f"{name} (no .proto makes it)" for name in extra]
            if stale:
                print(
                    "generated code is stale; run `python -m protos.generate`:", *stale, sep="\n  "
                )
                return 1
            print(f"generated code matches {len(outputs)} files")
        else:
            print("generated:", *[o.name for o in outputs])
    return 0


if __name__ == "__main__":
    sys.exit(main())
