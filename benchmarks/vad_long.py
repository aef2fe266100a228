"""Long recordings: VAD segmentation vs each utterance alone vs one unsegmented stream.

Why: a long file is where on-device recognizers lose words (a segmenter that cuts onsets, a
stream that drifts). This builds recordings of ``--per-file`` test utterances separated by
0.5-3 s gaps of background noise (the corpus's held-out voices, so the model has not heard
them), then transcribes each recording three ways with the same bundle:

- ``alone``: every utterance transcribed on its own (the reference behaviour);
- ``vad``: ``edgeasr transcribe --vad`` (:func:`edgeasr.vad.transcribe_segments`, Silero VAD);
- ``stream``: the whole recording as one stream, endpointing off.

and prints the WER of each against the references plus how often the VAD transcript equals
the "alone" transcript word for word. Run::

    python -m benchmarks.vad_long --manifest /work/corpus/dev/test_clean.jsonl --files 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edgeasr.audio import load_audio
from edgeasr.manifest import read_manifest
from edgeasr.metrics import wer
from edgeasr.stream import Recognizer
from edgeasr.vad import SileroVad, transcribe_segments

SR = 16000


def build_recordings(cuts: list, per_file: int, noise_db: float, seed: int
                     ) -> list[tuple[np.ndarray, list[np.ndarray], list[str]]]:
    """Recordings of ``per_file`` utterances with noise gaps: ``(audio, parts, texts)``."""
    rng = np.random.default_rng(seed)
    out = []
    for a in range(0, len(cuts) - per_file + 1, per_file):
        group = cuts[a : a + per_file]
        parts = [load_audio(c.audio) for c in group]
        rms = float(np.sqrt(np.mean(np.concatenate(parts) ** 2))) or 1e-3
        noise_rms = rms * 10 ** (-noise_db / 20)
        pieces, noisy = [], []
        for p in parts:
            gap = rng.uniform(0.5, 3.0)
            pieces.append((noise_rms * rng.standard_normal(int(gap * SR))).astype(np.float32))
            noisy.append(p + (noise_rms * rng.standard_normal(len(p))).astype(np.float32))
            pieces.append(noisy[-1])
        pieces.append((noise_rms * rng.standard_normal(SR)).astype(np.float32))
        # "alone" decodes exactly the samples the recording holds (same noise)
        out.append((np.concatenate(pieces), noisy, [c.text for c in group]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--precision", default="int8", choices=["fp32", "int8"])
    ap.add_argument("--manifest", required=True, type=Path)
    ap.add_argument("--files", type=int, default=10, help="recordings to build")
    ap.add_argument("--per-file", type=int, default=6, help="utterances per recording")
    ap.add_argument("--noise-db", type=float, default=30.0, help="speech-to-noise ratio")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    cuts = read_manifest(args.manifest)[: args.files * args.per_file]
    recordings = build_recordings(cuts, args.per_file, args.noise_db, args.seed)
    if not recordings:
        raise SystemExit(f"{args.manifest}: fewer than {args.per_file} utterances")
    rec = Recognizer.from_bundle(args.bundle, precision=args.precision)
    vad = SileroVad()
    refs, hyp = [], {"alone": [], "vad": [], "stream": []}
    same, seconds, segments = 0, 0.0, 0
    t0 = time.time()
    for audio, parts, texts in recordings:
        ref = " ".join(texts)
        alone = " ".join(rec.transcribe(p, sample_rate=SR).text.strip() for p in parts).split()
        result, segs = transcribe_segments(rec, audio, vad=vad)
        whole = rec.transcribe(audio, sample_rate=SR).text
        refs.append(ref)
        hyp["alone"].append(" ".join(alone))
        hyp["vad"].append(result.text)
        hyp["stream"].append(whole)
        same += result.text.split() == alone
        seconds += len(audio) / SR
        segments += len(segs)
    figures = {
        mode: round(100 * wer(refs, hs).rate, 2) for mode, hs in hyp.items()
    }
    figures.update({
        "recordings": len(recordings), "utterances": len(recordings) * args.per_file,
        "audio_s": round(seconds, 1), "vad_segments": segments,
        "vad_equals_alone": same, "vad_vs_alone_wer": round(100 * wer(hyp["alone"],
                                                                        hyp["vad"]).rate, 2),
        "noise_db": args.noise_db, "elapsed_s": round(time.time() - t0, 1),
    })
    print(f"{figures['recordings']} recordings, {figures['utterances']} utterances, "
          f"{seconds:.0f} s, SNR {args.noise_db:.0f} dB; VAD found {segments} segments")
    print("| mode | WER % |\n|---|---|")
    for mode in ("alone", "vad", "stream"):
        print(f"| {mode} | {figures[mode]:.2f} |")
    print(f"VAD transcript == utterances alone, word for word: {same}/{len(recordings)} "
          f"recordings; WER of VAD against 'alone': {figures['vad_vs_alone_wer']:.2f}%",
          file=sys.stdout)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
