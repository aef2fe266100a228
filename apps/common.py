"""What ``edgeasr mic`` and ``edgeasr serve`` share: the model options and loading them.

The options are the runtime commands' own (:mod:`edgeasr.commands`: ``--bundle``,
``--backend``, ``--precision``, ``--num-threads``, ``--decoding`` and its knobs), so a model
and decoding that work in ``edgeasr transcribe`` work the same way live. The apps add
``--checkpoint``: streaming a training checkpoint (torch backend) before any export.
``--vad`` is shared too: both apps segment live audio with the same Silero VAD settings as
``edgeasr transcribe --vad``, so a live segment is recognized as the file path would.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from edgeasr.errors import EdgeAsrError

if TYPE_CHECKING:
    from edgeasr.stream import Recognizer

__all__ = ["AppError", "add_model_arguments", "add_vad_argument", "load_recognizer"]


class AppError(EdgeAsrError):
    """A problem the user of an app can fix (missing model, no audio device, bad option)."""


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The model options of every app."""
    from edgeasr.commands import add_model_arguments as runtime_model_arguments

    runtime_model_arguments(p)
    p.add_argument("--checkpoint", type=Path, default=None, metavar="PATH",
                   help="stream a training checkpoint with the torch backend instead of a bundle")


def add_vad_argument(p: argparse.ArgumentParser) -> None:
    """``--vad``: only speech segments found by Silero VAD reach the recognizer."""
    p.add_argument("--vad", action="store_true",
                   help="segment the audio with Silero VAD: only speech (with 0.3 s padding) "
                        "is recognized, each segment as one utterance with one final, sent "
                        "once the segment ends (needs: pip install silero-vad --no-deps)")


def load_recognizer(args: argparse.Namespace) -> Recognizer:
    """Build the Recognizer the options describe; a missing model is a one-line error."""
    from edgeasr.commands import decoding_from_args, recognizer_from_args
    from edgeasr.stream import Recognizer

    if args.num_threads < 1:
        raise AppError(f"--num-threads must be >= 1, got {args.num_threads}")
    if args.checkpoint is None:
        return recognizer_from_args(args)
    if args.bundle is not None:
        raise AppError("give either --bundle or --checkpoint, not both")
    if not Path(args.checkpoint).is_file():
        raise AppError(f"checkpoint {args.checkpoint} not found")
    return Recognizer.from_checkpoint(args.checkpoint, decoding=decoding_from_args(args),
                                      num_threads=args.num_threads)
