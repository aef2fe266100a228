"""``edgeasr-train mlm``: train the BERT-style teacher (masked LM) on corpus text.

The teacher must use the *ASR* tokenizer (its distributions are distilled into the ASR model's
label space), so ``--tokenizer`` is required. Sentences are ``w1 .. wk`` with no special tokens;
each step masks 15 % of the tokens of a random batch (at least one per sentence; of those 80 %
become ``[MASK]``, 10 % a random label, 10 % stay, as in BERT) and minimizes the cross-entropy
at the chosen positions.

Evaluation reports two numbers on held-out text:

* ``acc15``: masked-token accuracy with a fixed (seeded) 15 % of the positions replaced by
  ``[MASK]``: the standard MLM figure;
* ``acc1``: accuracy when exactly one token at a time is masked, the setting in which the
  teacher produces its KD soft labels (:meth:`BertMLM.position_logits`).

Training is bounded by steps *and* wall-clock minutes (shared machine); ``DIR/mlm.pt`` is
rewritten atomically at every evaluation, so a killed run keeps its last evaluated model, and
``--resume`` continues from it.

Checkpoint format (``torch.load(weights_only=True)``-safe plain data)::

    {"format": "edgeasr-bert", "config": BertConfig dict, "model": state_dict,
     "tokenizer": sentencepiece model bytes, "step": int, "dev": {...metrics},
     "optimizer": dict (training only)}
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from edgeasr.tokenizer import Tokenizer

from ..checkpoint import load_text_model, save_text_model
from .model import PAD_ID, BertConfig, BertMLM

__all__ = ["MLMTrainConfig", "add_arguments", "batch_tokens", "evaluate", "load_mlm",
           "mask_tokens", "masked_accuracy", "mlm_loss", "run", "save_mlm",
           "single_mask_accuracy", "train_mlm"]

HELP = "train the BERT-style masked LM (interAED-KD teacher) on corpus text, ASR vocabulary"
FORMAT = "edgeasr-bert"


@dataclass
class MLMTrainConfig:
    """Optimization schedule: AdamW, linear warmup then cosine decay to ``lr / 10``."""

    steps: int = 20000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    mask_prob: float = 0.15
    eval_every: int = 500
    eval_sentences: int = 500  # held-out sentences per evaluation (0 = all)
    max_minutes: float = 0.0  # 0 = no wall-clock limit
    seed: int = 0

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        frac = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def batch_tokens(seqs: Sequence[list[int]]) -> tuple[Tensor, Tensor]:
    """Pad sentences with :data:`PAD_ID`: ``(tokens [N, L], lengths [N])``."""
    if not seqs or any(len(s) == 0 for s in seqs):
        raise ValueError("batch_tokens needs a non-empty list of non-empty sentences")
    lengths = torch.tensor([len(s) for s in seqs])
    tokens = torch.full((len(seqs), int(lengths.max())), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s)
    return tokens, lengths


def mask_tokens(
    tokens: Tensor, lengths: Tensor, cfg: BertConfig, mask_prob: float,
    generator: torch.Generator, bert_mix: bool = True,
) -> tuple[Tensor, Tensor]:
    """Choose positions to predict and corrupt them: ``(inputs [N, L], selected [N, L] bool)``.

    Each real position is selected with ``mask_prob``; a sentence with none selected gets one
    (so every sentence teaches something). ``bert_mix``: selected tokens become ``[MASK]`` /
    a random label / themselves with 80/10/10 %; otherwise all become ``[MASK]`` (evaluation).
    """
    n, length = tokens.shape
    valid = torch.arange(length)[None, :] < lengths[:, None]
    selected = (torch.rand(n, length, generator=generator) < mask_prob) & valid
    none = ~selected.any(dim=1)
    if bool(none.any()):
        pick = (torch.rand(n, generator=generator) * lengths).long().clamp_max(length - 1)
        selected[none, pick[none]] = True
    inputs = tokens.clone()
    if not bert_mix:
        inputs[selected] = cfg.mask_id
        return inputs, selected
    r = torch.rand(n, length, generator=generator)
    rand_tok = torch.randint(1, cfg.vocab_size, (n, length), generator=generator)
    inputs = torch.where(selected & (r < 0.8), cfg.mask_id, inputs)
    inputs = torch.where(selected & (r >= 0.8) & (r < 0.9), rand_tok, inputs)
    return inputs, selected


def masked_accuracy(logits: Tensor, targets: Tensor, selected: Tensor) -> tuple[int, int]:
    """``(correct, count)`` over ``selected`` positions: the argmax label class ``k`` means
    token id ``k + 1`` (the head predicts labels 1..V-1)."""
    pred = logits.argmax(dim=-1) + 1
    return int((pred[selected] == targets[selected]).sum()), int(selected.sum())


def mlm_loss(model: BertMLM, tokens: Tensor, lengths: Tensor, mask_prob: float,
             generator: torch.Generator, bert_mix: bool = True) -> tuple[Tensor, int, int]:
    """``(summed NLL over the selected positions, their count, correct argmaxes)``."""
    inputs, selected = mask_tokens(tokens, lengths, model.cfg, mask_prob, generator, bert_mix)
    logits = model(inputs, lengths)
    nll = F.cross_entropy(logits[selected], tokens[selected] - 1, reduction="sum")
    correct, count = masked_accuracy(logits.detach(), tokens, selected)
    return nll, count, correct


@torch.no_grad()
def evaluate(model: BertMLM, data: Sequence[list[int]], mask_prob: float = 0.15,
             seed: int = 1234, batch_size: int = 128) -> dict[str, float]:
    """Held-out ``{"loss", "acc15", "tokens"}`` with a seeded all-``[MASK]`` corruption (the
    same positions every evaluation, so numbers are comparable across steps)."""
    if not data:
        raise ValueError("evaluate: no evaluation sentences")
    was = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total, count, correct = 0.0, 0, 0
    for b in range(0, len(data), batch_size):
        nll, n, c = mlm_loss(model, *batch_tokens(data[b : b + batch_size]), mask_prob, gen,
                             bert_mix=False)
        total, count, correct = total + float(nll), count + n, correct + c
    model.train(was)
    return {"loss": total / count, "acc15": correct / count, "tokens": count}


@torch.no_grad()
def single_mask_accuracy(model: BertMLM, data: Sequence[list[int]],
                         batch_size: int = 64) -> float:
    """Accuracy of :meth:`BertMLM.position_logits` (one token masked at a time) over every
    token of ``data``: how often the KD soft label's argmax is the reference token."""
    was = model.training
    model.eval()
    correct, count = 0, 0
    for b in range(0, len(data), batch_size):
        tokens, lengths = batch_tokens(data[b : b + batch_size])
        logits = model.position_logits(tokens, lengths)
        valid = torch.arange(tokens.shape[1])[None, :] < lengths[:, None]
        c, n = masked_accuracy(logits, tokens, valid)
        correct, count = correct + c, count + n
    model.train(was)
    return correct / max(1, count)


