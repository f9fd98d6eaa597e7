"""RCL end to end against a real OpenAI-compatible server: ``transformers serve`` (a standard
server from pip, on CPU) serving the shipped tinyworld llava checkpoint, with the standard
tokenizer `scripts/tinyworld_hf_folder.py` writes for it. The tiny model cannot write a useful
reflection: the test asserts that the loop completes and that the server answered every request
the backend made, not that the model is good. Skipped without ``transformers[serving]`` (failed
under ``CI=true``: the dev extra installs it)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from latentwire.agents.rcl.backends import OpenAIBackend
from latentwire.agents.rcl.optimizer import Models, Optimizer, OptimizerConfig
from latentwire.agents.rcl.simulated import SimConfig, SimulatedEnvironment

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
STARTUP_S = 120  # importing torch + transformers + fastapi on two busy cores
CHAT = '"POST /v1/chat/completions HTTP/1.1" 200'  # uvicorn's access-log line of an answered call


def _serving_or_skip() -> None:
    missing = [m for m in ("transformers", "fastapi", "uvicorn", "openai")
               if importlib.util.find_spec(m) is None]
    if missing:
        reason = f"transformers serve needs {', '.join(missing)}: pip install 'transformers[serving]'"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def _folder_script():
    spec = importlib.util.spec_from_file_location("tinyworld_hf_folder",
                                                  ROOT / "scripts" / "tinyworld_hf_folder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """(base URL, model name, access log) of a running ``transformers serve`` of tinyworld llava."""
    _serving_or_skip()
    tmp = tmp_path_factory.mktemp("served")
    folder = _folder_script().write_folder("llava", tmp / "tinyworld-llava")
    port, log = free_port(), tmp / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "transformers.cli.transformers", "serve", str(folder), "--device", "cpu",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "info", "--default-seed", "0"],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        import httpx

        deadline = time.monotonic() + STARTUP_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"transformers serve exited ({process.returncode}):\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not up after {STARTUP_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", str(folder), log
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_the_folder_tokenizer_is_tinyworlds() -> None:
    pytest.importorskip("tokenizers")
    from latentwire.tinyworld.tokenizer import TinyTokenizer

    hf, tiny = _folder_script().build_tokenizer(), TinyTokenizer()
    for text in ["k01=a2; k03=a0", " ünïcode 日本 ", "<|user|>hi<|end|>", "a  b\n\tc"]:
        assert hf.encode(text, add_special_tokens=False) == tiny.encode(text, add_special_tokens=False)
        assert hf.decode(hf.encode(text, add_special_tokens=False)) == text
    chat = [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "u"}]}]
    assert (hf.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            == tiny.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))


@pytest.mark.slow  # starting the server imports torch, transformers and fastapi (timings: docs/rcl.md)
@pytest.mark.timeout(300)
async def test_rcl_loop_against_transformers_serve(served: tuple[str, str, Path]) -> None:
    base_url, model, log = served
    env = SimulatedEnvironment(SimConfig(n_train=6, n_val=2, n_test=2, seed=1))
    backend = OpenAIBackend(base_url, model, timeout=60, retries=1, max_concurrency=2, max_tokens=24)
    before = log.read_text().count(CHAT)
    async with backend:
        opt = Optimizer(env, Models(backend, backend, backend),
                        OptimizerConfig(iterations=2, batch_size=2, group_size=2, credit_assignment=True))
        await opt.run()
    assert [h["iteration"] for h in opt.history] == [0, 1]
    usage = backend.usage
    assert usage.failures == 0 and usage.calls >= 2 * (2 * 2 * 2 + 2)  # annotated runs beside plain ones
    await asyncio.sleep(0.5)  # the access log is written after the answer is sent
    served = log.read_text().count(CHAT) - before
    assert usage.calls <= served <= usage.calls + usage.retries  # a timed-out attempt may be answered late
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0  # the server's own counts
