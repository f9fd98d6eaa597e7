"""``latentwire train codec``: align ONE family's codec by label-free self-distillation.

The model stays frozen; only its `UniversalVisualCodec` trains, with gradients flowing *through*
the model into the codec. Per anchor (`anchors.Anchor`) of a batch:

* **sender side**: the model reads the anchor's sender prompt and takes ``latent_steps`` latent
  thinking steps (no gradient needed); the codec encodes them into K universal tokens and decodes
  those into k visual embeddings plus the gate, in the family's own codec space;
* **teacher**: the same model reads the TEXT-mode prompt (the message in it), teacher-forced on
  its own greedy reply (computed once per anchor at the start: label-free), without gradient;
* **student**: the same model reads the LATENT-mode prompt (no message) with the decoded
  embeddings added at the image slots (``adapter.inject(..., gate=gate)``), teacher-forced on the
  same reply.

Loss over every reply position (up to ``continuation`` tokens) = ``kl_weight`` * KL(teacher ||
student) of the next-token distributions + ``hidden_weight`` * MSE of the hidden states (every
layer, normalised by the teacher's mean square) + ``scale_weight`` * a term pulling the decoded
embeddings' mean norm to the norm of real (blank) image embeddings + ``picture_weight`` * the
distance of the gated embeddings to the message's picture (tinyworld models only: what the model
sees when the message is shown as an image, `tinyworld.screen`; 0 turns it off).

The job: `accelerate` (CPU, one GPU, ``accelerate launch`` for several), ``mixed_precision``
(``bf16`` where supported), gradient clipping, non-finite steps skipped and counted, a checkpoint
every ``checkpoint_every`` steps written atomically (``checkpoint-<step>/`` + ``latest``), and
``resume`` to continue from it: batches are a pure function of (seed, process, step), so a
resumed run ends where an uninterrupted one does. Progress bar; ``metrics.jsonl`` (one line per
log step; eval lines add ``eval``); the codec as ``config.json`` + ``model.safetensors``;
``align.json`` with the run config, step, skipped steps, final eval and wall time.

Commands::

    latentwire train anchors --tinyworld secret --n 2000 --out anchors.jsonl
    latentwire train codec --model gemma3 --anchors anchors.jsonl --out runs/codec/gemma3
    latentwire train codec --model gemma3 --out runs/codec/gemma3 --resume      # after a crash
    accelerate launch -m latentwire.training.align --model gemma3 --mixed-precision bf16

``--model`` takes a tinyworld family, a tinyworld checkpoint folder, or a Hugging Face VLM id.
Without ``--anchors`` the job makes ``n_anchors`` tinyworld anchors of ``task`` itself.
Evaluation holds out ``eval_n`` anchors (tinyworld: a separate episode stream; a file: its last
lines) and scores the inference path (`pairs.evaluate_pair` with the family as both sides).

Status, measured on tinyworld (secret task, 64 held-out episodes, 2-core CPU shared with other
jobs, see docs/benchmarks.md), with the defaults and ``--steps 4000`` (9-15 min each): the
gemma3 codec carries the secret to gemma3 at 92 % exact match, 98 % of characters (text 100 %,
no message 0 % / 7 %, another episode's latent 0 % / 3 %); llava 0 % / 54 %, smolvlm 0 % / 61 %
(these two models read even a picture of the secret worse: 72 % and 66 % exact). Anchored to
that gemma3 codec (``--anchor-to``, 2000 steps), their decoders read gemma3's latents at 92 %
and 94 % of characters.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._jobs import config_parser, file_sha256, replaced_folder, warmup_cosine, write_jsonl
from .anchors import Anchor

__all__ = ["AlignConfig", "align", "main"]

CHECKPOINT_PREFIX = "checkpoint-"


@dataclass
class AlignConfig:
    """Everything an alignment run needs; `align` takes one.

    ``model``: tinyworld family, tinyworld checkpoint folder or Hugging Face VLM id.
    ``anchors``: anchor file (JSONL, `anchors.read_anchors`); None = ``n_anchors`` tinyworld
    anchors of ``task`` at secret ``length``. ``out``: output folder (``{family}`` is filled in).
    ``latent_steps``: m (1: the prompt's states and no extra forward pass; on tinyworld that beat
    m = 8 for gemma3 and smolvlm, trains twice as fast and makes the exchange 3x faster than text
    at 32 tokens: docs/benchmarks.md). ``image_slots``: k (16, a tinyworld screen).
    ``num_tokens`` / ``width``: K universal tokens of width D; ``codec_layers`` resampler blocks
    each side.
    ``continuation``: teacher reply tokens distilled per anchor. Loss weights: ``kl_weight``,
    ``hidden_weight``, ``scale_weight``, ``picture_weight`` (None: 1 for tinyworld models, whose
    pictures of text exist, else 0); ``gate_init`` the gate's raw value at the start (tanh(0) = 0
    would give the embeddings no gradient). ``steps`` total (fewer when
    ``max_seconds`` have passed); ``checkpoint_every`` steps a resumable checkpoint (0 = none);
    ``resume`` continues from the latest one in ``out``. ``mixed_precision``: ``no``, ``bf16``
    or ``fp16``. ``eval_every`` 0 = only the final eval, on ``eval_n`` held-out anchors.
    ``latent_noise``: Gaussian noise on the latent between encoder and decoder while training, in
    units of each latent entry's spread over the batch (`UniversalVisualCodec.forward`): a
    decoder trained on exact latents reads the slightly-off latents that hub maps deliver badly
    (measured on tinyworld at 0.3: worse, not better; docs/benchmarks.md).
    ``anchor_to``: the anchored scheme: a codec folder (``train codec`` output) of a family already
    in the hub, frozen; this family's encoder learns to speak to its decoder and this family's
    decoder learns to read its encoder, so the new codec lives in that codec's space.
    ``decoder_only`` (with ``anchor_to``): train only the decoder (no pass through the reference
    model, no reference replies); the encoder stays as initialised. For ``train hub-maps
    --decoder``, which takes only the decoder.
    """

    model: str = "gemma3"
    anchors: str | None = None
    out: str = "runs/codec/{family}"
    task: str = "secret"
    length: int = 8
    n_anchors: int = 2000
    latent_steps: int = 1
    image_slots: int = 16
    num_tokens: int = 8
    width: int = 64
    codec_layers: int = 1
    continuation: int = 12
    steps: int = 1500
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    kl_weight: float = 1.0
    hidden_weight: float = 1.0
    scale_weight: float = 0.0
    picture_weight: float | None = None
    gate_init: float = 1.0
    latent_noise: float = 0.0
    mixed_precision: str = "no"
    anchor_to: str | None = None
    decoder_only: bool = False
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100
    eval_n: int = 64
    checkpoint_every: int = 100
    resume: bool = False
    max_seconds: float | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        from latentwire.errors import ConfigError

        from latentwire.tinyworld.tasks import make_task

        if self.anchors is None:
            make_task(self.task, self.length)  # refuse unknown tasks and bad lengths now
        for name in ("latent_steps", "steps", "batch_size", "num_tokens", "width", "codec_layers",
                     "log_every", "eval_n", "image_slots", "continuation", "n_anchors"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("kl_weight", "hidden_weight", "scale_weight", "picture_weight", "grad_clip",
                     "checkpoint_every", "eval_every", "latent_noise"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.anchor_to is not None:  # recorded in align.json: absolute, readable from anywhere
            self.anchor_to = os.path.abspath(self.anchor_to)
        if self.decoder_only and self.anchor_to is None:
            raise ConfigError("decoder_only trains a decoder to read a frozen codec's encoder; it needs anchor_to")
        if self.latent_noise and self.anchor_to is not None:
            raise ConfigError("latent_noise applies to self-distillation; the anchored scheme (anchor_to) "
                              "trains without it")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")


# ---- batches ---------------------------------------------------------------------------------


def _pad(rows: list[list[int]], pad_id: int, device: Any) -> tuple[Any, Any]:
    """Right-pad id rows into ``(B, T)`` ids and attention mask."""
    import torch

    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return ids.to(device), mask.to(device)


@dataclass
class _Batch:
    sender: list[str]     # the senders' prompt texts
    teacher: tuple        # (ids, mask) of text-mode prompt + reply, right-padded
    student: tuple        # (ids, mask) of latent-mode prompt + reply
    teacher_pos: Any      # (B, A) positions whose logits predict the reply tokens
    student_pos: Any      # (B, A)
    reply_mask: Any       # (B, A) True at real reply tokens
    screens: list         # per anchor, its message as `screen_ids` (None: no picture for it)


def _make_batch(anchors: list[Anchor], replies: list[list[int]], party: Any, device: Any,
                pictures: bool) -> _Batch:
    import torch

    from latentwire.tinyworld.screen import screen_ids

    teacher = [p.input_ids for p in party.prompts([a.teacher for a in anchors])]
    student = [p.input_ids for p in party.prompts([a.student for a in anchors])]
    A = max(map(len, replies))
    reply_mask = torch.tensor([[j < len(r) for j in range(A)] for r in replies], device=device)

    def positions(prompts: list[list[int]]) -> Any:
        # Logits at position P-1+j predict reply token j; padded slots point anywhere valid.
        return torch.tensor([[len(p) - 1 + min(j, len(r) - 1) for j in range(A)]
                             for p, r in zip(prompts, replies)], device=device)

    screens: list = [None] * len(anchors)
    if pictures:
        fits = [len(party.tokenizer.encode(a.message, add_special_tokens=False)) <= party.n_slots
                for a in anchors]
        screens = [screen_ids(party.tokenizer, a.message, party.n_slots) if ok else None
                   for a, ok in zip(anchors, fits)]
    return _Batch(sender=[a.sender for a in anchors],
                  teacher=_pad([p + r for p, r in zip(teacher, replies)], party.pad_id, device),
                  student=_pad([p + r for p, r in zip(student, replies)], party.pad_id, device),
                  teacher_pos=positions(teacher), student_pos=positions(student), reply_mask=reply_mask,
                  screens=screens)


def _gather(x: Any, pos: Any) -> Any:
    """``x (B, T, F)`` at ``pos (B, A)`` -> ``(B, A, F)``."""
    return x.gather(1, pos[:, :, None].expand(-1, -1, x.shape[-1]))


# ---- the loss --------------------------------------------------------------------------------


def _loss(party: Any, codec: Any, batch: _Batch, config: AlignConfig, image_scale: float,
          generator: Any = None) -> tuple[Any, dict[str, float]]:
    """Self-distillation loss of one family's codec (sender and receiver are ``party``);
    ``generator`` draws the latent noise."""
    decoded = codec(*party.think(batch.sender), noise=config.latent_noise, generator=generator)
    return _receiver_loss(party, decoded, batch, config, image_scale)


def _receiver_loss(party: Any, decoded: Any, batch: _Batch, config: AlignConfig,
                   image_scale: float) -> tuple[Any, dict[str, float]]:
    """The loss of receiver ``party`` reading ``decoded`` at its slots against itself reading text."""
    import torch
    import torch.nn.functional as F

    model, adapter = party.model, party.adapter
    with torch.no_grad():
        ids, mask = batch.teacher
        out = model(**adapter.inject(model, ids, attention_mask=mask).kwargs, output_hidden_states=True)
        t_logits = _gather(out.logits.float(), batch.teacher_pos)  # (B, A, V)
        t_hidden = [_gather(h.float(), batch.teacher_pos) for h in out.hidden_states[1:]]
    ids, mask = batch.student
    inputs = adapter.inject(model, ids, decoded.embeddings, attention_mask=mask, gate=decoded.gate)
    out = model(**inputs.kwargs, output_hidden_states=True)
    s_logits = _gather(out.logits.float(), batch.student_pos)  # (B, A, V)
    s_hidden = [_gather(h.float(), batch.student_pos) for h in out.hidden_states[1:]]

    valid = batch.reply_mask.float()  # (B, A)
    n = valid.sum().clamp_min(1.0)
    t_logp, s_logp = F.log_softmax(t_logits, -1), F.log_softmax(s_logits, -1)
    kl = ((t_logp.exp() * (t_logp - s_logp)).sum(-1) * valid).sum() / n
    hidden = sum((((s - t) ** 2).mean(-1) * valid).sum() / n / (t ** 2).mean().clamp_min(1e-6)
                 for s, t in zip(s_hidden, t_hidden)) / len(t_hidden)
    norm = decoded.embeddings.float().norm(dim=-1).mean()  # (): pre-gate, the gate sets the mix
    scale = (norm / image_scale - 1.0) ** 2
    loss = config.kl_weight * kl + config.hidden_weight * hidden + config.scale_weight * scale
    picture = torch.zeros((), device=loss.device)
    rows = [i for i, ids in enumerate(batch.screens) if ids is not None]
    if config.picture_weight and rows:
        from latentwire.tinyworld.screen import screen_embeddings

        with torch.no_grad():
            target = screen_embeddings(model, [batch.screens[i] for i in rows]).float()  # (b, k, H)
        shown = decoded.gate * decoded.embeddings[rows].float()
        picture = ((shown - target) ** 2).mean() / (target ** 2).mean().clamp_min(1e-6)
        loss = loss + config.picture_weight * picture
    with torch.no_grad():
        match = ((t_logits.argmax(-1) == s_logits.argmax(-1)).float() * valid).sum() / n
    parts = {"kl": kl.item(), "hidden": float(hidden.detach()), "scale": scale.item(),
             "picture": float(picture.detach()), "embed_norm": norm.item(),
             "gate": float(decoded.gate.detach()), "token_match": match.item()}
    return loss, parts


# ---- the anchored scheme ---------------------------------------------------------------------


def _reference_party(folder: str, device: Any, family: str, config: AlignConfig) -> Any:
    """The frozen family a new codec is anchored to: its codec folder and the model it names."""
    import torch

    from latentwire.agents.bundle import ModelBundle
    from latentwire.errors import ConfigError

    from .pairs import codec_run, load_model

    codec, meta = codec_run(folder)
    if codec.config.family == family:
        raise ConfigError(f"anchor_to {folder} is a codec of {family} itself; anchor to another family")
    if (codec.config.num_tokens, codec.config.width) != (config.num_tokens, config.width):
        raise ConfigError(f"anchor_to {folder} has latents of {codec.config.num_tokens} x {codec.config.width}; "
                          f"this run makes {config.num_tokens} x {config.width}: the hub needs one shape")
    hub = codec.hub
    identity = torch.eye(hub.to_hub.weight.shape[0])
    if not (torch.equal(hub.to_hub.weight, identity) and torch.equal(hub.from_hub.weight, identity)):
        raise ConfigError(f"anchor_to {folder} has fitted hub maps; anchor to a codec whose space is the "
                          "hub space (a `train codec` output or the hub's reference family)")
    model, tokenizer = load_model(meta.get("model", codec.config.family))
    model.requires_grad_(False)
    codec.requires_grad_(False)
    party = ModelBundle(model.to(device).eval(), tokenizer, codec.to(device).eval(),
                        latent_steps=int(meta.get("latent_steps", config.latent_steps)))
    return party


def _anchored_pair(new: Any, reference: Any, decoder_only: bool = False) -> Any:
    """One module (so DDP syncs its gradients) running both directions through the frozen
    reference codec: new encoder -> reference decoder (None when ``decoder_only``), reference
    encoder -> new decoder."""
    from torch import nn

    class AnchoredPair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.new, self.reference = new, reference

        def forward(self, new_steps: Any, new_mask: Any, ref_steps: Any, ref_mask: Any) -> tuple[Any, Any]:
            to_reference = None if decoder_only else self.reference.decoder(
                self.new.encode_tokens(new_steps, new_mask, to_hub=False))
            to_new = self.new.decoder(self.reference.encode_tokens(ref_steps, ref_mask, to_hub=False))
            return to_reference, to_new

    return AnchoredPair()


# ---- checkpoints -----------------------------------------------------------------------------


def _save_checkpoint(out: Path, step: int, codec: Any, optimizer: Any, skipped: int) -> None:
    """Write ``checkpoint-<step>/`` in a scratch folder, move it into place, then point ``latest``
    at it (an atomic rename): a crash at any moment leaves the previous checkpoint usable."""
    import torch

    final = out / f"{CHECKPOINT_PREFIX}{step}"
    with replaced_folder(final) as scratch:
        codec.save_pretrained(scratch)
        torch.save(optimizer.state_dict(), scratch / "optimizer.pt")
        (scratch / "state.json").write_text(json.dumps({"step": step, "skipped_steps": skipped}) + "\n")
    pointer = out / ".latest.tmp"
    pointer.write_text(final.name + "\n")
    os.replace(pointer, out / "latest")
    for old in out.glob(f"{CHECKPOINT_PREFIX}*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(out: Path, codec: Any, optimizer: Any) -> tuple[int, int]:
    """Restore codec and optimizer from ``out/latest``; return ``(step, skipped steps)``."""
    import torch

    from latentwire.agents.codec import checkpoint as codec_files
    from latentwire.agents.errors import CodecCheckpointError

    pointer = out / "latest"
    if not pointer.is_file():
        raise CodecCheckpointError(str(out), "nothing to resume: no 'latest' checkpoint pointer")
    folder = out / pointer.read_text().strip()
    saved = codec_files.read_config(folder)
    if saved.to_dict() != codec.config.to_dict():
        diff = {k: (v, codec.config.to_dict().get(k)) for k, v in saved.to_dict().items()
                if codec.config.to_dict().get(k) != v}
        raise CodecCheckpointError(str(folder), f"holds a codec of another architecture than this run "
                                   f"(checkpoint vs run: {diff})")
    codec.load_checked(codec_files.read_tensors(folder), source=str(folder))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    state = json.loads((folder / "state.json").read_text())
    return int(state["step"]), int(state["skipped_steps"])


# ---- the job ---------------------------------------------------------------------------------


def _anchor_sets(config: AlignConfig) -> tuple[list[Anchor], list[Anchor]]:
    """``(train, eval)`` anchors: a file split at its last ``eval_n`` lines, or tinyworld streams."""
    from latentwire.errors import ConfigError

    from .anchors import read_anchors, tinyworld_anchors

    if config.anchors is None:
        return (tinyworld_anchors(config.task, config.n_anchors, length=config.length, seed=config.seed),
                tinyworld_anchors(config.task, config.eval_n, length=config.length, seed=config.seed + 1))
    anchors = read_anchors(config.anchors)
    if len(anchors) <= config.eval_n:
        raise ConfigError(f"{config.anchors} has {len(anchors)} anchors; eval_n={config.eval_n} are held "
                          "out for evaluation, so it needs more")
    train, held = anchors[:-config.eval_n], anchors[-config.eval_n:]
    return train, [a for a in held if a.answer is not None]


def align(config: AlignConfig) -> Path:
    """Run the alignment job described by ``config``; return the folder the codec was saved in.

    Checks the model, the anchors and (with ``resume``) the checkpoint before training starts.
    """
    import torch
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from latentwire.agents.bundle import ModelBundle
    from latentwire.agents.codec import CodecConfig, UniversalVisualCodec

    from .pairs import evaluate_pair, load_model, teacher_replies

    train_anchors, eval_anchors = _anchor_sets(config)  # bad anchors fail before any model loads
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    torch.manual_seed(config.seed)
    model, tokenizer = load_model(config.model)
    model.requires_grad_(False)
    model.eval()
    model.to(accelerator.device)
    from latentwire.agents.families import adapter_for

    adapter = adapter_for(model)
    from latentwire.tinyworld.tokenizer import TinyTokenizer

    if config.picture_weight is None:
        config.picture_weight = 1.0 if isinstance(tokenizer, TinyTokenizer) else 0.0
    pictures = config.picture_weight > 0
    if pictures and not isinstance(tokenizer, TinyTokenizer):
        from latentwire.errors import ConfigError

        raise ConfigError("picture_weight needs a tinyworld model (pictures of text are tinyworld's "
                          "screens); set it to 0 for other models")
    codec = UniversalVisualCodec(CodecConfig(family=adapter.family, hidden_size=adapter.hidden_size(model),
                                             num_tokens=config.num_tokens, width=config.width,
                                             num_layers=config.codec_layers, image_slots=config.image_slots,
                                             latent_steps=config.latent_steps))
    with torch.no_grad():
        codec.decoder.gate.fill_(config.gate_init)
    # The hub maps stay identity here (fitted later, across families): out of the optimiser and
    # out of DDP's gradient bookkeeping (they take no part in the loss).
    codec.hub.requires_grad_(False)
    if config.decoder_only:
        codec.encoder.requires_grad_(False)  # untrained, unused: out of the optimiser and of DDP
    codec.train()
    party = ModelBundle(model, tokenizer, codec, latent_steps=config.latent_steps)
    image_scale = adapter.embedding_scale(model).image
    ref = None if config.anchor_to is None else _reference_party(config.anchor_to, accelerator.device,
                                                                 adapter.family, config)
    ref_scale = None if ref is None else ref.adapter.embedding_scale(ref.model).image
    params = [p for p in codec.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98))
    out = Path(config.out.format(family=adapter.family))
    start, skipped = (0, 0)
    if config.resume:
        start, skipped = _load_checkpoint(out, codec, optimizer)
    trained, optimizer = accelerator.prepare(
        codec if ref is None else _anchored_pair(codec, ref.codec, config.decoder_only), optimizer)
    raw = accelerator.unwrap_model(trained) if ref is None else accelerator.unwrap_model(trained).new
    party.codec = raw

    main = accelerator.is_main_process
    with torch.no_grad():
        replies = teacher_replies(party, train_anchors, max_new_tokens=config.continuation)
        ref_replies = None if ref is None or config.decoder_only else teacher_replies(
            ref, train_anchors, max_new_tokens=config.continuation)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    metrics = (out / "metrics.jsonl").open("a" if config.resume else "w") if main else None
    began = time.perf_counter()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps,
               disable=not (main and config.progress), desc=f"codec {adapter.family}", mininterval=1.0)
    done, logged = start, []
    last_eval: dict[str, Any] = {}

    def run_eval() -> dict[str, Any]:
        if ref is None:
            return evaluate_pair(party, party, eval_anchors, space=raw.config.space, shuffled=True)
        # Anchored: both codecs live in the reference's space, which is the hub space (identity maps).
        if config.decoder_only:  # the encoder is untrained: only reference -> new means anything
            return {"to_new": evaluate_pair(ref, party, eval_anchors, shuffled=True)}
        return {**evaluate_pair(party, ref, eval_anchors, shuffled=True),
                "to_new": evaluate_pair(ref, party, eval_anchors, shuffled=False)}

    try:
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = config.lr * warmup_cosine(step, config.steps, config.warmup_steps,
                                                        config.min_lr_ratio)
            # A pure function of (seed, process, step): a resumed run draws what it would have.
            rng = random.Random(f"align|{config.seed}|{accelerator.process_index}|{step}")
            picks = [rng.randrange(len(train_anchors)) for _ in range(config.batch_size)]
            chosen = [train_anchors[i] for i in picks]
            batch = _make_batch(chosen, [replies[i] for i in picks], party, accelerator.device, pictures)
            with accelerator.autocast():
                if ref is None:
                    noise = (torch.Generator(accelerator.device).manual_seed(rng.randrange(2 ** 63))
                             if config.latent_noise else None)  # a generator only where noise is drawn
                    loss, parts = _loss(party, trained, batch, config, image_scale, noise)
                elif config.decoder_only:  # the reference encoder reads the same sender texts
                    _, to_new = trained(None, None, *ref.think(batch.sender))
                    loss, parts = _receiver_loss(party, to_new, batch, config, image_scale)
                else:
                    ref_batch = _make_batch(chosen, [ref_replies[i] for i in picks], ref, accelerator.device,
                                            pictures)
                    to_ref, to_new = trained(*party.think(batch.sender), *ref.think(ref_batch.sender))
                    enc_loss, enc_parts = _receiver_loss(ref, to_ref, ref_batch, config, ref_scale)
                    loss, parts = _receiver_loss(party, to_new, batch, config, image_scale)
                    loss = loss + enc_loss
                    parts.update({f"enc_{k}": v for k, v in enc_parts.items()})
            optimizer.zero_grad(set_to_none=True)
            finite = torch.isfinite(loss.detach()).float()
            if bool(accelerator.reduce(finite, reduction="min") > 0):
                accelerator.backward(loss)
                norm = accelerator.clip_grad_norm_(params, config.grad_clip) if config.grad_clip else None
                if norm is None or math.isfinite(float(norm)):
                    optimizer.step()
                else:
                    skipped += 1
            else:
                skipped += 1  # every process skips together, so the replicas stay equal
            logged.append({"loss": loss.item(), **parts})
            done = step + 1
            elapsed = time.perf_counter() - began
            if main and (done % config.log_every == 0 or done == config.steps):
                finite_rows = [r for r in logged if math.isfinite(r["loss"])] or logged
                mean = {k: round(sum(r[k] for r in finite_rows) / len(finite_rows), 5) for k in finite_rows[0]}
                logged.clear()
                bar.set_postfix(loss=f"{mean['loss']:.3f}", gate=f"{mean['gate']:.3f}")
                write_jsonl(metrics, {"step": done, **mean, "skipped_steps": skipped,
                                      "lr": round(optimizer.param_groups[0]["lr"], 7),
                                      "elapsed_s": round(elapsed, 2)})
            if config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.steps:
                accelerator.wait_for_everyone()
                if main:
                    _save_checkpoint(out, done, raw, optimizer, skipped)
            out_of_time = config.max_seconds is not None and elapsed >= config.max_seconds
            if main and config.eval_every and done % config.eval_every == 0 and done < config.steps \
                    and not out_of_time:
                last_eval = run_eval()
                shown = last_eval["latent"] if "latent" in last_eval else last_eval["to_new"]["latent"]
                bar.set_postfix(loss=f"{loss.item():.3f}", latent=shown["exact"])
                write_jsonl(metrics, {"step": done, "eval": last_eval,
                                      "elapsed_s": round(time.perf_counter() - began, 2)})
            if out_of_time:
                break
        accelerator.wait_for_everyone()
        if main:
            train_seconds = time.perf_counter() - began
            last_eval = run_eval()
            write_jsonl(metrics, {"step": done, "eval": last_eval,
                                  "elapsed_s": round(time.perf_counter() - began, 2)})
            raw.save_pretrained(out)  # anchored: identity maps, like the reference's (its space is the hub)
            meta = {"step": done, "skipped_steps": skipped, "config": asdict(config), "eval": last_eval,
                    "scheme": "self-distillation" if ref is None else f"anchored to {ref.family}"
                              + (" (decoder only)" if config.decoder_only else ""),
                    **({} if ref is None else {"anchor_sha256": file_sha256(Path(config.anchor_to) / "model.safetensors")}),
                    "eval_n": len(eval_anchors), "train_anchors": len(train_anchors),
                    "image_scale": image_scale, "gate": float(torch.tanh(raw.decoder.gate.detach())),
                    "train_seconds": round(train_seconds, 1), "processes": accelerator.num_processes}
            (out / "align.json").write_text(json.dumps(meta, indent=2) + "\n")
            if done >= config.steps:  # finished: the codec files are the product
                for old in out.glob(f"{CHECKPOINT_PREFIX}*"):
                    shutil.rmtree(old, ignore_errors=True)
                (out / "latest").unlink(missing_ok=True)
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()
    accelerator.wait_for_everyone()
    return out


def _parser() -> argparse.ArgumentParser:
    """One ``--flag`` per `AlignConfig` field."""
    return config_parser(AlignConfig, "latentwire train codec",
                         "Align one family's codec by label-free self-distillation.")


def main(argv: list[str] | None = None) -> int:
    """CLI entry: parse flags into an `AlignConfig`, run `align`, print the folder and eval."""
    args = vars(_parser().parse_args(argv))
    folder = align(AlignConfig(**args))
    meta = json.loads((folder / "align.json").read_text())
    print(folder)
    print(json.dumps({"step": meta["step"], "eval": meta["eval"], "train_seconds": meta["train_seconds"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
