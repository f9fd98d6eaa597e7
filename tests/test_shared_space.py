"""Anchor files and the incremental shared-space maps job (`latentwire train space-maps`)."""

from __future__ import annotations

import hashlib
import json

import pytest

torch = pytest.importorskip("torch")

from latentwire.agents.codec import CodecConfig, UniversalVisualCodec  # noqa: E402
from latentwire.errors import ConfigError  # noqa: E402
from latentwire.training.anchors import (  # noqa: E402
    AnchorError, anchors_from_texts, read_anchors, tinyworld_anchors, write_anchors)
from latentwire.training.shared_space import fit_maps, fit_shared_maps, split_rows  # noqa: E402


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
    space = tmp_path / "space"
    first = fit_shared_maps([gemma, smol], reference="gemma3", anchors=anchors, out=space)
    assert [(r.family, r.status) for r in first] == [("gemma3", "reference"), ("smolvlm", "fitted")]
    fitted = UniversalVisualCodec.from_pretrained(space / "smolvlm")
    assert not torch.equal(fitted.shared.to_shared.weight, torch.eye(64))  # real maps, not the identity
    before = _digests(space)

    second = fit_shared_maps([gemma, smol, qwen], reference="gemma3", anchors=anchors, out=space)
    assert [(r.family, r.status) for r in second] == [
        ("gemma3", "kept"), ("smolvlm", "kept"), ("qwen2_5_vl", "fitted")]
    after = _digests(space)
    assert {k: v for k, v in after.items() if not k.startswith("qwen2_5_vl/")} == before
    assert "qwen2_5_vl/model.safetensors" in after

    # The maps send the family's latents of an anchor near the reference's latents of it.
    record = json.loads((space / "qwen2_5_vl" / "shared_fit.json").read_text())
    assert record["reference"] == "gemma3" and record["to_shared_mse"] >= 0

    # Another ridge is another fit: that family is refitted, the reference kept.
    third = fit_shared_maps([gemma, smol], reference="gemma3", anchors=anchors, out=space, ridge=1e-2)
    assert [(r.family, r.status) for r in third] == [("gemma3", "kept"), ("smolvlm", "fitted")]


def test_residual_shared_space_maps_are_fitted_recorded_and_kept(tmp_path):
    anchors = write_anchors(tinyworld_anchors("secret", 80), tmp_path / "anchors.jsonl")
    gemma, smol = (_codec_folder(tmp_path / "codecs", f, s) for f, s in (("gemma3", 0), ("smolvlm", 1)))
    space = tmp_path / "space"
    fit_shared_maps([gemma, smol], reference="gemma3", anchors=anchors, out=space)
    affine = _digests(space)
    first = fit_shared_maps([gemma, smol], reference="gemma3", anchors=anchors, out=space, hidden=32, residual_steps=20)
    assert [(r.family, r.status) for r in first] == [("gemma3", "kept"), ("smolvlm", "fitted")]
    assert set(first[1].heldout) == {"to_shared", "from_shared"}
    record = json.loads((space / "smolvlm" / "shared_fit.json").read_text())
    assert record["shared_hidden"] == 32 and record["heldout"]["to_shared"]["map"] <= record["heldout"]["to_shared"]["affine"]
    codec = UniversalVisualCodec.from_pretrained(space / "smolvlm")
    assert codec.config.shared_hidden == 32 and codec.shared.to_shared.residual is not None
    with_mlp = _digests(space)
    again = fit_shared_maps([gemma, smol], reference="gemma3", anchors=anchors, out=space, hidden=32, residual_steps=20)
    assert [r.status for r in again] == ["kept", "kept"] and _digests(space) == with_mlp
    # Back to affine maps: refitted to the very bytes of the first affine fit (deterministic).
    fit_shared_maps([gemma, smol], reference="gemma3", anchors=anchors, out=space)
    assert _digests(space) == affine


