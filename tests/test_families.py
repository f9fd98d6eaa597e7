"""Family adapters on tinyworld models: every family is its real transformers class at tiny size.

Each model is built once per module (``models`` fixture); the whole file runs in seconds on CPU.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForImageTextToText,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from latentwire.agents.families import (  # noqa: E402
    ADAPTERS,
    FamilyAdapter,
    ImageSlotMismatch,
    UnsupportedFamily,
    adapter_for,
    register,
    supported_model_types,
)
from latentwire.agents.families.qwen import QwenAdapter  # noqa: E402
from latentwire.errors import ConfigError  # noqa: E402
from latentwire.tinyworld import tokenizer as tw  # noqa: E402
from latentwire.tinyworld.models import FAMILIES, build_model, tiny_config  # noqa: E402
from latentwire.tinyworld.processor import TinyProcessor  # noqa: E402

CLASSES = {
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "gemma3": "Gemma3ForConditionalGeneration",
    "llava": "LlavaForConditionalGeneration",
    "smolvlm": "SmolVLMForConditionalGeneration",
}
QWEN = [f for f in FAMILIES if f.startswith("qwen")]
TOKENIZER = tw.TinyTokenizer()


@pytest.fixture(scope="module")
def models() -> dict:
    """Every tinyworld family, built once (seed 0)."""
    return {family: build_model(family, seed=0) for family in FAMILIES}


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


def logits(model, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(**kwargs).logits


def prompt_ids(adapter, text: str = "what did the sender see?", n_slots: int | None = None) -> torch.Tensor:
    return adapter.build_prompt(TOKENIZER, text, n_slots, system="You are the judger.").tensor()


# ---- construction ---------------------------------------------------------------------------


def test_each_family_is_its_real_transformers_class(models, family):
    model = models[family]
    adapter = adapter_for(model)
    assert type(model).__name__ == CLASSES[family]
    assert adapter.family == family and adapter.hidden_size(model) == adapter.hidden_size() == 64
    assert model.config.get_text_config().vocab_size == tw.VOCAB_SIZE
    assert adapter.image_token_id == tw.IMAGE_ID
    # The language model is the decoder that owns the input embeddings (SmolVLM: model.model.text_model).
    lm = adapter.language_model(model)
    assert lm.get_input_embeddings() is model.get_input_embeddings()
    assert not any(p.numel() == 0 for p in model.parameters())


def test_build_model_is_deterministic_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = build_model("llava", seed=1), build_model("llava", seed=1), build_model("llava", seed=2)
    assert torch.rand(1) == expected
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_tiny_config_overrides_merge_into_nested_configs():
    cfg = tiny_config("gemma3", text_config={"num_hidden_layers": 3})
    assert cfg.text_config.num_hidden_layers == 3 and len(cfg.text_config.layer_types) == 3
    assert cfg.text_config.hidden_size == 64  # the rest of the tiny text config is kept
    with pytest.raises(ConfigError, match="qwen2_vl"):
        tiny_config("bert")


# ---- the visual port ----------------------------------------------------------------------


def test_zero_gate_and_blank_image_read_exactly_as_the_blank_image(models, family):
    model, adapter = models[family], adapter_for(models[family])
    ids = prompt_ids(adapter)
    n = int(adapter.image_mask(ids).sum())
    # The reference is the model's own pixel path: blank pixels through the vision tower.
    reference = logits(model, input_ids=ids, **adapter.blank_pixel_forward_inputs(model, ids))
    d = adapter.hidden_size(model)
    vectors = torch.randn(1, n, d)
    assert torch.equal(logits(model, **adapter.inject(model, ids)), reference)
    assert torch.equal(logits(model, **adapter.inject(model, ids, vectors, gate=0.0)), reference)
    assert torch.equal(logits(model, **adapter.inject(model, ids, torch.zeros(1, n, d))), reference)
    blank = adapter.blank_image_embeddings(model, n)
    assert blank.shape == (n, d)
    replaced = logits(model, **adapter.inject(model, ids, blank.unsqueeze(0), mode="replace"))
    if family == "qwen3_vl":
        # Replace mode has no blank image underneath, so Qwen3's deepstack features are absent.
        assert replaced.shape == reference.shape
    else:
        assert torch.equal(replaced, reference)


def test_injected_vectors_change_the_output_only_after_the_image(models, family):
    model, adapter = models[family], adapter_for(models[family])
    ids = prompt_ids(adapter)
    mask = adapter.image_mask(ids)
    n, first = int(mask.sum()), int(mask[0].nonzero()[0])
    gen = torch.Generator().manual_seed(0)
    scale = adapter.embedding_scale(model).image or 1.0
    v1, v2 = (torch.randn(1, n, adapter.hidden_size(model), generator=gen) * scale for _ in range(2))
    blank = logits(model, **adapter.inject(model, ids))
    out1 = logits(model, **adapter.inject(model, ids, v1))
    out2 = logits(model, **adapter.inject(model, ids, v2))
    assert (out1 - blank)[:, first:].abs().max() > 1e-3
    assert (out1 - out2)[:, -1].abs().max() > 1e-4
    # Causal: the text before the first image slot cannot see the injected vectors.
    torch.testing.assert_close(out1[:, :first], blank[:, :first], rtol=0, atol=1e-6)


def test_gradients_reach_the_injected_vectors_and_the_gate(models, family):
    model, adapter = models[family], adapter_for(models[family])
    ids = prompt_ids(adapter)
    n = int(adapter.image_mask(ids).sum())
    vectors = torch.randn(1, n, adapter.hidden_size(model), requires_grad=True)
    gate = torch.tensor(0.1, requires_grad=True)
    model(**adapter.inject(model, ids, vectors, gate=gate)).logits[:, -1].logsumexp(-1).sum().backward()
    assert vectors.grad is not None and vectors.grad.abs().sum() > 0
    assert gate.grad is not None and gate.grad != 0


def test_batched_injection_with_a_gate_per_row(models, family):
    model, adapter = models[family], adapter_for(models[family])
    ids = torch.cat([prompt_ids(adapter, "secret one"), prompt_ids(adapter, "secret two")])  # (2, T)
    n = int(adapter.image_mask(ids[:1]).sum())
    vectors = torch.randn(2, n, adapter.hidden_size(model))
    gate = torch.tensor([0.0, 1.0]).view(2, 1, 1)
    out = logits(model, **adapter.inject(model, ids, vectors, gate=gate))
    blank = logits(model, input_ids=ids, **adapter.blank_pixel_forward_inputs(model, ids))
    torch.testing.assert_close(out[0], blank[0], rtol=0, atol=1e-5)
    assert (out[1] - blank[1]).abs().max() > 1e-3
    # (N, D) form, as transformers takes image features: the same vectors, flattened in order.
    flat = logits(model, **adapter.inject(model, ids, (gate * vectors).reshape(-1, vectors.shape[-1])))
    torch.testing.assert_close(flat, out, rtol=0, atol=1e-5)


def test_save_and_load_round_trip_gives_identical_outputs(models, family, tmp_path):
    model, adapter = models[family], adapter_for(models[family])
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    ids = prompt_ids(adapter)
    vectors = torch.randn(1, int(adapter.image_mask(ids).sum()), adapter.hidden_size(model))
    loaded_adapter = adapter_for(loaded)
    assert torch.equal(logits(loaded, **loaded_adapter.inject(loaded, ids, vectors, gate=0.5)),
                       logits(model, **adapter.inject(model, ids, vectors, gate=0.5)))
    pixels = loaded_adapter.blank_pixel_forward_inputs(loaded, ids)
    assert torch.equal(logits(loaded, input_ids=ids, **pixels),
                       logits(model, input_ids=ids, **adapter.blank_pixel_forward_inputs(model, ids)))


def test_cached_latent_step_continues_at_the_right_position(models, family):
    """Prefill with `inject`, then feed one more embedding with the KV cache at
    `position_ids_after`: the same logits as the whole sequence in one forward (Qwen's M-RoPE
    deltas included)."""
    model, adapter = models[family], adapter_for(models[family])
    ids = prompt_ids(adapter)
    step_id = torch.tensor([[ord("x")]])
    vectors = torch.randn(1, int(adapter.image_mask(ids).sum()), adapter.hidden_size(model))
    full = logits(model, **adapter.inject(model, torch.cat([ids, step_id], 1), vectors))
    prefill = adapter.inject(model, ids, vectors)
    with torch.no_grad():
        cache = model(**prefill, use_cache=True).past_key_values
        step = {"inputs_embeds": model.get_input_embeddings()(step_id), "cache": cache,
                "attention_mask": torch.ones(1, ids.shape[1] + 1, dtype=torch.long)}
        positions = adapter.position_ids_after(prefill, ids.shape[1], 1)
        if positions is not None:
            step["position_ids"] = positions
        out = model(**step).logits
    torch.testing.assert_close(out[:, -1], full[:, -1], rtol=1e-4, atol=1e-5)


def test_realign_maps_hidden_states_to_the_embedding_scale(models, family):
    model, adapter = models[family], adapter_for(models[family])
    ids = prompt_ids(adapter)
    with torch.no_grad():
        hidden = model(**adapter.inject(model, ids), output_hidden_states=True).hidden_states[-1]  # (1, T, D)
    aligned = adapter.realign(model, hidden[:, -1])  # (1, D)
    assert aligned.shape == (1, adapter.hidden_size(model)) and torch.isfinite(aligned).all()
    scale = adapter.embedding_scale(model)
    torch.testing.assert_close(aligned.norm(dim=-1), torch.tensor([scale.text]), rtol=1e-4, atol=1e-6)
    assert scale.image > 0
    # A realigned step is a usable input embedding.
    with torch.no_grad():
        assert torch.isfinite(model(inputs_embeds=aligned.unsqueeze(1)).logits).all()


# ---- bad input ----------------------------------------------------------------------------


def test_unknown_family_is_refused_with_the_supported_list():
    with pytest.raises(UnsupportedFamily) as info:
        adapter_for(AutoConfig.for_model("bert"))
    assert isinstance(info.value, ConfigError)
    message = str(info.value)
    assert "'bert'" in message
    for model_type in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "gemma3", "llava", "smolvlm", "idefics3"):
        assert model_type in message
    assert set(supported_model_types()) == set(ADAPTERS)


def test_idefics3_uses_the_smolvlm_adapter():
    from latentwire.tinyworld.models import _TINY

    config = AutoConfig.for_model("idefics3", **_TINY["smolvlm"])  # same config fields as SmolVLM
    adapter = adapter_for(config)
    assert adapter.family == "smolvlm"
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config).eval()
    assert type(model).__name__ == "Idefics3ForConditionalGeneration"
    ids = prompt_ids(adapter)
    zero = adapter.inject(model, ids, torch.randn(1, 4, 64), gate=0.0)
    assert torch.equal(logits(model, **zero),
                       logits(model, input_ids=ids, **adapter.blank_pixel_forward_inputs(model, ids)))


def test_a_prompt_without_room_for_the_vectors_is_refused_quoting_both_numbers(models, family):
    model, adapter = models[family], adapter_for(models[family])
    ids = prompt_ids(adapter)
    n = int(adapter.image_mask(ids).sum())
    d = adapter.hidden_size(model)
    with pytest.raises(ImageSlotMismatch, match=f"tokens: {n}, features: {n + 1}") as info:
        adapter.inject(model, ids, torch.randn(n + 1, d))
    assert (info.value.slots, info.value.features) == (n, n + 1)
    text_only = torch.tensor([TOKENIZER.encode("no image here")])
    with pytest.raises(ImageSlotMismatch, match=f"tokens: 0, features: {n}"):
        adapter.inject(model, text_only, torch.randn(1, n, d))
    with pytest.raises(ConfigError, match=f"width {d + 1}.*hidden size is {d}"):
        adapter.inject(model, ids, torch.randn(1, n, d + 1))


def test_fixed_size_images_refuse_a_slot_count_they_cannot_hold(models, family):
    adapter = adapter_for(models[family])
    per_image = adapter.slots_per_image()
    if per_image is None:  # Qwen: any count makes a grid
        assert adapter.build_prompt(TOKENIZER, "hi", 6).image_slots == [6]
        return
    assert adapter.build_prompt(TOKENIZER, "hi", 2 * per_image).image_slots == [per_image, per_image]
    match = f"cannot lay out {per_image + 1} image slots.*multiple of {per_image}"
    with pytest.raises(ImageSlotMismatch, match=match):
        adapter.build_prompt(TOKENIZER, "hi", per_image + 1)


# ---- Qwen multimodal rotary positions ------------------------------------------------------


def test_gemma3_prompt_masks_match_the_models_own_on_a_left_padded_batch(models):
    model, adapter = models["gemma3"], adapter_for(models["gemma3"])
    short, long = prompt_ids(adapter, "hi"), prompt_ids(adapter, "a much longer question about the image")
    ids = torch.cat([torch.cat([torch.zeros(1, long.shape[1] - short.shape[1], dtype=torch.long), short], 1), long])
    attention = (torch.arange(ids.shape[1]) >= long.shape[1] - short.shape[1]).long().unsqueeze(0)
    attention = torch.cat([attention, torch.ones_like(attention)])  # (2, T): row 0 left-padded
    vectors = torch.randn(2, int(adapter.image_mask(ids[:1]).sum()), adapter.hidden_size(model))
    text_config = model.config.get_text_config()
    window = text_config.sliding_window
    try:
        text_config.sliding_window = ids.shape[1]  # the prompt fits: the adapter builds the masks
        inputs = adapter.inject(model, ids, vectors, attention_mask=attention)
        assert isinstance(inputs.kwargs["attention_mask"], dict)
        own = {**inputs.kwargs, "attention_mask": attention}  # 2D: the model builds its masks itself
        valid = attention.bool()
        torch.testing.assert_close(logits(model, **inputs.kwargs)[valid], logits(model, **own)[valid],
                                   rtol=0, atol=1e-6)
        text_config.sliding_window = ids.shape[1] - 1  # past the window the sliding mask differs
        assert adapter.inject(model, ids, vectors, attention_mask=attention).kwargs["attention_mask"] is attention
    finally:
        text_config.sliding_window = window


@pytest.mark.parametrize("family", QWEN)
def test_qwen_positions_match_the_pixel_path_and_are_needed(models, family):
    model, adapter = models[family], adapter_for(models[family])
    assert isinstance(adapter, QwenAdapter)
    n = 6  # a 2x3 merged grid
    ids = prompt_ids(adapter, n_slots=n)
    mask = adapter.image_mask(ids)[0]
    inputs = adapter.inject(model, ids)
    positions = inputs.position_ids  # (3, 1, T)
    # The same positions the model computes itself from ids + token types + grid (pixel path).
    pixel = adapter.blank_pixel_forward_inputs(model, ids)
    expected, deltas = model.model.get_rope_index(ids, mm_token_type_ids=pixel["mm_token_type_ids"],
                                                  image_grid_thw=pixel["image_grid_thw"])
    assert torch.equal(positions, expected) and torch.equal(inputs.rope_deltas, deltas)
    assert pixel["image_grid_thw"].tolist() == [[1, 4, 6]]
    # Image tokens: one temporal index, rows 0..1 and columns 0..2 offset by the image's start.
    start = int(mask.nonzero()[0])
    t, h, w = positions[:, 0, mask]
    assert set(t.tolist()) == {start}
    assert (h - start).tolist() == [0, 0, 0, 1, 1, 1] and (w - start).tolist() == [0, 1, 2, 0, 1, 2]
    # Text after the image resumes at start + max(grid) and is the same on all three axes.
    after = positions[:, 0, start + n:]
    assert torch.equal(after[0], after[1]) and torch.equal(after[0], after[2])
    assert int(after[0, 0]) == start + 3
    assert int(inputs.rope_deltas) == int(positions.max()) + 1 - ids.shape[1]
    # With inputs_embeds and no position ids (and no cached deltas) the model falls back to 1-D
    # positions and reads the prompt differently: the adapter's positions are needed.
    with_positions = logits(model, **inputs)
    model.model.rope_deltas = None
    without = logits(model, **{k: v for k, v in inputs.items() if k != "position_ids"})
    assert (with_positions - without).abs().max() > 1e-4


# ---- tokenizer and processor ---------------------------------------------------------------


def test_tokenizer_round_trip_and_aliases():
    text = "héllo <|user|>wörld<image>"
    ids = TOKENIZER.encode(text, add_special_tokens=False)
    assert ids[-1] == tw.IMAGE_ID and tw.USER_ID in ids
    assert TOKENIZER.decode(ids) == text
    assert TOKENIZER.decode(ids, skip_special_tokens=True) == "héllo wörld"
    names = ["<|vision_start|>", "<start_of_image>", "<fake_token_around_image>"]
    assert TOKENIZER.convert_tokens_to_ids(names) == [tw.IMAGE_START_ID] * 3
    assert max(TOKENIZER.encode("\U0001f600" * 3)) < tw.VOCAB_SIZE
    batch = TOKENIZER(["a", "abc"], return_tensors="pt")
    assert batch["input_ids"].shape == (2, 4)
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_processor_places_images_like_build_prompt(models, family):
    model, adapter = models[family], adapter_for(models[family])
    processor = TinyProcessor(model.config)
    text = "<bos><|user|><image>hello<|end|><|assistant|>"
    batch = processor([text, text], add_special_tokens=False, return_tensors="pt")
    expected = adapter.build_prompt(TOKENIZER, "hello", processor.image_slots).input_ids
    assert batch["input_ids"][0].tolist() == expected
    if family == "gemma3":
        assert torch.equal(batch["token_type_ids"], adapter.image_mask(batch["input_ids"]).long())
    if family in QWEN:
        assert "mm_token_type_ids" in batch
    # The processor's output drives the real pixel path, as a real processor's would.
    out = logits(model, **batch, **adapter.blank_pixel_inputs([processor.image_slots] * 2, dtype=model.dtype))
    injected = logits(model, **adapter.inject(model, batch["input_ids"]))
    torch.testing.assert_close(out, injected, rtol=0, atol=1e-5)


def hf_tokenizer() -> tuple:
    """``(tokenizer, id of each special name)``: a real `PreTrainedTokenizerFast` (byte-level BPE,
    no merges) with a ChatML template and the real processors' image token names, built in memory
    (nothing can be downloaded here)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    names = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>",
             "<start_of_image>", "<image_soft_token>", "<end_of_image>", "<fake_token_around_image>",
             "<global-img>", "<image>"]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, additional_special_tokens=names)
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                               "{{ m['content'] }}<|im_end|>\n{% endfor %}"
                               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return tokenizer, {name: tokenizer.convert_tokens_to_ids(name) for name in names}


