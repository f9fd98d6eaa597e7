"""RCL against a local OpenAI-compatible HTTP server (started here) with valid, malformed, failing
and slow answers: the run completes, bad output is skipped with reasons, retries and limits hold."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from latentwire.agents.rcl.backends import OpenAIBackend
from latentwire.agents.rcl.envs import load_rewardbench2
from latentwire.agents.rcl.errors import BackendError
from latentwire.agents.rcl.optimizer import Models, Optimizer, OptimizerConfig

TIMEOUT = 0.5  # the backend's per-attempt timeout; the slow answer takes longer


class FakeLLM:
    """Answers by role (read from the system prompt), with scripted faults."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}
        self.in_flight = self.max_in_flight = 0

    def answer(self, body: dict) -> tuple[int, str, float]:
        system = body["messages"][0]["content"]
        role = ("actor" if system.startswith("You solve") else
                "reflector" if system.startswith("You analyse") else "mutator")
        with self.lock:
            n = self.calls[role] = self.calls.get(role, 0) + 1
        if role == "actor":
            return 200, "Both look fine, but (B) is precise.\nANSWER: B", 0.05
        if role == "reflector":
            if n == 1:
                return 200, "I believe the agent was mostly right.", 0  # not JSON
            if n == 2:
                return 200, "{}", 2 * TIMEOUT  # slow: times out, retried
            if n == 3:
                return 500, "", 0  # server error: retried
            return 200, json.dumps({"summary": "picked a weaker answer", "credit": {},
                                    "insights": ["prefer precise answers"]}), 0
        return 200, "```json\n" + json.dumps({"operations": [
            {"op": "ADD", "section": "judging", "content": f"Prefer precise, complete answers ({n})."},
            {"op": "DELETE", "entry_id": "e-0042"},
            {"op": "UPDATE", "entry_id": "e-0001"},
            "drop everything"]}) + "\n```", 0


def serve(fake: FakeLLM) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, text, delay = fake.answer(body)
            with fake.lock:
                fake.in_flight += 1
                fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            try:
                if delay > TIMEOUT:  # the client gives up and may send the next call: not in flight
                    with fake.lock:
                        fake.in_flight -= 1
                    time.sleep(delay)
                    return
                time.sleep(delay)
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}],
                                      "usage": {"prompt_tokens": 100, "completion_tokens": 7}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up on a slow answer
            finally:
                if delay <= TIMEOUT:
                    with fake.lock:
                        fake.in_flight -= 1

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def endpoint():
    fake = FakeLLM()
    server = serve(fake)
    yield fake, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def rewardbench_file(tmp_path):
    path = tmp_path / "rb2.jsonl"
    rows = [{"id": f"r{i}", "prompt": f"What is {i}+{i}?", "chosen": [f"{2 * i}"],
             "rejected": [f"{2 * i + 1}", "no idea"], "subset": "math"} for i in range(10)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


async def test_run_completes_and_bad_operations_are_skipped_with_reasons(endpoint, tmp_path, caplog) -> None:
    fake, url = endpoint
    env = load_rewardbench2(rewardbench_file(tmp_path), val_fraction=0.3)
    backend = OpenAIBackend(url, "fake-model", timeout=TIMEOUT, retries=2, backoff=0.01, max_concurrency=2)
    opt = Optimizer(env, Models(backend, backend, backend),
                    OptimizerConfig(iterations=4, batch_size=4, signal_traces=2, max_ops=3))
    caplog.set_level("INFO", logger="latentwire.rcl")
    async with backend:
        best = await opt.run()
    assert len(opt.history) == 4
    reasons = "\n".join(opt.rejections)
    assert "reflection: not JSON" in reasons
    assert "operation: no entry 'e-0042'" in reasons
    assert "operation: UPDATE needs content" in reasons
    assert "operation: an operation must be a JSON object, not str" in reasons
    assert "rejected DELETE e-0042: no entry 'e-0042'" in caplog.text  # logged as it happens
    assert any(e.content.startswith("Prefer precise") for e in opt.book.entries.values())
    assert best.version >= 0
    assert backend.usage.retries >= 2  # the slow answer and the 500 were retried
    assert backend.usage.failures == 0
    assert backend.usage.prompt_tokens == 100 * backend.usage.calls  # from the answer's usage field
    assert fake.max_in_flight <= 2  # the concurrency limit


async def test_a_dead_endpoint_fails_per_call_with_a_clear_error(endpoint) -> None:
    _, url = endpoint
    backend = OpenAIBackend(url.replace(url.rsplit(":", 1)[1].split("/")[0], "9"), "m", timeout=0.2,
                            retries=1, backoff=0.01)
    async with backend:
        with pytest.raises(BackendError, match=r"connection failed.*after 2 attempts"):
            await backend.complete([{"role": "user", "content": "hi"}])
    assert backend.usage.failures == 1 and backend.usage.retries == 1


async def test_transformers_backend_drives_the_loop(tmp_path) -> None:
    """A tiny randomly initialised Llama with the tinyworld tokenizer: real generate(), any answer."""
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    from latentwire.agents.rcl.backends import TransformersBackend
    from latentwire.tinyworld.tokenizer import EOS_ID, PAD_ID, VOCAB_SIZE, TinyTokenizer

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=4096, eos_token_id=EOS_ID,
                                         pad_token_id=PAD_ID))
    backend = TransformersBackend("tiny-llama", model_obj=model, tokenizer=TinyTokenizer(), max_new_tokens=8,
                                  device="cpu")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = await backend.complete(messages)
    assert isinstance(text, str)
    assert backend.usage.calls == 1 and 1 <= backend.usage.completion_tokens <= 8
    env = load_rewardbench2(rewardbench_file(tmp_path))
    cfg = OptimizerConfig(iterations=1, batch_size=2, val_size=2)
    opt = Optimizer(env, Models(backend, backend, backend), cfg)
    await opt.run()  # gibberish from an untrained model: every step is skipped with a reason, none crashes
    assert len(opt.history) == 1 and opt.rejections
    assert all(r.startswith(("reflection:", "operation:")) for r in opt.rejections)
