"""`ModelBundle`: one model with its tokenizer, adapter, codec, latent steps, pad/eos ids and slots,
used the same way by `VLMAgent`, the pipeline and the alignment jobs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from latentwire.agents.bundle import DEFAULT_LATENT_STEPS, ModelBundle, special_ids  # noqa: E402
from latentwire.agents.errors import AgentConfigError, ImageSlotMismatch  # noqa: E402
from latentwire.agents.latent_io import listen  # noqa: E402
from latentwire.agents.pipeline import PipelineConfig, build_agents, default_codec  # noqa: E402
from latentwire.agents.vlm_agent import VLMAgent  # noqa: E402
from latentwire.tinyworld.models import build_model  # noqa: E402
from latentwire.tinyworld.processor import TinyProcessor  # noqa: E402
from latentwire.tinyworld.tokenizer import EOS_ID, PAD_ID, TinyTokenizer  # noqa: E402

TOK = TinyTokenizer()


class NoPadTokenizer(TinyTokenizer):
    """A tokenizer without a pad token, as many Hugging Face ones are."""

    pad_token_id = None
    pad_token = None


@pytest.fixture(scope="module")
def llava():
    return build_model("llava", seed=0)


def test_a_bundle_derives_adapter_ids_slots_and_steps(llava) -> None:
    bundle = ModelBundle(llava, TOK)
    assert (bundle.family, bundle.pad_id, bundle.eos_id) == ("llava", PAD_ID, EOS_ID)
    assert bundle.n_slots == bundle.adapter.default_slots() == 16
    assert bundle.latent_steps == DEFAULT_LATENT_STEPS
    codec = default_codec(llava)
    assert ModelBundle(llava, TOK, codec, latent_steps=2).latent_steps == 2
    with pytest.raises(AgentConfigError, match=r"latent_steps=0 is invalid; allowed: a positive integer"):
        ModelBundle(llava, TOK, codec, latent_steps=0)
    gemma = build_model("gemma3", seed=0, text_config={"hidden_size": 32, "num_attention_heads": 2,
                                                       "num_key_value_heads": 1})
    with pytest.raises(AgentConfigError, match=r"a codec of hidden size 32, the gemma3 model's width"):
        ModelBundle(gemma, TOK, codec)


def test_one_pad_rule_pad_else_eos_read_through_a_processor() -> None:
    assert special_ids(TOK) == (PAD_ID, EOS_ID)
    assert special_ids(NoPadTokenizer()) == (EOS_ID, EOS_ID)  # eos, as transformers' generate pads
    processor = TinyProcessor(build_model("smolvlm").config, NoPadTokenizer())
    assert special_ids(processor) == (EOS_ID, EOS_ID)  # a processor's ids are its tokenizer's


def test_padding_with_eos_keeps_a_batch_equal_to_one_by_one_where_id_0_would_not() -> None:
    """Why pad-else-eos and not "pad or 0" (the rule VLMAgent had): padding is masked out of
    attention, but the image mask is computed from ids, so a pad id that is also the image
    placeholder makes padding count as image slots. Id 0 is whatever a vocabulary lists first;
    here it is the placeholder."""
    model = build_model("llava", seed=0, image_token_id=0)
    bundle = ModelBundle(model, NoPadTokenizer())
    assert bundle.pad_id == EOS_ID
    prompts = bundle.prompts(["a", "a much longer question"])
    batched = listen(model, bundle.adapter, None, prompts, max_new_tokens=3, pad_id=bundle.pad_id)
    single = [listen(model, bundle.adapter, None, [p], max_new_tokens=3)[0] for p in prompts]
    assert batched == single
    with pytest.raises(ImageSlotMismatch, match="cannot lay out"):
        listen(model, bundle.adapter, None, prompts, max_new_tokens=3, pad_id=0)


def test_an_agent_and_the_pipeline_take_a_bundle_or_its_parts(llava) -> None:
    codec = default_codec(llava)
    bundle = ModelBundle(llava, TOK, codec, latent_steps=2)
    agent = VLMAgent("x", bundle)
    assert agent.bundle is bundle and agent.codec is codec and agent.latent_steps == 2
    assert VLMAgent("x", bundle, latent_steps=3).latent_steps == 3  # explicit wins
    assert bundle.latent_steps == 2  # the caller's bundle is left as it was
    with pytest.raises(AgentConfigError, match=r"tokenizer='TinyTokenizer' is invalid; allowed: None when"):
        VLMAgent("x", bundle, TOK)
    with pytest.raises(AgentConfigError, match=r"tokenizer=None is invalid"):
        VLMAgent("x", llava, mode="text")
    config = PipelineConfig(agents=[("a", "llava", "planner"), ("b", "llava", "critic"),
                                    ("c", "llava", "refiner"), ("d", "llava", "judger")])
    bare = ModelBundle(llava, TOK)
    shapes = {"a": (llava, TOK), "b": (llava, TOK, codec), "c": bundle, "d": bare}
    a, b, c, d = build_agents(config, shapes)
    assert a.codec is not None and a.codec is not codec  # a fresh default codec ...
    assert d.codec is a.codec  # ... shared by the agents of one model
    assert bare.codec is None  # given to a copy: the caller's bundle is left as it was
    assert b.codec is codec and c.bundle is bundle
