"""``latentwire train codec``: align ONE family's codec by self-distillation, label-free or weakly supervised.

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
distance of the gated embeddings to the message's picture: what the model would see at its slots
if the message were shown to it as an image (0 turns it off).

Two variants, then: **label-free** (``picture_weight`` 0: pure self-distillation) and **weakly
supervised** (``picture_weight`` > 0), whose picture is chosen by ``picture_target``:

* ``screen`` (the default; tinyworld models only): tinyworld's picture of text, the message's own
  token embeddings over the blank image, one character per slot (`tinyworld.screen`);
* ``rendered`` (any family with a vision tower): the message drawn as pictures and read by the
  family's own vision tower and projector (`agents.families.picture`), minus the blank image's
  features, because the gated embeddings are added onto the blank image (``"add"`` merge). A
  model whose tower cannot give them is refused before training (`MissingVisionTower`).

``init`` starts from a codec folder instead of a new codec (its shape and shared-space maps come
with it). With ``anchor_to`` it continues one half against the frozen reference codec: ``decoder_only``
(reads the reference's encoder) or ``encoder_only`` (the encoder and its map into the shared space
speak through the reference's decoder to the reference model, which is then teacher and student;
``latent_weight`` holds the latent near the reference encoder's): the tune stage of `train ship`.

A message that does not fit its picture (a screen: more tokens than slots; rendered: smaller
than the smallest font) has no picture term.

The job runs on the training loop (`loop.TrainLoop`: accelerate, AdamW with warm-up and cosine
decay, ``mixed_precision``, clipping, non-finite steps skipped and counted, progress,
``metrics.jsonl``, a checkpoint every ``checkpoint_every`` steps and ``resume``); it supplies the
loss, the evaluation, the codec's shape (a checkpoint of another architecture is refused) and its
product: the codec as ``config.json`` + ``model.safetensors`` and ``align.json`` (run config,
step, skipped steps, final eval, wall time). Batches are a pure function of (seed, process,
step), so a resumed run ends where an uninterrupted one does.

Commands::

    latentwire train anchors --tinyworld secret --n 2000 --out anchors.jsonl
    # CPU
    latentwire train codec --model gemma3 --anchors anchors.jsonl --out runs/codec/gemma3
    latentwire train codec --model gemma3 --out runs/codec/gemma3 --resume      # after a crash
    # a real VLM, weakly supervised by the message rendered as an image through its own vision tower
    latentwire train codec --model HuggingFaceTB/SmolVLM-256M-Instruct --picture-target rendered
    # one GPU: the same command (accelerate picks the device), bf16 where supported
    latentwire train codec --model gemma3 --out runs/codec/gemma3 --mixed-precision bf16
    # several GPUs or processes
    accelerate launch -m latentwire.training.align --model gemma3 --mixed-precision bf16

``--model`` takes a tinyworld family, a tinyworld checkpoint folder, or a Hugging Face VLM id.
Without ``--anchors`` the job makes ``n_anchors`` tinyworld anchors of ``task`` itself.
Evaluation holds out ``eval_n`` anchors (tinyworld: a separate episode stream; a file: its last
lines) and scores the inference path (`pairs.evaluate_pair` with the family as both sides).
What the defaults reach on tinyworld is in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from latentwire.tinyworld.tasks import TASKS

from ._jobs import file_sha256
from .anchors import Anchor
from .loop import LoopResult, TrainConfig, TrainJob, TrainLoop, config_parser, default
from .pairs import MODEL_HELP, check_model_spec

__all__ = ["PICTURE_TARGETS", "AlignConfig", "align", "main"]

#: What the weakly supervised variant regresses the gated embeddings onto (`AlignConfig.picture_target`).
PICTURE_TARGETS = ("screen", "rendered")


@dataclass
class AlignConfig(TrainConfig):
    """Everything an alignment run needs; `align` takes one. Each field's help says what it does
    (``latentwire train codec --help``); the training fields are `TrainConfig`'s."""

    out_dir: str = default("out_dir", "runs/codec/{family}")
    steps: int = default("steps", 1500)
    warmup_steps: int = default("warmup_steps", 20)
    model: str = field(default="gemma3", metadata={"help": MODEL_HELP})
    anchors: str | None = field(default=None, metadata={
        "help": "anchor file (JSONL, `latentwire train anchors`); none: n_anchors tinyworld anchors of task"})
    task: str = field(default="secret", metadata={"help": "tinyworld task of the anchors made without a file",
                                                   "choices": list(TASKS)})
    length: int = field(default=8, metadata={"help": "secret length of those anchors"})
    n_anchors: int = field(default=2000, metadata={"help": "how many anchors to make without a file"})
    latent_steps: int = field(default=1, metadata={
        "help": "m latent thinking steps per message (1: the prompt's states, no extra forward pass; "
                "on tinyworld it beat m = 8: docs/benchmarks.md)"})
    image_slots: int = field(default=16, metadata={"help": "k image slots a message fills (16: a tinyworld screen)"})
    num_tokens: int = field(default=8, metadata={"help": "K universal tokens per latent"})
    width: int = field(default=64, metadata={"help": "D, the width of a universal token"})
    codec_layers: int = field(default=1, metadata={"help": "resampler blocks on each side of the codec"})
    continuation: int = field(default=12, metadata={"help": "teacher reply tokens distilled per anchor"})
    batch_size: int = field(default=16, metadata={"help": "anchors per step and process"})
    kl_weight: float = field(default=1.0, metadata={"help": "weight of KL(teacher || student) over the reply"})
    hidden_weight: float = field(default=1.0, metadata={"help": "weight of the hidden-state MSE (every layer)"})
    scale_weight: float = field(default=0.0, metadata={
        "help": "weight of the pull of the decoded embeddings' norm to real image embeddings'"})
    picture_weight: float | None = field(default=None, metadata={
        "help": "weight of the distance to the message's picture, the weakly supervised variant (0: label-free; "
                "none: 1 for tinyworld models and with picture_target rendered, else 0)"})
    picture_target: str = field(default="screen", metadata={
        "help": "the message's picture: screen (tinyworld models only: its token embeddings, one per slot) or "
                "rendered (any VLM: the message drawn as an image, through the family's own vision tower and "
                "projector)", "choices": list(PICTURE_TARGETS)})
    gate_init: float = field(default=1.0, metadata={
        "help": "the gate's raw value at the start: the scalar gate is its tanh (tanh(0) = 0 would give the "
                "embeddings no gradient), the message gate the sigmoid of it as its last layer's bias"})
    gate: str = field(default="scalar", metadata={
        "help": "the decoder's gate: scalar (one learned value) or message (an MLP of the received tokens "
                "and a sigmoid, the paper's)", "choices": ["scalar", "message"]})
    latent_noise: float = field(default=0.0, metadata={
        "help": "Gaussian noise on the latent between encoder and decoder while training, in units of each "
                "entry's spread over the batch (how it fared: docs/benchmarks.md, bench mas)"})
    anchor_to: str | None = field(default=None, metadata={
        "help": "the anchored scheme: a frozen codec folder of a family already in the shared space; this family's "
                "encoder learns to speak to its decoder and its decoder to read its encoder"})
    decoder_only: bool = field(default=False, metadata={
        "help": "with anchor_to: train only the decoder (for `train space-maps --decoder`)"})
    encoder_only: bool = field(default=False, metadata={
        "help": "with anchor_to and init: train only the encoder and its map into the shared space, end "
                "to end through the frozen reference decoder and model (tunes a family already mapped)"})
    latent_weight: float = field(default=0.0, metadata={
        "help": "with encoder_only: weight of the distance of this encoder's shared-space latent to the "
                "reference encoder's on the same sender text, relative to the latter's variance (what the "
                "map was fitted to; keeps tuned latents where the reference encoder's decoders read them)"})
    init: str | None = field(default=None, metadata={
        "help": "a codec folder to start from (its architecture, weights and shared-space maps), e.g. a "
                "family folder of a shared space; none: a new codec"})
    eval_n: int = field(default=64, metadata={"help": "held-out anchors of each evaluation"})

    def __post_init__(self) -> None:
        from latentwire.errors import ConfigError

        from latentwire.tinyworld.tasks import make_task

        super().__post_init__()
        check_model_spec(self.model)  # a typo fails here, before anchors, models or the network
        if self.anchors is None:
            make_task(self.task, self.length)  # refuse unknown tasks and bad lengths now
        for name in ("latent_steps", "batch_size", "num_tokens", "width", "codec_layers", "eval_n", "image_slots",
                     "continuation", "n_anchors"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("kl_weight", "hidden_weight", "scale_weight", "picture_weight", "latent_noise",
                     "latent_weight"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.picture_target not in PICTURE_TARGETS:
            raise ConfigError(f"picture_target must be one of {', '.join(PICTURE_TARGETS)}, "
                              f"got {self.picture_target!r}")
        if self.anchor_to is not None:  # recorded in align.json: absolute, readable from anywhere
            self.anchor_to = os.path.abspath(self.anchor_to)
        if self.decoder_only and self.anchor_to is None:
            raise ConfigError("decoder_only trains a decoder to read a frozen codec's encoder; it needs anchor_to")
        if self.encoder_only and (self.anchor_to is None or self.init is None):
            raise ConfigError("encoder_only tunes a mapped family's encoder through a frozen codec's "
                              "decoder; it needs anchor_to (that codec) and init (the family's codec with "
                              "its maps)")
        if self.latent_weight and not self.encoder_only:
            raise ConfigError("latent_weight keeps an encoder-only tune near the reference encoder; "
                              "set encoder_only")
        if self.encoder_only and self.decoder_only:
            raise ConfigError("encoder_only and decoder_only each train one half; set at most one")
        if self.init is not None:
            if not (Path(self.init) / "config.json").is_file():
                raise ConfigError(f"init {self.init} is not a codec folder (no config.json); pass a "
                                  "`train codec` output or a family folder of a shared space")
            self.init = os.path.abspath(self.init)
        if self.latent_noise and self.anchor_to is not None:
            raise ConfigError("latent_noise applies to self-distillation; the anchored scheme (anchor_to) "
                              "trains without it")


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
    pictures: list        # per anchor, its message's picture (`_picture`; None: no picture term)


def _picture(party: Any, message: str, target: str) -> Any:
    """What the ``target`` picture of ``message`` is made from: its `screen_ids` (screen) or its
    pictures (rendered); None when the message does not fit."""
    if target == "rendered":
        from latentwire.agents.families.picture import message_pictures

        return message_pictures(party.adapter, message, party.n_slots)
    from latentwire.tinyworld.screen import screen_ids

    if len(party.tokenizer.encode(message, add_special_tokens=False)) > party.n_slots:
        return None
    return screen_ids(party.tokenizer, message, party.n_slots)


def _picture_target(party: Any, pictures: list, target: str) -> Any:
    """``(b, k, H)`` float targets of the gated embeddings for these `_picture` values."""
    from latentwire.agents.families.picture import picture_features
    from latentwire.tinyworld.screen import screen_embeddings

    model = party.model
    if target == "screen":
        return screen_embeddings(model, pictures).float()
    shown = picture_features(party.adapter, model, pictures, party.n_slots).float()  # (b, k, H)
    # The merge adds the gated embeddings onto the blank image: the picture is blank + target.
    return shown - party.adapter.blank_image_embeddings(model, party.n_slots).float()  # (b, k, H)


def _make_batch(anchors: list[Anchor], replies: list[list[int]], party: Any, device: Any,
                picture_target: str | None) -> _Batch:
    import torch

    teacher = [p.input_ids for p in party.prompts([a.teacher for a in anchors])]
    student = [p.input_ids for p in party.prompts([a.student for a in anchors])]
    A = max(map(len, replies))
    reply_mask = torch.tensor([[j < len(r) for j in range(A)] for r in replies], device=device)

    def positions(prompts: list[list[int]]) -> Any:
        # Logits at position P-1+j predict reply token j; padded slots point anywhere valid.
        return torch.tensor([[len(p) - 1 + min(j, len(r) - 1) for j in range(A)]
                             for p, r in zip(prompts, replies)], device=device)

    pictures = [None if picture_target is None else _picture(party, a.message, picture_target)
                for a in anchors]
    return _Batch(sender=[a.sender for a in anchors],
                  teacher=_pad([p + r for p, r in zip(teacher, replies)], party.pad_id, device),
                  student=_pad([p + r for p, r in zip(student, replies)], party.pad_id, device),
                  teacher_pos=positions(teacher), student_pos=positions(student), reply_mask=reply_mask,
                  pictures=pictures)


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
    rows = [i for i, shown in enumerate(batch.pictures) if shown is not None]
    if config.picture_weight and rows:
        with torch.no_grad():
            shown = [batch.pictures[i] for i in rows]
            target = _picture_target(party, shown, config.picture_target)  # (b, k, H)
        gate = decoded.gate[rows] if decoded.gate.ndim else decoded.gate  # message gates: one per row
        shown = gate * decoded.embeddings[rows].float()
        picture = ((shown - target) ** 2).mean() / (target ** 2).mean().clamp_min(1e-6)
        loss = loss + config.picture_weight * picture
    with torch.no_grad():
        match = ((t_logits.argmax(-1) == s_logits.argmax(-1)).float() * valid).sum() / n
    parts = {"kl": kl.item(), "hidden": float(hidden.detach()), "scale": scale.item(),
             "picture": float(picture.detach()), "embed_norm": norm.item(),
             "gate": float(decoded.gate.detach().mean()), "token_match": match.item()}
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
                          f"this run makes {config.num_tokens} x {config.width}: the shared space needs one shape")
    maps = codec.shared
    identity = torch.eye(maps.to_shared.weight.shape[0])
    if not (torch.equal(maps.to_shared.weight, identity) and torch.equal(maps.from_shared.weight, identity)):
        raise ConfigError(f"anchor_to {folder} has fitted shared-space maps; anchor to a codec whose space is the "
                          "shared space (a `train codec` output or the shared space's reference family)")
    model, tokenizer = load_model(meta.get("model", codec.config.family))
    model.requires_grad_(False)
    codec.requires_grad_(False)
    party = ModelBundle(model.to(device).eval(), tokenizer, codec.to(device).eval(),
                        latent_steps=int(meta.get("latent_steps", config.latent_steps)))
    return party


def _anchored_pair(new: Any, reference: Any, decoder_only: bool = False, encoder_only: bool = False) -> Any:
    """One module (so DDP syncs its gradients) running both directions through the frozen
    reference codec: new encoder -> reference decoder (None when ``decoder_only``), reference
    encoder -> new decoder (None when ``encoder_only``), and the new encoder's tokens. With
    ``encoder_only`` those tokens go through its map into the shared space (the reference's space) first."""
    from torch import nn

    class AnchoredPair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.new, self.reference = new, reference

        def forward(self, new_steps: Any, new_mask: Any, ref_steps: Any,
                    ref_mask: Any) -> tuple[Any, Any, Any]:
            tokens = None if decoder_only else self.new.encode_tokens(new_steps, new_mask,
                                                                      to_shared=encoder_only)
            to_reference = None if decoder_only else self.reference.decoder(tokens)
            to_new = None if encoder_only else self.new.decoder(
                self.reference.encode_tokens(ref_steps, ref_mask, to_shared=False))
            return to_reference, to_new, tokens

    return AnchoredPair()


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


class _AlignJob(TrainJob):
    """The alignment loss, evaluation and final save on the training loop."""

    checkpoint_name = "alignment checkpoint"
    progress_keys = ("loss", "gate")

    def __init__(self, config: AlignConfig, party: Any, ref: Any, trained: Any, train_anchors: list[Anchor],
                 eval_anchors: list[Anchor], image_scale: float, picture_target: str | None, device: Any,
                 process: int) -> None:
        import torch

        from .pairs import teacher_replies

        self.config, self.party, self.ref, self.module = config, party, ref, trained
        self.codec = party.codec
        self.train_anchors, self.eval_anchors = train_anchors, eval_anchors
        self.image_scale, self.device, self.process = image_scale, device, process
        self.picture_target = picture_target  # None: no picture term (label-free)
        self.ref_scale = None if ref is None else ref.adapter.embedding_scale(ref.model).image
        self.name = f"codec {self.codec.config.family}"
        with torch.no_grad():  # the encoder-only tune's student and teacher are the reference alone
            self.replies = None if config.encoder_only else teacher_replies(
                party, train_anchors, max_new_tokens=config.continuation)
            self.ref_replies = None if ref is None or config.decoder_only else teacher_replies(
                ref, train_anchors, max_new_tokens=config.continuation)

    def step(self, step: int, model: Any) -> tuple[Any, dict[str, float]]:
        import torch

        config, party, ref = self.config, self.party, self.ref
        # A pure function of (seed, process, step): a resumed run draws what it would have.
        rng = random.Random(f"align|{config.seed}|{self.process}|{step}")
        picks = [rng.randrange(len(self.train_anchors)) for _ in range(config.batch_size)]
        chosen = [self.train_anchors[i] for i in picks]
        if config.encoder_only:  # this family speaks, the frozen reference listens
            ref_batch = _make_batch(chosen, [self.ref_replies[i] for i in picks], ref, self.device,
                                    self.picture_target)
            to_ref, _, tokens = model(*party.think(ref_batch.sender), None, None)
            loss, parts = _receiver_loss(ref, to_ref, ref_batch, config, self.ref_scale)
            if config.latent_weight:
                with torch.no_grad():
                    target = ref.codec.encode_tokens(*ref.think(ref_batch.sender), to_shared=False)
                latent = ((tokens - target) ** 2).mean() / target.var(0).mean().clamp_min(1e-6)
                loss = loss + config.latent_weight * latent
                parts["latent"] = float(latent.detach())
            return loss, parts
        batch = _make_batch(chosen, [self.replies[i] for i in picks], party, self.device, self.picture_target)
        if ref is None:
            noise = (torch.Generator(self.device).manual_seed(rng.randrange(2 ** 63))
                     if config.latent_noise else None)  # a generator only where noise is drawn
            return _loss(party, model, batch, config, self.image_scale, noise)
        if config.decoder_only:  # the reference encoder reads the same sender texts
            _, to_new, _ = model(None, None, *ref.think(batch.sender))
            return _receiver_loss(party, to_new, batch, config, self.image_scale)
        ref_batch = _make_batch(chosen, [self.ref_replies[i] for i in picks], ref, self.device, self.picture_target)
        to_ref, to_new, _ = model(*party.think(batch.sender), *ref.think(ref_batch.sender))
        enc_loss, enc_parts = _receiver_loss(ref, to_ref, ref_batch, config, self.ref_scale)
        loss, parts = _receiver_loss(party, to_new, batch, config, self.image_scale)
        parts.update({f"enc_{k}": v for k, v in enc_parts.items()})
        return loss + enc_loss, parts

    def evaluate(self, step: int) -> dict[str, Any]:
        from .pairs import evaluate_pair

        party, ref, anchors = self.party, self.ref, self.eval_anchors
        if ref is None:
            return {"eval": evaluate_pair(party, party, anchors, space=self.codec.config.space, shuffled=True)}
        # Anchored: both codecs live in the reference's space, which is the shared space (identity maps).
        if self.config.decoder_only:  # the encoder is untrained: only reference -> new means anything
            return {"eval": {"to_new": evaluate_pair(ref, party, anchors, shuffled=True)}}
        if self.config.encoder_only:  # the decoder is frozen: only new -> reference is trained
            return {"eval": evaluate_pair(party, ref, anchors, shuffled=True)}
        return {"eval": {**evaluate_pair(party, ref, anchors, shuffled=True),
                         "to_new": evaluate_pair(ref, party, anchors, shuffled=False)}}

    def state(self) -> dict[str, Any]:
        return {"codec": self.codec.config.to_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        from latentwire.agents.codec import CodecConfig
        from latentwire.agents.errors import CodecCheckpointError

        # max_steps is how long the anchors run, not the architecture; fields added since the
        # checkpoint was written compare at their defaults.
        saved, mine = state.get("codec", {}), self.codec.config.to_dict()
        if saved:
            saved = CodecConfig.from_dict(saved).to_dict()
        saved, mine = {**saved, "max_steps": 0}, {**mine, "max_steps": 0}
        if saved != mine:
            diff = {k: (v, mine.get(k)) for k, v in saved.items() if mine.get(k) != v}
            raise CodecCheckpointError(self.config.out_dir, f"holds a codec of another architecture than this run "
                                       f"(checkpoint vs run: {diff})")

    def save(self, out: Path, result: LoopResult) -> None:
        import torch

        config, ref, codec = self.config, self.ref, self.codec
        codec.save_pretrained(out)  # anchored: identity maps, like the reference's (its space is the shared space)
        meta = {"step": result.step, "skipped_steps": result.skipped_steps, "config": asdict(config),
                "eval": result.eval.get("eval", {}),
                "scheme": "self-distillation" if ref is None else f"anchored to {ref.family}"
                          + (" (decoder only)" if config.decoder_only else "")
                          + (" (encoder only)" if config.encoder_only else ""),
                **({} if ref is None else {"anchor_sha256": file_sha256(Path(config.anchor_to) / "model.safetensors")}),
                **({} if config.init is None else
                   {"init_sha256": file_sha256(Path(config.init) / "model.safetensors")}),
                "eval_n": len(self.eval_anchors), "train_anchors": len(self.train_anchors),
                "image_scale": self.image_scale, "gate": codec.decoder.resting_gate(),
                "train_seconds": result.train_seconds, "processes": result.processes}
        (out / "align.json").write_text(json.dumps(meta, indent=2) + "\n")


def align(config: AlignConfig) -> Path:
    """Run the alignment job described by ``config``; return the folder the codec was saved in.

    Checks the model, the anchors and (with ``resume``) the checkpoint before training starts.
    """
    import torch

    from latentwire.agents.bundle import ModelBundle
    from latentwire.agents.codec import CodecConfig, UniversalVisualCodec
    from latentwire.agents.families import adapter_for
    from latentwire.agents.families.picture import check_picture_path
    from latentwire.tinyworld.tokenizer import TinyTokenizer

    from .pairs import load_model

    train_anchors, eval_anchors = _anchor_sets(config)  # bad anchors fail before any model loads
    loop = TrainLoop(config)
    accelerator = loop.accelerator
    torch.manual_seed(config.seed)
    model, tokenizer = load_model(config.model)
    model.requires_grad_(False)
    model.eval()
    model.to(accelerator.device)
    adapter = adapter_for(model)
    rendered = config.picture_target == "rendered"
    if config.picture_weight is None:
        config.picture_weight = 1.0 if rendered or isinstance(tokenizer, TinyTokenizer) else 0.0
    picture_target = config.picture_target if config.picture_weight > 0 else None
    if picture_target == "screen" and not isinstance(tokenizer, TinyTokenizer):
        from latentwire.errors import ConfigError

        raise ConfigError("picture_target 'screen' needs a tinyworld model (screens are tinyworld's pictures of "
                          "text); set picture_target=rendered (the message drawn as an image, through the model's "
                          "vision tower) or picture_weight=0")
    if picture_target == "rendered":  # a model whose tower cannot give the target fails here, not mid-run
        check_picture_path(adapter, model, config.image_slots)
    if config.init is not None:
        codec = _init_codec(config, adapter.family, adapter.hidden_size(model))
    else:
        codec = UniversalVisualCodec(CodecConfig(
            family=adapter.family, hidden_size=adapter.hidden_size(model), num_tokens=config.num_tokens,
            width=config.width, num_layers=config.codec_layers, image_slots=config.image_slots,
            latent_steps=config.latent_steps, gate=config.gate))
        codec.decoder.set_gate(config.gate_init)
    # The shared-space maps stay as they are here (fitted across families by `train space-maps`): out of the
    # optimiser and out of DDP's gradient bookkeeping (they take no part in the loss), except the map
    # into the shared space of an encoder-only tune, which is what it trains with the encoder.
    codec.shared.requires_grad_(False)
    if config.decoder_only:
        codec.encoder.requires_grad_(False)  # untrained, unused: out of the optimiser and of DDP
    if config.encoder_only:
        codec.decoder.requires_grad_(False)  # reads the reference's encoder: not this job's
        codec.shared.to_shared.requires_grad_(True)
    codec.train().to(accelerator.device)
    party = ModelBundle(model, tokenizer, codec, latent_steps=config.latent_steps)
    if not config.decoder_only:  # the encoder trains on these anchors: it refuses longer reasoning
        codec.config.max_steps = max(codec.config.max_steps, _longest_reasoning(party, train_anchors))
    ref = None if config.anchor_to is None else _reference_party(config.anchor_to, accelerator.device,
                                                                 adapter.family, config)
    if ref is not None and picture_target == "rendered":  # the reference reads its pictures too
        check_picture_path(ref.adapter, ref.model, ref.n_slots)
    trained = codec if ref is None else _anchored_pair(codec, ref.codec, config.decoder_only,
                                                       config.encoder_only)
    job = _AlignJob(config, party, ref, trained, train_anchors, eval_anchors,
                    adapter.embedding_scale(model).image, picture_target, accelerator.device,
                    accelerator.process_index)
    out = Path(config.out_dir.format(family=adapter.family))
    loop.run(job, out)
    return out


def _longest_reasoning(party: Any, anchors: list[Anchor]) -> int:
    """The most vectors ``party``'s encoder reads for any of ``anchors``: the sender prompt's tokens
    (`latent_io.reason` reads them all) and the latent steps."""
    texts = sorted({a.sender for a in anchors})
    return max(len(p.input_ids) for p in party.prompts(texts)) + party.latent_steps


def _init_codec(config: AlignConfig, family: str, hidden_size: int) -> Any:
    """The codec in ``config.init``, checked against the model; the run's codec shape fields are
    set to its shape (recorded in align.json as what ran)."""
    from latentwire.agents.codec import UniversalVisualCodec
    from latentwire.errors import ConfigError

    codec = UniversalVisualCodec.from_pretrained(config.init)
    c = codec.config
    if c.family != family or c.hidden_size != hidden_size:
        raise ConfigError(f"init {config.init} is a codec of {c.family} (hidden size {c.hidden_size}); the "
                          f"model is {family} (hidden size {hidden_size}): start from a codec of this model")
    config.num_tokens, config.width, config.codec_layers = c.num_tokens, c.width, c.num_layers
    config.image_slots = c.image_slots
    config.latent_steps = c.latent_steps or config.latent_steps  # 0: a codec that did not record it
    return codec.float()


def _parser() -> Any:
    """One ``--flag`` per `AlignConfig` field, with its help, default and choices."""
    return config_parser(AlignConfig, "latentwire train codec",
                         "Align one family's codec by self-distillation (label-free or weakly supervised).")


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