def test_shared_space_maps_refuse_bad_settings(tmp_path):
    anchors = write_anchors(tinyworld_anchors("secret", 4), tmp_path / "anchors.jsonl")
    gemma = _codec_folder(tmp_path / "c", "gemma3", 0)
    with pytest.raises(ConfigError, match="reference family 'llava' is not among"):
        fit_shared_maps([gemma], reference="llava", anchors=anchors, out=tmp_path / "space")
    with pytest.raises(ConfigError, match="ridge must be > 0"):
        fit_shared_maps([gemma], reference="gemma3", anchors=anchors, out=tmp_path / "space", ridge=0)
    with pytest.raises(ConfigError, match="hidden must be >= 0"):
        fit_shared_maps([gemma], reference="gemma3", anchors=anchors, out=tmp_path / "space", hidden=-1)
    other = tmp_path / "d" / "smolvlm"
    UniversalVisualCodec(CodecConfig(family="smolvlm", hidden_size=128, image_slots=16, width=32,
                                     num_tokens=4)).save_pretrained(other)
    (other / "align.json").write_text(json.dumps({"config": {"model": "smolvlm"}}))
    with pytest.raises(ConfigError, match="the shared space needs one shape"):
        fit_shared_maps([gemma, other], reference="gemma3", anchors=anchors, out=tmp_path / "space")


def _anchored_folder(root, family, seed, reference_folder, scheme=None):
    folder = _codec_folder(root, family, seed)
    digest = hashlib.sha256((reference_folder / "model.safetensors").read_bytes()).hexdigest()
    (folder / "align.json").write_text(json.dumps({
        "config": {"model": family, "latent_steps": 2}, "scheme": scheme or f"anchored to {reference_folder.name}",
        "anchor_sha256": digest}))
    return folder


def test_a_family_can_read_the_shared_space_with_a_decoder_anchored_to_the_reference(tmp_path):
    anchors = write_anchors(tinyworld_anchors("secret", 80), tmp_path / "anchors.jsonl")
    gemma, smol = (_codec_folder(tmp_path / "codecs", f, s) for f, s in (("gemma3", 0), ("smolvlm", 1)))
    anchored = _anchored_folder(tmp_path / "anchored", "smolvlm", 5, gemma, "anchored to gemma3 (decoder only)")
    space = tmp_path / "space"
    result = fit_shared_maps([gemma, smol], reference="gemma3", anchors=anchors, out=space,
                          decoders={"smolvlm": anchored})
    assert result[1].status == "fitted" and result[1].from_shared_mse is None
    codec = UniversalVisualCodec.from_pretrained(space / "smolvlm")
    source, reader = (UniversalVisualCodec.from_pretrained(f) for f in (smol, anchored))
    assert all(torch.equal(v, reader.decoder.state_dict()[k]) for k, v in codec.decoder.state_dict().items())
    assert all(torch.equal(v, source.encoder.state_dict()[k]) for k, v in codec.encoder.state_dict().items())
    assert torch.equal(codec.shared.from_shared.weight, torch.eye(64))  # the decoder reads the shared space as is
    assert not torch.equal(codec.shared.to_shared.weight, torch.eye(64))
    record = json.loads((space / "smolvlm" / "shared_fit.json").read_text())
    assert record["decoder_anchored_to"] == "gemma3" and "decoder_sha256" in record
    assert [r.status for r in fit_shared_maps([gemma, smol], reference="gemma3", anchors=anchors, out=space,
                                           decoders={"smolvlm": anchored})] == ["kept", "kept"]
    # Without it the family gets its own decoder back: refitted.
    assert [r.status for r in fit_shared_maps([gemma, smol], reference="gemma3", anchors=anchors,
                                           out=space)] == ["kept", "fitted"]


def test_shared_space_decoders_that_do_not_read_the_reference_are_refused(tmp_path):
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
            fit_shared_maps([gemma, smol], reference="gemma3", anchors=anchors, out=tmp_path / "space",
                         decoders=decoders)
    assert not (tmp_path / "space").exists()  # refused before anything was written


