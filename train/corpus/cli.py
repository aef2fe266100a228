"""``edgeasr-train corpus {synth,text}``: build the synthetic corpus or only its text splits."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

# presets.PRESETS' names, spelled out so that --help does not import numpy and scipy
PRESET_NAMES = ("smoke", "dev", "dev-pico", "full")
HELP = "build the synthetic speech corpus (synth) or its normalized text splits (text)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``corpus`` sub-subcommands on ``parser``."""
    sub = parser.add_subparsers(dest="corpus_cmd", required=True, metavar="{synth,text}")
    for name, help_ in (("synth", "synthesize audio + JSONL manifests + summary.json"),
                        ("text", "only write the normalized sentence splits (text/<split>.txt)")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--preset", default="smoke", choices=PRESET_NAMES,
                       help="corpus size (default: smoke)")
        p.add_argument("--out", type=Path, default=None,
                       help="output folder (default: ~/.cache/edgeasr/corpus/<preset>)")
        p.add_argument("--seed", type=int, default=0, help="same seed -> same corpus")
        if name == "synth":
            p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                           help="worker processes (default: all cores)")


def run(args: argparse.Namespace) -> int:
    """Run the chosen corpus command; prints where the result went and the key figures."""
    from .build import build_corpus, default_out_dir, write_text_splits
    from .presets import get_preset
    from .sentences import collect_sentences

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    preset = get_preset(args.preset)
    out = args.out or default_out_dir(preset.name)
    if args.corpus_cmd == "text":
        pool = collect_sentences(preset.sentences, args.seed)
        counts = write_text_splits(pool, out)
        for source, install in pool.missing.items():
            print(f"missing text source {source}: {install}")
        print(f"wrote {out / 'text'}: {counts}")
        return 0
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    s = build_corpus(preset, out, seed=args.seed, n_jobs=args.jobs)
    for engine, install in s["missing_engines"].items():
        print(f"missing TTS engine {engine}: {install}")
    b = s["build"]
    print(f"wrote {out}: {s['counts']} ({s['hours_total']:.2f} h; this run "
          f"{b['audio_hours_this_run']:.2f} h in {b['wall_s']:.0f} s = "
          f"{b['hours_per_wall_hour']:.1f} h/h; {s['failures']} failures)")
    return 0
