"""Speaking and listening in latents, for every family, and across families over the bus."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import latentwire  # noqa: E402
from latentwire.agents.codec import CodecConfig, UniversalVisualCodec  # noqa: E402
from latentwire.agents.families import adapter_for  # noqa: E402
from latentwire.agents.latent_io import listen, speak, think  # noqa: E402
from latentwire.tinyworld.models import FAMILIES, build_model  # noqa: E402
from latentwire.tinyworld.tokenizer import EOS_ID, PAD_ID, TinyTokenizer  # noqa: E402

from .conftest import HubEnv  # noqa: E402

TOK = TinyTokenizer()


class Family:
    """A tiny model of one family with its adapter and an (untrained) codec."""

    def __init__(self, family: str, seed: int = 0) -> None:
        self.model = build_model(family, seed=seed)
        self.adapter = adapter_for(self.model)
        self.slots = self.adapter.default_slots()
        torch.manual_seed(seed)
        self.codec = UniversalVisualCodec(CodecConfig(
            family=family, hidden_size=self.adapter.hidden_size(self.model), image_slots=self.slots))

    def prompt(self, text: str):
        return self.adapter.build_prompt(TOK, text, self.slots)


@pytest.fixture(scope="module", params=FAMILIES)
def fam(request: pytest.FixtureRequest) -> Family:
    return Family(request.param)


def open_gate(codec: UniversalVisualCodec, value: float = 2.0) -> None:
    with torch.no_grad():
        codec.decoder.gate.fill_(value)  # as if trained: the decoded embeddings now count


def test_cached_greedy_answer_matches_a_full_recompute(fam: Family) -> None:
    """The KV-cache loop (with Qwen's rope deltas) predicts what a full forward predicts."""
    prompt = fam.prompt("recite: k3y")
    [answer] = listen(fam.model, fam.adapter, None, [prompt], max_new_tokens=6)
    ids = torch.tensor([prompt.input_ids + answer[:-1]])  # (1, T + n - 1)
    with torch.no_grad():
        logits = fam.model(**fam.adapter.inject(fam.model, ids)).logits  # (1, T + n - 1, V)
    predicted = logits[0, len(prompt.input_ids) - 1:].argmax(-1).tolist()
    assert predicted == answer


def test_batched_prompts_of_different_lengths_match_one_by_one(fam: Family) -> None:
    prompts = [fam.prompt("a"), fam.prompt("a much longer question")]
    batched = listen(fam.model, fam.adapter, None, prompts, max_new_tokens=4, pad_id=PAD_ID)
    single = [listen(fam.model, fam.adapter, None, [p], max_new_tokens=4)[0] for p in prompts]
    assert batched == single


def test_speak_gives_hub_latents_and_thinking_is_deterministic(fam: Family) -> None:
    prompts = [fam.prompt("secret: 7"), fam.prompt("secret: 9")]
    speech = speak(fam.model, fam.adapter, fam.codec, prompts, steps=3, pad_id=PAD_ID)
    assert speech.steps.shape == (2, 3, fam.adapter.hidden_size(fam.model))
    cfg = fam.codec.config
    assert [(lat.shape, lat.space, lat.family) for lat in speech.latents] == [
        ((cfg.num_tokens, cfg.width), "hub", fam.adapter.family)] * 2
    assert not torch.equal(speech.latents[0].torch(), speech.latents[1].torch())
    again = speak(fam.model, fam.adapter, fam.codec, prompts, steps=3, pad_id=PAD_ID)
    assert torch.equal(again.steps, speech.steps)


def test_latents_reach_the_answer_only_through_an_open_gate(fam: Family) -> None:
    sender = Family("gemma3" if fam.adapter.family != "gemma3" else "llava", seed=1)
    speech = speak(sender.model, sender.adapter, sender.codec, [sender.prompt("secret: 42")], steps=2)
    question = fam.prompt("what was the secret?")
    receiver = UniversalVisualCodec(fam.codec.config)
    receiver.load_state_dict(fam.codec.state_dict())
    with torch.no_grad():
        blank = fam.model(**fam.adapter.inject(fam.model, question.tensor())).logits
        closed = fam.model(**_received(fam, receiver, question, speech.latents)).logits
        open_gate(receiver)
        opened = fam.model(**_received(fam, receiver, question, speech.latents)).logits
    assert torch.equal(closed, blank)  # an untrained codec reads as a blank image
    assert not torch.allclose(opened, blank)  # an open gate lets the latent change the output


def _received(fam: Family, codec: UniversalVisualCodec, prompt, latents):
    decoded = codec.decode(latents)
    return fam.adapter.inject(fam.model, prompt.tensor(), decoded.embeddings, gate=decoded.gate)


def test_think_rejects_zero_steps(fam: Family) -> None:
    with pytest.raises(ValueError, match="steps must be >= 1"):
        think(fam.model, fam.adapter, fam.adapter.inject(fam.model, fam.prompt("x").tensor()), 0)


async def test_a_gemma_latent_travels_to_a_qwen_agent_that_answers(env: HubEnv) -> None:
    sender, receiver = Family("gemma3"), Family("qwen2_5_vl")
    open_gate(receiver.codec)
    speech = speak(sender.model, sender.adapter, sender.codec, [sender.prompt("secret: 42")], steps=4)
    async with env.connect("gemma") as gemma, env.connect("qwen") as qwen:
        sub = await qwen.subscribe("thoughts/#")
        await gemma.publish("thoughts/gemma", latent=speech.latents[0])
        msg = await sub.receive(timeout=10)
    got = msg.latent
    assert (got.space, got.family, got.shape) == ("hub", "gemma3", speech.latents[0].shape)
    assert torch.equal(got.torch(), speech.latents[0].torch())  # bit-exact over the wire
    question = receiver.prompt("what was the secret?")
    answer = listen(receiver.model, receiver.adapter, receiver.codec, [question], received=[[got]],
                    max_new_tokens=8, eos_id=EOS_ID)[0]
    local = listen(receiver.model, receiver.adapter, receiver.codec, [question],
                   received=[[speech.latents[0]]], max_new_tokens=8, eos_id=EOS_ID)[0]
    assert answer == local and len(answer) > 0  # the wire changed nothing; the receiver answered
    assert isinstance(TOK.decode(answer), str)


def test_a_family_space_latent_is_refused_by_another_family() -> None:
    sender, receiver = Family("gemma3"), Family("llava")
    steps = torch.randn(1, 3, sender.adapter.hidden_size(sender.model))
    private = sender.codec.encode(steps[0], space=sender.codec.config.space)  # not mapped to the shared space
    with pytest.raises(latentwire.LatentwireError, match="gemma3"):
        listen(receiver.model, receiver.adapter, receiver.codec, [receiver.prompt("q")],
               received=[[private]])
