"""``latentwire sub``, ``pub`` and ``top`` as an operator runs them: subprocesses against a live
hub (and an MQTT broker), their output, and one clear line with exit status 2 for bad input."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

import latentwire
import numpy as np
import pytest
from latentwire.hub.auth import AuthFile, Policy, hash_token
from latentwire.hub.server import serve

pytestmark = pytest.mark.timeout(90)

ENV = {k: v for k, v in os.environ.items() if not k.startswith("LATENTWIRE_")} | {
    "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


async def start(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    """``latentwire ARGS...`` running in the background."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "latentwire.cli", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**ENV, **(env or {})})


async def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, str, str]:
    """``latentwire ARGS...``: exit status, stdout, stderr."""
    proc = await start(*args, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def subscribed(proc: asyncio.subprocess.Process) -> None:
    """Wait until ``latentwire sub`` says its subscription is active."""
    line = await asyncio.wait_for(proc.stderr.readline(), 30)
    assert line.startswith(b"latentwire sub: subscribed to"), line


@pytest.fixture
async def hub_url():
    server = await serve(port=0)
    yield server.url
    await server.stop(grace=0.5)


async def test_sub_prints_what_pub_sends_and_top_shows_agents_and_topics(hub_url: str, tmp_path: Path) -> None:
    latent = np.linspace(-1, 1, 8 * 64, dtype=np.float32).reshape(8, 64)
    np.save(tmp_path / "frame.npy", latent)
    sub = await start("sub", "cam/#", "--json", "-n", "3", "--agent", "watcher", env={"LATENTWIRE_URL": hub_url})
    await subscribed(sub)
    assert (await run("pub", "--url", hub_url, "cam/status", "all good"))[0] == 0
    code, _, err = await run("pub", "--url", hub_url, "cam/front", "--latent", str(tmp_path / "frame.npy"),
                             "--space", "hub", "--family", "gemma3", "--agent", "camera")
    assert code == 0, err
    assert (await run("pub", "--url", hub_url, "elsewhere", "not for the watcher"))[0] == 0
    assert (await run("pub", "--url", hub_url, "cam/raw", "--latent", str(tmp_path / "frame.npy")))[0] == 0
    out, err = await asyncio.wait_for(sub.communicate(), 30)
    assert sub.returncode == 0, err
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [m["topic"] for m in lines] == ["cam/status", "cam/front", "cam/raw"]
    assert lines[0]["text"] == "all good" and lines[0]["sender"].startswith("cli-pub-")
    assert lines[1]["sender"] == "camera"
    assert lines[1]["latent"] == {"dtype": "float32", "shape": [8, 64], "space": "hub", "family": "gemma3",
                                  "norm": pytest.approx(float(np.linalg.norm(latent)), rel=1e-5)}
    assert lines[2]["latent"]["space"] is None

    # --group: the subscriber joins a subscription group (its share of the messages; here the only member).
    sub = await start("sub", "--url", hub_url, "jobs", "--group", "workers", "-n", "1")
    line = await asyncio.wait_for(sub.stderr.readline(), 30)
    assert line.startswith(b"latentwire sub: subscribed to jobs in group workers as "), line
    await run("pub", "--url", hub_url, "jobs", "job 1", "--agent", "boss")
    out, err = await asyncio.wait_for(sub.communicate(), 30)
    assert out.decode().strip() == "jobs [boss] job 1", err

    # The plain format: one line per message, topic, [sender], body.
    sub = await start("sub", "--url", hub_url, "cam/#", "-n", "2")
    await subscribed(sub)
    await run("pub", "--url", hub_url, "cam/status", "hello there", "--agent", "camera")
    await run("pub", "--url", hub_url, "cam/front", "--latent", str(tmp_path / "frame.npy"), "--space", "hub",
              "--agent", "camera")
    out, _ = await asyncio.wait_for(sub.communicate(), 30)
    norm = f"{float(np.linalg.norm(latent)):.4g}"
    assert out.decode().splitlines() == [
        "cam/status [camera] hello there",
        f"cam/front [camera] latent float32[8,64] space=hub family=- norm={norm}"]

    # top --once: one table of the agents connected now and the topics that carried traffic.
    async with latentwire.connect(hub_url, agent="robot-7") as robot:
        await robot.subscribe("cam/#")
        code, out, err = await run("top", "--url", hub_url, "--once")
    assert code == 0, err
    assert "robot-7" in out and "cam/#" in out and "connected" in out
    for topic in ("cam/status", "cam/front", "cam/raw", "elsewhere", "jobs"):
        assert topic in out
    assert "published 7" in out


async def test_sub_and_pub_work_over_mqtt(mosquitto) -> None:
    url = f"mqtt://{mosquitto.host}:{mosquitto.port}/cli-{uuid.uuid4().hex[:8]}"
    sub = await start("sub", "--url", url, "sensors/+", "-n", "1")
    await subscribed(sub)
    code, _, err = await run("pub", "--url", url, "sensors/kitchen", "21.5 C", "--agent", "thermo")
    assert code == 0, err
    out, _ = await asyncio.wait_for(sub.communicate(), 30)
    assert out.decode().strip() == "sensors/kitchen [thermo] 21.5 C"
    code, _, err = await run("top", "--url", url, "--once")
    assert code == 2 and "needs a hub daemon's grpc:// or grpcs:// URL" in err and "broker's own tools" in err


@pytest.mark.parametrize("name, make, reason", [
    ("missing.npy", None, "cannot read it (No such file or directory)"),
    ("objects.npy", lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True),
     "holds an object array (Python objects); save a numeric array"),
    ("two.npz", lambda p: np.savez(p, a=np.ones(2), b=np.ones(3)), "holds several arrays (.npz)"),
    ("complex.npy", lambda p: np.save(p, np.ones(4, np.complex64)), "unsupported dtype complex64"),
    ("notes.npy", lambda p: p.write_text("just text"), "not a .npy file that numpy.save wrote"),
])
async def test_pub_refuses_a_bad_latent_file_in_one_line(tmp_path: Path, name: str, make, reason: str) -> None:
    path = tmp_path / name
    if make is not None:
        make(path)
    # Checked before connecting: no hub listens on this port.
    code, out, err = await run("pub", "--url", "grpc://127.0.0.1:9", "t", "--latent", str(path))
    assert code == 2, err
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"latentwire pub: error: --latent {path}: ") and reason in err


