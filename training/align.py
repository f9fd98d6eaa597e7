"""Codec alignment for ONE family: label-free self-distillation through the frozen model.

The model (a tinyworld checkpoint that already reads and writes the task messages as TEXT) stays
frozen; only its `UniversalVisualCodec` trains, with gradients flowing *through* the model into
the codec. For each episode of a batch:

* **sender side**: the model reads the sender's prompt (blank image) and takes ``latent_steps``
  latent thinking steps (`latent_io.think`, no gradient needed there); the codec encodes them
  into K universal tokens and decodes those into k visual embeddings plus the gate, all in the
  family's own codec space (``codec.forward``; the hub maps stay out of self-distillation);
* **teacher**: the same model reads the receiver's TEXT-mode prompt (the sender's message in
  it, blank image), teacher-forced on the gold answer + ``<eos>``, without gradient;
* **student**: the same model reads the receiver's LATENT-mode prompt (message lines left out)
  with the decoded embeddings added at the image slots (``adapter.inject(..., gate=gate)``,
  add mode), teacher-forced on the same answer tokens.

Loss (answer positions only) = ``kl_weight`` * KL(teacher || student) of the next-token
distributions + ``hidden_weight`` * MSE between the student's and teacher's hidden states
(every layer, normalised by the teacher's mean square) + ``scale_weight`` * a term that pulls the
decoded embeddings' mean norm to the norm of real (blank) image embeddings
(``adapter.embedding_scale(model).image``). AdamW on the codec only. The decoder's gate is
``tanh(g)`` with ``g = 0`` at init: in add mode ``g`` does get a gradient, but the embeddings get
none while the gate is exactly 0, so training starts with ``g = gate_init`` (slightly open).

Evaluation is the inference path itself: the sender's latent (encoded in the family space)
goes through `latent_io.listen` into the receiver's image slots, greedy decoding; reported next
to text mode (the message in the prompt) and no message (latent-mode prompt, blank image).

Commands (700 steps at batch 32 take ~1.5 min for gemma3, ~1.1 min for qwen2_5_vl on 2 CPU
cores)::

    # CPU
    python -m latentwire.training.align --family gemma3 --steps 700
    # one GPU (accelerate picks it up)
    python -m latentwire.training.align --family qwen2_5_vl --steps 2000 --batch-size 128
    # several GPUs / processes (each draws its own batches; eval and save on the main process)
    accelerate launch -m latentwire.training.align --family gemma3 --steps 2000

Status, measured (secret task, length 8, 64 held-out episodes, 2-core CPU): the job runs and
its loss falls (about 7.3 -> 3.6 for gemma3 over 2000 steps, gate 0.1 -> 0.7), but the codec
does not yet carry the secret: latent-mode exact match 0% (per character 21% after 700 steps,
35% after 2000) against 97% in text mode; qwen2_5_vl 0% (10%). Replacing the sender's steps by
the secret's own token embeddings still reached only ~7% per character, so the bottleneck is
steering the frozen receiver through its image slots (its pre-training only ever saw a blank
image there), not the sender.

From Python::

    from latentwire.training.align import AlignConfig, align
    folder = align(AlignConfig(family="gemma3", steps=700))
    codec = UniversalVisualCodec.from_pretrained(folder)

The output folder holds the codec (``config.json`` + ``model.safetensors``, `save_pretrained`),
``align.json`` (run config, step, final eval: latent / text / no-message exact match and
per-character accuracy, wall time) and ``metrics.jsonl`` (one line per log step: step, loss and
its parts, gate, lr, elapsed seconds; eval lines add ``eval``).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._jobs import config_parser, warmup_cosine, write_jsonl

__all__ = ["AlignConfig", "align", "evaluate_codec", "main"]


@dataclass
class AlignConfig:
    """Everything an alignment run needs; `align` takes one.

    ``family``: a tinyworld family (its pre-trained checkpoint is loaded with
    `load_pretrained`), or ``checkpoint`` a tinyworld checkpoint folder to load instead.
    ``task`` / ``length``: the tinyworld task and secret length the episodes come from.
    ``latent_steps``: m, the sender's latent thinking steps. ``image_slots``: k, the decoder's
    visual embeddings (None = the family's default image, as `pipeline.default_codec`).
    ``num_tokens`` / ``width``: K universal tokens of width D; ``codec_layers`` resampler blocks
    in the encoder and again in the decoder. Loss weights: ``kl_weight``,
    ``hidden_weight``, ``scale_weight``. ``gate_init``: the gate's raw parameter at the start.
    ``steps`` total steps, or fewer when ``max_seconds`` of training have passed.
    ``eval_every`` 0 = only the final eval, on ``eval_n`` held-out episodes (seed ``seed + 1``).
    """

    family: str = "gemma3"
    checkpoint: str | None = None
    task: str = "secret"
    length: int = 8
    latent_steps: int = 4
    image_slots: int | None = None
    num_tokens: int = 8
    width: int = 64
    codec_layers: int = 1
    steps: int = 700
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    kl_weight: float = 1.0
    hidden_weight: float = 1.0
    scale_weight: float = 0.1
    gate_init: float = 0.1
    seed: int = 0
    out_dir: str = "runs/align/{family}"
    log_every: int = 10
    eval_every: int = 100
    eval_n: int = 64
    max_seconds: float | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        from latentwire.errors import ConfigError

        from .tinyworld.models import FAMILIES
        from .tinyworld.tasks import make_task

        if self.checkpoint is None and self.family not in FAMILIES:
            raise ConfigError(f"tinyworld has no family {self.family!r}; supported: {', '.join(FAMILIES)}")
        make_task(self.task, self.length)  # refuse unknown tasks and bad lengths now
        for name in ("latent_steps", "steps", "batch_size", "num_tokens", "width", "codec_layers",
                     "log_every", "eval_n"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.out_dir = self.out_dir.format(family=self.family)


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
    sender: Any           # list[Prompt]: the senders' prompts (one sender per episode)
    teacher: tuple        # (ids, mask) of text-mode receiver prompt + answer, right-padded
    student: tuple        # (ids, mask) of latent-mode receiver prompt + answer
    teacher_pos: Any      # (B, A) positions whose logits predict the answer tokens
    student_pos: Any      # (B, A)
    answer_mask: Any      # (B, A) True at real answer tokens (answer + eos)


def _make_batch(episodes: list[Any], adapter: Any, tokenizer: Any, n_slots: int, device: Any) -> _Batch:
    import torch

    from .tinyworld.tokenizer import EOS_ID, PAD_ID

    senders, teacher, student, answers = [], [], [], []
    for ep in episodes:
        if len(ep.senders) != 1:
            raise ValueError(f"alignment needs one-sender tasks; {ep.task!r} has {len(ep.senders)}")
        name, receiver = ep.senders[0].name, ep.receiver.name
        senders.append(adapter.build_prompt(tokenizer, ep.prompt(name), n_slots))
        teacher.append(adapter.build_prompt(tokenizer, ep.prompt(receiver), n_slots).input_ids)
        student.append(adapter.build_prompt(tokenizer, ep.prompt(receiver, mode="latent"), n_slots).input_ids)
        answers.append(tokenizer.encode(ep.answer, add_special_tokens=False) + [EOS_ID])
    A = max(map(len, answers))
    answer_mask = torch.tensor([[j < len(a) for j in range(A)] for a in answers], device=device)

    def positions(prompts: list[list[int]]) -> Any:
        # Logits at position P-1+j predict answer token j; padded answer slots point anywhere valid.
        return torch.tensor([[len(p) - 1 + min(j, len(a) - 1) for j in range(A)]
                             for p, a in zip(prompts, answers)], device=device)

    return _Batch(sender=senders,
                  teacher=_pad([p + a for p, a in zip(teacher, answers)], PAD_ID, device),
                  student=_pad([p + a for p, a in zip(student, answers)], PAD_ID, device),
                  teacher_pos=positions(teacher), student_pos=positions(student), answer_mask=answer_mask)


def _gather(x: Any, pos: Any) -> Any:
    """``x (B, T, F)`` at ``pos (B, A)`` -> ``(B, A, F)``."""
    return x.gather(1, pos[:, :, None].expand(-1, -1, x.shape[-1]))


# ---- the loss --------------------------------------------------------------------------------


def _sender_steps(model: Any, adapter: Any, prompts: list[Any], m: int) -> Any:
    """The senders' m latent thinking steps ``(B, m, H)`` (no gradient: the model is frozen)."""
    import torch

    from latentwire.agents.latent_io import _prompt_batch, think

    from .tinyworld.tokenizer import PAD_ID

    device = model.get_input_embeddings().weight.device
    ids, attention = _prompt_batch(prompts, PAD_ID, device)
    with torch.no_grad():
        return think(model, adapter, adapter.inject(model, ids, attention_mask=attention), m).float()


def _loss(model: Any, adapter: Any, codec: Any, batch: _Batch, config: AlignConfig,
          image_scale: float) -> tuple[Any, dict[str, float]]:
    import torch
    import torch.nn.functional as F

    steps = _sender_steps(model, adapter, batch.sender, config.latent_steps)  # (B, m, H)
    decoded = codec(steps)  # embeddings (B, k, H), gate ()
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

    valid = batch.answer_mask.float()  # (B, A)
    n = valid.sum().clamp_min(1.0)
    t_logp, s_logp = F.log_softmax(t_logits, -1), F.log_softmax(s_logits, -1)
    kl = ((t_logp.exp() * (t_logp - s_logp)).sum(-1) * valid).sum() / n
    hidden = sum((((s - t) ** 2).mean(-1) * valid).sum() / n / (t ** 2).mean().clamp_min(1e-6)
                 for s, t in zip(s_hidden, t_hidden)) / len(t_hidden)
    norm = decoded.embeddings.float().norm(dim=-1).mean()  # (): pre-gate, the gate sets the mix
    scale = (norm / image_scale - 1.0) ** 2
    loss = config.kl_weight * kl + config.hidden_weight * hidden + config.scale_weight * scale
    with torch.no_grad():
        match = ((t_logits.argmax(-1) == s_logits.argmax(-1)).float() * valid).sum() / n
    parts = {"kl": kl.item(), "hidden": float(hidden.detach()), "scale": scale.item(),
             "embed_norm": norm.item(), "gate": float(decoded.gate.detach()), "token_match": match.item()}
    return loss, parts


# ---- evaluation ------------------------------------------------------------------------------


def evaluate_codec(model: Any, tokenizer: Any, codec: Any, episodes: list[Any], *, latent_steps: int,
                   n_slots: int | None = None, batch_size: int = 64) -> dict[str, dict[str, float]]:
    """Exact match / per-character accuracy of the receiver in three conditions, via `listen`.

    ``latent``: the sender's latent (its steps encoded by ``codec`` into the family's codec
    space) decoded at the receiver's image slots, latent-mode prompt; ``text``: the sender's
    gold text message in the prompt, blank image; ``none``: latent-mode prompt, blank image.
    """
    import torch

    from latentwire import Latent
    from latentwire.agents.families import adapter_for
    from latentwire.agents.latent_io import listen

    from .tinyworld.tasks import mean_score
    from .tinyworld.tokenizer import EOS_ID, PAD_ID

    adapter = adapter_for(model)
    n_slots = n_slots or codec.config.image_slots
    answers: dict[str, list[str]] = {"latent": [], "text": [], "none": []}
    was_training = codec.training
    codec.eval()
    try:
        for start in range(0, len(episodes), batch_size):
            chunk = episodes[start:start + batch_size]
            batch = _make_batch(chunk, adapter, tokenizer, n_slots, model.device)
            longest = max(len(tokenizer.encode(ep.answer, add_special_tokens=False)) for ep in chunk) + 4
            kw = {"max_new_tokens": longest, "pad_id": PAD_ID, "eos_id": EOS_ID}
            with torch.no_grad():
                steps = _sender_steps(model, adapter, batch.sender, latent_steps)
                tokens = codec.encode_tokens(steps, to_hub=False)  # (B, K, D), family space
            received = [[Latent(t.detach().cpu(), space=codec.config.space, family=codec.config.family)]
                        for t in tokens]
            receiver = [ep.receiver.name for ep in chunk]
            latent_prompts = [adapter.build_prompt(tokenizer, ep.prompt(r, mode="latent"), n_slots)
                              for ep, r in zip(chunk, receiver)]
            text_prompts = [adapter.build_prompt(tokenizer, ep.prompt(r), n_slots)
                            for ep, r in zip(chunk, receiver)]
            for name, prompts, got in (("latent", latent_prompts, received), ("text", text_prompts, None),
                                       ("none", latent_prompts, None)):
                ids = listen(model, adapter, codec, prompts, received=got, **kw)
                answers[name] += [tokenizer.decode(a) for a in ids]
    finally:
        codec.train(was_training)
    gold = [ep.answer for ep in episodes]
    result = {}
    for name, predicted in answers.items():
        s = mean_score(predicted, gold)
        result[name] = {"exact": round(s.exact, 4), "char": round(s.char, 4)}
    return result


# ---- the job ---------------------------------------------------------------------------------


def _lr_factor(step: int, config: AlignConfig) -> float:
    return warmup_cosine(step, config.steps, config.warmup_steps, config.min_lr_ratio)


def _load_model(config: AlignConfig) -> tuple[Any, Any]:
    from .tinyworld import checkpoints

    if config.checkpoint:
        return checkpoints.load_checkpoint(config.checkpoint, family=config.family)
    return checkpoints.load_pretrained(config.family)


def align(config: AlignConfig) -> Path:
    """Run the alignment job described by ``config``; return the folder the codec was saved in.

    Works on CPU, one GPU or several processes (``accelerate launch``); each process draws its
    own episodes, eval, metrics and saving happen on the main process.
    """
    import torch
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from latentwire.agents.codec import CodecConfig, UniversalVisualCodec
    from latentwire.agents.families import adapter_for

    from .tinyworld.tasks import make_task

    accelerator = Accelerator()
    torch.manual_seed(config.seed)
    model, tokenizer = _load_model(config)
    model.requires_grad_(False)
    model.eval()
    model.to(accelerator.device)
    adapter = adapter_for(model)
    n_slots = config.image_slots or adapter.default_slots()
    codec = UniversalVisualCodec(CodecConfig(family=adapter.family, hidden_size=adapter.hidden_size(model),
                                             num_tokens=config.num_tokens, width=config.width,
                                             num_layers=config.codec_layers, image_slots=n_slots))
    with torch.no_grad():
        codec.decoder.gate.fill_(config.gate_init)  # tanh(0) = 0 would give the embeddings no gradient
    # The hub maps stay identity here (fitted later, across families): out of the optimiser, and
    # out of DDP's gradient bookkeeping (they take no part in the loss).
    codec.hub.requires_grad_(False)
    codec.train()
    image_scale = adapter.embedding_scale(model).image
    params = [p for p in codec.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98))
    codec, optimizer = accelerator.prepare(codec, optimizer)
    raw = accelerator.unwrap_model(codec)

    task = make_task(config.task, config.length)
    eval_episodes = task.episodes(config.eval_n, seed=config.seed + 1)
    rng = random.Random(f"align|{config.seed}|{accelerator.process_index}")

    main = accelerator.is_main_process
    out = Path(config.out_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    metrics = (out / "metrics.jsonl").open("w") if main else None
    began = time.perf_counter()
    bar = tqdm(range(config.steps), total=config.steps, disable=not (main and config.progress),
               desc=f"align {config.family}", mininterval=1.0)
    done, logged = 0, []
    last_eval: dict[str, Any] = {}

    def run_eval() -> dict[str, Any]:
        return evaluate_codec(model, tokenizer, raw, eval_episodes, latent_steps=config.latent_steps,
                              n_slots=n_slots)

    try:
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = config.lr * _lr_factor(step, config)
            episodes = [task.episode(seed=config.seed, index=rng.randrange(1 << 40))
                        for _ in range(config.batch_size)]
            batch = _make_batch(episodes, adapter, tokenizer, n_slots, accelerator.device)
            loss, parts = _loss(model, adapter, codec, batch, config, image_scale)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if config.grad_clip:
                accelerator.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            logged.append({"loss": loss.item(), **parts})
            done = step + 1
            elapsed = time.perf_counter() - began
            if main and (done % config.log_every == 0 or done == config.steps):
                mean = {k: round(sum(r[k] for r in logged) / len(logged), 5) for k in logged[0]}
                logged.clear()
                bar.set_postfix(loss=f"{mean['loss']:.3f}", gate=f"{mean['gate']:.3f}")
                write_jsonl(metrics, {"step": done, **mean, "lr": round(optimizer.param_groups[0]["lr"], 7),
                                 "elapsed_s": round(elapsed, 2)})
            out_of_time = config.max_seconds is not None and elapsed >= config.max_seconds
            if main and config.eval_every and done % config.eval_every == 0 and done < config.steps \
                    and not out_of_time:
                last_eval = run_eval()
                bar.set_postfix(loss=f"{loss.item():.3f}", latent=last_eval["latent"]["exact"])
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
            raw.save_pretrained(out)
            meta = {"step": done, "config": asdict(config), "eval": last_eval,
                    "eval_n": len(eval_episodes), "image_scale": image_scale,
                    "gate": float(torch.tanh(raw.decoder.gate.detach())), "train_seconds": round(train_seconds, 1),
                    "processes": accelerator.num_processes}
            (out / "align.json").write_text(json.dumps(meta, indent=2) + "\n")
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()
    accelerator.wait_for_everyone()
    return out


def _parser() -> argparse.ArgumentParser:
    """One ``--flag`` per `AlignConfig` field."""
    return config_parser(AlignConfig, "python -m latentwire.training.align", "Align one family's codec by self-distillation.")


def main(argv: list[str] | None = None) -> Path:
    """CLI entry: parse flags into an `AlignConfig`, run `align`, print the folder and eval."""
    args = vars(_parser().parse_args(argv))
    folder = align(AlignConfig(**args))
    meta = json.loads((folder / "align.json").read_text())
    print(folder)
    print(json.dumps({"step": meta["step"], "eval": meta["eval"], "train_seconds": meta["train_seconds"]}))
    return folder


if __name__ == "__main__":
    main()
