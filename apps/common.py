"""What ``edgeasr mic`` and ``edgeasr serve`` share: the model options and loading them.

Both commands take the same ``--bundle/--backend/--decoding/--num-threads`` options, so they
are defined once here and a model that works in one works in the other.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgeasr.errors import EdgeAsrError

__all__ = ["DEFAULT_BUNDLE", "AppError", "add_model_arguments", "load_recognizer"]

#: The bundled default model (written by the training/export pipeline).
DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "models" / "default"


class AppError(EdgeAsrError):
    """A problem the user of an app can fix (missing model, no audio device, bad option)."""


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The model options of every app."""
    p.add_argument("--bundle", type=Path, default=None, metavar="PATH",
                   help=f"model bundle directory or .tar (default: {DEFAULT_BUNDLE})")
    p.add_argument("--backend", default="onnxruntime",
                   help="inference backend: onnxruntime (default), executorch, torch")
    p.add_argument("--decoding", default=None, metavar="METHOD",
                   help="decoding method (greedy, gated, tdt, nar, viterbi, sar, beam); "
                        "default: the bundle's")
    p.add_argument("--num-threads", type=int, default=1, metavar="N",
                   help="intra-op threads of the backend (default 1)")


def load_recognizer(args: argparse.Namespace) -> Any:
    """Build the Recognizer the options describe; a missing bundle is a one-line error."""
    from edgeasr import Recognizer
    from edgeasr.decoding import DecodingConfig

    bundle = args.bundle if args.bundle is not None else DEFAULT_BUNDLE
    if not Path(bundle).exists():
        hint = "" if args.bundle is not None else \
            " (no default model is installed here; pass --bundle PATH to an exported bundle)"
        raise AppError(f"model bundle {bundle} not found{hint}")
    if args.num_threads < 1:
        raise AppError(f"--num-threads must be >= 1, got {args.num_threads}")
    kwargs: dict[str, Any] = {"backend": args.backend, "num_threads": args.num_threads}
    if args.decoding is not None:
        kwargs["decoding"] = DecodingConfig(method=args.decoding)
    return Recognizer.from_bundle(bundle, **kwargs)
