"""Seconds per training step (forward + backward of the full objective) for model shapes.

Why: on a 2-core CPU the training budget, not the data, decides what the default model can be;
this is the measurement behind the choice of ``train/configs/default.toml`` [model] (frame rate,
width, depth, dropout). Each row builds a fresh :class:`Transducer` from the TOML's [model]
section with the row's overrides and times ``model(batch).loss.backward()`` on a random batch of
``--batch`` utterances of ``--seconds`` seconds with ``--tokens`` target tokens (best of
``--repeats``; the first call is a warm-up).

Run: ``python -m benchmarks.train_step [--config train/configs/default.toml] [--threads 2]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from edgeasr.train.config import read_config
from edgeasr.train.model import ModelConfig, Transducer

ROWS: dict[str, dict[str, object]] = {
    "config": {},
    "40ms d160 L10 (session-1 default)": {
        "subsampling": 4, "d_model": 160, "num_layers": 10, "ffn_dim": 640, "chunk_size": 8,
        "train_chunk_sizes": (8, 16, 32), "left_context": 64, "dropout": 0.1,
    },
    "80ms d160 L10": {
        "subsampling": 8, "d_model": 160, "num_layers": 10, "ffn_dim": 640, "chunk_size": 4,
        "train_chunk_sizes": (4, 8, 16), "left_context": 32, "dropout": 0.0,
    },
}


def model_config(toml_path: Path, **overrides: object) -> ModelConfig:
    """The [model] of a training config (its ``base`` resolved) with ``overrides`` applied."""
    return ModelConfig.from_dict({**read_config(toml_path).get("model", {}), **overrides})


def time_step(cfg: ModelConfig, batch: int, seconds: float, tokens: int, repeats: int) -> float:
    """Best wall time of one forward + backward over a random batch."""
    torch.manual_seed(0)
    model = Transducer(cfg).train()
    frames = int(seconds * 100)
    feats = torch.randn(batch, frames, cfg.feature_dim)
    feat_lens = torch.full((batch,), frames)
    targets = torch.randint(1, cfg.vocab_size, (batch, tokens))
    target_lens = torch.full((batch,), tokens)
    best = float("inf")
    for i in range(repeats + 1):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        model(feats, feat_lens, targets, target_lens).loss.backward()
        if i:
            best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=Path("train/configs/default.toml"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"batch {args.batch} x {args.seconds:g} s, {args.tokens} tokens, "
          f"{args.threads} threads, torch {torch.__version__}")
    print(f"{'model':40s} {'params':>8s} {'s/step':>8s} {'audio s/s':>10s}")
    for name, over in ROWS.items():
        cfg = model_config(args.config, **over)
        n = sum(p.numel() for p in Transducer(cfg).parameters())
        s = time_step(cfg, args.batch, args.seconds, args.tokens, args.repeats)
        label = f"{args.config.name} [model]" if name == "config" else name
        print(f"{label:40s} {n / 1e6:7.2f}M {s:8.2f} {args.batch * args.seconds / s:10.1f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
