"""The distribution as a user installs it: every package listed and shipped, a light import."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGES: list[str] = SETUPTOOLS["packages"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]


def folder_of(package: str) -> Path:
    """The source folder setuptools takes ``package`` from (the longest package-dir prefix)."""
    prefixes = [p for p in PACKAGE_DIR if package == p or package.startswith(p + ".")]
    assert prefixes, f"{package} is under no [tool.setuptools.package-dir] entry"
    base = max(prefixes, key=len)
    rest = package[len(base):].lstrip(".")
    return ROOT / PACKAGE_DIR[base] / Path(*rest.split(".")) if rest else ROOT / PACKAGE_DIR[base]


def package_of(folder: Path) -> str:
    """The package name a source folder maps to (inverse of `folder_of`)."""
    rel = folder.relative_to(ROOT)
    for package, source in sorted(PACKAGE_DIR.items(), key=lambda kv: -len(kv[1])):
        source_path = Path(source)
        if rel == source_path or source_path in rel.parents:
            return ".".join([package, *rel.relative_to(source_path).parts])
    raise AssertionError(f"{rel} is under no [tool.setuptools.package-dir] folder")


def test_every_package_folder_is_listed_and_every_listed_package_exists() -> None:
    folders = {init.parent for source in PACKAGE_DIR.values()
               for init in (ROOT / source).rglob("__init__.py") if "__pycache__" not in init.parts}
    on_disk = {package_of(folder) for folder in folders}
    assert not on_disk - set(PACKAGES), (
        f"folders with an __init__.py missing from [tool.setuptools] packages: {sorted(on_disk - set(PACKAGES))}")
    listed_without_folder = [p for p in PACKAGES if not (folder_of(p) / "__init__.py").is_file()]
    assert not listed_without_folder, f"listed packages with no __init__.py: {listed_without_folder}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """A wheel built from a copy of the source tree (so no build/ or egg-info lands in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for source in {Path(s).parts[0] for s in PACKAGE_DIR.values()}:
        shutil.copytree(ROOT / source, src / source, ignore=junk)
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation builds with the installed setuptools: no download, and fast.
    result = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
                            cwd=src, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (path,) = out.glob("latentwire-*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf


def test_wheel_ships_every_package_and_the_generated_protos(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    inits = {"/".join([*p.split("."), "__init__.py"]) for p in PACKAGES}
    assert not inits - names, f"packages missing from the wheel: {sorted(inits - names)}"
    generated = {f"latentwire/_proto/{f.name}" for f in (ROOT / "sdk" / "_proto").iterdir()
                 if f.suffix in (".py", ".pyi")}
    assert {"latentwire/_proto/bus_pb2.py", "latentwire/_proto/bus_pb2.pyi"} <= generated
    assert not generated - names, f"generated modules missing from the wheel: {sorted(generated - names)}"
    assert "latentwire/hub/dashboard.html" in names, "the dashboard page is missing from the wheel"
    top_level = {n.split("/")[0] for n in names}
    assert top_level == {"latentwire", f"latentwire-{PYPROJECT['project']['version']}.dist-info"}, top_level


def test_wheel_declares_the_latentwire_command(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "latentwire = latentwire.cli:main" in text, text


def test_import_is_light_and_exposes_all() -> None:
    probe = (
        "import json, sys, inspect, latentwire\n"
        "missing = [n for n in latentwire.__all__ if not hasattr(latentwire, n)]\n"
        "undocumented = [n for n in latentwire.__all__ if (inspect.isclass(getattr(latentwire, n, None))"
        " or inspect.isfunction(getattr(latentwire, n, None))) and not inspect.getdoc(getattr(latentwire, n))]\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith('latentwire.hub'))\n"
        "print(json.dumps({'missing': missing, 'undocumented': undocumented, 'heavy': heavy,"
        " 'all': latentwire.__all__}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["heavy"] == [], f"`import latentwire` imported {report['heavy']}"
    assert report["missing"] == [], f"names in __all__ that latentwire lacks: {report['missing']}"
    assert report["undocumented"] == [], f"public names without a docstring: {report['undocumented']}"
    assert {"connect", "Bus", "Message", "Latent", "Agent", "Runtime", "on", "on_direct",
            "__version__"} <= set(report["all"])