@pytest.mark.parametrize("args, reason", [
    (["pub", "a/+/b", "x"], "topic 'a/+/b': "),
    (["pub", "t"], "give the TEXT to publish or --latent FILE.npy"),
    (["pub", "t", "text", "--space", "hub"], "--space and --family describe a --latent"),
    (["sub", "a/#/b"], "filter 'a/#/b': "),
    (["sub", "jobs", "--group", "two words"], "invalid subscription group 'two words'"),
    (["top", "--url", "inproc://", "--once"], "needs a hub daemon's grpc:// or grpcs:// URL"),
])
async def test_bad_arguments_exit_2_with_one_line(args: list[str], reason: str) -> None:
    code, _, err = await run(*args)
    assert code == 2 and len(err.splitlines()) == 1 and reason in err, err


async def test_top_on_an_authenticated_hub_needs_an_admin_token() -> None:
    tokens = {"ops": "ops-secret", "alice": "alice-secret"}
    agents = {a: {"token_hash": hash_token(t, n=1024), "publish": ["#"], "subscribe": ["#"], "admin": a == "ops"}
              for a, t in tokens.items()}
    server = await serve(port=0)
    server.hub.policy = Policy(AuthFile.model_validate({"agents": agents}))
    try:
        async with latentwire.connect(server.url, agent="alice", token=tokens["alice"]):
            code, out, err = await run("top", "--url", server.url, "--once")
            assert code == 1 and "needs the token of an agent with admin = true" in err
            code, out, err = await run("top", "--url", server.url, "--once", env={"LATENTWIRE_TOKEN": tokens["alice"]})
            assert code == 1 and "PERMISSION_DENIED" not in out and "admin = true" in err and "alice" not in err
            code, out, err = await run("top", "--url", server.url, "--once", env={"LATENTWIRE_TOKEN": tokens["ops"]})
            assert code == 0 and "alice" in out, err
    finally:
        await server.stop(grace=0.5)
