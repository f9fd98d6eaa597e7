"""The generated protobuf modules in sdk/_proto match protos/ (scripts/gen_protos.py --check)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def check(root: Path) -> subprocess.CompletedProcess:
    """Run ``gen_protos.py --check`` of the tree at ``root``."""
    return subprocess.run([sys.executable, str(root / "scripts" / "gen_protos.py"), "--check"],
                          capture_output=True, text=True, timeout=120)


def test_generated_modules_are_up_to_date() -> None:
    result = check(ROOT)
    assert result.returncode == 0, (
        f"sdk/_proto is stale; run python scripts/gen_protos.py\n{result.stdout}{result.stderr}")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the script, the .proto sources and the generated modules (the script finds
    its files relative to itself)."""
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copytree(ROOT / "sdk" / "_proto", tmp_path / "sdk" / "_proto",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_check_fails_when_a_proto_changes_without_regenerating(tree: Path) -> None:
    assert check(tree).returncode == 0  # the copy starts in step
    proto = tree / "protos" / "latentwire" / "v1" / "bus.proto"
    proto.write_text(proto.read_text().replace("message Bye {}", "message Bye {\n  string reason = 1;\n}"))
    result = check(tree)
    assert result.returncode == 1
    assert "stale generated modules in sdk/_proto: bus_pb2.py" in result.stderr


def test_check_fails_when_a_generated_module_is_edited(tree: Path) -> None:
    stub = tree / "sdk" / "_proto" / "bus_pb2.pyi"
    stub.write_text(stub.read_text() + "\n# edited by hand\n")
    result = check(tree)
    assert result.returncode == 1
    assert "bus_pb2.pyi" in result.stderr
