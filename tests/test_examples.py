"""What the README promises runs: the examples, every Python block in it, `latentwire demo`."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import latentwire
from latentwire import _demo

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
README = (ROOT / "README.md").read_text()
QUICKSTART = (EXAMPLES / "quickstart.py").read_text()
TIMEOUT = 90  # seconds for any one child process; each takes about one


def latentwire_command() -> list[str]:
    """The installed ``latentwire`` command (next to this interpreter), else ``python -m``."""
    script = Path(sys.executable).with_name("latentwire")
    return [str(script)] if script.exists() else [sys.executable, "-m", "latentwire.cli"]


def run(args: list[str]) -> subprocess.CompletedProcess:
    """Run a child (on the embedded hub unless its arguments say otherwise); output as text."""
    env = {k: v for k, v in os.environ.items() if k != "LATENTWIRE_URL"}
    return subprocess.run(args, cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"},
                          capture_output=True, text=True, timeout=TIMEOUT)


def python_blocks() -> list[tuple[str, str]]:
    """Every fenced Python block of the README as (info string, code)."""
    return re.findall(r"^```(python[^\n]*)\n(.*?)^```", README, flags=re.S | re.M)


def test_quickstart_runs_as_written() -> None:
    result = run([sys.executable, str(EXAMPLES / "quickstart.py")])
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ["bob got chat/alice from alice: hello, bob",
                 "bob got vision/cam0/frame from alice: Latent(numpy, dtype=float32, shape=(3, 4)",
                 "bob got a direct message from alice: 'just for you'",
                 "alice got bob's reply: [12. 15. 18. 21.]",
                 "doubler read notes/carol: 'doubling a 2x2 latent next'",
                 "from doubler: [[2.0, 2.0], [2.0, 2.0]]"]:
        assert line in result.stdout, result.stdout


def test_readme_quickstart_is_the_example_file() -> None:
    assert QUICKSTART in [code for _, code in python_blocks()], \
        "the README's quickstart block differs from examples/quickstart.py"


# Blocks marked ``python notest`` need a hub daemon; the quickstart block runs as its file.
@pytest.mark.parametrize("index", [i for i, (info, code) in enumerate(python_blocks())
                                   if "notest" not in info and code != QUICKSTART])
def test_readme_python_block_runs(index: int, tmp_path: Path) -> None:
    _, code = python_blocks()[index]
    script = tmp_path / "snippet.py"
    script.write_text(code)
    result = run([sys.executable, str(script)])
    assert result.returncode == 0, f"README python block {index} failed:\n{code}\n{result.stderr}"
    assert "Traceback" not in result.stdout


def test_two_processes_through_a_hub_daemon() -> None:
    result = run([sys.executable, str(EXAMPLES / "hub_two_processes" / "run.py")])
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert re.search(r"^latentwire hub listening on grpc://127\.0\.0\.1:\d+$", out, re.M), out
    assert "listener: latents/speaker/2 from speaker: latent float32 (8, 64)" in out
    assert "speaker: reply from listener: latent float32 (3, 8, 64), bit-exact" in out
    assert "latentwire hub stopped: drained; published=7 delivered=7 rejected=0" in out
    assert "run.py: exit codes {'speaker': 0, 'listener': 0, 'hub': 0}" in out


def test_examples_that_need_a_hub_say_so_without_one() -> None:
    result = run([sys.executable, str(EXAMPLES / "hub_two_processes" / "speaker.py")])
    assert result.returncode == 2
    assert "give --url grpc://HOST:PORT or set LATENTWIRE_URL" in result.stderr


def check_demo_output(out: str, rounds: int) -> None:
    """The transcript shows every exchange, each latent verified, and the verdict."""
    assert f"round {rounds}" in out and f"round {rounds + 1}" not in out
    for line in ["watcher  <- vision/cam0/frame    from camera: latent float32 (16, 64) 4096 B",
                 "narrator <- vision/cam0/caption  from camera: text 'a red cube left of a blue ball'",
                 "camera   <= watcher (direct)     text 'frame ",
                 "encoder  <= camera (request)     latent float32 (16, 64) 4096 B",
                 "camera   <= encoder (reply)      latent bfloat16 (4, 64) 512 B",
                 f"{4 * rounds} latents checked bit-exact",
                 "demo OK: every message arrived, every latent bit-exact"]:
        assert line in out, out
    assert len(re.findall(r"sha256 [0-9a-f]{16} bit-exact", out)) == 4 * rounds  # checked latents
    assert "MISMATCH" not in out and "FAILED" not in out


def test_vlm_demo_runs_both_modes() -> None:
    pytest.importorskip("torch")
    result = run([*latentwire_command(), "demo", "--episodes", "8"])
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"^ +text mode: \d+ ms per episode, .*; \d+% exact, \d+% of characters$", out, flags=re.M), out
    assert re.search(r"^ +latent mode: \d+ ms per episode, 2048 B on the bus .*; \d+% exact, \d+% of characters$",
                     out, flags=re.M), out
    assert re.search(r"^no message \(control, blank image\): \d+% exact, \d+% of characters$", out, flags=re.M), out
    # The README's sample is real output (the demo is deterministic; timings left out).
    (sample,) = re.findall(r"^```text\n(latentwire demo: tinyworld.*?)^```", README, flags=re.S | re.M)
    for line in sample.splitlines():
        if "..." not in line and "ms per episode" not in line:
            assert line.rstrip() in [o.rstrip() for o in out.splitlines()], f"README line not in output: {line!r}"


def test_bus_demo_on_the_embedded_hub() -> None:
    result = run([*latentwire_command(), "demo", "--bus"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("latentwire demo on inproc:// (embedded hub in this process, no server)")
    check_demo_output(result.stdout, rounds=3)
    # The README's sample transcript is real output (lines with timings left out).
    (sample,) = re.findall(r"^```text\n(latentwire demo on.*?)^```", README, flags=re.S | re.M)
    for line in sample.splitlines():
        if "..." not in line:
            assert line in result.stdout.splitlines(), f"README demo line not in the output: {line!r}"


async def test_demo_through_a_hub_daemon() -> None:
    hub = await asyncio.create_subprocess_exec(*latentwire_command(), "hub", "--port", "0", cwd=ROOT,
                                               stdout=asyncio.subprocess.PIPE,
                                               stderr=asyncio.subprocess.STDOUT)
    try:
        line = (await asyncio.wait_for(hub.stdout.readline(), TIMEOUT)).decode()
        assert line.startswith("latentwire hub listening on grpc://"), line
        url = line.split()[-1]
        result = await asyncio.to_thread(run, [*latentwire_command(), "demo", "--bus", "--url", url,
                                               "--rounds", "2"])
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith(f"latentwire demo on {url} (hub daemon)")
        check_demo_output(result.stdout, rounds=2)
        hub.send_signal(signal.SIGTERM)
        out = (await asyncio.wait_for(hub.stdout.read(), TIMEOUT)).decode()
        assert await asyncio.wait_for(hub.wait(), TIMEOUT) == 0, out
        # Per round: frame, caption, note, request, reply; the frame reaches two subscribers.
        assert "latentwire hub stopped: drained; published=10 delivered=12 rejected=0" in out
    finally:
        if hub.returncode is None:
            hub.kill()
            await hub.wait()


async def test_demo_fails_when_a_message_does_not_arrive(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    async def deaf(self: _demo.Narrator, msg: latentwire.Message) -> None:
        """Not declared with @on: the narrator subscribes to nothing."""

    monkeypatch.setattr(_demo.Narrator, "hear", deaf)
    monkeypatch.setattr(_demo, "ROUND_TIMEOUT", 0.5)
    assert await _demo.run_demo("inproc://demo-failure", rounds=2) == 1
    out = capsys.readouterr().out
    assert "FAILED heard: 0 of 2" in out and out.rstrip().endswith("demo FAILED")
    assert "round 2" not in out  # it stops at the first round that is missing something


def test_version() -> None:
    result = run([*latentwire_command(), "--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"latentwire {latentwire.__version__}"
    assert latentwire.__version__ != "0.0.0+unknown"  # read from the installed distribution
