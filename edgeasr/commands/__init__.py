"""Runtime subcommands of the ``edgeasr`` CLI (``transcribe``, ``stream``, ``eval``).

They share one set of model options (:func:`add_model_arguments`) and one way to build a
recognizer from them (:func:`recognizer_from_args`), so every command takes the same flags.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeasr.decoding import METHODS, PREDICTORS, DecodingConfig
from edgeasr.stream import BACKENDS, DEFAULT_BUNDLE, Recognizer

__all__ = ["add_model_arguments", "decoding_from_args", "hotwords_from_args",
           "recognizer_from_args"]


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--bundle/--backend/--decoding and the decoding knobs."""
    g = p.add_argument_group("model")
    g.add_argument("--bundle", type=Path, default=None,
                   help=f"model bundle folder, model.json or .tar (default: {DEFAULT_BUNDLE})")
    g.add_argument("--backend", choices=BACKENDS, default="onnxruntime",
                   help="inference runtime (default: onnxruntime)")
    g.add_argument("--precision", choices=("fp32", "int8"), default=None,
                   help="graph precision to load from the bundle (default: fp32 where the "
                        "bundle has it, else int8)")
    g.add_argument("--num-threads", type=int, default=1, metavar="N",
                   help="intra-op threads of the backend (default: 1)")
    d = p.add_argument_group("decoding")
    d.add_argument("--decoding", choices=METHODS, default="greedy",
                   help="decoding method (default: greedy)")
    d.add_argument("--beam-size", type=int, default=4, metavar="K", help="beam (default 4)")
    d.add_argument("--blank-penalty", type=float, default=0.0, metavar="BP",
                   help="subtracted from the blank logit; > 0 emits more tokens (default 0)")
    d.add_argument("--iam-threshold", type=float, default=None, metavar="P",
                   help="θ_IAM for --decoding gated (default: the bundle's)")
    d.add_argument("--hat-threshold", type=float, default=None, metavar="P",
                   help="θ_HAT for --decoding gated (default: the bundle's)")
    d.add_argument("--max-symbols", type=int, default=None, metavar="N",
                   help="max tokens per frame for greedy/gated/tdt (default: the bundle's)")
    d.add_argument("--sar-steps", type=int, default=1, metavar="N",
                   help="refinement passes for --decoding sar (default 1)")
    d.add_argument("--hotwords", default=None, metavar="LIST",
                   help='phrases to bias towards, comma-separated, optional per-phrase boost: '
                        '"kubernetes, Ada Lovelace :2.5" (greedy/gated/tdt/beam)')
    d.add_argument("--hotwords-file", type=Path, default=None, metavar="FILE",
                   help="hotwords, one phrase per line (optional ' :boost', # comments)")
    d.add_argument("--hotwords-score", type=float, default=1.5, metavar="B",
                   help="bonus per matched token for phrases without their own (default 1.5)")
    d.add_argument("--predictor", choices=PREDICTORS, default="stateless",
                   help="label scores from the model's joint (stateless, default) or, for a "
                        "factorized Transducer-Llama model, combined with a llama.cpp LM "
                        "(llama; needs --lm; greedy/gated/tdt/beam)")
    d.add_argument("--lm", type=Path, default=None, metavar="LM.gguf",
                   help="GGUF language model of --predictor llama (edgeasr-train lm-gguf)")
    d.add_argument("--lm-weight", type=float, default=1.0, metavar="W",
                   help="weight of the LM log-probs in the factorized labels (default 1.0; "
                        "use the model's training value)")
    t = p.add_argument_group("translation (bundles with an ST head)")
    t.add_argument("--st-blank-penalty", type=float, default=None, metavar="BP",
                   help="subtracted from the ST head's blank logit; > 0 emits more target "
                        "tokens, countering the transducer's short translations (default: the "
                        "bundle's)")
    t.add_argument("--no-translation", action="store_true",
                   help="run only the ASR half of a speech-translation bundle")


def hotwords_from_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The phrases of --hotwords and --hotwords-file (each keeps its ' :boost' suffix)."""
    from edgeasr.hotwords import load_hotwords_file, parse_hotwords

    items = parse_hotwords(args.hotwords) if getattr(args, "hotwords", None) else []
    if getattr(args, "hotwords_file", None) is not None:
        items += load_hotwords_file(args.hotwords_file)
    return tuple(h.text if h.boost is None else f"{h.text} :{h.boost:g}" for h in items)


def decoding_from_args(args: argparse.Namespace) -> DecodingConfig:
    cfg = DecodingConfig(
        method=args.decoding,
        max_symbols_per_frame=args.max_symbols,
        blank_penalty=args.blank_penalty,
        iam_threshold=args.iam_threshold,
        hat_threshold=args.hat_threshold,
        beam_size=args.beam_size,
        sar_steps=args.sar_steps,
        hotwords=hotwords_from_args(args),
        hotwords_score=getattr(args, "hotwords_score", 1.5),
        predictor=getattr(args, "predictor", "stateless"),
        lm=str(args.lm) if getattr(args, "lm", None) else None,
        lm_weight=getattr(args, "lm_weight", 1.0),
    )
    cfg.validate()
    return cfg


def recognizer_from_args(args: argparse.Namespace) -> Recognizer:
    """Load the model the options name (clear error when the default bundle is absent).

    A speech-translation bundle (one with an ST head, docs/speech-translation.md) gives a
    :class:`~edgeasr.translation.SpeechTranslator` on ONNX Runtime, whose results also carry
    ``translation``; ``--no-translation`` or another backend runs its ASR half alone."""
    from edgeasr.bundle import Bundle
    from edgeasr.translation import SpeechTranslator, is_translation_bundle

    decoding = decoding_from_args(args)
    import edgeasr.stream

    path = args.bundle if args.bundle is not None else edgeasr.stream.DEFAULT_BUNDLE
    if not Path(path).exists():  # Recognizer.from_bundle words the error
        return Recognizer.from_bundle(args.bundle, backend=args.backend, decoding=decoding)
    bundle = Bundle.load(path)
    if is_translation_bundle(bundle) and not getattr(args, "no_translation", False):
        if args.backend != "onnxruntime":
            print(f"edgeasr: {path} has a translation head, which runs on onnxruntime only; "
                  f"transcribing without translation on {args.backend}", file=sys.stderr)
        else:
            return SpeechTranslator.from_bundle(
                bundle, decoding=decoding, blank_penalty=getattr(args, "st_blank_penalty", None),
                num_threads=args.num_threads, precision=args.precision)
    return Recognizer.from_bundle(bundle, backend=args.backend, decoding=decoding,
                                  num_threads=args.num_threads, precision=args.precision)
