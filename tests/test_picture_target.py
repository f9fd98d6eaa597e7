"""The weakly supervised codec target for real VLMs: a message rendered as pictures and read by the
family's own vision tower and projector (`latentwire.agents.families.picture`), and its use in
`latentwire train codec --picture-target rendered` (`latentwire.training.align`)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from latentwire.agents.errors import MissingVisionTower  # noqa: E402
from latentwire.agents.families import adapter_for  # noqa: E402
from latentwire.agents.families import picture  # noqa: E402
from latentwire.errors import ConfigError  # noqa: E402
from latentwire.tinyworld.models import FAMILIES, build_model  # noqa: E402
from latentwire.training.align import AlignConfig, align  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SLOTS = 16  # `train codec`'s default image_slots: one image (LLaVA, Qwen) or several tiled (Gemma 3, SmolVLM)
TOWERS = ("vision_tower", "vision_model", "visual")  # where transformers keeps each family's tower


def _tower(model):
    return next(getattr(model.model, name) for name in TOWERS if hasattr(model.model, name))


@pytest.mark.parametrize("family", FAMILIES)
def test_rendered_target_comes_through_each_familys_vision_tower(family):
    model = build_model(family)
    adapter = adapter_for(model)
    target = adapter.message_features(model, "K7pQ2zX9", SLOTS)
    assert target.shape == (SLOTS, adapter.hidden_size(model))
    assert torch.isfinite(target).all()
    # The picture shows the message: another message, another target; the blank image differs too.
    assert not torch.allclose(target, adapter.message_features(model, "a", SLOTS))
    assert not torch.allclose(target, adapter.blank_image_embeddings(model, SLOTS))
    # Deterministic, and computed by the tower: other tower weights, another target.
    assert torch.equal(target, adapter.message_features(model, "K7pQ2zX9", SLOTS))
    with torch.no_grad():
        for p in _tower(model).parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    assert not torch.allclose(target, adapter.message_features(model, "K7pQ2zX9", SLOTS))


@pytest.mark.parametrize("family, processor", [("llava", "CLIPImageProcessorPil"),
                                               ("gemma3", "SiglipImageProcessorPil")])
def test_square_pictures_are_laid_out_as_the_familys_image_processor_does(family, processor):
    import transformers

    adapter = adapter_for(build_model(family))
    pictures = picture.message_pictures(adapter, "K7pQ2zX9", adapter.slots_per_image())
    size = adapter.vision_config.image_size
    real = getattr(transformers, processor)(size={"height": size, "width": size}, do_center_crop=False,
                                            image_mean=list(adapter.image_mean),
                                            image_std=list(adapter.image_std))
    expected = real(images=pictures, return_tensors="pt")["pixel_values"]  # (1, 3, S, S)
    got = adapter.picture_pixel_inputs(pictures, [adapter.slots_per_image()])["pixel_values"]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_rendering_is_deterministic_and_tiles_follow_the_slots():
    adapter = adapter_for(build_model("gemma3"))  # 4 slots per image: 16 slots are 4 tiles of one strip
    tiles = picture.message_pictures(adapter, "K7pQ2zX9", SLOTS)
    assert [t.size for t in tiles] == [(32, 32)] * 4
    again = picture.message_pictures(adapter, "K7pQ2zX9", SLOTS)
    assert [t.tobytes() for t in tiles] == [t.tobytes() for t in again]
    assert any(t.getextrema() != ((255, 255),) * 3 for t in tiles)  # ink on white
    assert picture.render_message("x" * 500, 32, 32) is None  # below the smallest font
    with pytest.raises(ConfigError, match="does not fit") as err:
        adapter.message_features(build_model("gemma3"), "x" * 500, SLOTS)
    assert "\n" not in str(err.value)


def _hf_folder(tmp_path: Path) -> Path:
    """tinyworld llava as a standard Hugging Face folder with a standard tokenizer."""
    script = ROOT / "scripts" / "tinyworld_hf_folder.py"
    spec = importlib.util.spec_from_file_location("tinyworld_hf_folder", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_folder("llava", tmp_path / "tinyworld-llava")


@pytest.mark.timeout(300)
def test_a_real_model_id_path_trains_with_the_rendered_target(tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    import latentwire.training.pairs as pairs

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = _hf_folder(tmp_path)
    loaded, calls = [], []
    load_model, features = pairs.load_model, picture.picture_features
    monkeypatch.setattr(pairs, "load_model", lambda spec: loaded.append(load_model(spec)) or loaded[-1])
    monkeypatch.setattr(picture, "picture_features",
                        lambda *a, **k: calls.append(a[0].family) or features(*a, **k))
    small = dict(model=str(folder), steps=2, batch_size=2, eval_every=0, eval_n=2, n_anchors=8, log_every=1,
                 progress=False)

    # tinyworld's screens do not exist for it: the job names the way out.
    with pytest.raises(ConfigError, match="picture_target=rendered") as err:
        align(AlignConfig(**small, out_dir=str(tmp_path / "screen"), picture_weight=1.0))
    assert "\n" not in str(err.value) and not (tmp_path / "screen").exists()

    out = align(AlignConfig(**small, out_dir=str(tmp_path / "codec"), picture_target="rendered"))
    assert isinstance(loaded[-1][1], PreTrainedTokenizerFast)  # the Hugging Face path, not tinyworld's
    assert calls and set(calls) == {"llava"}
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    pictures = [r["picture"] for r in lines if "loss" in r]
    assert len(pictures) == 2 and all(math.isfinite(p) and p > 0 for p in pictures)
    meta = json.loads((out / "align.json").read_text())
    assert meta["config"]["picture_target"] == "rendered" and meta["config"]["picture_weight"] == 1.0


def _without_tower(model):
    del model.model.vision_tower
    return model


def _without_vision_config(model):
    model.config.vision_config = None
    return model


@pytest.mark.parametrize("break_model, reason", [(_without_tower, "failed on a picture"),
                                                 (_without_vision_config, "no vision_config")])
def test_a_model_without_a_vision_tower_is_refused_before_training(tmp_path, monkeypatch, break_model,
                                                                   reason):
    import latentwire.training.pairs as pairs
    from latentwire.tinyworld.tokenizer import TinyTokenizer

    model = break_model(build_model("llava"))
    monkeypatch.setattr(pairs, "load_model", lambda spec: (model, TinyTokenizer()))
    out = tmp_path / "codec"
    with pytest.raises(MissingVisionTower, match=reason) as err:
        align(AlignConfig(model="llava", picture_target="rendered", steps=2, batch_size=2, eval_every=0,
                          eval_n=2, n_anchors=8, progress=False, out_dir=str(out)))
    message = str(err.value)
    assert "\n" not in message and "picture_weight=0" in message and message.startswith("llava:")
    assert not out.exists()  # no step, no checkpoint, no metrics


def test_an_unknown_picture_target_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"picture_target must be one of screen, rendered, got 'photo'"):
        AlignConfig(picture_target="photo")