def save_mlm(path: str | os.PathLike[str], model: BertMLM, tokenizer: Tokenizer,
             **extra: Any) -> Path:
    """Atomic write of model, config and tokenizer (see train.checkpoint.save_text_model)."""
    return save_text_model(path, FORMAT, model, tokenizer, **extra)


def load_mlm(path: str | os.PathLike[str]) -> tuple[BertMLM, Tokenizer, dict[str, Any]]:
    """``(model in eval mode, tokenizer, raw checkpoint dict)``."""
    return load_text_model(path, FORMAT, lambda c: BertMLM(BertConfig.from_dict(c)), "masked-LM")


def train_mlm(
    model: BertMLM, train: Sequence[list[int]], dev: Sequence[list[int]], cfg: MLMTrainConfig,
    on_eval: Callable[[int, dict[str, float], torch.optim.Optimizer], None] | None = None,
    optimizer_state: dict[str, Any] | None = None, start_step: int = 0,
) -> tuple[int, dict[str, float]]:
    """Train ``model`` in place; returns ``(steps done, last held-out metrics)``.

    ``on_eval(step, metrics, optimizer)`` runs after each evaluation (checkpointing, logging).
    Batches and masks come from RNGs seeded by ``seed + start_step`` (reproducible runs)."""
    if not train or not dev:
        raise ValueError("train_mlm needs non-empty train and dev data")
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.98))
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    rng = random.Random(cfg.seed + start_step)
    gen = torch.Generator().manual_seed(cfg.seed + start_step)
    dev_eval = dev[: cfg.eval_sentences] if cfg.eval_sentences else dev
    t0 = time.monotonic()
    model.train()
    step, metrics = start_step, {}
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = cfg.lr_at(step)
        seqs = [train[rng.randrange(len(train))] for _ in range(cfg.batch_size)]
        nll, n, _ = mlm_loss(model, *batch_tokens(seqs), cfg.mask_prob, gen)
        opt.zero_grad(set_to_none=True)
        (nll / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        out_of_time = cfg.max_minutes > 0 and time.monotonic() - t0 > 60 * cfg.max_minutes
        if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time:
            metrics = evaluate(model, dev_eval)
            metrics["acc1"] = single_mask_accuracy(model, dev_eval)
            if on_eval is not None:
                on_eval(step, metrics, opt)
        if out_of_time:
            break
    model.eval()
    return step, metrics


# ---------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text-dir", type=Path, required=True,
                   help="folder with train.txt and dev.txt (edgeasr-train corpus text)")
    p.add_argument("--tokenizer", type=Path, required=True,
                   help="the ASR sentencepiece model (the teacher must share its vocabulary)")
    p.add_argument("--out", type=Path, required=True, help="output folder (mlm.pt, log.jsonl)")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--dropout", type=float, default=0.1)
    for f in MLMTrainConfig.__dataclass_fields__:
        default = getattr(MLMTrainConfig, f)
        p.add_argument("--" + f.replace("_", "-"), type=type(default), default=default)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--resume", action="store_true", help="continue from OUT/mlm.pt")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    texts = {}
    for split in ("train", "dev"):
        f = args.text_dir / f"{split}.txt"
        if not f.is_file():
            raise SystemExit(f"{f}: not found (write it with 'edgeasr-train corpus text')")
        texts[split] = [s for s in f.read_text(encoding="utf-8").splitlines() if s.strip()]
    ckpt = out / "mlm.pt"
    state: dict[str, Any] = {}
    if args.resume and ckpt.is_file():
        model, tok, state = load_mlm(ckpt)
    else:
        tok = Tokenizer(args.tokenizer)
        model = BertMLM(BertConfig(vocab_size=tok.vocab_size, dim=args.dim, n_layers=args.layers,
                                   n_heads=args.heads, max_seq_len=args.max_seq_len,
                                   dropout=args.dropout))
    if tok.model_bytes != Tokenizer(args.tokenizer).model_bytes:
        raise SystemExit(f"{ckpt}: was trained with a different tokenizer than {args.tokenizer}")
    cfg = MLMTrainConfig(**{f: getattr(args, f) for f in MLMTrainConfig.__dataclass_fields__})
    crop = model.cfg.max_seq_len
    train = [x[:crop] for x in tok.encode_batch(texts["train"]) if x]
    dev = [x[:crop] for x in tok.encode_batch(texts["dev"]) if x]
    n_params = sum(p.numel() for p in model.parameters())
    print(f"mlm: {n_params / 1e6:.2f} M params, vocab {tok.vocab_size}, "
          f"{len(train)} train / {len(dev)} dev sentences", flush=True)
    t0 = time.monotonic()

    def on_eval(step: int, metrics: dict[str, float], opt: torch.optim.Optimizer) -> None:
        save_mlm(ckpt, model, tok, step=step, dev=metrics, optimizer=opt.state_dict())
        rec = {"step": step, **{k: round(v, 4) for k, v in metrics.items()},
               "minutes": round((time.monotonic() - t0) / 60, 2)}
        with open(out / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)

    step, metrics = train_mlm(model, train, dev, cfg, on_eval, state.get("optimizer"),
                              int(state.get("step", 0)))
    print(f"done: step {step}, held-out {json.dumps(metrics)}", flush=True)
    return 0
