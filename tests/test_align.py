"""The single-family codec alignment job (`latentwire.training.align`): a short real run."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from latentwire.agents.bundle import ModelBundle  # noqa: E402
from latentwire.agents.codec import UniversalVisualCodec  # noqa: E402
from latentwire.training.anchors import tinyworld_anchors  # noqa: E402
from latentwire.training.align import AlignConfig, align  # noqa: E402
from latentwire.tinyworld.checkpoints import load_pretrained  # noqa: E402


@pytest.mark.timeout(300)  # a real (short) training run: minutes on a busy 2-core machine
def test_short_alignment_run_trains_the_codec_only(tmp_path):
    model, _ = load_pretrained("gemma3")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = AlignConfig(model="gemma3", latent_steps=2, steps=20, batch_size=8, lr=3e-3, warmup_steps=2, log_every=1,
                         eval_every=0, eval_n=8, n_anchors=32, out_dir=str(tmp_path / "codec"), progress=False)
    folder = align(config)

    # metrics: one line per step with the loss parts and the gate, then the eval line
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, 21))
    assert {"kl", "hidden", "scale", "gate", "skipped_steps"} <= set(train[0])
    first = sum(r["loss"] for r in train[:5]) / 5
    last = sum(r["loss"] for r in train[-5:]) / 5
    assert last < first, (first, last)
    assert train[-1]["gate"] != 0.0
    meta = json.loads((folder / "align.json").read_text())
    assert meta["step"] == 20 and meta["config"]["model"] == "gemma3" and meta["skipped_steps"] == 0
    assert set(meta["eval"]) == {"latent", "text", "none", "shuffled"}
    assert not list(folder.glob("checkpoint-*")) and not (folder / "latest").exists()  # finished: codec only
    assert meta["eval"]["text"]["exact"] >= 0.5  # the pre-trained model reads text messages

    # the codec loads back with identical outputs
    codec = UniversalVisualCodec.from_pretrained(folder)
    again = UniversalVisualCodec.from_pretrained(folder)
    assert codec.config.latent_steps == config.latent_steps  # agents default to the m it learned
    steps = torch.randn(2, config.latent_steps, codec.config.hidden_size)  # (B, m, H)
    with torch.no_grad():
        a, b = codec(steps), again(steps)
    assert torch.equal(a.embeddings, b.embeddings) and torch.equal(a.gate, b.gate)
    assert float(a.gate) != 0.0
    # it records the longest reasoning its anchors gave (prompt tokens + latent steps) and refuses more
    sender = tinyworld_anchors("secret", 1, length=8, seed=0)[0].sender
    prompt = ModelBundle(model, load_pretrained("gemma3")[1], codec).prompts([sender])[0]
    assert codec.config.max_steps == len(prompt.input_ids) + config.latent_steps

    # the model itself is frozen: a fresh load matches what we loaded before training ...
    fresh, _ = load_pretrained("gemma3")
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_alignment_leaves_a_given_model_untouched(tmp_path, monkeypatch):
    # ... and the very model object the job trains through is not changed either.
    import latentwire.training.pairs as pairs

    model, tokenizer = load_pretrained("gemma3")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setattr(pairs, "load_model", lambda spec: (model, tokenizer))
    align(AlignConfig(model="gemma3", latent_steps=2, steps=3, batch_size=4, eval_every=0, eval_n=4, n_anchors=16,
                      out_dir=str(tmp_path / "c"), progress=False))
    assert all(not p.requires_grad for p in model.parameters())
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def _tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.timeout(300)
def test_a_killed_run_resumes_to_the_same_codec(tmp_path, monkeypatch):
    import latentwire.training.loop as loop_module

    base = dict(model="gemma3", latent_steps=2, steps=8, batch_size=4, warmup_steps=2, eval_every=0, eval_n=4,
                n_anchors=16, checkpoint_every=3, log_every=1, progress=False)
    whole = align(AlignConfig(**base, out_dir=str(tmp_path / "whole")))

    # Kill the second run right after its step-6 checkpoint (a crash between steps).
    real_save = loop_module.save_checkpoint

    def save_then_die(out, step, *args):
        real_save(out, step, *args)
        if step == 6:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(loop_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        align(AlignConfig(**base, out_dir=str(tmp_path / "cut")))
    assert (tmp_path / "cut" / "latest").read_text().strip() == "checkpoint-6"
    monkeypatch.setattr(loop_module, "save_checkpoint", real_save)
    resumed = align(AlignConfig(**base, out_dir=str(tmp_path / "cut"), resume=True))

    a, b = _tensors(whole), _tensors(resumed)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
    steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()
             if "loss" in line]
    assert steps == list(range(1, 7)) + [7, 8]  # the history goes on where the checkpoint left it


def test_non_finite_steps_are_skipped_and_counted(tmp_path, monkeypatch):
    import latentwire.training.align as align_module

    real_loss = align_module._loss
    calls = {"n": 0}

    def sometimes_nan(*args):
        loss, parts = real_loss(*args)
        calls["n"] += 1
        return (loss * float("nan"), parts) if calls["n"] == 2 else (loss, parts)

    monkeypatch.setattr(align_module, "_loss", sometimes_nan)
    folder = align(AlignConfig(model="gemma3", latent_steps=2, steps=4, batch_size=4, eval_every=0, eval_n=4, n_anchors=16,
                               log_every=1, out_dir=str(tmp_path / "c"), progress=False))
    meta = json.loads((folder / "align.json").read_text())
    assert meta["skipped_steps"] == 1 and meta["step"] == 4
    assert all(torch.isfinite(t).all() for t in _tensors(folder).values())


def test_bad_input_is_refused_before_training(tmp_path):
    from latentwire.agents.errors import AgentConfigError, CodecCheckpointError
    from latentwire.training.anchors import AnchorError

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(AnchorError, match="empty"):
        align(AlignConfig(anchors=str(empty), out_dir=str(tmp_path / "x"), progress=False))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"sender": "a", "teacher": "b", "student": "c", "message": "d"}\n{not json\n')
    with pytest.raises(AnchorError, match=r"broken.jsonl:2: not JSON"):
        align(AlignConfig(anchors=str(broken), out_dir=str(tmp_path / "x"), progress=False))

    # A text-only model has no image slots to read a latent through.
    from transformers import LlamaConfig, LlamaForCausalLM

    text_only = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(text_only)
    with pytest.raises(AgentConfigError, match="no visual pathway"):
        align(AlignConfig(model=str(text_only), out_dir=str(tmp_path / "x"), progress=False))

    # Resuming into a folder whose checkpoint is a codec of another architecture.
    other = tmp_path / "other"
    align(AlignConfig(model="gemma3", steps=4, batch_size=2, eval_every=0, eval_n=2, n_anchors=8, width=32,
                      max_seconds=0, progress=False, out_dir=str(other)))  # stopped at once: its checkpoint stays
    with pytest.raises(CodecCheckpointError, match="another architecture"):
        align(AlignConfig(model="gemma3", steps=4, batch_size=2, eval_every=0, eval_n=2, n_anchors=8,
                          progress=False, out_dir=str(other), resume=True))


@pytest.mark.timeout(300)
def test_anchored_scheme_trains_a_new_family_into_a_frozen_codecs_space(tmp_path):
    from latentwire.errors import ConfigError

    small = dict(latent_steps=2, batch_size=4, eval_every=0, eval_n=4, n_anchors=16, progress=False)
    reference = align(AlignConfig(model="smolvlm", steps=2, out_dir=str(tmp_path / "smolvlm"), **small))
    frozen = _tensors(reference)
    folder = align(AlignConfig(model="gemma3", steps=3, anchor_to=str(reference), log_every=1,
                               out_dir=str(tmp_path / "gemma3"), **small))
    meta = json.loads((folder / "align.json").read_text())
    assert meta["scheme"] == "anchored to smolvlm" and meta["step"] == 3
    assert os.path.isabs(meta["config"]["anchor_to"])  # readable from any working directory
    assert meta["anchor_sha256"] == hashlib.sha256((reference / "model.safetensors").read_bytes()).hexdigest()
    assert {"latent", "text", "none", "shuffled", "to_new"} <= set(meta["eval"])  # both directions
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if "loss" in line]
    assert {"kl", "enc_kl", "enc_picture"} <= set(lines[0])  # the encoder's loss goes through the reference
    assert all(torch.equal(frozen[k], v) for k, v in _tensors(reference).items())  # the reference is untouched
    assert UniversalVisualCodec.from_pretrained(folder).config.family == "gemma3"

    with pytest.raises(ConfigError, match="itself"):
        align(AlignConfig(model="smolvlm", steps=1, anchor_to=str(reference), out_dir=str(tmp_path / "x"), **small))
    with pytest.raises(ConfigError, match="one shape"):
        align(AlignConfig(model="gemma3", steps=1, width=32, anchor_to=str(reference), out_dir=str(tmp_path / "x"),
                          **small))
    with pytest.raises(ConfigError, match="latent_noise"):
        AlignConfig(model="gemma3", latent_noise=0.3, anchor_to=str(reference))

    # Decoder only: the reference encoder -> new decoder direction alone; the encoder stays put.
    only = align(AlignConfig(model="llava", steps=2, anchor_to=str(reference), decoder_only=True, log_every=1,
                             out_dir=str(tmp_path / "llava"), **{**small, "eval_every": 1}))  # an eval mid-run
    meta = json.loads((only / "align.json").read_text())
    assert meta["scheme"] == "anchored to smolvlm (decoder only)" and set(meta["eval"]) == {"to_new"}
    lines = [json.loads(line) for line in (only / "metrics.jsonl").read_text().splitlines() if "loss" in line]
    assert "kl" in lines[0] and "enc_kl" not in lines[0]
    with pytest.raises(ConfigError, match="decoder_only .* needs anchor_to"):
        AlignConfig(model="gemma3", decoder_only=True)


@pytest.mark.timeout(300)
def test_encoder_only_tune_trains_a_mapped_encoder_through_the_reference(tmp_path):
    """The tune stage of `train ship`: a family's codec with fitted maps (the shipped llava) starts the
    run; only its encoder and its map into the shared space move, through gemma3's frozen decoder."""
    from latentwire.errors import ConfigError
    from latentwire.tinyworld.space import load_space

    space = load_space()
    init, reference = space.folder / "llava", space.folder / "gemma3"
    before = _tensors(init)
    folder = align(AlignConfig(model="llava", init=str(init), anchor_to=str(reference), encoder_only=True,
                               picture_weight=0.0, steps=2, batch_size=4, eval_every=0, eval_n=4,
                               n_anchors=16,
                               log_every=1, progress=False, out_dir=str(tmp_path / "tuned")))
    meta = json.loads((folder / "align.json").read_text())
    assert meta["scheme"] == "anchored to gemma3 (encoder only)" and meta["step"] == 2
    assert meta["init_sha256"] == hashlib.sha256((init / "model.safetensors").read_bytes()).hexdigest()
    assert set(meta["eval"]) == {"latent", "text", "none", "shuffled"}  # llava -> gemma3
    after = _tensors(folder)
    moved = {k for k in before if not torch.equal(before[k].float(), after[k].float())}
    assert moved and all(k.startswith(("encoder.", "shared.to_shared.")) for k in moved), moved
    assert any(k.startswith("shared.to_shared.residual.") for k in moved)  # the MLP of the map trains too
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()
             if "loss" in line]
    assert lines[0]["picture"] == 0.0  # label-free: KL and hidden states to gemma3 reading the text

    with pytest.raises(ConfigError, match="encoder_only .* needs anchor_to .* and init"):
        AlignConfig(model="llava", encoder_only=True, anchor_to=str(reference))
    with pytest.raises(ConfigError, match="at most one"):
        AlignConfig(model="llava", encoder_only=True, decoder_only=True, anchor_to=str(reference),
                    init=str(init))
    with pytest.raises(ConfigError, match="not a codec folder"):
        AlignConfig(model="llava", init=str(tmp_path))
    with pytest.raises(ConfigError, match="codec of llava"):
        align(AlignConfig(model="smolvlm", init=str(init), steps=1, eval_every=0, eval_n=4, n_anchors=8,
                          progress=False, out_dir=str(tmp_path / "x")))


def test_job_outputs_are_created_with_the_users_umask(tmp_path: Path) -> None:
    """Artefacts are written through private scratch files and folders; once in place they must
    be as readable as anything else the user writes (not 0600/0700)."""
    import os

    from latentwire.training._jobs import replaced_folder
    from latentwire.training.anchors import tinyworld_anchors, write_anchors

    mask = os.umask(0o022)
    try:
        anchors = write_anchors(tinyworld_anchors("secret", 2), tmp_path / "a.jsonl")
        with replaced_folder(tmp_path / "out") as scratch:
            (scratch / "x").write_text("x")
    finally:
        os.umask(mask)
    assert anchors.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
