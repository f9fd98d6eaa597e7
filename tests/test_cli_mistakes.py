"""The command-line mistakes a new user makes (issue 18): each ends in one line on stderr that
names the problem and the fix, exit status 2 for bad usage (1 for a run that could not start),
never a traceback, and it is caught before any model loads.

A mistake refused by argparse itself keeps argparse's form: the usage synopsis, then the one
``PROG: error: ...`` line; a mistake found after parsing is that one line alone.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from latentwire.cli import main
from latentwire.tinyworld.models import FAMILIES

pytestmark = pytest.mark.timeout(120)


def cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """Run ``latentwire ARGV`` in this process: (exit status, stdout, stderr)."""
    try:
        status = main(list(argv))
    except SystemExit as exc:  # argparse's own refusals and --help
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def error_line(err: str, prog: str, *, usage: bool = False) -> str:
    """The one error line of ``err``, checked: it is all of stderr (with ``usage``: after
    argparse's usage synopsis and nothing else), it starts with ``PROG: error:``, no traceback."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    if usage:
        assert lines[0].startswith("usage: ") and all(line.startswith(" ") for line in lines[1:-1]), err
    else:
        assert len(lines) == 1, err
    assert lines[-1].startswith(f"{prog}: error: "), err
    return lines[-1]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every host name looked up from now on (none may be): the test's proof of no network try."""
    looked_up: list[str] = []

    def refuse(host: object, *args: object, **kwargs: object) -> None:
        looked_up.append(str(host))
        raise OSError(f"test: no network for {host}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return looked_up


def test_demo_url_without_a_hub(capsys, monkeypatch) -> None:
    monkeypatch.delenv("LATENTWIRE_URL", raising=False)
    status, out, err = cli(capsys, "demo", "--url", "grpc://127.0.0.1:1")
    assert status == 1
    line = error_line(err, "latentwire demo")
    assert "no hub reachable at 127.0.0.1:1" in line
    assert "start one with `latentwire hub --port 1`, or leave out --url" in line
    assert out == ""  # refused before the demo printed its plan or loaded a model
    # A URL that cannot be right is bad usage, also refused before any model loads.
    status, out, err = cli(capsys, "demo", "--url", "grpc://localhost")
    assert status == 2 and out == ""
    assert "needs a host and port" in error_line(err, "latentwire demo")


@pytest.mark.parametrize("flag", ["--space", "--hub"])  # --hub: the deprecated name of --space
def test_bench_mas_with_a_missing_folder(capsys, tmp_path, flag) -> None:
    pytest.importorskip("torch")
    missing = tmp_path / "no" / "such" / "folder"
    status, out, err = cli(capsys, "bench", "mas", flag, str(missing))
    assert status == 2 and out == ""
    if flag == "--hub":  # the old name says so first, on its own line
        warning, err = err.split("\n", 1)
        assert warning == "--hub is deprecated, use --space"
    line = error_line(err, "latentwire bench")  # checked by tinyworld.space before any model loads
    assert f"no shared-space folder {missing}" in line and "latentwire train ship --out DIR" in line
    (tmp_path / "file").write_text("")
    status, _, err = cli(capsys, "bench", "mas", flag, str(tmp_path / "file"))
    err = err.split("\n", 1)[1] if flag == "--hub" else err
    assert status == 2 and "no shared-space folder" in error_line(err, "latentwire bench")


def test_train_space_maps_with_a_reference_not_among_the_codecs(capsys, tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from latentwire.agents.codec import CodecConfig, UniversalVisualCodec
    from latentwire.training.anchors import tinyworld_anchors, write_anchors

    codecs = []
    for family in ("gemma3", "smolvlm"):
        torch.manual_seed(0)
        folder = tmp_path / family
        codec = UniversalVisualCodec(CodecConfig(family=family, hidden_size=128, width=16, num_tokens=4))
        codec.save_pretrained(folder)
        (folder / "align.json").write_text(json.dumps({"config": {"model": family, "latent_steps": 1}}))
        codecs.append(str(folder))
    anchors = write_anchors(tinyworld_anchors("secret", 4), tmp_path / "anchors.jsonl")
    for job in ("space-maps", "hub-maps"):  # hub-maps: the job's deprecated name
        status, out, err = cli(capsys, "train", job, "--codec", *codecs, "--reference", "llava",
                               "--anchors", str(anchors), "--out", str(tmp_path / "space"))
        assert status == 2 and out == ""
        if job == "hub-maps":  # its deprecation notice comes first, then the one error line
            err = err.split("\n", 1)[1]
        line = error_line(err, "latentwire train")
        assert "reference family 'llava' is not among the codecs (gemma3, smolvlm)" in line
        assert "give --reference one of those, or add a llava codec folder to --codec" in line
    assert not (tmp_path / "space").exists()


def test_train_codec_model_typo_lists_the_families_without_the_network(capsys, tmp_path, no_network) -> None:
    pytest.importorskip("transformers")
    status, out, err = cli(capsys, "train", "codec", "--model", "gemma33", "--out", str(tmp_path / "c"))
    assert status == 2 and out == ""
    line = error_line(err, "latentwire train")
    assert line.startswith("latentwire train: error: model 'gemma33' is not a tinyworld family (")
    assert all(family in line for family in FAMILIES) and "did you mean 'gemma3'?" in line
    assert no_network == [] and not (tmp_path / "c").exists()


@pytest.mark.timeout(60)
def test_train_codec_unreachable_hub_id_fails_fast_in_one_line(tmp_path) -> None:
    pytest.importorskip("transformers")
    # A well-formed Hub id, and a Hub that refuses every connection: one try, no retries.
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "latentwire.cli", "train", "codec", "--model",
                             "someone/no-such-vlm", "--n_anchors", "8", "--out", str(tmp_path / "c")],
                            check=False, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    line = error_line(result.stderr, "latentwire train")
    assert "cannot load model from someone/no-such-vlm: the Hugging Face Hub did not answer" in line
    assert "check the network" in line
    # huggingface_hub's back-off alone sleeps 1+2+4+8+8 s; the whole command stays well below.
    assert elapsed < 20, elapsed


def test_model_help_lists_the_families(capsys) -> None:
    pytest.importorskip("transformers")
    for job in ("codec", "space-maps"):
        status, out, _ = cli(capsys, "train", job, "--help")
        assert status == 0 and "--model" in out
        assert all(family in out for family in FAMILIES), (job, out)
        assert "owner/name" in out


def test_bench_help_shows_the_common_options_of_every_benchmark(capsys) -> None:
    from latentwire.benchmarks import BENCHMARKS

    for name in BENCHMARKS:
        status, out, err = cli(capsys, "bench", name, "--help")
        assert status == 0, (name, err)
        assert f"usage: latentwire bench {name}" in out, name
        assert "--json FILE" in out and "--quick" in out, (name, out)


def test_demo_unknown_task(capsys) -> None:
    from latentwire.tinyworld.tasks import TASKS

    status, out, err = cli(capsys, "demo", "--task", "nosuch")
    assert status == 2 and out == ""
    line = error_line(err, "latentwire demo", usage=True)
    assert "argument --task: invalid choice: 'nosuch' (choose from " in line
    assert all(repr(task) in line for task in TASKS)
