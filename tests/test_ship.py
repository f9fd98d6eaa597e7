"""The shipped tinyworld space: every artefact loads, the recipe that made it runs and reproduces
itself, and a space that cannot serve a request says what is missing before any model runs."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from latentwire.tinyworld.space import SHIPPED_SPACE, SpaceError, load_space  # noqa: E402

SHORT = 0.003  # of every step and anchor count: the whole recipe in seconds


def _recipe(families=("gemma3", "llava")):
    from latentwire.training.ship import RECIPE

    recipe = copy.deepcopy(RECIPE)
    recipe["families"] = list(families)
    return recipe


@pytest.fixture(scope="module")
def short_build(tmp_path_factory):
    """The recipe's every stage, on two families, at a few steps each."""
    from latentwire.training.ship import build

    out = tmp_path_factory.mktemp("ship")
    return build(out / "a", recipe=_recipe(), scale=SHORT, progress=False, log=lambda *_: None)


def test_every_shipped_artefact_loads_and_talks():
    from latentwire.agents.bundle import ModelBundle
    from latentwire.tinyworld.checkpoints import SHIPPED_DIR, load_pretrained
    from latentwire.tinyworld.models import FAMILIES

    space = load_space()
    assert space.shipped and sorted(space.families) == sorted(FAMILIES)
    assert space.lengths and min(space.lengths) == 8
    manifest = space.manifest
    for name, entry in manifest["files"].items():  # what space.json lists is what is installed
        root = SHIPPED_DIR.parent if name.startswith("checkpoints/") else SHIPPED_SPACE.parent
        path = root / name
        assert path.stat().st_size == entry["bytes"], name
    bundles = {}
    for family in FAMILIES:
        model, tokenizer = load_pretrained(family)
        codec, steps = space.codec(family)
        assert codec.config.max_steps > 0, family  # longer reasoning than its anchors' is refused
        bundles[family] = ModelBundle(model, tokenizer, codec, latent_steps=steps)
    tokens = bundles["llava"].speak(["saw: abcdefgh\nmessage?"])
    assert tokens.shape == (1, 8, 64) and bool(tokens.isfinite().all())
    (answer,) = bundles["qwen2_5_vl"].answer(["secret?"], tokens=tokens, max_new_tokens=12)
    assert isinstance(answer, str)


def test_the_base_stage_is_the_train_on_first_use_recipe(tmp_path):
    """A checkpoint trained on first use (`load_or_train`) is made like a shipped one."""
    from latentwire.training.pretrain import recipe
    from latentwire.training.ship import RECIPE

    config = recipe("gemma3", tmp_path)
    assert {k: getattr(config, k) for k in RECIPE["base"]} == RECIPE["base"]


def test_shipped_files_stay_under_50_mb():
    from latentwire.tinyworld.checkpoints import SHIPPED_DIR

    total = sum(p.stat().st_size for root in (SHIPPED_DIR, SHIPPED_SPACE)
                for p in root.rglob("*") if p.is_file())
    assert total <= 50 * 2**20, f"{total / 2**20:.1f} MiB of shipped tinyworld files"


def test_shipped_space_was_made_by_the_recorded_recipe():
    from latentwire.training.ship import RECIPE

    manifest = load_space().manifest
    assert manifest["recipe"] == RECIPE and manifest["scale"] == 1.0
    assert manifest["variant"].startswith("weakly supervised")


@pytest.mark.timeout(600)  # two short builds: minutes on a busy 2-core machine
def test_the_recipe_reproduces_itself_in_a_short_run(short_build, tmp_path):
    """Every stage runs; a second build from scratch gives the same weights (records differ only in
    paths and times); the layout is the shipped one."""
    from latentwire.training.ship import build

    def weights(ship):
        return {str(p.relative_to(ship)): p.read_bytes() for p in sorted(ship.rglob("*.safetensors"))}

    manifest = json.loads((short_build / "space.json").read_text())
    assert manifest["recipe"]["families"] == ["gemma3", "llava"] and manifest["scale"] == SHORT
    for family in ("gemma3", "llava"):
        for name in ("config.json", "model.safetensors", "shared_fit.json"):
            assert (short_build / "space" / family / name).is_file()
        assert json.loads((short_build / "space" / family / "shared_fit.json").read_text())["model"] == family
        assert (short_build / "checkpoints" / family / "tinyworld.json").is_file()
    tuned = json.loads((short_build / "space" / "llava" / "shared_fit.json").read_text())
    assert tuned["encoder_tuned_to"] == "gemma3"
    assert tuned["tune"]["decoder"]["scheme"] == "anchored to gemma3 (decoder only)"
    assert tuned["tune"]["encoder"]["scheme"] == "anchored to gemma3 (encoder only)"
    reference = json.loads((short_build / "space" / "gemma3" / "shared_fit.json").read_text())
    assert "encoder_tuned_to" not in reference
    again = build(tmp_path / "b", recipe=_recipe(), scale=SHORT, progress=False, log=lambda *_: None)
    assert weights(again) == weights(short_build) and len(weights(again)) == 4
    if SHIPPED_SPACE.is_dir():  # the shipped files have the layout a build makes
        shipped = {p.name for p in (SHIPPED_SPACE / "llava").iterdir()}
        assert shipped == {p.name for p in (short_build / "space" / "llava").iterdir()}
        for family in ("gemma3", "llava"):  # the recipe's anchors give the length the shipped codecs refuse past
            made, installed = (json.loads((root / family / "config.json").read_text())["max_steps"]
                               for root in (short_build / "space", SHIPPED_SPACE))
            assert made == installed > 0, family


