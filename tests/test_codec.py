"""The Universal Visual Codec as a user sees it: shapes, the zero gate, masks, spaces, load/save."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from latentwire import Latent  # noqa: E402
from latentwire.agents.codec import CodecConfig, DecoderOutput, UniversalVisualCodec  # noqa: E402
from latentwire.agents.errors import (  # noqa: E402
    CheckpointError, CodecConfigError, CodecError, MessageTooLong, ShapeMismatch, SpaceMismatch)
from latentwire.errors import ConfigError, LatentwireError  # noqa: E402
from latentwire.training.shared_space import fit_maps  # noqa: E402

H, K, D, k = 48, 8, 32, 6


def make_codec(seed: int = 0, **overrides) -> UniversalVisualCodec:
    torch.manual_seed(seed)
    values = dict(family="gemma3", hidden_size=H, num_tokens=K, width=D, image_slots=k, num_heads=4)
    return UniversalVisualCodec(CodecConfig(**{**values, **overrides})).eval()


def open_gate(codec: UniversalVisualCodec) -> UniversalVisualCodec:
    """A codec whose gate is open and shared-space maps are not the identity, so load/save tests see them."""
    with torch.no_grad():
        codec.decoder.gate.fill_(0.7)
        codec.shared.to_shared.weight.add_(0.1 * torch.randn(K * D, K * D))
        codec.shared.from_shared.bias.add_(0.1)
    return codec


# ----------------------------------------------------------------------------- shapes and the gate

def test_shapes_and_latent_fields() -> None:
    codec = make_codec()
    one = codec.encode(torch.randn(5, H))
    assert one.shape == (K, D) and one.space == "hub" and one.family == "gemma3"
    batch = codec.encode(torch.randn(3, 5, H))
    assert batch.shape == (3, K, D)
    assert codec.encode(torch.randn(5, H), space="gemma3").space == "gemma3"
    out = codec.decode(batch)
    assert isinstance(out, DecoderOutput)
    assert out.embeddings.shape == (3, k, H) and out.gate.shape == ()
    assert codec(torch.randn(2, 7, H)).embeddings.shape == (2, k, H)


def test_default_sizes_match_the_measured_codec() -> None:
    # FACTS: the codec that carried an 8-token secret had ~169k parameters at K=8, D=64 (encoder
    # and decoder); the shared-space maps add two (K*D)^2 affine maps, fitted in closed form, not trained.
    codec = UniversalVisualCodec(CodecConfig(family="gemma3", hidden_size=128))
    trained = sum(p.numel() for name, p in codec.named_parameters() if not name.startswith("shared."))
    assert 150_000 < trained < 190_000
    assert codec.num_parameters() - trained == 2 * (8 * 64) * (8 * 64 + 1)


def test_untrained_gate_is_exactly_zero() -> None:
    codec = make_codec()
    out = codec.decode(codec.encode(torch.randn(4, 5, H)))
    assert out.gate.item() == 0.0
    assert out.embeddings.abs().sum() > 0  # the embeddings are there, the gate shuts them out
    assert torch.equal(out.gated, torch.zeros(4, k, H))


def test_a_message_gate_is_one_value_per_message_biased_closed_and_saved(tmp_path) -> None:
    codec = make_codec(gate="message")
    out = codec.decode(codec.encode(torch.randn(4, 5, H)))
    assert out.gate.shape == (4, 1, 1) and out.gated.shape == (4, k, H)
    assert out.gate.max().item() < 0.01  # untrained: nearly a blank image
    codec.decoder.set_gate(2.0)
    with torch.no_grad():
        codec.decoder.gate_mlp[0].weight.normal_()
    tokens = torch.randn(2, K, D)
    gates = codec.decode(tokens, space="gemma3").gate.detach().flatten()
    assert gates[0] != gates[1] and 0.5 < float(gates.mean()) < 1.0  # each message sets its own mix
    again = UniversalVisualCodec.from_pretrained(codec.save_pretrained(tmp_path / "c")).eval()
    assert again.config.gate == "message"
    assert torch.equal(again.decode(tokens, space="gemma3").gate, codec.decode(tokens, space="gemma3").gate)
    with pytest.raises(CodecConfigError, match=r"CodecConfig.gate='sigmoid'.*scalar, message"):
        make_codec(gate="sigmoid")


def test_reasoning_longer_than_the_codec_was_trained_on_is_refused_naming_both_lengths() -> None:
    codec = make_codec(max_steps=5)
    assert codec.encode(torch.randn(5, H)).shape == (K, D)
    with pytest.raises(MessageTooLong, match=r"6 vectors long .* more than the 5 this gemma3 codec was trained on"):
        codec.encode(torch.randn(6, H))
    # padding does not count: a batch padded to 7 whose rows hold at most 5 real steps is read
    mask = torch.tensor([[False, False, True, True, True, True, True], [True] * 4 + [False] * 3])
    assert codec.encode(torch.randn(2, 7, H), mask).shape == (2, K, D)
    with pytest.raises(MessageTooLong):
        codec.encode(torch.randn(2, 7, H), torch.ones(2, 7, dtype=torch.bool))
    assert make_codec().encode(torch.randn(500, H)).shape == (K, D)  # 0: not recorded, no limit
    with pytest.raises(CodecConfigError, match="max_steps"):
        make_codec(max_steps=-1)


def test_training_noise_perturbs_the_latent_reproducibly_and_scales_with_its_spread() -> None:
    codec = make_codec()
    steps = torch.randn(4, 5, H)
    clean = codec(steps).embeddings
    assert torch.equal(codec(steps, noise=0.0).embeddings, clean)
    draw = lambda noise, seed: codec(steps, noise=noise, generator=torch.Generator().manual_seed(seed)).embeddings  # noqa: E731
    assert torch.equal(draw(0.3, 1), draw(0.3, 1))  # the same generator state, the same noise
    assert not torch.equal(draw(0.3, 1), draw(0.3, 2))
    small, large = ((draw(n, 1) - clean).norm() for n in (0.05, 0.5))
    assert 0 < small < large
    # One latent has no spread over the batch to scale by: it passes untouched.
    torch.testing.assert_close(codec(steps[:1], noise=0.5).embeddings, clean[:1], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- padding mask

def test_padded_steps_do_not_change_the_encoding() -> None:
    codec = make_codec()
    a, b = torch.randn(3, H), torch.randn(5, H)
    padded = torch.full((2, 5, H), float("nan"))  # padding may hold anything, NaN included
    padded[0, :3], padded[1] = a, b
    mask = torch.tensor([[True] * 3 + [False] * 2, [True] * 5])
    tokens = codec.encode_tokens(padded, mask)
    assert torch.isfinite(tokens).all()
    torch.testing.assert_close(tokens[0], codec.encode_tokens(a)[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tokens[1], codec.encode_tokens(b)[0], rtol=1e-5, atol=1e-6)


def test_mask_errors() -> None:
    codec = make_codec()
    with pytest.raises(CodecError, match="no real step"):
        codec.encode_tokens(torch.randn(2, 4, H), torch.tensor([[True] * 4, [False] * 4]))
    with pytest.raises(ShapeMismatch, match=r"\(2, 3\).*\(2, 4\)"):
        codec.encode_tokens(torch.randn(2, 4, H), torch.ones(2, 3, dtype=torch.bool))


# ----------------------------------------------------------------------------- spaces and widths

def test_latent_from_another_space_is_refused_naming_both_spaces() -> None:
    codec = make_codec()
    foreign = Latent(np.zeros((K, D), np.float32), space="qwen2_5_vl", family="qwen2_5_vl")
    with pytest.raises(SpaceMismatch) as info:
        codec.decode([codec.encode(torch.randn(3, H)), foreign])
    message = str(info.value)
    assert "'qwen2_5_vl'" in message and "'hub'" in message and "'gemma3'" in message
    assert info.value.got == "qwen2_5_vl" and isinstance(info.value, LatentwireError)
    with pytest.raises(SpaceMismatch, match="None"):
        codec.decode(Latent(np.zeros((K, D), np.float32)))  # no space at all: never guessed
    with pytest.raises(SpaceMismatch):
        codec.decode(torch.zeros(1, K, D), space="llava")
    with pytest.raises(SpaceMismatch, match="cannot encode into codec space 'llava'.*'hub' or 'gemma3'"):
        codec.encode(torch.randn(3, H), space="llava")


def test_family_space_latent_skips_the_shared_space_maps() -> None:
    codec = open_gate(make_codec())
    steps = torch.randn(2, 4, H)
    own = codec.decode(codec.encode(steps, space="gemma3"))
    torch.testing.assert_close(own.embeddings, codec(steps).embeddings)


def test_width_mismatch_names_both_shapes() -> None:
    codec = make_codec()
    narrow = Latent(np.zeros((K, 16), np.float32), space="hub", family="llava")
    with pytest.raises(ShapeMismatch) as info:
        codec.decode(narrow)
    assert "(8, 16)" in str(info.value) and f"(K, {D})" in str(info.value) and "'llava'" in str(info.value)
    with pytest.raises(ShapeMismatch, match=rf"\(5, 12\).*\(m, {H}\)"):
        codec.encode(torch.randn(5, 12))


# ----------------------------------------------------------------------------- several latents

def test_several_latents_are_decoded_together() -> None:
    codec = open_gate(make_codec())
    first, second = codec.encode(torch.randn(2, 3, H)), codec.encode(torch.randn(2, 6, H))
    together = codec.decode([first, second])
    # Each latent is mapped from the shared space on its own, then all tokens are read together.
    concatenated = torch.cat([codec.shared.from_shared(first.torch()), codec.shared.from_shared(second.torch())],
                             dim=1)  # (2, 2K, D), family space
    torch.testing.assert_close(together.embeddings,
                               codec.decode(concatenated, space=codec.config.space).embeddings)
    assert not torch.allclose(together.embeddings, codec.decode(first).embeddings)
    # In the family's own space any number of tokens is read alongside; shared-space latents are
    # whole latents of the shared space's K tokens (the shared-space maps act on all K at once).
    short = Latent(torch.randn(2, 3, D), space=codec.config.space, family="gemma3")
    assert codec.decode([first, short]).embeddings.shape == (2, k, H)
    with pytest.raises(ShapeMismatch, match=r"\(2, 3, 32\).*shared space's K"):
        codec.decode([first, Latent(torch.randn(2, 3, D), space="hub", family="smolvlm")])
    with pytest.raises(ShapeMismatch, match="batch sizes"):
        codec.decode([first, codec.encode(torch.randn(3, 3, H))])
    with pytest.raises(CodecError, match="no latents"):
        codec.decode([])


def test_latent_received_off_the_wire_decodes_the_same() -> None:
    codec = open_gate(make_codec())
    latent = codec.encode(torch.randn(5, H))
    received = Latent.frombuffer(latent.tobytes(), latent.dtype, latent.shape,
                                 space=latent.space, family=latent.family)  # read-only numpy
    torch.testing.assert_close(codec.decode(received).embeddings, codec.decode(latent).embeddings)
    as_bf16 = Latent(latent.torch().to(torch.bfloat16), space="hub", family="gemma3")
    assert codec.decode(as_bf16).embeddings.dtype == torch.float32


# ----------------------------------------------------------------------------- shared-space maps

def test_fit_shared_maps_recovers_a_known_affine_map() -> None:
    codec = make_codec()
    torch.manual_seed(1)
    # A map that mixes across tokens (a reversed token order, then a rotation): what two codecs
    # trained apart need. Well conditioned, so the inverse is exact too.
    A = torch.linalg.qr(torch.randn(K * D, K * D)).Q * 1.5
    b = torch.randn(K * D)
    family = torch.randn(4 * K * D, K, D)
    reference = (family.flip(1).flatten(1) @ A + b).reshape(-1, K, D)
    fit = codec.fit_shared_maps(family, reference, ridge=1e-8)
    assert fit.num_samples == 4 * K * D and fit.to_shared_mse < 1e-8 and fit.from_shared_mse < 1e-8
    torch.testing.assert_close(codec.shared.to_shared(family), reference, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(codec.shared.from_shared(reference), family, atol=1e-4, rtol=1e-4)
    with pytest.raises(ShapeMismatch, match=r"\(1024, 8, 32\).*\(1024, 8, 16\)"):
        codec.fit_shared_maps(family, torch.randn(4 * K * D, K, 16))


@pytest.mark.timeout(300)  # two 1000-step fits: the default limit holds only on a quiet machine
def test_residual_shared_space_maps_learn_what_an_affine_map_cannot() -> None:
    k, d = 2, 16  # 32 values per latent: a residual MLP learns from 3000 anchors in a few hundred steps
    family = torch.randn(3000, k, d, generator=torch.Generator().manual_seed(3))
    reference = 0.5 * family ** 2  # no affine map fits it (from_shared has no inverse to find at all)

    def fitted():
        codec = make_codec(num_tokens=k, width=d, shared_hidden=128)
        torch.testing.assert_close(codec.shared.to_shared(family[:3]), family[:3])  # identity until fitted
        return codec, fit_maps(codec, family, reference, ridge=1e-6, residual_steps=1000)

    codec, fit = fitted()
    for direction in ("to_shared", "from_shared"):
        held = fit.heldout[direction]
        assert held["map"] <= held["affine"]  # early stopping never keeps a worse map
    assert fit.heldout["to_shared"]["map"] < 0.6 * fit.heldout["to_shared"]["affine"], fit.heldout
    again, _ = fitted()
    assert all(torch.equal(a, b) for a, b in zip(codec.state_dict().values(), again.state_dict().values()))
    assert make_codec(num_tokens=k, width=d).num_parameters() < codec.num_parameters()  # affine: no MLP


def test_residual_shared_space_maps_survive_save_and_load(tmp_path) -> None:
    codec = make_codec(shared_hidden=64)
    x = torch.randn(400, K, D)
    fit_maps(codec, x, torch.tanh(x) + 0.1 * torch.randn(400, K, D), residual_steps=50)
    loaded = UniversalVisualCodec.from_pretrained(codec.save_pretrained(tmp_path / "codec"))
    assert loaded.config.shared_hidden == 64
    torch.testing.assert_close(loaded.shared.to_shared(x[:4]), codec.shared.to_shared(x[:4]))
    torch.testing.assert_close(loaded.shared.from_shared(x[:4]), codec.shared.from_shared(x[:4]))


def test_shared_space_maps_start_as_the_identity() -> None:
    codec = make_codec()
    tokens = torch.randn(3, K, D)
    torch.testing.assert_close(codec.shared.to_shared(tokens), tokens)
    torch.testing.assert_close(codec.shared.from_shared(tokens), tokens)


# ----------------------------------------------------------------------------- config

@pytest.mark.parametrize("overrides, field", [
    (dict(hidden_size=0), "hidden_size"),
    (dict(num_tokens=-1), "num_tokens"),
    (dict(num_heads=5), "num_heads"),           # 32 is not divisible by 5
    (dict(stat_tokens=3), "stat_tokens"),
    (dict(shared_hidden=-1), "shared_hidden"),
    (dict(num_tokens=2, stat_tokens=2), "stat_tokens"),
    (dict(family=""), "family"),
    (dict(space="hub"), "space"),
    (dict(width=32.0), "width"),
])
def test_bad_config_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(CodecConfigError, match=rf"CodecConfig\.{field}=") as info:
        make_codec(**overrides)
    assert info.value.field == field and isinstance(info.value, ConfigError)


def test_space_defaults_to_the_family() -> None:
    assert CodecConfig(family="llava", hidden_size=8).space == "llava"


# ----------------------------------------------------------------------------- save / load

def test_save_load_round_trip_gives_identical_outputs(tmp_path) -> None:
    codec = open_gate(make_codec())
    codec.save_pretrained(tmp_path / "gemma3")
    assert sorted(p.name for p in (tmp_path / "gemma3").iterdir()) == ["config.json", "model.safetensors"]
    loaded = UniversalVisualCodec.from_pretrained(tmp_path / "gemma3").eval()
    assert loaded.config == codec.config
    steps = torch.randn(2, 5, H)
    assert torch.equal(loaded.encode(steps).torch(), codec.encode(steps).torch())
    out, again = codec.decode(codec.encode(steps)), loaded.decode(loaded.encode(steps))
    assert torch.equal(out.embeddings, again.embeddings) and torch.equal(out.gate, again.gate)
    # One folder per family under one root (a Hub repo holding several codecs).
    assert UniversalVisualCodec.from_pretrained(tmp_path, subfolder="gemma3").config == codec.config


def test_hub_repo_id_is_downloaded_with_only_the_codec_files(tmp_path, monkeypatch) -> None:
    # No network here: a stand-in for snapshot_download serves a saved repo with two families.
    import huggingface_hub

    repo = tmp_path / "repo"
    codec = open_gate(make_codec())
    codec.save_pretrained(repo / "gemma3")
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(repo)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = UniversalVisualCodec.from_pretrained("latentwire/codecs", subfolder="gemma3", revision="v1")
    assert loaded.config == codec.config
    assert calls == [("latentwire/codecs", dict(revision="v1", token=None, allow_patterns=[
        "gemma3/config.json", "gemma3/model.safetensors"]))]

    def offline(repo_id, **kwargs):
        raise OSError("no connection")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match="download failed: OSError: no connection"):
        UniversalVisualCodec.from_pretrained("latentwire/codecs")


def rewrite_weights(folder, edit) -> None:
    path = folder / "model.safetensors"
    tensors = safetensors_torch.load_file(path)
    edit(tensors)
    safetensors_torch.save_file(tensors, path)


@pytest.mark.parametrize("edit, expected", [
    (lambda t: t.pop("decoder.gate"), r"missing tensors: decoder\.gate"),
    (lambda t: t.__setitem__("decoder.extra", torch.zeros(2)), r"unexpected tensors: decoder\.extra"),
    (lambda t: t.__setitem__("shared.to_shared.weight", torch.zeros(K * D, K * D + 1)),
     r"wrong shapes: shared\.to_shared\.weight: checkpoint \(256, 257\) vs config \(256, 256\)"),
])
def test_checkpoint_that_does_not_fit_is_refused_naming_the_tensor(tmp_path, edit, expected) -> None:
    make_codec().save_pretrained(tmp_path)
    rewrite_weights(tmp_path, edit)
    with pytest.raises(CheckpointError, match=expected):
        UniversalVisualCodec.from_pretrained(tmp_path)


def test_a_refused_state_dict_loads_nothing() -> None:
    codec, other = make_codec(seed=0), make_codec(seed=1)
    before = {name: t.clone() for name, t in codec.state_dict().items()}
    tensors = dict(other.state_dict())
    tensors.pop("encoder.queries")
    with pytest.raises(CheckpointError, match="encoder.queries"):
        codec.load_checked(tensors)
    assert all(torch.equal(before[name], t) for name, t in codec.state_dict().items())


def test_corrupt_or_missing_files_are_clear_errors(tmp_path) -> None:
    make_codec().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt"):
        UniversalVisualCodec.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        UniversalVisualCodec.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        UniversalVisualCodec.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="not a Hugging Face Hub repo id"):
        UniversalVisualCodec.from_pretrained(tmp_path / "no" / "such" / "folder")
    with pytest.raises(CheckpointError, match="is a file"):
        UniversalVisualCodec.from_pretrained(tmp_path / "config.json")


def test_bad_config_json_is_a_checkpoint_error(tmp_path) -> None:
    make_codec().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "widht": 64}))
    with pytest.raises(CheckpointError, match="widht"):
        UniversalVisualCodec.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_heads": 5}))
    with pytest.raises(CheckpointError, match="num_heads"):
        UniversalVisualCodec.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3"}))
    with pytest.raises(CheckpointError, match="not a latentwire codec config"):
        UniversalVisualCodec.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------- it learns

def test_a_short_training_run_teaches_the_decoder_to_reproduce_its_input() -> None:
    # Reconstruction through the K-token bottleneck: the decoder's k gated embeddings must
    # reproduce a small fixed batch of the sender's k latent steps. The gate starts shut, so
    # this also shows that training opens it. (Over seeds 0-3, with 1 or 2 threads, the loss ends
    # below 0.2 % of its start after 300 steps; after 100 it was 47-63 %, too close to call.)
    codec = make_codec(hidden_size=16, image_slots=4).train()
    steps = torch.randn(8, 4, 16, generator=torch.Generator().manual_seed(10))
    optimizer = torch.optim.AdamW(codec.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(300):
        loss = torch.nn.functional.mse_loss(codec(steps).gated, steps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::30]
    assert codec.decoder.gate.item() != 0.0


def test_a_folder_saved_before_the_shared_space_rename_still_loads(tmp_path) -> None:
    # Older codecs said "hub" for the shared space: config key hub_hidden, tensors hub.to_hub.*.
    codec = make_codec(shared_hidden=32)
    folder = codec.save_pretrained(tmp_path / "old")
    config = json.loads((folder / "config.json").read_text())
    config["hub_hidden"] = config.pop("shared_hidden")
    (folder / "config.json").write_text(json.dumps(config))
    rewrite_weights(folder, lambda t: t.update({
        name.replace("shared.to_shared.", "hub.to_hub.").replace("shared.from_shared.", "hub.from_hub."): t.pop(name)
        for name in [n for n in t if n.startswith("shared.")]}))
    assert any(name.startswith("hub.to_hub.") for name in safetensors_torch.load_file(folder / "model.safetensors"))
    loaded = UniversalVisualCodec.from_pretrained(folder)
    assert loaded.config == codec.config
    assert all(torch.equal(a, b) for a, b in zip(codec.state_dict().values(), loaded.state_dict().values()))
