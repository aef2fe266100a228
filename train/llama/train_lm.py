"""``edgeasr-train lm``: train the small Llama on corpus text, with its own BPE vocabulary.

The LM is trained on normalized sentences (``edgeasr-train corpus text`` writes
``train.txt`` / ``dev.txt``, one a line), each one as ``[BOS=0] w1 .. wk`` predicting
``w1 .. wk``. Training is bounded by steps *and* wall-clock minutes (the machine is shared);
the checkpoint ``DIR/lm.pt`` is rewritten atomically at every evaluation, so a killed run keeps
its last evaluated model, and ``--resume`` continues from it.

Checkpoint format (``torch.load(weights_only=True)``-safe plain data)::

    {"format": "edgeasr-llama", "config": LlamaConfig dict, "model": state_dict,
     "tokenizer": sentencepiece model bytes, "step": int, "dev_ppl": float,
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

from edgeasr.tokenizer import Tokenizer

from ..checkpoint import load_text_model, save_text_model
from .model import Llama, LlamaConfig, lm_loss

__all__ = ["LMTrainConfig", "add_arguments", "encode_sentences", "evaluate", "load_lm",
           "run", "save_lm", "train_lm"]

HELP = "train the small Llama LM (Transducer-Llama's LLM) on corpus text"
FORMAT = "edgeasr-llama"


@dataclass
class LMTrainConfig:
    """Optimization schedule: AdamW, linear warmup then cosine decay to ``lr / 10``."""

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
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        frac = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def encode_sentences(tokenizer: Tokenizer, sentences: Sequence[str], max_len: int
                     ) -> list[list[int]]:
    """Token ids per non-empty sentence, cut to ``max_len`` (the model's context)."""
    ids = tokenizer.encode_batch([s for s in sentences if s.strip()])
    return [x[:max_len] for x in ids if x]


def _batch(seqs: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs])
    tokens = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s)
    return tokens, lengths


@torch.no_grad()
def evaluate(model: Llama, data: Sequence[list[int]], batch_size: int = 64) -> float:
    """Per-token perplexity of ``data`` (no BOS/EOS prediction counted)."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(data)), key=lambda i: len(data[i]))  # little padding
    for b in range(0, len(order), batch_size):
        nll, n = lm_loss(model, *_batch([data[i] for i in order[b : b + batch_size]]))
        total, count = total + float(nll), count + n
    model.train(was)
    if count == 0:
        raise ValueError("evaluate: no tokens in the evaluation data")
    return math.exp(total / count)


def save_lm(path: str | os.PathLike[str], model: Llama, tokenizer: Tokenizer,
            **extra: Any) -> Path:
    """Atomic write of model, config and tokenizer (see train.checkpoint.save_text_model)."""
    return save_text_model(path, FORMAT, model, tokenizer, **extra)


def load_lm(path: str | os.PathLike[str]) -> tuple[Llama, Tokenizer, dict[str, Any]]:
    """``(model in eval mode, tokenizer, raw checkpoint dict)``."""
    return load_text_model(path, FORMAT, lambda c: Llama(LlamaConfig.from_dict(c)), "Llama LM")


def train_lm(
    model: Llama, train: Sequence[list[int]], dev: Sequence[list[int]], cfg: LMTrainConfig,
    on_eval: Callable[[int, float, torch.optim.Optimizer], None] | None = None,
    optimizer_state: dict[str, Any] | None = None, start_step: int = 0,
) -> tuple[int, float]:
    """Train ``model`` in place; returns ``(steps done, last dev perplexity)``.

    ``on_eval(step, dev_ppl, optimizer)`` runs after each evaluation (checkpointing, logging).
    Batches are random sentences (sampled with a seeded RNG), so runs are reproducible."""
    if not train or not dev:
        raise ValueError("train_lm needs non-empty train and dev data")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.95))
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    rng = random.Random(cfg.seed + start_step)
    t0 = time.monotonic()

    def out_of_time() -> bool:
        return cfg.max_minutes > 0 and time.monotonic() - t0 > 60 * cfg.max_minutes

    model.train()
    step, ppl = start_step, float("nan")
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = cfg.lr_at(step)
        nll, n = lm_loss(model, *_batch([train[rng.randrange(len(train))]
                                         for _ in range(cfg.batch_size)]))
        opt.zero_grad(set_to_none=True)
        (nll / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time():
            ppl = evaluate(model, dev)
            if on_eval is not None:
                on_eval(step, ppl, opt)
            if out_of_time():  # checked after the evaluation too: it can take minutes
                break
    model.eval()
    return step, ppl


# ---------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text-dir", type=Path, required=True,
                   help="folder with train.txt and dev.txt (edgeasr-train corpus text)")
    p.add_argument("--out", type=Path, required=True, help="output folder (lm.pt, log.jsonl)")
    p.add_argument("--tokenizer", type=Path,
                   help="existing sentencepiece model (e.g. the ASR one); default: train a new "
                        "BPE of --vocab-size on train.txt")
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--untied", action="store_true", help="separate output matrix")
    for f in LMTrainConfig.__dataclass_fields__:
        default = getattr(LMTrainConfig, f)
        p.add_argument("--" + f.replace("_", "-"), type=type(default), default=default)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--resume", action="store_true", help="continue from OUT/lm.pt")


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
        texts[split] = f.read_text(encoding="utf-8").splitlines()
    ckpt = out / "lm.pt"
    state: dict[str, Any] = {}
    if args.resume and ckpt.is_file():
        model, tok, state = load_lm(ckpt)
    else:
        if args.tokenizer is not None:
            tok = Tokenizer(args.tokenizer)
        else:
            tok = Tokenizer.train(texts["train"], out / "tokenizer", args.vocab_size)
        model = Llama(LlamaConfig(vocab_size=tok.vocab_size, dim=args.dim,
                                  n_layers=args.layers, n_heads=args.heads,
                                  max_seq_len=args.max_seq_len,
                                  tie_embeddings=not args.untied))
    cfg = LMTrainConfig(**{f: getattr(args, f) for f in LMTrainConfig.__dataclass_fields__})
    train = encode_sentences(tok, texts["train"], model.cfg.max_seq_len - 1)
    dev = encode_sentences(tok, texts["dev"], model.cfg.max_seq_len - 1)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"lm: {n_params / 1e6:.2f} M params, vocab {tok.vocab_size}, "
          f"{len(train)} train / {len(dev)} dev sentences", flush=True)
    t0 = time.monotonic()

    def on_eval(step: int, ppl: float, opt: torch.optim.Optimizer) -> None:
        save_lm(ckpt, model, tok, step=step, dev_ppl=ppl, optimizer=opt.state_dict())
        rec = {"step": step, "dev_ppl": round(ppl, 3),
               "minutes": round((time.monotonic() - t0) / 60, 2)}
        with open(out / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)

    step, ppl = train_lm(model, train, dev, cfg, on_eval, state.get("optimizer"),
                         int(state.get("step", 0)))
    print(f"done: step {step}, dev perplexity {ppl:.2f}", flush=True)
    return 0
