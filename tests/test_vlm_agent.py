"""VLM agents on the bus: one pipeline config, latent and text mode, sequential and hierarchical.

Models are untrained tinyworld models: these tests check what travels where and that the
answer comes back, not accuracy.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

torch = pytest.importorskip("torch")

import latentwire  # noqa: E402
from latentwire.agents.bundle import ModelBundle  # noqa: E402
from latentwire.agents.pipeline import (  # noqa: E402
    Episode,
    PipelineConfig,
    PipelineError,
    build_agents,
    default_codec,
    run_pipeline,
)
from latentwire.agents.vlm_agent import AgentConfigError, Role, VLMAgent  # noqa: E402
from latentwire.tinyworld.models import build_model  # noqa: E402
from latentwire.tinyworld.tokenizer import TinyTokenizer  # noqa: E402

pytestmark = pytest.mark.timeout(60)

TOK = TinyTokenizer()
SEQUENTIAL = [("planner", "gemma3", "planner"), ("critic", "llava", "critic"),
              ("judger", "qwen2_5_vl", "judger")]
HIERARCHICAL = [("left", "gemma3", "planner"), ("right", "smolvlm", "planner"),
                ("judger", "qwen2_5_vl", "judger")]
EPISODES = [Episode({"planner": "secret: 42"}, question="what was the secret?", answer="42"),
            Episode({"planner": "secret: 7", "critic": "it is odd"}, question="what was the secret?", id="b")]
HALVES = [Episode({"left": "first half: 4"}, question="what is the number?", answer="42"),
          Episode({"left": "first half: 7", "right": "second half: 1"}, question="and now?", id="b")]


@pytest.fixture(scope="module")
def models() -> dict[str, tuple]:
    """One tiny model per family, shared by every test here (agents of a family share it)."""
    return {family: (build_model(family, seed=i), TOK)
            for i, family in enumerate(["gemma3", "llava", "smolvlm", "qwen2_5_vl"])}


@pytest.fixture
def slow_forward(models: dict[str, tuple]) -> Iterator[dict[str, float]]:
    """Make every model forward sleep (blocking, like a big model) for ``delay["s"]`` seconds;
    count how many forwards of one model overlap at most (``delay["overlap"]``)."""
    state = {"s": 0.0, "overlap": 0}
    active: dict[int, int] = {}
    guard = threading.Lock()

    def before(module, args, kwargs):
        with guard:
            active[id(module)] = active.get(id(module), 0) + 1
            state["overlap"] = max(state["overlap"], active[id(module)])
        time.sleep(state["s"])

    def after(module, args, kwargs, output):
        with guard:
            active[id(module)] -= 1

    handles = [h for model, _ in models.values() for h in (
        model.register_forward_pre_hook(before, with_kwargs=True),
        model.register_forward_hook(after, with_kwargs=True))]
    try:
        yield state
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("agents, episodes, senders", [
    (SEQUENTIAL, EPISODES, {"critic": "llava"}),
    (HIERARCHICAL, HALVES, {"left": "gemma3", "right": "smolvlm"}),
], ids=["sequential", "hierarchical"])
async def test_one_config_runs_in_latent_and_text_mode(models, agents, episodes, senders) -> None:
    topology = "sequential" if agents is SEQUENTIAL else "hierarchical"
    latent_config = PipelineConfig(agents=agents, mode="latent", topology=topology,
                                   latent_steps=3, max_new_tokens=6)
    text_config = latent_config.with_mode("text")
    assert (text_config.mode, text_config.agents) == ("text", latent_config.agents)

    latent = await run_pipeline(latent_config, episodes, models=models)
    text = await run_pipeline(text_config, episodes, models=models)

    for result in (latent, text):
        assert [e.id for e in result.episodes] == ["0", "b"]
        assert all(isinstance(a, str) for a in result.answers) and len(result.answers) == 2
        assert result.accuracy in (0.0, 1.0)  # graded on the one episode with an expected answer
        assert all(e.seconds > 0 for e in result.episodes)
    for episode in latent.episodes:
        heard = episode.received["judger"]
        assert [(r.sender, r.kind) for r in heard] == [(s, "latent") for s in senders]
        assert [(r.latent.space, r.latent.family) for r in heard] == [("hub", f) for f in senders.values()]
        on_wire = [m for m in episode.messages if m.sender in senders]
        assert {(m.kind, m.space, m.family) for m in on_wire} == {("latent", "hub", f) for f in senders.values()}
        assert all(m.kind == "latent" for m in episode.messages)
        assert episode.message_bytes == sum(m.nbytes for m in episode.messages) > 0
    for episode in text.episodes:
        heard = episode.received["judger"]
        assert [(r.sender, r.kind) for r in heard] == [(s, "text") for s in senders]
        assert all(isinstance(r.text, str) for r in heard)
        assert all(m.kind == "text" and m.space is None for m in episode.messages)
    assert latent.summary()["mode"] == "latent" and text.summary()["mode"] == "text"


async def test_model_calls_leave_the_event_loop_free(models, slow_forward) -> None:
    slow_forward["s"] = 0.3  # each forward blocks its thread for 0.3 s
    config = PipelineConfig(agents=SEQUENTIAL, latent_steps=2, max_new_tokens=2)
    gaps: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    try:
        result = await run_pipeline(config, EPISODES[0], models=models)
    finally:
        stop.set()
        await beat
    longest_call = max(result.episodes[0].model_seconds.values())
    assert longest_call >= 0.6  # run on the loop, a call this long would have stalled it
    assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.2f} s"


async def test_agents_sharing_a_model_take_turns(models, slow_forward) -> None:
    slow_forward["s"] = 0.02
    config = PipelineConfig(agents=[("a", "gemma3", "planner"), ("b", "gemma3", "critic"),
                                    ("judger", "gemma3", "judger")],
                            topology="hierarchical", latent_steps=3, max_new_tokens=2)
    agents = build_agents(config, models)
    assert len({id(a.model) for a in agents}) == 1  # one model object behind all three
    result = await run_pipeline(config, Episode({"a": "x", "b": "y"}), models=models)
    assert isinstance(result.answers[0], str)
    assert slow_forward["overlap"] == 1  # never two forwards of one model at once


async def test_a_request_makes_an_agent_speak_and_memory_is_bounded(models) -> None:
    model, tok = models["gemma3"]
    codec = default_codec(model)
    speaker = VLMAgent("speaker", model, tok, role="planner", mode="latent", codec=codec, memory_size=3)
    writer = VLMAgent("writer", model, tok, role="refiner", mode="text", codec=codec, message_tokens=4)
    qwen, _ = models["qwen2_5_vl"]
    judge = VLMAgent("judge", qwen, tok, role="judger", codec=default_codec(qwen), final=True,
                     max_new_tokens=3)
    async with latentwire.Runtime().add(speaker, writer, judge):
        async with latentwire.connect(agent="user") as bus:
            reply = await bus.request("speaker", "secret: 42", timeout=30)
            assert (reply.latent.space, reply.latent.family) == ("hub", "gemma3")
            assert reply.latent.shape == (codec.config.num_tokens, codec.config.width)
            await bus.send("writer", latent=reply.latent)  # remembered; read with the next request
            answer = await bus.request("writer", "improve this", timeout=30)
            assert isinstance(answer.text, str) and len(answer.text.encode()) <= 4 * 4
            await bus.send("judge", latent=reply.latent)
            verdict = await bus.request("judge", "what was the secret?", timeout=30)
            assert isinstance(verdict.text, str) and judge.utterances[-1].kind == "answer"
            assert "what was the secret?" in tok.decode(judge.prompt(question="what was the secret?").input_ids)
            for i in range(5):
                await bus.send("speaker", f"note {i}")
            await bus.request("speaker", "and now?", timeout=30)  # in order: the notes are in
    assert [r.text for r in speaker.memory] == ["note 2", "note 3", "note 4"]
    assert [(r.sender, r.kind) for r in writer.memory] == [("user", "latent")]
    assert [u.kind for u in speaker.utterances] == ["latent", "latent"]


async def test_the_pipeline_runs_over_grpc(models) -> None:
    from latentwire.hub.server import serve

    server = await serve(port=0)
    try:
        result = await run_pipeline(PipelineConfig(agents=SEQUENTIAL, latent_steps=2, max_new_tokens=4),
                                    EPISODES[0], models=models, url=server.url)
    finally:
        await server.stop(grace=0.5)
    assert server.url.startswith("grpc://")
    (episode,) = result.episodes
    assert isinstance(episode.answer, str)
    assert [(r.sender, r.latent.space, r.latent.family) for r in episode.received["judger"]] == [
        ("critic", "hub", "llava")]


async def test_a_failing_agent_fails_the_episode_with_its_name(models) -> None:
    judger_model, _ = models["qwen2_5_vl"]

    def broken(module, args):
        raise RuntimeError("out of memory")

    handle = judger_model.register_forward_pre_hook(broken)
    try:
        with pytest.raises(PipelineError, match="agent 'judger' failed: RuntimeError: out of memory") as info:
            await run_pipeline(PipelineConfig(agents=SEQUENTIAL, latent_steps=1, max_new_tokens=1),
                               EPISODES[0], models=models)
    finally:
        handle.remove()
    assert (info.value.agent, info.value.episode) == ("judger", "0")


@pytest.mark.parametrize("change, field, allowed", [
    ({"agents": [("a", "gemma3", "poet"), ("j", "llava", "judger")]}, "PipelineConfig.agents[0].role",
     "planner, critic, refiner, judger, solver"),
    ({"mode": "telepathy"}, "PipelineConfig.mode", "latent, text"),
    ({"topology": "ring"}, "PipelineConfig.topology", "sequential, hierarchical"),
    ({"agents": []}, "PipelineConfig.agents", "a non-empty list of (name, family, role)"),
    ({"agents": [("j", "llava", "judger")], "topology": "hierarchical"}, "PipelineConfig.agents",
     "at least two agents"),
    ({"agents": [("a", "gpt2", "planner")]}, "PipelineConfig.agents[0].family", "gemma3"),
    ({"agents": [("a", "llava", "planner"), ("a", "llava", "judger")]}, "PipelineConfig.agents[1].name",
     "unique"),
    ({"agents": [("a", "llava")]}, "PipelineConfig.agents[0]", "(name, family, role)"),
    ({"latent_steps": 0}, "PipelineConfig.latent_steps", "a positive integer"),
    ({"episode_timeout": -1}, "PipelineConfig.episode_timeout", "a positive number"),
])
def test_bad_config_names_the_field_and_the_allowed_values(change, field, allowed) -> None:
    settings = {"agents": SEQUENTIAL, **change}
    with pytest.raises(AgentConfigError) as info:
        PipelineConfig(**settings)
    assert isinstance(info.value, latentwire.ConfigError)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}=") and allowed in str(info.value)


async def test_bad_agent_settings_and_inputs_are_refused(models) -> None:
    model, tok = models["llava"]
    with pytest.raises(AgentConfigError, match=r"mode='loud' is invalid; allowed: latent, text"):
        VLMAgent("x", model, tok, mode="loud")
    with pytest.raises(AgentConfigError, match=r"role='poet' is invalid; allowed: planner, critic"):
        VLMAgent("x", model, tok, role="poet", mode="text")
    with pytest.raises(AgentConfigError, match=r"Role.template='{plan}' is invalid"):
        Role("poet", "You write poems.", "{plan}")
    with pytest.raises(AgentConfigError, match=r"codec=None .* speaks latents"):
        VLMAgent("x", model, tok, mode="latent")
    config = PipelineConfig(agents=SEQUENTIAL)
    with pytest.raises(AgentConfigError, match=r"episodes\[0\].observations=\['nobody'\]"):
        await run_pipeline(config, Episode({"nobody": "hi"}), models=models)
    with pytest.raises(AgentConfigError, match=r"a key for agent 'planner'"):
        build_agents(config, {"llava": models["llava"]})
    with pytest.raises(AgentConfigError, match=r"models\['planner'\]='llava' .* a gemma3 model"):
        build_agents(config, {"planner": ModelBundle(*models["llava"]), **models})


def test_an_agent_thinks_as_many_latent_steps_as_its_codec_was_trained_with(models) -> None:
    from dataclasses import replace

    from latentwire.agents.codec import UniversalVisualCodec

    model, tok = models["llava"]
    codec = default_codec(model)
    assert VLMAgent("x", model, tok, codec=codec).latent_steps == 4  # not recorded: the default
    trained = UniversalVisualCodec(replace(codec.config, latent_steps=1))
    assert VLMAgent("x", model, tok, codec=trained).latent_steps == 1
    assert VLMAgent("x", model, tok, codec=trained, latent_steps=3).latent_steps == 3  # explicit wins
    with pytest.raises(AgentConfigError, match="latent_steps=0"):
        VLMAgent("x", model, tok, codec=trained, latent_steps=0)
    with pytest.raises(AgentConfigError, match="latent_steps"):
        PipelineConfig(agents=SEQUENTIAL, latent_steps=0)