# The image block each real processor writes for one image of n slots (from their sources).
REAL_BLOCKS = {
    "qwen2_vl": lambda n: "<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>",
    "gemma3": lambda n: "\n\n<start_of_image>" + "<image_soft_token>" * n + "<end_of_image>\n\n",
    "llava": lambda n: "<image>" * n,
    "smolvlm": lambda n: ("<fake_token_around_image><global-img>" + "<image>" * n
                          + "<fake_token_around_image>"),
}


@pytest.mark.parametrize("family", list(REAL_BLOCKS))
def test_build_prompt_with_a_hugging_face_tokenizer_matches_the_real_processor_layout(family):
    tokenizer, ids = hf_tokenizer()
    overrides = {
        "qwen2_vl": {"image_token_id": ids["<|image_pad|>"], "vision_start_token_id": ids["<|vision_start|>"],
                     "vision_end_token_id": ids["<|vision_end|>"]},
        "gemma3": {"image_token_id": ids["<image_soft_token>"], "boi_token_index": ids["<start_of_image>"],
                   "eoi_token_index": ids["<end_of_image>"]},
        "llava": {"image_token_id": ids["<image>"]},
        "smolvlm": {"image_token_id": ids["<image>"]},
    }[family]
    adapter = adapter_for(tiny_config(family, **overrides))
    n = adapter.default_slots()
    prompt = adapter.build_prompt(tokenizer, "hello", n, system="be brief")
    expected = ("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\n" + REAL_BLOCKS[family](n)
                + "hello<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.decode(prompt.input_ids) == expected
    assert int(adapter.image_mask(prompt.tensor()).sum()) == n


# ---- a new family: one facts class, one registry line -----------------------------------------


class ToyConfig(LlavaConfig):
    """A made-up ``model_type`` on LLaVA's architecture (the tiny tinyworld size)."""

    model_type = "toyvlm"


class ToyAdapter(FamilyAdapter):
    """The facts of the made-up family: 16 slots per image, each image wrapped in begin/end tokens,
    the tower read at the config's feature layer. Nothing else: the mechanics are shared."""

    family = "toyvlm"
    model_types = ("toyvlm",)
    image_feature_config = ("vision_feature_layer", "vision_feature_select_strategy")

    def slots_per_image(self) -> int:
        vc = self.vision_config
        return (int(vc.image_size) // int(vc.patch_size)) ** 2

    def image_block(self, tokenizer, n_slots):
        begin, end = tokenizer.convert_tokens_to_ids(["<start_of_image>", "<end_of_image>"])
        return [begin, *[self.image_token_id] * n_slots, end]


@pytest.fixture
def toy_model(monkeypatch):
    """A tiny ``toyvlm`` model, its family registered for this test only."""
    from latentwire.agents import families

    monkeypatch.setattr(families, "ADAPTERS", dict(families.ADAPTERS))  # forgotten after the test
    families.register(ToyAdapter)  # the registry line
    settings = {k: v for k, v in tiny_config("llava").to_dict().items() if k != "model_type"}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return LlavaForConditionalGeneration(ToyConfig(**settings)).eval()


async def test_a_new_family_is_one_facts_class_and_one_registry_line(toy_model):
    from latentwire.agents.bundle import ModelBundle
    from latentwire.agents.pipeline import Episode, PipelineConfig, default_codec, run_pipeline

    model, adapter = toy_model, adapter_for(toy_model)
    assert isinstance(adapter, ToyAdapter) and "toyvlm" in supported_model_types()
    with pytest.raises(ConfigError, match=r"'toyvlm' \(ToyAdapter\)"):
        register(type("Other", (ToyAdapter,), {}))
    # The layout the facts describe ...
    prompt = adapter.build_prompt(TOKENIZER, "hi", system="be brief")
    start = prompt.input_ids.index(tw.IMAGE_START_ID)
    assert prompt.input_ids[start:start + 18] == [tw.IMAGE_START_ID, *[tw.IMAGE_ID] * 16, tw.IMAGE_END_ID]
    # ... merged by the shared code exactly as the model's own pixel path reads a blank image.
    ids = prompt.tensor()
    reference = logits(model, input_ids=ids, **adapter.blank_pixel_forward_inputs(model, ids))
    vectors = torch.randn(1, 16, 64)
    assert torch.equal(logits(model, **adapter.inject(model, ids, vectors, gate=0.0)), reference)
    # Listening batched equals one by one; the family speaks latents on a pipeline.
    bundle = ModelBundle(model, TOKENIZER, default_codec(model))
    texts = ["a", "a much longer question"]
    assert bundle.answer(texts, max_new_tokens=3) == [bundle.answer([t], max_new_tokens=3)[0] for t in texts]
    config = PipelineConfig(agents=[("toy", "toyvlm", "planner"), ("judger", "gemma3", "judger")],
                            latent_steps=2, max_new_tokens=3)
    result = await run_pipeline(config, Episode({"toy": "secret: 42"}, question="what was the secret?"),
                                models={"toyvlm": bundle, "gemma3": (build_model("gemma3"), TOKENIZER)})
    [message] = result.episodes[0].messages
    assert (message.kind, message.family) == ("latent", "toyvlm")
    assert isinstance(result.answers[0], str)
