"""Anchor files and the incremental hub-map job (`latentwire train hub-maps`)."""

from __future__ import annotations

import hashlib
import json

import pytest

torch = pytest.importorskip("torch")

from latentwire.agents.codec import CodecConfig, UniversalVisualCodec  # noqa: E402
from latentwire.errors import ConfigError  # noqa: E402
from latentwire.training.anchors import (  # noqa: E402
    AnchorError, anchors_from_texts, read_anchors, tinyworld_anchors, write_anchors)
from latentwire.training.hub_maps import fit_hub_maps  # noqa: E402


def test_tinyworld_anchors_round_trip(tmp_path):
    anchors = tinyworld_anchors("secret", 5, seed=3)
    assert anchors[0].message in anchors[0].teacher and anchors[0].message not in anchors[0].student
    assert anchors[0].answer == anchors[0].message  # the secret task: recite the message
    path = write_anchors(anchors, tmp_path / "a.jsonl")
    assert read_anchors(path) == anchors
    with pytest.raises(AnchorError, match="senders"):
        tinyworld_anchors("merge", 2)


def test_anchors_from_local_text_and_jsonl_files(tmp_path):
    (tmp_path / "notes.txt").write_text("first note\n\nsecond note\nfirst note\n")
    (tmp_path / "more.jsonl").write_text('{"text": "third"}\n{"other": 1}\n')
    anchors = anchors_from_texts([tmp_path / "notes.txt"])
    assert [a.message for a in anchors] == ["first note", "second note"]  # blank and duplicate dropped
    assert anchors[0].teacher == "message: first note\nRepeat the message."
    with pytest.raises(AnchorError, match=r"more.jsonl:2: needs a string field 'text'"):
        anchors_from_texts([tmp_path / "more.jsonl"])
    with pytest.raises(AnchorError, match="no such file"):
        anchors_from_texts([tmp_path / "missing.txt"])
    with pytest.raises(AnchorError, match=r"\{message\}"):
        anchors_from_texts([tmp_path / "notes.txt"], teacher="no placeholder")
    (tmp_path / "bad.jsonl").write_text('{"sender": "s", "teacher": "t", "student": "u"}\n')
    with pytest.raises(AnchorError, match=r"bad.jsonl:1: missing or empty field\(s\) message"):
        read_anchors(tmp_path / "bad.jsonl")


def _codec_folder(root, family, seed):
    torch.manual_seed(seed)
    codec = UniversalVisualCodec(CodecConfig(family=family, hidden_size=128, image_slots=16, width=16,
                                             num_tokens=4))
    folder = root / family
    codec.save_pretrained(folder)
    (folder / "align.json").write_text(json.dumps({"config": {"model": family, "latent_steps": 2}}))
    return folder


def _digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_adding_a_family_leaves_every_existing_file_byte_identical(tmp_path):
    anchors = write_anchors(tinyworld_anchors("secret", 80), tmp_path / "anchors.jsonl")
    codecs = tmp_path / "codecs"
    gemma, smol, qwen = (_codec_folder(codecs, f, s) for f, s in
                         (("gemma3", 0), ("smolvlm", 1), ("qwen2_5_vl", 2)))
    hub = tmp_path / "hub"
    first = fit_hub_maps([gemma, smol], reference="gemma3", anchors=anchors, out=hub)
    assert [(r.family, r.status) for r in first] == [("gemma3", "reference"), ("smolvlm", "fitted")]
    fitted = UniversalVisualCodec.from_pretrained(hub / "smolvlm")
    assert not torch.equal(fitted.hub.to_hub.weight, torch.eye(64))  # real maps, not the identity
    before = _digests(hub)

    second = fit_hub_maps([gemma, smol, qwen], reference="gemma3", anchors=anchors, out=hub)
    assert [(r.family, r.status) for r in second] == [
        ("gemma3", "kept"), ("smolvlm", "kept"), ("qwen2_5_vl", "fitted")]
    after = _digests(hub)
    assert {k: v for k, v in after.items() if not k.startswith("qwen2_5_vl/")} == before
    assert "qwen2_5_vl/model.safetensors" in after

    # The maps send the family's latents of an anchor near the reference's latents of it.
    record = json.loads((hub / "qwen2_5_vl" / "hub_fit.json").read_text())
    assert record["reference"] == "gemma3" and record["to_hub_mse"] >= 0

    # Another ridge is another fit: that family is refitted, the reference kept.
    third = fit_hub_maps([gemma, smol], reference="gemma3", anchors=anchors, out=hub, ridge=1e-2)
    assert [(r.family, r.status) for r in third] == [("gemma3", "kept"), ("smolvlm", "fitted")]


def test_residual_hub_maps_are_fitted_recorded_and_kept(tmp_path):
    anchors = write_anchors(tinyworld_anchors("secret", 80), tmp_path / "anchors.jsonl")
    gemma, smol = (_codec_folder(tmp_path / "codecs", f, s) for f, s in (("gemma3", 0), ("smolvlm", 1)))
    hub = tmp_path / "hub"
    fit_hub_maps([gemma, smol], reference="gemma3", anchors=anchors, out=hub)
    affine = _digests(hub)
    first = fit_hub_maps([gemma, smol], reference="gemma3", anchors=anchors, out=hub, hidden=32, residual_steps=20)
    assert [(r.family, r.status) for r in first] == [("gemma3", "kept"), ("smolvlm", "fitted")]
    assert set(first[1].heldout) == {"to_hub", "from_hub"}
    record = json.loads((hub / "smolvlm" / "hub_fit.json").read_text())
    assert record["hub_hidden"] == 32 and record["heldout"]["to_hub"]["map"] <= record["heldout"]["to_hub"]["affine"]
    codec = UniversalVisualCodec.from_pretrained(hub / "smolvlm")
    assert codec.config.hub_hidden == 32 and codec.hub.to_hub.residual is not None
    with_mlp = _digests(hub)
    again = fit_hub_maps([gemma, smol], reference="gemma3", anchors=anchors, out=hub, hidden=32, residual_steps=20)
    assert [r.status for r in again] == ["kept", "kept"] and _digests(hub) == with_mlp
    # Back to affine maps: refitted to the very bytes of the first affine fit (deterministic).
    fit_hub_maps([gemma, smol], reference="gemma3", anchors=anchors, out=hub)
    assert _digests(hub) == affine


