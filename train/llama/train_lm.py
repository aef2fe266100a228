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
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from edgeasr.tokenizer import Tokenizer

from ..checkpoint import load_text_model, save_text_model
from ..text_lm_loop import (
    OnEval,
    TextLMRun,
    TextLMTrainConfig,
    add_text_lm_arguments,
    batch_tokens,
    config_from_args,
    encode_sentences,
    train_text_lm,
)
from .model import Llama, LlamaConfig, lm_loss

__all__ = ["LMTrainConfig", "add_arguments", "encode_sentences", "evaluate", "load_lm",
           "run", "save_lm", "train_lm"]

HELP = "train the small Llama LM (Transducer-Llama's LLM) on corpus text"
FORMAT = "edgeasr-llama"
#: The Llama's schedule is the shared one as it is (its defaults are the Llama's).
LMTrainConfig = TextLMTrainConfig


@torch.no_grad()
def evaluate(model: Llama, data: Sequence[list[int]], batch_size: int = 64) -> float:
    """Per-token perplexity of ``data`` (no BOS/EOS prediction counted)."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(data)), key=lambda i: len(data[i]))  # little padding
    for b in range(0, len(order), batch_size):
        nll, n = lm_loss(model, *batch_tokens([data[i] for i in order[b : b + batch_size]]))
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
    on_eval: OnEval[float] | None = None,
    optimizer_state: dict[str, Any] | None = None, start_step: int = 0,
) -> tuple[int, float]:
    """Train ``model`` in place (:func:`~edgeasr.train.text_lm_loop.train_text_lm`); returns
    ``(steps done, last dev perplexity)``, NaN when no step was left.

    ``on_eval(step, dev_ppl, optimizer)`` runs after each evaluation (checkpointing, logging).
    Batches are random sentences (sampled with a seeded RNG), so runs are reproducible."""
    if not train or not dev:
        raise ValueError("train_lm needs non-empty train and dev data")

    def batch_loss(seqs: list[list[int]]) -> tuple[Tensor, int]:
        return lm_loss(model, *batch_tokens(seqs))

    step, ppl = train_text_lm(model, train, cfg, batch_loss, lambda: evaluate(model, dev),
                              on_eval, optimizer_state, start_step, betas=(0.9, 0.95))
    return step, ppl if ppl is not None else float("nan")


# ---------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    add_text_lm_arguments(p, LMTrainConfig, "lm.pt")
    p.add_argument("--tokenizer", type=Path,
                   help="existing sentencepiece model (e.g. the ASR one); default: train a new "
                        "BPE of --vocab-size on train.txt")
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--untied", action="store_true", help="separate output matrix")


def run(args: argparse.Namespace) -> int:
    r = TextLMRun(args, "lm")
    state: dict[str, Any] = {}
    if r.resuming:
        model, tok, state = load_lm(r.checkpoint)
    else:
        if args.tokenizer is not None:
            tok = Tokenizer(args.tokenizer)
        else:
            tok = Tokenizer.train(r.texts["train"], r.out / "tokenizer", args.vocab_size)
        model = Llama(LlamaConfig(vocab_size=tok.vocab_size, dim=args.dim,
                                  n_layers=args.layers, n_heads=args.heads,
                                  max_seq_len=args.max_seq_len,
                                  tie_embeddings=not args.untied))
    cfg = config_from_args(LMTrainConfig, args)
    train = encode_sentences(tok, r.texts["train"], model.cfg.max_seq_len - 1)
    dev = encode_sentences(tok, r.texts["dev"], model.cfg.max_seq_len - 1)
    r.announce(model, tok.vocab_size, train, dev)
    on_eval = r.on_eval(
        lambda step, ppl, opt: save_lm(r.checkpoint, model, tok, step=step, dev_ppl=ppl,
                                       optimizer=opt),
        lambda ppl: {"dev_ppl": round(ppl, 3)})
    step, ppl = train_lm(model, train, dev, cfg, on_eval, state.get("optimizer"),
                         int(state.get("step", 0)))
    print(f"done: step {step}, dev perplexity {ppl:.2f}", flush=True)
    return 0
