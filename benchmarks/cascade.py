"""Cascade speech-translation baseline of #12: ASR transcript -> apertium (text MT) -> BLEU/chrF.

Why: the HENT-SRT table compares the end-to-end ST head with a cascade, the usual baseline.
Two rows per test set:

- **oracle cascade**: the reference English transcript (the manifest's ``text``) translated by
  apertium: the ceiling of the cascade, where only the MT system errs;
- **ASR cascade**: the bundle's greedy transcript, decoded exactly as ``edgeasr eval`` decodes
  (:func:`edgeasr.commands.eval.decode_cut`: streamed chunk by chunk), translated by apertium;
  its ASR WER sits beside the BLEU, so the share of the loss due to recognition is visible.

Scoring is the ST trainer's own (:func:`edgeasr.metrics.translation_scores`: sacrebleu corpus
BLEU and chrF, hypothesis/reference word ratio). The references are the parallel corpus's
``translation`` field (``normalize_spanish`` form: lower case, no punctuation), so apertium's
output is put through the same :func:`normalize_spanish` before scoring.

Test sets come from ``edgeasr-train parallel`` (manifests with ``text`` and ``translation``).
Every utterance must carry a ``translation``. Run::

    python -m benchmarks.cascade --bundle models/default \\
        --set clean=/work/corpus/parallel-small/test_clean.jsonl \\
        --set noisy=/work/corpus/parallel-small/test_noisy.jsonl \\
        --out results/cascade.json

Prints a markdown table and writes the figures (and every utterance's transcript and
translations) as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.apertium import DEFAULT_PAIR, check_pair, translate
from benchmarks.wer_table import _parse_sets
from edgeasr.commands.eval import decode_cut
from edgeasr.decoding import DecodingConfig
from edgeasr.errors import EdgeAsrError
from edgeasr.manifest import Cut, ManifestError, read_manifest
from edgeasr.metrics import translation_scores, wer
from edgeasr.stream import Recognizer

__all__ = ["format_table", "load_parallel", "main", "run_cascade", "score_cascade",
           "scoring_footer"]


def load_parallel(path: Path, limit: int | None = None) -> list[Cut]:
    """The first ``limit`` cuts of ``path``; every one must have a ``translation``."""
    cuts = read_manifest(path)[:limit]
    if not cuts:
        raise ManifestError(f"{path}: no utterances")
    missing = [c.id for c in cuts if not c.translation]
    if missing:
        raise ManifestError(f"{path}: {len(missing)} of {len(cuts)} utterances have no "
                            f"'translation' (first: {missing[0]}); build parallel test sets "
                            f"with edgeasr-train parallel")
    return cuts


def _scores(refs: list[str], hyps: list[str]) -> dict[str, float]:
    """The ST validation scores, rounded for the table."""
    return {k: round(v, 2 if k != "length_ratio" else 4)
            for k, v in translation_scores(refs, hyps).items()}


def run_cascade(rec: Recognizer, sets: dict[str, list[Cut]], pair: str = DEFAULT_PAIR
                ) -> dict[str, Any]:
    """Decode every cut with ``rec``, then :func:`score_cascade`."""
    hyps: dict[str, list[str]] = {}
    audio: dict[str, float] = {}
    decode: dict[str, float] = {}
    for name, cuts in sets.items():
        hyps[name], audio[name], decode[name] = [], 0.0, 0.0
        for i, cut in enumerate(cuts):
            r, dur, dec, _ = decode_cut(rec, cut)
            hyps[name].append(r.text)
            audio[name] += dur
            decode[name] += dec
            if (i + 1) % 20 == 0:
                print(f"{name}: decoded {i + 1}/{len(cuts)}", file=sys.stderr, flush=True)
    return score_cascade(sets, hyps, pair, audio, decode)


def score_cascade(sets: dict[str, list[Cut]], hyps: dict[str, list[str]],
                  pair: str = DEFAULT_PAIR, audio: dict[str, float] | None = None,
                  decode: dict[str, float] | None = None) -> dict[str, Any]:
    """Translate the transcripts ``hyps`` (per set, one per cut) and the references with
    apertium in one call, and score both cascades per set. Returns ``{"sets": {name:
    {"oracle": ..., "asr": ...}}, "utterances": {name: [...]}}``."""
    from edgeasr.train.corpus.parallel import normalize_spanish

    # One apertium call for all distinct strings (the oracle texts of clean and noisy copies of
    # a test set are the same sentences).
    texts = list(dict.fromkeys(s for name, cuts in sets.items()
                               for s in [c.text for c in cuts] + hyps[name]))
    mt = dict(zip(texts, (normalize_spanish(t) for t in translate(texts, pair)), strict=True))
    results: dict[str, Any] = {}
    utterances: dict[str, list[dict[str, str]]] = {}
    for name, cuts in sets.items():
        refs = [normalize_spanish(c.translation or "") for c in cuts]
        w = wer([c.text for c in cuts], hyps[name], ids=[c.id for c in cuts])
        a = (audio or {}).get(name, 0.0)
        results[name] = {
            "utts": len(cuts),
            "oracle": _scores(refs, [mt[c.text] for c in cuts]),
            "asr": {"wer": round(100 * w.rate, 2), **_scores(refs, [mt[h] for h in hyps[name]]),
                    "audio_s": round(a, 1),
                    "rtf": round((decode or {}).get(name, 0.0) / a, 4) if a else None},
        }
        utterances[name] = [
            {"id": c.id, "text": c.text, "hyp": h, "translation_ref": ref,
             "oracle_mt": mt[c.text], "asr_mt": mt[h]}
            for c, h, ref in zip(cuts, hyps[name], refs, strict=True)]
    return {"sets": results, "utterances": utterances}


def format_table(results: dict[str, Any], bundle: str) -> str:
    """The cascade rows of the #12 table as markdown (one oracle and one ASR row per set)."""
    lines = ["| test set | system | utts | WER % | BLEU | chrF | hyp/ref words |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        o, a = r["oracle"], r["asr"]
        lines.append(f"| {name} | cascade: reference transcript -> apertium | {r['utts']} | "
                     f"0 (oracle) | {o['bleu']:.1f} | {o['chrf']:.1f} | "
                     f"{o['length_ratio']:.2f} |")
        lines.append(f"| {name} | cascade: ASR greedy ({bundle}) -> apertium | {r['utts']} | "
                     f"{a['wer']:.1f} | {a['bleu']:.1f} | {a['chrf']:.1f} | "
                     f"{a['length_ratio']:.2f} |")
    return "\n".join(lines)


def _debian_version(package: str) -> str | None:
    """Installed version of a Debian package (the apertium data decides the BLEU), if known."""
    try:
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                              capture_output=True, text=True, check=False)
    except OSError:
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def scoring_footer(pair: str, t0: float) -> str:
    """The line under a translation table: how it was scored, the apertium data (which decides
    the cascade BLEU), the machine and the run time."""
    return (f"apertium {pair} (apertium-eng-spa "
            f"{_debian_version('apertium-eng-spa') or 'version unknown'}), "
            f"sacrebleu corpus BLEU/chrF on normalize_spanish text; {os.cpu_count()} cores, "
            f"load {os.getloadavg()[0]:.2f}, {time.time() - t0:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cascade",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None, help="ASR bundle (default: models/default)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=MANIFEST",
                    help="a parallel test set with 'text' and 'translation' (repeatable)")
    ap.add_argument("--pair", default=DEFAULT_PAIR,
                    help=f"apertium translation mode (default {DEFAULT_PAIR}; apertium -l)")
    ap.add_argument("--precision", default=None, choices=["fp32", "int8"])
    ap.add_argument("--limit", type=int, default=None, metavar="N", help="utterances per set")
    ap.add_argument("--num-threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    paths = _parse_sets(args.set)
    if not paths:
        raise SystemExit("give at least one --set NAME=MANIFEST.jsonl")
    t0 = time.time()
    try:
        sets = {name: load_parallel(p, args.limit) for name, p in paths.items()}
        check_pair(args.pair)
        rec = Recognizer.from_bundle(args.bundle, decoding=DecodingConfig(method="greedy"),
                                     num_threads=args.num_threads, precision=args.precision)
        out = run_cascade(rec, sets, args.pair)
    except (EdgeAsrError, OSError) as e:
        print(f"cascade: {e}", file=sys.stderr)
        return 1
    bundle = args.bundle or "models/default"
    print(format_table(out["sets"], bundle))
    print(f"\n{scoring_footer(args.pair, t0)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "bundle": bundle, "decoding": "greedy", "pair": args.pair,
            "apertium_data": _debian_version("apertium-eng-spa"), "limit": args.limit,
            "manifests": {k: str(v) for k, v in paths.items()}, **out,
        }, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