def test_a_space_folder_fitted_before_the_rename_is_read_and_kept(tmp_path):
    # Folders fitted before the shared space was renamed hold hub_fit.json with hub_* keys.
    from latentwire.training.pairs import codec_run
    from latentwire.training.pairs import read_fit_record

    anchors = write_anchors(tinyworld_anchors("secret", 80), tmp_path / "anchors.jsonl")
    codecs = tmp_path / "codecs"
    gemma, smol = (_codec_folder(codecs, f, s) for f, s in (("gemma3", 0), ("smolvlm", 1)))
    space = tmp_path / "space"
    fit_shared_maps([gemma, smol], reference="gemma3", anchors=anchors, out=space, hidden=32, residual_steps=20)
    for family in ("gemma3", "smolvlm"):
        record = json.loads((space / family / "shared_fit.json").read_text())
        old = {{"shared_hidden": "hub_hidden", "to_shared_mse": "to_hub_mse",
                "from_shared_mse": "from_hub_mse"}.get(k, k): v for k, v in record.items()}
        (space / family / "hub_fit.json").write_text(json.dumps(old))
        (space / family / "shared_fit.json").unlink()
    assert read_fit_record(space / "smolvlm") == json.loads(json.dumps(record))
    assert codec_run(space / "smolvlm")[1]["latent_steps"] == 2
    assert read_fit_record(tmp_path) is None
    before = _digests(space)
    again = fit_shared_maps([gemma, smol], reference="gemma3", anchors=anchors, out=space, hidden=32,
                            residual_steps=20)
    assert [r.status for r in again] == ["kept", "kept"] and _digests(space) == before


def test_the_old_command_names_still_work(capsys, tmp_path):
    from latentwire.benchmarks.mas import _parse
    from latentwire.cli import main

    from latentwire.tinyworld.space import SHIPPED_SPACE

    space = str(SHIPPED_SPACE)  # a space folder that exists (it is checked while parsing)
    assert _parse(["--hub", space], quick=False).space == space
    assert "--hub is deprecated, use --space" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse(["--help"], quick=False)
    assert "--space" in (usage := capsys.readouterr().out) and "--hub" not in usage
    with pytest.raises(SystemExit):
        main(["train", "hub-maps", "--help"])
    out, err = capsys.readouterr()
    assert "use `latentwire train space-maps`" in err and "latentwire train space-maps" in out
    assert main(["train"]) == 2
    listing = capsys.readouterr().out
    assert "space-maps" in listing and "hub-maps" not in listing


def test_anchor_rows_split_three_ways_without_overlap():
    fit, stop, report = split_rows(1000)
    assert (fit, stop, report) == (slice(0, 800), slice(800, 900), slice(900, 1000))
    assert split_rows(10, 0.2, 0.3) == (slice(0, 5), slice(5, 7), slice(7, 10))
    with pytest.raises(ConfigError, match="too few"):
        split_rows(3)
    with pytest.raises(ConfigError, match="sum below 1"):
        split_rows(100, 0.5, 0.5)


def test_the_reported_map_error_comes_from_rows_nothing_was_fitted_on():
    """The ridge sees only the fit rows (report rows that break the pattern do not move it), and the
    error in ``heldout`` is the one on the report rows."""
    from latentwire.agents.codec.shared_space import ridge_affine

    k, d, n = 2, 4, 400
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, k, d, generator=gen)
    y = 2 * x + 1
    y[360:] = torch.randn(40, k, d, generator=gen)  # the report rows follow another rule
    codec = UniversalVisualCodec(CodecConfig(family="toy", hidden_size=8, num_tokens=k, width=d))
    fit = fit_maps(codec, x, y, ridge=1e-6)
    W, b = ridge_affine(x[:320].flatten(1), y[:320].flatten(1), 1e-6)
    torch.testing.assert_close(codec.shared.to_shared.weight, W.T.float(), atol=1e-5, rtol=1e-5)
    assert fit.to_shared_mse < 1e-8  # on the fit rows
    held = fit.heldout["to_shared"]
    assert held["step"] == 0 and held["affine"] == held["map"] > 1  # worse than the mean on the report rows


def test_a_space_folder_fitted_before_the_three_way_split_is_refitted(tmp_path):
    anchors = write_anchors(tinyworld_anchors("secret", 80), tmp_path / "anchors.jsonl")
    gemma, smol = (_codec_folder(tmp_path / "codecs", f, s) for f, s in (("gemma3", 0), ("smolvlm", 1)))
    space = tmp_path / "space"
    fit_shared_maps([gemma, smol], reference="gemma3", anchors=anchors, out=space)
    record = json.loads((space / "smolvlm" / "shared_fit.json").read_text())
    assert record["splits"] == {"fit": 0.8, "stop": 0.1, "report": 0.1}
    del record["splits"]
    (space / "smolvlm" / "shared_fit.json").write_text(json.dumps(record))
    again = fit_shared_maps([gemma, smol], reference="gemma3", anchors=anchors, out=space)
    assert [(r.family, r.status) for r in again] == [("gemma3", "kept"), ("smolvlm", "fitted")]
