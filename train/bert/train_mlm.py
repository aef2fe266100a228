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
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
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
from .model import PAD_ID, BertConfig, BertMLM

__all__ = ["MLMTrainConfig", "add_arguments", "batch_tokens", "evaluate", "load_mlm",
           "mask_tokens", "masked_accuracy", "mlm_loss", "run", "save_mlm",
           "single_mask_accuracy", "train_mlm"]

HELP = "train the BERT-style masked LM (interAED-KD teacher) on corpus text, ASR vocabulary"
FORMAT = "edgeasr-bert"


@dataclass
class MLMTrainConfig(TextLMTrainConfig):
    """The shared schedule (:class:`TextLMTrainConfig`) with the teacher's defaults: a larger
    model on the same text wants more, larger steps and less weight decay; plus masking and the
    size of the held-out sample (``acc1`` runs the model once per token, so it is costly)."""

    steps: int = 20000
    batch_size: int = 64
    warmup: int = 200
    weight_decay: float = 0.01
    eval_every: int = 500
    mask_prob: float = 0.15
    eval_sentences: int = 500  # held-out sentences per evaluation (0 = all)


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
        nll, n, c = mlm_loss(model, *batch_tokens(data[b : b + batch_size], PAD_ID), mask_prob, gen,
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
        tokens, lengths = batch_tokens(data[b : b + batch_size], PAD_ID)
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
    on_eval: OnEval[dict[str, float]] | None = None,
    optimizer_state: dict[str, Any] | None = None, start_step: int = 0,
) -> tuple[int, dict[str, float]]:
    """Train ``model`` in place (:func:`~edgeasr.train.text_lm_loop.train_text_lm`); returns
    ``(steps done, last held-out metrics)``, ``{}`` when no step was left.

    ``on_eval(step, metrics, optimizer)`` runs after each evaluation (checkpointing, logging).
    Batches and masks come from RNGs seeded by ``seed + start_step`` (reproducible runs)."""
    if not train or not dev:
        raise ValueError("train_mlm needs non-empty train and dev data")
    gen = torch.Generator().manual_seed(cfg.seed + start_step)
    dev_eval = dev[: cfg.eval_sentences] if cfg.eval_sentences else dev

    def batch_loss(seqs: list[list[int]]) -> tuple[Tensor, int]:
        nll, n, _ = mlm_loss(model, *batch_tokens(seqs, PAD_ID), cfg.mask_prob, gen)
        return nll, n

    def held_out() -> dict[str, float]:
        metrics = evaluate(model, dev_eval)
        metrics["acc1"] = single_mask_accuracy(model, dev_eval)
        return metrics

    # beta2 0.98 (BERT's), not the Llama's 0.95: masked positions make a noisier gradient.
    step, metrics = train_text_lm(model, train, cfg, batch_loss, held_out, on_eval,
                                  optimizer_state, start_step, betas=(0.9, 0.98))
    return step, metrics if metrics is not None else {}


# ---------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    add_text_lm_arguments(p, MLMTrainConfig, "mlm.pt")
    p.add_argument("--tokenizer", type=Path, required=True,
                   help="the ASR sentencepiece model (the teacher must share its vocabulary)")
    p.add_argument("--dropout", type=float, default=0.1)


def run(args: argparse.Namespace) -> int:
    r = TextLMRun(args, "mlm")
    state: dict[str, Any] = {}
    if r.resuming:
        model, tok, state = load_mlm(r.checkpoint)
    else:
        tok = Tokenizer(args.tokenizer)
        model = BertMLM(BertConfig(vocab_size=tok.vocab_size, dim=args.dim, n_layers=args.layers,
                                   n_heads=args.heads, max_seq_len=args.max_seq_len,
                                   dropout=args.dropout))
    if tok.model_bytes != Tokenizer(args.tokenizer).model_bytes:
        raise SystemExit(f"{r.checkpoint}: was trained with a different tokenizer than "
                         f"{args.tokenizer}")
    cfg = config_from_args(MLMTrainConfig, args)
    train = encode_sentences(tok, r.texts["train"], model.cfg.max_seq_len)
    dev = encode_sentences(tok, r.texts["dev"], model.cfg.max_seq_len)
    r.announce(model, tok.vocab_size, train, dev)
    on_eval = r.on_eval(
        lambda step, m, opt: save_mlm(r.checkpoint, model, tok, step=step, dev=m, optimizer=opt),
        lambda m: {k: round(v, 4) for k, v in m.items()})
    step, metrics = train_mlm(model, train, dev, cfg, on_eval, state.get("optimizer"),
                              int(state.get("step", 0)))
    print(f"done: step {step}, held-out {json.dumps(metrics)}", flush=True)
    return 0
