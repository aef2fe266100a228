"""``edgeasr demo``: the streaming demo on the bundled default model.

Plays the sample recordings that ship in ``models/samples/`` (two synthesized sentences in
voices the model never trained on, one real non-native speaker held out of training) through a
live stream at real-time pace, showing the partial result as it grows and each final next to its
reference, then the WER over the samples. It needs no microphone, so it is the first thing to
run on a fresh machine; ``edgeasr mic`` is the same with live audio.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from edgeasr.audio import load_audio
from edgeasr.commands import add_model_arguments, recognizer_from_args
from edgeasr.commands.stream_cmd import stream_samples
from edgeasr.manifest import read_manifest
from edgeasr.metrics import wer

SAMPLES = Path(__file__).resolve().parent.parent.parent / "models" / "samples" / "samples.jsonl"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=Path, default=SAMPLES, metavar="MANIFEST",
                   help=f"JSONL manifest of the recordings to play (default: {SAMPLES})")
    p.add_argument("--fast", action="store_true",
                   help="feed audio as fast as it decodes instead of at real-time pace")
    add_model_arguments(p)


def run(args: argparse.Namespace) -> int:
    rec = recognizer_from_args(args)
    cuts = read_manifest(args.samples)
    refs: list[str] = []
    hyps: list[str] = []
    decode_s = audio_s = 0.0
    for cut in cuts:
        samples = load_audio(cut.audio, target_rate=rec.feature_config.sample_rate)
        print(f"\n{cut.id}  ({cut.duration:.1f} s)  reference: {cut.text}")
        t0 = time.perf_counter()
        finals = stream_samples(rec, samples, realtime=not args.fast)
        decode_s += time.perf_counter() - t0
        audio_s += len(samples) / rec.feature_config.sample_rate
        refs.append(cut.text)
        hyps.append(" ".join(finals))
    score = wer(refs, hyps)
    print(f"\nWER over {len(cuts)} samples: {score.rate:.1%} "
          f"(S={score.substitutions} I={score.insertions} D={score.deletions}, "
          f"{score.counts.ref_len} words)")
    if args.fast:
        print(f"real-time factor: {decode_s / audio_s:.3f} ({audio_s:.1f} s of audio)")
    return 0
