"""``edgeasr-train holdout MANIFEST --speakers N --out-dir DIR``: split off held-out speakers.

A dev set of *unseen speakers* is the honest measure for real speech (utterances of a training
speaker would flatter the model). The speakers are drawn with a seeded RNG from the sorted
speaker list, so the split is reproducible; utterances without a ``speaker`` field are never
held out. Writes ``DIR/<name>-train.jsonl`` and ``DIR/<name>-dev.jsonl`` (audio paths stay
valid: they are rewritten relative to DIR, or kept absolute).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edgeasr.manifest import Cut, read_manifest, write_manifest

__all__ = ["add_arguments", "holdout_speakers", "run"]

NAME = "holdout"
HELP = "split a manifest into train/dev by held-out speakers (seeded)"


def holdout_speakers(
    cuts: list[Cut], num_speakers: int, seed: int = 0
) -> tuple[list[Cut], list[Cut], list[str]]:
    """Return ``(train, dev, held_out_speakers)`` with ``num_speakers`` speakers in dev."""
    speakers = sorted({c.speaker for c in cuts if c.speaker})
    if not 0 < num_speakers < len(speakers):
        raise ValueError(
            f"cannot hold out {num_speakers} of {len(speakers)} speakers "
            "(need at least one left for training)"
        )
    rng = np.random.default_rng(seed)
    held = sorted(rng.choice(speakers, size=num_speakers, replace=False).tolist())
    chosen = set(held)
    train = [c for c in cuts if c.speaker not in chosen]
    dev = [c for c in cuts if c.speaker in chosen]
    return train, dev, held


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=Path, help="JSONL manifest with a speaker field")
    parser.add_argument("--speakers", type=int, default=10, help="speakers to hold out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="output name prefix (default: stem)")
    parser.add_argument("--out-dir", type=Path, required=True)


def run(args: argparse.Namespace) -> int:
    train, dev, held = holdout_speakers(read_manifest(args.manifest), args.speakers, args.seed)
    name = args.name or args.manifest.stem
    write_manifest(args.out_dir / f"{name}-train.jsonl", train)
    write_manifest(args.out_dir / f"{name}-dev.jsonl", dev)
    hours = sum(c.duration for c in dev) / 3600
    print(f"held out speakers {', '.join(held)}: {len(dev)} utterances ({hours:.2f} h); "
          f"{len(train)} left for training")
    return 0
