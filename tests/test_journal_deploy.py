"""Running the hub as a service: journal flags on the daemon, every flag from the environment,
the Dockerfile and systemd unit naming real settings, and the container health probe."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from latentwire.hub import options
from latentwire.hub.server import serve

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
ENV_NAME = re.compile(r"LATENTWIRE_HUB_[A-Z_]+")


def _hub_flags() -> list[argparse.Action]:
    parser = argparse.ArgumentParser()
    options.add_arguments(parser)
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


def _env_name(action: argparse.Action) -> str:
    return "LATENTWIRE_HUB_" + action.dest.upper()


def _parse_with(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], argv: list[str]) -> argparse.Namespace:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    options.add_arguments(parser)  # reads the environment now
    return parser.parse_args(argv)


def test_every_hub_flag_reads_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    flags = _hub_flags()
    assert {"journal", "journal_max_age", "journal_max_bytes", "port", "tls_cert"} <= {a.dest for a in flags}
    for action in flags:
        if action.nargs == 0:  # a switch: "1"/"true" turns it on
            raw, expected = "true", True
        elif isinstance(action, argparse._AppendAction):  # repeatable: comma-separated
            raw, expected = "a/#,b/+", ["a/#", "b/+"]
        elif action.type is int:
            raw, expected = "4242", 4242
        elif action.type is float:
            raw, expected = "4.5", 4.5
        elif action.choices:
            raw = expected = str(list(action.choices)[-1])
        else:
            raw = expected = "/some/where"
        args = _parse_with(monkeypatch, {_env_name(action): raw}, [])
        assert getattr(args, action.dest) == expected, (
            f"{'/'.join(action.option_strings)} ignores ${_env_name(action)}")
        monkeypatch.delenv(_env_name(action))


def test_a_flag_on_the_command_line_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _parse_with(monkeypatch, {"LATENTWIRE_HUB_JOURNAL_MAX_AGE": "60"}, ["--journal-max-age", "5"])
    assert args.journal_max_age == 5.0


def test_a_bad_environment_value_gets_the_flags_error(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        _parse_with(monkeypatch, {"LATENTWIRE_HUB_JOURNAL_MAX_BYTES": "lots"}, [])
    assert "argument --journal-max-bytes: invalid int value: 'lots'" in capsys.readouterr().err


@pytest.mark.parametrize("path", ["Dockerfile", "deploy/latentwire-hub.service", "deploy/compose.yaml"])
def test_deployment_files_name_only_real_settings(path: str) -> None:
    known = {_env_name(a) for a in _hub_flags()}
    named = set(ENV_NAME.findall((ROOT / path).read_text()))
    assert named, f"{path} sets no hub settings"
    assert named <= known, f"{path} names settings no flag reads: {sorted(named - known)}"


def _daemon(*flags: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LATENTWIRE_HUB_")}
    return subprocess.Popen([sys.executable, "-m", "latentwire.cli", "hub", "--port", "0", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**clean, **(env or {}), "PYTHONUNBUFFERED": "1"})


def test_the_daemon_says_whether_it_journals(tmp_path: Path) -> None:
    journal = tmp_path / "hub.db"
    for flags, env, said in [
        ((), {}, "no --journal: messages live in memory only"),
        (("--journal", str(journal)), {}, f"latentwire hub journal {journal}: 0 sessions"),
        ((), {"LATENTWIRE_HUB_JOURNAL": str(journal)}, f"latentwire hub journal {journal}: 0 sessions"),
    ]:
        proc = _daemon(*flags, env=env)
        try:
            assert proc.stdout.readline().startswith("latentwire hub listening on grpc://")
            lines = []
            while not lines or said not in lines[-1]:  # other start-up notes may come first
                lines.append(proc.stdout.readline())
                assert len(lines) <= 5 and lines[-1], lines
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
    assert journal.exists()


def test_an_unusable_journal_stops_the_daemon_with_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"\x00garbage" * 1000)
    proc = _daemon("--journal", str(bad))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert f"latentwire hub: journal {bad}: file is corrupt or not a SQLite database" in out
    proc = _daemon("--journal", str(tmp_path / "j.db"), "--journal-max-age", "-1")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "max_age must be a positive number or None, got -1.0" in out


async def _probe(env: dict[str, str]) -> tuple[int, str]:
    # Asynchronously: the hub answering the probe runs on this event loop.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "deploy" / "healthcheck.py"), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out.decode()


async def test_the_container_health_probe_follows_the_hub() -> None:
    server = await serve(port=0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTWIRE_HUB_")}
    env["LATENTWIRE_HUB_PORT"] = str(server.port)
    try:
        code, out = await _probe(env)
        assert code == 0 and "SERVING" in out, out
    finally:
        await server.stop(grace=0.1)
    code, out = await _probe(env)
    assert code == 1 and "no health answer" in out, out


async def test_the_health_probe_speaks_tls_when_the_hub_does(tls_files: dict[str, Path]) -> None:
    server = await serve(port=0, tls_cert=tls_files["cert"], tls_key=tls_files["key"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTWIRE_HUB_")}
    env.update(LATENTWIRE_HUB_PORT=str(server.port), LATENTWIRE_HUB_TLS_CERT=str(tls_files["cert"]))
    try:
        code, out = await _probe(env)
        assert code == 0 and "SERVING" in out, out
        del env["LATENTWIRE_HUB_TLS_CERT"]  # a plaintext probe gets no answer from a TLS hub
        code, out = await _probe(env)
        assert code == 1 and "no health answer" in out, out
    finally:
        await server.stop(grace=0.1)


def test_the_docker_image_copies_every_folder_the_package_is_built_from() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = set(project["tool"]["setuptools"]["package-dir"].values())
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \./\1$", dockerfile, re.MULTILINE))
    allowed = set(re.findall(r"^!(\w+)/\*\*$", (ROOT / ".dockerignore").read_text(), re.MULTILINE))
    assert folders <= copied, f"Dockerfile does not copy {sorted(folders - copied)}"
    assert folders <= allowed, f".dockerignore leaves out {sorted(folders - allowed)}"
    assert project["project"]["readme"] in dockerfile  # setuptools reads it at build time