def test_hub_maps_refuse_bad_settings(tmp_path):
    anchors = write_anchors(tinyworld_anchors("secret", 4), tmp_path / "anchors.jsonl")
    gemma = _codec_folder(tmp_path / "c", "gemma3", 0)
    with pytest.raises(ConfigError, match="reference family 'llava' is not among"):
        fit_hub_maps([gemma], reference="llava", anchors=anchors, out=tmp_path / "hub")
    with pytest.raises(ConfigError, match="ridge must be > 0"):
        fit_hub_maps([gemma], reference="gemma3", anchors=anchors, out=tmp_path / "hub", ridge=0)
    with pytest.raises(ConfigError, match="hidden must be >= 0"):
        fit_hub_maps([gemma], reference="gemma3", anchors=anchors, out=tmp_path / "hub", hidden=-1)
    other = tmp_path / "d" / "smolvlm"
    UniversalVisualCodec(CodecConfig(family="smolvlm", hidden_size=128, image_slots=16, width=32,
                                     num_tokens=4)).save_pretrained(other)
    (other / "align.json").write_text(json.dumps({"config": {"model": "smolvlm"}}))
    with pytest.raises(ConfigError, match="the hub needs one shape"):
        fit_hub_maps([gemma, other], reference="gemma3", anchors=anchors, out=tmp_path / "hub")


def _anchored_folder(root, family, seed, reference_folder, scheme=None):
    folder = _codec_folder(root, family, seed)
    digest = hashlib.sha256((reference_folder / "model.safetensors").read_bytes()).hexdigest()
    (folder / "align.json").write_text(json.dumps({
        "config": {"model": family, "latent_steps": 2}, "scheme": scheme or f"anchored to {reference_folder.name}",
        "anchor_sha256": digest}))
    return folder


def test_a_family_can_read_the_hub_with_a_decoder_anchored_to_the_reference(tmp_path):
    anchors = write_anchors(tinyworld_anchors("secret", 80), tmp_path / "anchors.jsonl")
    gemma, smol = (_codec_folder(tmp_path / "codecs", f, s) for f, s in (("gemma3", 0), ("smolvlm", 1)))
    anchored = _anchored_folder(tmp_path / "anchored", "smolvlm", 5, gemma, "anchored to gemma3 (decoder only)")
    hub = tmp_path / "hub"
    result = fit_hub_maps([gemma, smol], reference="gemma3", anchors=anchors, out=hub,
                          decoders={"smolvlm": anchored})
    assert result[1].status == "fitted" and result[1].from_hub_mse is None
    codec = UniversalVisualCodec.from_pretrained(hub / "smolvlm")
    source, reader = (UniversalVisualCodec.from_pretrained(f) for f in (smol, anchored))
    assert all(torch.equal(v, reader.decoder.state_dict()[k]) for k, v in codec.decoder.state_dict().items())
    assert all(torch.equal(v, source.encoder.state_dict()[k]) for k, v in codec.encoder.state_dict().items())
    assert torch.equal(codec.hub.from_hub.weight, torch.eye(64))  # the decoder reads the hub space as is
    assert not torch.equal(codec.hub.to_hub.weight, torch.eye(64))
    record = json.loads((hub / "smolvlm" / "hub_fit.json").read_text())
    assert record["decoder_anchored_to"] == "gemma3" and "decoder_sha256" in record
    assert [r.status for r in fit_hub_maps([gemma, smol], reference="gemma3", anchors=anchors, out=hub,
                                           decoders={"smolvlm": anchored})] == ["kept", "kept"]
    # Without it the family gets its own decoder back: refitted.
    assert [r.status for r in fit_hub_maps([gemma, smol], reference="gemma3", anchors=anchors,
                                           out=hub)] == ["kept", "fitted"]


def test_hub_decoders_that_do_not_read_the_reference_are_refused(tmp_path):
    anchors = write_anchors(tinyworld_anchors("secret", 8), tmp_path / "anchors.jsonl")
    gemma, smol = (_codec_folder(tmp_path / "codecs", f, s) for f, s in (("gemma3", 0), ("smolvlm", 1)))
    other_gemma = _codec_folder(tmp_path / "other", "gemma3", 7)
    cases = [
        ({"smolvlm": smol}, "must come from `train codec --anchor-to`"),  # trained alone
        ({"smolvlm": _anchored_folder(tmp_path / "a", "smolvlm", 2, other_gemma)}, "another gemma3 codec"),
        ({"gemma3": _anchored_folder(tmp_path / "b", "gemma3", 3, gemma)}, "other than the reference"),
        ({"smolvlm": _anchored_folder(tmp_path / "c", "llava", 4, gemma)}, "is a codec of llava"),
    ]
    for decoders, message in cases:
        with pytest.raises(ConfigError, match=message):
            fit_hub_maps([gemma, smol], reference="gemma3", anchors=anchors, out=tmp_path / "hub",
                         decoders=decoders)
    assert not (tmp_path / "hub").exists()  # refused before anything was written
