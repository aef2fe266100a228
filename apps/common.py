"""What ``edgeasr mic`` and ``edgeasr serve`` share: the model options and loading them.

Both commands take the same ``--bundle/--backend/--decoding/--num-threads`` options, so they
are defined once here and a model that works in one works in the other.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from edgeasr.errors import EdgeAsrError

if TYPE_CHECKING:
    from edgeasr.stream import Recognizer

__all__ = ["DEFAULT_BUNDLE", "AppError", "add_model_arguments", "load_recognizer"]

#: The bundled default model (written by the training/export pipeline).
DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "models" / "default"


class AppError(EdgeAsrError):
    """A problem the user of an app can fix (missing model, no audio device, bad option)."""


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The model options of every app."""
    p.add_argument("--bundle", type=Path, default=None, metavar="PATH",
                   help=f"model bundle directory or .tar (default: {DEFAULT_BUNDLE})")
    p.add_argument("--checkpoint", type=Path, default=None, metavar="PATH",
                   help="stream a training checkpoint with the torch backend instead of a bundle")
    p.add_argument("--backend", default="onnxruntime",
                   help="inference backend: onnxruntime (default), executorch, torch")
    p.add_argument("--decoding", default=None, metavar="METHOD",
                   help="decoding method (greedy, gated, tdt, nar, viterbi, sar, beam); "
                        "default: the bundle's")
    p.add_argument("--num-threads", type=int, default=1, metavar="N",
                   help="intra-op threads of the backend (default 1)")


def load_recognizer(args: argparse.Namespace) -> Recognizer:
    """Build the Recognizer the options describe; a missing bundle is a one-line error."""
    from edgeasr.decoding import DecodingConfig
    from edgeasr.stream import Recognizer

    if args.num_threads < 1:
        raise AppError(f"--num-threads must be >= 1, got {args.num_threads}")
    decoding = DecodingConfig(method=args.decoding) if args.decoding is not None else None
    if args.checkpoint is not None:
        if args.bundle is not None:
            raise AppError("give either --bundle or --checkpoint, not both")
        if not Path(args.checkpoint).is_file():
            raise AppError(f"checkpoint {args.checkpoint} not found")
        return Recognizer.from_checkpoint(args.checkpoint, decoding=decoding,
                                          num_threads=args.num_threads)
    bundle = args.bundle if args.bundle is not None else DEFAULT_BUNDLE
    if not Path(bundle).exists():
        hint = "" if args.bundle is not None else \
            " (no default model is installed here; pass --bundle PATH to an exported bundle)"
        raise AppError(f"model bundle {bundle} not found{hint}")
    return Recognizer.from_bundle(bundle, backend=args.backend, decoding=decoding,
                                  num_threads=args.num_threads)
