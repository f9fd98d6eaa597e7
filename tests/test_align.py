"""The single-family codec alignment job (`latentwire.training.align`): a short real run."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from latentwire.agents.codec import UniversalVisualCodec  # noqa: E402
from latentwire.training.align import AlignConfig, align  # noqa: E402
from latentwire.training.tinyworld.checkpoints import load_pretrained  # noqa: E402


def test_short_alignment_run_trains_the_codec_only(tmp_path):
    model, _ = load_pretrained("gemma3")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = AlignConfig(family="gemma3", steps=30, batch_size=8, lr=3e-3, warmup_steps=2, log_every=1,
                         eval_every=0, eval_n=8, out_dir=str(tmp_path / "codec"), progress=False)
    folder = align(config)

    # metrics: one line per step with the loss parts and the gate, then the eval line
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, 31))
    assert {"kl", "hidden", "scale", "gate"} <= set(train[0])
    first = sum(r["loss"] for r in train[:5]) / 5
    last = sum(r["loss"] for r in train[-5:]) / 5
    assert last < first, (first, last)
    assert train[-1]["gate"] != 0.0
    meta = json.loads((folder / "align.json").read_text())
    assert meta["step"] == 30 and meta["config"]["family"] == "gemma3"
    assert set(meta["eval"]) == {"latent", "text", "none"}
    assert meta["eval"]["text"]["exact"] >= 0.5  # the pre-trained model reads text messages

    # the codec loads back with identical outputs
    codec = UniversalVisualCodec.from_pretrained(folder)
    again = UniversalVisualCodec.from_pretrained(folder)
    steps = torch.randn(2, config.latent_steps, codec.config.hidden_size)
    with torch.no_grad():
        a, b = codec(steps), again(steps)
    assert torch.equal(a.embeddings, b.embeddings) and torch.equal(a.gate, b.gate)
    assert float(a.gate) != 0.0

    # the model itself is frozen: a fresh load matches what we loaded before training ...
    fresh, _ = load_pretrained("gemma3")
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_alignment_leaves_a_given_model_untouched(tmp_path, monkeypatch):
    # ... and the very model object the job trains through is not changed either.
    import latentwire.training.align as align_module

    model, tokenizer = load_pretrained("gemma3")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setattr(align_module, "_load_model", lambda config: (model, tokenizer))
    align(AlignConfig(family="gemma3", steps=3, batch_size=4, eval_every=0, eval_n=4,
                      out_dir=str(tmp_path / "c"), progress=False))
    assert all(not p.requires_grad for p in model.parameters())
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