def test_a_stopped_build_continues_and_a_changed_recipe_is_refused(short_build):
    from latentwire.errors import ConfigError
    from latentwire.training.ship import build

    out = short_build.parent
    done = build(out, recipe=_recipe(), scale=SHORT, progress=False, log=lambda *_: None)
    assert done == short_build  # every stage complete: nothing runs again
    with pytest.raises(ConfigError, match="another recipe or scale"):
        build(out, recipe=_recipe(("gemma3", "smolvlm")), scale=SHORT, progress=False, log=lambda *_: None)
    bad = _recipe()
    bad["anchors"]["codec_seed"] = 2_000_003
    with pytest.raises(ConfigError, match="below"):
        build(out.parent / "c", recipe=bad, scale=SHORT, progress=False)


@pytest.mark.timeout(300)
def test_the_tune_stage_runs_on_a_finished_space(tmp_path, monkeypatch):
    """`train ship --from-space`: a space built without the tune stage gets it, and only it; the
    reference's files come out byte-identical, a tuned space or another recipe is refused."""
    import latentwire.tinyworld.space as space_module
    from latentwire.errors import ConfigError
    from latentwire.training.ship import build, build_from_space

    untuned = _recipe()
    untuned["tune"] = None
    first = build(tmp_path / "a", recipe=untuned, scale=SHORT, progress=False, log=lambda *_: None)
    # The short build's checkpoints are not the installed ones, which load_space would refuse.
    monkeypatch.setattr(space_module, "_check_checkpoints", lambda *_: None)
    ship = build_from_space(tmp_path / "b", first / "space", recipe=_recipe(), scale=SHORT, progress=False,
                            log=lambda *_: None)
    for name in ("gemma3/model.safetensors", "gemma3/config.json", "llava/config.json"):
        assert (ship / "space" / name).read_bytes() == (first / "space" / name).read_bytes(), name
    assert (ship / "space" / "llava" / "model.safetensors").read_bytes() != (
        first / "space" / "llava" / "model.safetensors").read_bytes()
    manifest = json.loads((ship / "space.json").read_text())
    assert manifest["recipe"] == _recipe() and "tuned" in manifest["variant"]
    with pytest.raises(ConfigError, match="already tuned"):
        build_from_space(tmp_path / "c", ship / "space", recipe=_recipe(), scale=SHORT, progress=False)
    other = _recipe()
    other["maps"]["hidden"] = 7
    with pytest.raises(ConfigError, match="not built with this recipe"):
        build_from_space(tmp_path / "d", first / "space", recipe=other, scale=SHORT, progress=False)
    with pytest.raises(ConfigError, match="scale"):
        build_from_space(tmp_path / "e", first / "space", recipe=_recipe(), progress=False)


def test_a_space_built_for_other_checkpoints_is_refused(short_build):
    """The short build's models are not the installed ones: its space names what differs."""
    with pytest.raises(SpaceError, match="other tinyworld gemma3 weights|other tinyworld llava weights"):
        load_space(short_build / "space")


def test_missing_family_and_untrained_length_are_named(short_build, tmp_path):
    folder = tmp_path / "space"
    shutil.copytree(short_build / "space", folder)
    (folder / "space.json").unlink()  # a `train space-maps` folder: no manifest, no version check
    space = load_space(folder)
    assert space.families == ["gemma3", "llava"] and space.lengths is None
    with pytest.raises(SpaceError, match="no codec for qwen3_vl .*train ship"):
        load_space(folder, families=["qwen3_vl"])
    manifest = json.loads((short_build / "space.json").read_text())
    manifest["files"] = {}
    (folder / "space.json").write_text(json.dumps(manifest))
    with pytest.raises(SpaceError, match="trained on messages of 8 characters, not 32"):
        load_space(folder, lengths=[32])
    with pytest.raises(SpaceError, match="no shared-space folder"):
        load_space(tmp_path / "nowhere")


@pytest.mark.parametrize("argv", [
    ["bench", "mas", "--lengths", "32"],
    ["bench", "mas", "--space", "/no/such/space"],
    ["demo", "--length", "64"],
])
def test_cli_refuses_what_no_shipped_codec_can_do_in_one_line(argv):
    result = subprocess.run([sys.executable, "-m", "latentwire.cli", *argv], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    err = result.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "train ship" in err
