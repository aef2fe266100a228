"""``edgeasr-export CHECKPOINT --out BUNDLE``: export a trained checkpoint into a bundle.

Examples::

    edgeasr-export exp/averaged.pt --out bundles/en-small --format onnx,sherpa --quantize none,int8
    edgeasr-export exp/averaged.pt --out bundles/en-small --format executorch --quantize int8 \\
        --calibration data/dev.jsonl
    edgeasr-export --describe bundles/en-small        # validate and summarize a bundle
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["main", "build_parser"]

_QUANT = {"none": "fp32", "fp32": "fp32", "int8": "int8"}


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgeasr-export",
        description="Export an edgeasr checkpoint to ONNX / ExecuTorch / sherpa-onnx graphs "
        "in a bundle folder with a validated model.json.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1] if __doc__ else None,
    )
    p.add_argument("checkpoint", nargs="?", type=Path, help="edgeasr training checkpoint (.pt)")
    p.add_argument("--out", type=Path, help="bundle folder to create (must not exist or be empty)")
    p.add_argument("--format", default="onnx", type=_csv,
                   help="comma list of onnx, executorch, sherpa (default: onnx)")
    p.add_argument("--quantize", default="none", type=_csv,
                   help="comma list of none, int8 (default: none = fp32 only)")
    p.add_argument("--calibration", type=Path,
                   help="JSONL manifest of speech for ExecuTorch int8 calibration")
    p.add_argument("--calibration-utterances", type=int, default=8)
    p.add_argument("--tar", action="store_true", help="also write BUNDLE.tar (one file)")
    p.add_argument("--with-checkpoint", action="store_true",
                   help="also store the weights as checkpoint.pt (for backend='torch' and "
                        "for edgeasr-train fit --init)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="max |exported - torch| accepted for fp32 graphs (default 1e-4)")
    p.add_argument("--describe", type=Path, metavar="BUNDLE",
                   help="only validate and describe an existing bundle (folder, model.json, .tar)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from edgeasr.bundle import Bundle, BundleError, pack_bundle

    if args.describe is not None:
        try:
            print(Bundle.load(args.describe).describe())
        except BundleError as e:
            print(f"edgeasr-export: error: {e}", file=sys.stderr)
            return 1
        return 0
    if args.checkpoint is None or args.out is None:
        print("edgeasr-export: error: CHECKPOINT and --out are required", file=sys.stderr)
        return 2
    bad = [q for q in args.quantize if q not in _QUANT]
    if bad:
        print(f"edgeasr-export: error: unknown --quantize {bad}; use none, int8", file=sys.stderr)
        return 2

    from edgeasr.export.writer import ExportError, ExportOptions, export_checkpoint

    start = time.monotonic()

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.monotonic() - start:7.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        options = ExportOptions(
            formats=args.format,
            precisions=tuple(dict.fromkeys(_QUANT[q] for q in args.quantize)),
            calibration=args.calibration,
            calibration_utterances=args.calibration_utterances,
            tolerance=args.tolerance,
            with_checkpoint=args.with_checkpoint,
        )
        report = export_checkpoint(args.checkpoint, args.out, options, progress=progress)
        bundle = Bundle.load(args.out)
    except (ExportError, BundleError, ValueError, RuntimeError) as e:
        print(f"edgeasr-export: error: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    print(bundle.describe())
    if args.tar:
        tar = pack_bundle(args.out, args.out.with_suffix(".tar"))
        print(f"archive: {tar} ({tar.stat().st_size / 1024:.1f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
