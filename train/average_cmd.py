"""``edgeasr-train average CKPT... --out AVG.pt``: average the weights of several checkpoints.

Averaging the last few checkpoints of a run (icefall's ``--avg``) smooths out the noise of the
final optimizer steps and usually lowers WER a little at no inference cost. ``--exp-dir DIR
--last N`` picks the newest N ``epoch-*.pt`` / ``step-*.pt`` files of a run instead of listing
them. ``--weights`` makes it a weighted mean, e.g. to interpolate two fine-tunes of one model.
The output holds no optimizer state and is what export reads.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .checkpoint import CheckpointError, average_checkpoints, save_checkpoint

__all__ = ["add_arguments", "run", "newest_checkpoints"]

NAME = "average"
HELP = "average the model weights of several checkpoints (for export)"

_NUM = re.compile(r"^(epoch|step)-(\d+)\.pt$")


def newest_checkpoints(exp_dir: Path, n: int, kind: str = "epoch") -> list[Path]:
    """The ``n`` highest-numbered ``{kind}-N.pt`` files of ``exp_dir``, oldest first."""
    found = sorted(
        (int(m.group(2)), p)
        for p in exp_dir.glob(f"{kind}-*.pt")
        if (m := _NUM.match(p.name)) and m.group(1) == kind
    )
    if len(found) < n:
        raise FileNotFoundError(f"{exp_dir}: wanted {n} {kind} checkpoints, found {len(found)}")
    return [p for _, p in found[-n:]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", type=Path, nargs="*", help="checkpoint files")
    parser.add_argument("--exp-dir", type=Path, help="pick the newest --last checkpoints here")
    parser.add_argument("--last", type=int, default=0, help="how many (with --exp-dir)")
    parser.add_argument("--kind", choices=("epoch", "step"), default="epoch",
                        help="which checkpoints --last picks (default epoch)")
    parser.add_argument("--weights", type=float, nargs="+", default=None, metavar="W",
                        help="one weight per checkpoint, in order (default: equal)")
    parser.add_argument("--out", type=Path, required=True, help="averaged checkpoint file")


def run(args: argparse.Namespace) -> int:
    paths = list(args.checkpoints)
    if args.exp_dir is not None:
        if args.last < 1:
            raise SystemExit("--exp-dir needs --last N (N >= 1)")
        paths += newest_checkpoints(args.exp_dir, args.last, args.kind)
    if not paths:
        raise SystemExit("no checkpoints given (list files or use --exp-dir/--last)")
    try:
        averaged = average_checkpoints(paths, args.weights)
    except CheckpointError as e:
        raise SystemExit(f"edgeasr-train average: {e}") from None
    save_checkpoint(args.out, averaged)
    how = "weighted average" if args.weights else "average"
    print(f"wrote {args.out}: {how} of {len(paths)} checkpoints")
    return 0
