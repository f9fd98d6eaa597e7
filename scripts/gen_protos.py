"""Regenerate ``sdk/_proto`` from ``protos/``: the one way the generated modules are made.

Run from anywhere: ``python scripts/gen_protos.py``. ``--check`` regenerates into a temporary
folder and exits 1 when the committed modules differ (the stale-protos test calls it).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
OUT = ROOT / "sdk" / "_proto"


def generate(out: Path) -> list[Path]:
    """Compile every .proto under protos/ into ``out`` and return the written files."""
    from grpc_tools import protoc  # dev dependency: grpcio-tools

    import grpc_tools

    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            *map(str, protos),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        written = []
        for src in sorted(Path(tmp).rglob("*_pb2.py*")):
            # Flatten latentwire/v1/bus_pb2.py -> _proto/bus_pb2.py; the generated module
            # registers itself under the proto package name, so no import rewriting is needed.
            dest = out / src.name
            shutil.copyfile(src, dest)
            written.append(dest)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when sdk/_proto is stale")
    args = parser.parse_args(argv)
    if not args.check:
        for path in generate(OUT):
            print(path.relative_to(ROOT))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = [p.name for p in fresh if not (OUT / p.name).exists()
                 or not filecmp.cmp(p, OUT / p.name, shallow=False)]
        # A generated module whose .proto is gone is stale too.
        names = {p.name for p in fresh}
        stale += [p.name for p in sorted(OUT.glob("*_pb2.py*")) if p.name not in names]
    if stale:
        print(f"stale generated modules in sdk/_proto: {', '.join(stale)}; "
              "run python scripts/gen_protos.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
