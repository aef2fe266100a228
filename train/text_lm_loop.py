"""The training loop shared by the two text language models, and the command-line plumbing of
their commands: ``edgeasr-train lm`` (the small Llama, :mod:`edgeasr.train.llama.train_lm`) and
``edgeasr-train mlm`` (the masked-LM teacher, :mod:`edgeasr.train.bert.train_mlm`).

Both train on the sentences of ``edgeasr-train corpus text`` (``train.txt`` / ``dev.txt``) with
AdamW (no weight decay on vectors), linear warmup then cosine decay to ``lr / 10``, gradient
clipping, random sentence batches from an RNG seeded with ``seed + start_step`` (so a resumed run
is reproducible), a held-out evaluation every ``eval_every`` steps, and a bound on steps *and*
wall-clock minutes (the machine is shared). They differ only in the loss of a batch, the
held-out metrics and AdamW's ``beta2``, which the callers pass in; everything else lives here once,
so that a fix to resume or to the time limit reaches both.

What each command writes in ``--out`` is unchanged by this sharing: its checkpoint (rewritten
atomically at every evaluation, so a killed run keeps its last evaluated model; ``--resume``
continues from it) and ``log.jsonl``, one record per evaluation.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from edgeasr.tokenizer import Tokenizer

__all__ = ["TextLMRun", "TextLMTrainConfig", "add_text_lm_arguments", "batch_tokens",
           "config_from_args", "encode_sentences", "train_text_lm"]

M = TypeVar("M")
#: ``on_eval(step, metrics, optimizer)``: runs after each evaluation (checkpointing, logging).
OnEval = Callable[[int, M, torch.optim.Optimizer], None]


@dataclass
class TextLMTrainConfig:
    """Optimization schedule: AdamW, linear warmup then cosine decay to ``lr / 10``.

    The defaults are the small Llama's; a model with other needs subclasses this and
    re-declares the fields (the command line options follow the fields)."""

    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 200
    max_minutes: float = 0.0  # 0 = no wall-clock limit
    seed: int = 0

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based)."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        frac = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def encode_sentences(tokenizer: Tokenizer, sentences: Sequence[str], max_len: int
                     ) -> list[list[int]]:
    """Token ids per non-empty sentence, cut to ``max_len`` (the model's context)."""
    ids = tokenizer.encode_batch([s for s in sentences if s.strip()])
    return [x[:max_len] for x in ids if x]


def batch_tokens(seqs: Sequence[list[int]], pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Pad sentences with ``pad_id``: ``(tokens [N, L], lengths [N])``."""
    if not seqs or any(len(s) == 0 for s in seqs):
        raise ValueError("batch_tokens needs a non-empty list of non-empty sentences")
    lengths = torch.tensor([len(s) for s in seqs])
    tokens = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s)
    return tokens, lengths


def train_text_lm(
    model: nn.Module, train: Sequence[list[int]], cfg: TextLMTrainConfig,
    batch_loss: Callable[[list[list[int]]], tuple[Tensor, int]],
    evaluate: Callable[[], M],
    on_eval: OnEval[M] | None = None,
    optimizer_state: dict[str, Any] | None = None, start_step: int = 0,
    betas: tuple[float, float] = (0.9, 0.95),
) -> tuple[int, M | None]:
    """Train ``model`` in place from ``start_step`` to ``cfg.steps``; returns ``(steps done,
    last evaluate() result)``, the result ``None`` when no step was left to do.

    ``batch_loss(sentences)`` gives ``(summed loss, number of predictions)``, the step minimizes
    their ratio; ``evaluate()`` measures held-out data (and leaves the model in training mode).
    The time limit is checked after each step and again after an evaluation, which can take
    minutes; a run stopped by it still evaluates (and so checkpoints) its last step.
    Optimizer parameter groups: matrices with ``weight_decay``, vectors without, in
    ``model.parameters()`` order, so ``optimizer_state`` of earlier runs loads.
    """
    if not train:
        raise ValueError("train_text_lm: no training sentences")
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=betas)
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    rng = random.Random(cfg.seed + start_step)
    t0 = time.monotonic()

    def out_of_time() -> bool:
        return cfg.max_minutes > 0 and time.monotonic() - t0 > 60 * cfg.max_minutes

    model.train()
    step, metrics = start_step, None
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = cfg.lr_at(step)
        loss, n = batch_loss([train[rng.randrange(len(train))] for _ in range(cfg.batch_size)])
        opt.zero_grad(set_to_none=True)
        (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time():
            metrics = evaluate()
            if on_eval is not None:
                on_eval(step, metrics, opt)
            if out_of_time():
                break
    model.eval()
    return step, metrics


# ---------------------------------------------------------------------------- command line
C = TypeVar("C", bound=TextLMTrainConfig)


def add_text_lm_arguments(p: argparse.ArgumentParser, config: type[TextLMTrainConfig],
                          checkpoint: str) -> None:
    """The options both commands have: data, output, model shape (``--dim``, ``--layers``,
    ``--heads``, ``--max-seq-len``), one ``--name`` per field of ``config``, threads, resume."""
    p.add_argument("--text-dir", type=Path, required=True,
                   help="folder with train.txt and dev.txt (edgeasr-train corpus text)")
    p.add_argument("--out", type=Path, required=True,
                   help=f"output folder ({checkpoint}, log.jsonl)")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--max-seq-len", type=int, default=128)
    for f in fields(config):
        default = getattr(config, f.name)
        p.add_argument("--" + f.name.replace("_", "-"), type=type(default), default=default)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--resume", action="store_true", help=f"continue from OUT/{checkpoint}")


def config_from_args(config: type[C], args: argparse.Namespace) -> C:
    """``config`` built from the options :func:`add_text_lm_arguments` added for it."""
    return config(**{f.name: getattr(args, f.name) for f in fields(config)})


class TextLMRun:
    """One run of ``edgeasr-train lm`` or ``mlm``: torch threads and seed, the output folder,
    the corpus sentences, the checkpoint path and the per-evaluation log."""

    def __init__(self, args: argparse.Namespace, name: str) -> None:
        torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)
        self.name = name
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        #: ``train`` / ``dev``: the lines of the corpus text files (blank ones included).
        self.texts: dict[str, list[str]] = {}
        for split in ("train", "dev"):
            f = args.text_dir / f"{split}.txt"
            if not f.is_file():
                raise SystemExit(f"{f}: not found (write it with 'edgeasr-train corpus text')")
            self.texts[split] = f.read_text(encoding="utf-8").splitlines()
        self.checkpoint = self.out / f"{name}.pt"
        #: ``--resume`` and a checkpoint to resume from (else: start from scratch).
        self.resuming = bool(args.resume) and self.checkpoint.is_file()

    def announce(self, model: nn.Module, vocab_size: int, train: Sequence[list[int]],
                 dev: Sequence[list[int]]) -> None:
        """Print the model size and the data, so that a log shows what was trained."""
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{self.name}: {n_params / 1e6:.2f} M params, vocab {vocab_size}, "
              f"{len(train)} train / {len(dev)} dev sentences", flush=True)

    def on_eval(self, save: Callable[[int, M, dict[str, Any]], object],
                record: Callable[[M], dict[str, Any]]) -> OnEval[M]:
        """The ``on_eval`` callback of :func:`train_text_lm`: ``save(step, metrics, optimizer
        state)`` writes the checkpoint, then ``{"step", **record(metrics), "minutes"}`` (minutes
        since this call, i.e. since training started) goes to ``log.jsonl`` and stdout."""
        t0 = time.monotonic()

        def on_eval(step: int, metrics: M, opt: torch.optim.Optimizer) -> None:
            save(step, metrics, opt.state_dict())
            rec = {"step": step, **record(metrics),
                   "minutes": round((time.monotonic() - t0) / 60, 2)}
            with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
            print(json.dumps(rec), flush=True)

        return on_eval
