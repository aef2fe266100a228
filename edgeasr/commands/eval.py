"""``edgeasr eval MANIFEST.jsonl``: WER, real-time factors and gate skip rates of a model.

Each utterance is decoded as a stream (chunk by chunk, with the bundle's tail padding). Two
real-time factors are reported: *decode* counts only the model (encoder + decoder calls),
*end-to-end* adds audio decoding, resampling and feature extraction. Skip rates: the share of
encoder frames dropped by the IAM gate, and of label softmaxes avoided by the HAT threshold.
``--out`` writes one JSON line per utterance (id, ref, hyp, duration, times, counters).
With ``--hotwords``/``--hotwords-file`` every utterance is also decoded without biasing, and
phrase recall and WER are printed for both (``hyp_unbiased`` in the JSONL).
With a speech-translation bundle, rows that have a ``translation`` are also scored for the ST
head: corpus BLEU and chrF (sacrebleu) and the hypothesis/reference word ratio, beside the WER
of the ASR head (``translation`` and ``translation_ref`` in the JSONL).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgeasr.audio import load_audio
from edgeasr.commands import add_model_arguments, recognizer_from_args
from edgeasr.errors import EdgeAsrError
from edgeasr.manifest import Cut, read_manifest
from edgeasr.metrics import wer
from edgeasr.stream import TRANSCRIBE_PIECE_S, Recognizer, Result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", type=Path, metavar="MANIFEST.jsonl", help="utterances to score")
    p.add_argument("--out", type=Path, default=None, metavar="HYP.jsonl",
                   help="write per-utterance results here")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="first N utterances")
    add_model_arguments(p)


def load_cut_audio(cut: Cut, rate: int) -> np.ndarray:
    """The samples of ``cut`` at ``rate``: its file decoded and resampled, cut to
    ``[offset, offset + duration)`` (a duration of 0 means to the end of the file)."""
    audio = load_audio(cut.audio, target_rate=rate)
    a = int(round(cut.offset * rate))
    b = len(audio) if not cut.duration else min(len(audio), a + int(round(cut.duration * rate)))
    return audio[a:b]


def decode_cut(rec: Recognizer, cut: Cut, biased: bool = True
               ) -> tuple[Result, float, float, float]:
    """Decode one cut; returns (result, audio seconds, decode seconds, end-to-end seconds).
    ``biased=False`` decodes without the configured hotwords."""
    t0 = time.perf_counter()
    rate = rec.feature_config.sample_rate
    audio = load_cut_audio(cut, rate)
    s = rec.create_stream()
    if not biased:
        s.set_hotwords(None)
    decode_s = 0.0
    piece = int(TRANSCRIBE_PIECE_S * rate)
    for i in range(0, len(audio), piece):
        s.accept_waveform(rate, audio[i : i + piece])
        t = time.perf_counter()
        rec.decode_stream(s)
        decode_s += time.perf_counter() - t
    s.input_finished()
    t = time.perf_counter()
    rec.decode_stream(s)
    decode_s += time.perf_counter() - t
    return s.result, len(audio) / rate, decode_s, time.perf_counter() - t0


def _rate(num: int, den: int) -> float:
    return num / den if den else 0.0


def run(args: argparse.Namespace) -> int:
    cuts = read_manifest(args.manifest)
    if args.limit is not None:
        cuts = cuts[: args.limit]
    if not cuts:
        raise EdgeAsrError(f"{args.manifest}: no utterances")
    rec = recognizer_from_args(args)
    rows, failed = [], []
    totals = {"audio": 0.0, "decode": 0.0, "e2e": 0.0}
    stats = {"frames": 0, "skipped_frames": 0, "label_softmaxes": 0, "skipped_softmaxes": 0,
             "encoder_frames": 0}
    out = args.out.open("w", encoding="utf-8") if args.out else None
    try:
        for cut in tqdm(cuts, unit="utt", file=sys.stderr, disable=len(cuts) < 2):
            try:
                r, dur, dec, e2e = decode_cut(rec, cut)
            except (EdgeAsrError, OSError) as e:
                failed.append((cut.id, str(e)))
                continue
            totals["audio"] += dur
            totals["decode"] += dec
            totals["e2e"] += e2e
            for k in stats:
                stats[k] += r.stats.get(k, 0)
            row = {}
            if rec.default_hotwords is not None:
                row["hyp_unbiased"] = decode_cut(rec, cut, biased=False)[0].text
            if hasattr(r, "translation"):
                row["translation"] = r.translation
                row["translation_ref"] = cut.translation
            row |= {
                "id": cut.id, "ref": cut.text, "hyp": r.text, "duration": round(dur, 3),
                "decode_s": round(dec, 4), "e2e_s": round(e2e, 4),
                "rtf": round(dec / dur, 4) if dur else None, "stats": r.stats,
                "timestamps": [round(t, 3) for t in r.timestamps],
            }
            rows.append(row)
            if out:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        if out:
            out.close()
    if not rows:
        raise EdgeAsrError(f"{args.manifest}: every utterance failed (first: {failed[0][1]})")
    w = wer([r["ref"] for r in rows], [r["hyp"] for r in rows], ids=[r["id"] for r in rows])
    audio = totals["audio"]
    label_total = stats["label_softmaxes"] + stats["skipped_softmaxes"]
    print(w.summary())
    if rec.default_hotwords is not None:
        from edgeasr.hotwords import phrase_recall

        refs = [r["ref"] for r in rows]
        phrases = rec.default_hotwords.texts
        base = wer(refs, [r["hyp_unbiased"] for r in rows], ids=[r["id"] for r in rows])
        print(f"hotwords ({len(phrases)}): biased   "
              f"{phrase_recall(refs, [r['hyp'] for r in rows], phrases).summary()}, "
              f"WER {100 * w.rate:.2f}%")
        print(f"hotwords ({len(phrases)}): unbiased "
              f"{phrase_recall(refs, [r['hyp_unbiased'] for r in rows], phrases).summary()}, "
              f"WER {100 * base.rate:.2f}%")
    translator = getattr(rec, "translator", None)
    if translator is not None:
        pairs = [(r["translation_ref"], r["translation"]) for r in rows
                 if r.get("translation_ref")]
        if pairs:
            from edgeasr.metrics import translation_scores

            t = translation_scores([a for a, _ in pairs], [b for _, b in pairs])
            print(f"translation ({translator.spec.target_lang}): BLEU {t['bleu']:.2f}  "
                  f"chrF {t['chrf']:.2f}  hyp/ref words {t['length_ratio']:.3f}  "
                  f"({len(pairs)} utts with a reference, ST blank penalty "
                  f"{translator.blank_penalty:g})")
        else:
            print("translation: no row of the manifest has a 'translation' to score against")
    print(f"RTF decode {totals['decode'] / audio:.4f}  end-to-end {totals['e2e'] / audio:.4f}  "
          f"({audio:.1f} s audio, {len(rows)} utts, backend {args.backend}, "
          f"decoding {args.decoding}, {args.num_threads} thread(s))")
    print(f"skipped frames (IAM) {100 * _rate(stats['skipped_frames'], stats['frames']):.1f}%  "
          f"skipped softmaxes (HAT) "
          f"{100 * _rate(stats['skipped_softmaxes'], label_total):.1f}%  "
          f"p50 utt RTF {float(np.median([r['rtf'] or 0 for r in rows])):.4f}")
    if stats["encoder_frames"]:
        joint = stats["frames"] - stats["skipped_frames"]
        print(f"frames the predictor joint never saw (TDT jumps + IAM gate) "
              f"{100 * (1 - _rate(joint, stats['encoder_frames'])):.1f}% "
              f"of {stats['encoder_frames']}")
    if failed:
        print(f"edgeasr: {len(failed)} utterance(s) failed:", file=sys.stderr)
        for uid, why in failed:
            print(f"  {uid}: {why}", file=sys.stderr)
        return 1
    return 0
