"""The HENT-SRT table of #12: ASR WER and ST BLEU of hierarchical models, in one run.

For every system (a stage-2 model: its exported speech-translation bundle and the checkpoint
it came from), every test set and every ST blank penalty:

- **streaming**: the bundle on the runtime (:class:`edgeasr.translation.SpeechTranslator`,
  ONNX Runtime, 320 ms chunks with the bundle's caches), each utterance decoded exactly as
  ``edgeasr eval`` decodes it (:func:`edgeasr.commands.eval.decode_cut`): ``text`` and
  ``translation`` from one encoder pass;
- **full context**: the checkpoint in torch with no chunk mask (every frame sees the whole
  utterance), greedy on both heads (:func:`~edgeasr.train.model.transducer.greedy_decode`,
  :func:`~edgeasr.train.model.hierarchical.st_greedy_decode`), the same features.

Then a cascade baseline per system: its own streaming ASR transcript translated by apertium
(:func:`benchmarks.cascade.score_cascade`), and the oracle cascade (reference transcript ->
apertium). BLEU/chrF are sacrebleu corpus scores (:func:`edgeasr.metrics.translation_scores`)
on the parallel corpus's normalized Spanish. Run::

    python -m benchmarks.hent_srt \\
        --system "CR-CTC=/work/exp/hent/cr/bundle:/work/exp/hent/cr/step-2500.pt" \\
        --system "no CR-CTC=/work/exp/hent/nocr/bundle:/work/exp/hent/nocr/step-2500.pt" \\
        --set clean=/work/corpus/bible-es/test_clean.jsonl \\
        --set noisy=/work/corpus/bible-es/test_noisy.jsonl \\
        --blank-penalties 0,1 --out results/hent_srt.json

Prints one markdown table and writes the figures and every utterance's outputs as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.apertium import DEFAULT_PAIR, check_pair
from benchmarks.cascade import load_parallel, score_cascade, scoring_footer
from benchmarks.wer_table import _parse_sets
from edgeasr.commands.eval import decode_cut, load_cut_audio
from edgeasr.decoding import DecodingConfig
from edgeasr.errors import EdgeAsrError
from edgeasr.manifest import Cut
from edgeasr.metrics import translation_scores, wer

__all__ = ["Outputs", "System", "decode_full_context", "decode_streaming", "main",
           "parse_system", "score"]


@dataclass(frozen=True)
class System:
    """A stage-2 model: ``name`` in the table, its ``bundle`` and its ``checkpoint``."""

    name: str
    bundle: Path
    checkpoint: Path


@dataclass
class Outputs:
    """One decode of a test set: transcripts, translations, and the seconds it took."""

    texts: list[str]
    translations: list[str]
    audio_s: float = 0.0
    decode_s: float = 0.0


def parse_system(spec: str) -> System:
    """``NAME=BUNDLE:CHECKPOINT`` -> :class:`System` (both paths must exist)."""
    name, sep, paths = spec.partition("=")
    bundle, sep2, ckpt = paths.rpartition(":")
    if not sep or not sep2 or not name or not bundle or not ckpt:
        raise SystemExit(f"--system {spec!r}: expected NAME=BUNDLE:CHECKPOINT")
    system = System(name, Path(bundle), Path(ckpt))
    for what, p in (("bundle", system.bundle), ("checkpoint", system.checkpoint)):
        if not p.exists():
            raise SystemExit(f"--system {name}: {what} {p} does not exist")
    return system


def decode_streaming(bundle: Path, cuts: list[Cut], blank_penalty: float,
                     num_threads: int = 1) -> Outputs:
    """Stream every cut through the runtime; both outputs of each from one encoder pass."""
    from edgeasr.translation import SpeechTranslator

    rec = SpeechTranslator.from_bundle(bundle, decoding=DecodingConfig(method="greedy"),
                                       blank_penalty=blank_penalty, num_threads=num_threads)
    out = Outputs([], [])
    for cut in cuts:
        r, dur, dec, _ = decode_cut(rec, cut)
        out.texts.append(r.text)
        out.translations.append(r.translation)  # type: ignore[attr-defined]
        out.audio_s += dur
        out.decode_s += dec
    return out


def decode_full_context(model: Any, asr_tok: Any, st_tok: Any, feature_config: Any,
                        cuts: list[Cut], blank_penalty: float,
                        max_symbols_per_frame: int = 2) -> Outputs:
    """Torch reference, no chunk mask: both heads see the whole utterance. Same features and
    the runtime's ST ``max_symbols_per_frame``, so only the attention context differs."""
    import torch
    from edgeasr.train.model.hierarchical import st_greedy_decode
    from edgeasr.train.model.transducer import greedy_decode

    from edgeasr.features import compute_features

    out = Outputs([], [])
    rate = feature_config.sample_rate
    with torch.inference_mode():
        for cut in cuts:
            audio = load_cut_audio(cut, rate)
            t0 = time.perf_counter()
            feats = torch.from_numpy(compute_features(audio, feature_config))[None]
            lens = torch.tensor([feats.shape[1]])
            asr = greedy_decode(model.asr, feats, lens, chunk_size=None)[0]
            st = st_greedy_decode(model, feats, lens, chunk_size=None,
                                  blank_penalty=blank_penalty,
                                  max_symbols_per_frame=max_symbols_per_frame)[0]
            out.decode_s += time.perf_counter() - t0
            out.audio_s += len(audio) / rate
            out.texts.append(asr_tok.decode(asr))
            out.translations.append(st_tok.decode(st))
    return out


def score(cuts: list[Cut], o: Outputs) -> dict[str, float]:
    """WER of the ASR head (%), BLEU/chrF/length ratio of the ST head, decode RTF."""
    from edgeasr.train.corpus.parallel import normalize_spanish

    w = wer([c.text for c in cuts], o.texts, ids=[c.id for c in cuts])
    t = translation_scores([normalize_spanish(c.translation or "") for c in cuts],
                           o.translations)
    return {"wer": round(100 * w.rate, 2), "bleu": round(t["bleu"], 2),
            "chrf": round(t["chrf"], 2), "length_ratio": t["length_ratio"],
            "rtf": round(o.decode_s / o.audio_s, 4) if o.audio_s else 0.0}


def format_table(rows: list[dict[str, Any]], sets: list[str]) -> str:
    """One markdown table: a row per system x mode x blank penalty, WER and BLEU per set."""
    head = "| system | mode | ST blank penalty |" + "".join(
        f" WER {s} % | BLEU {s} | chrF {s} | hyp/ref {s} |" for s in sets)
    lines = [head, "|" + "---|" * (3 + 4 * len(sets))]
    for r in rows:
        cells = "".join(
            f" {r[s]['wer']:.1f} | {r[s]['bleu']:.2f} | {r[s]['chrf']:.1f} | "
            f"{r[s]['length_ratio']:.2f} |" if s in r else " – | – | – | – |" for s in sets)
        lines.append(f"| {r['system']} | {r['mode']} | {r['blank_penalty']} |{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.hent_srt",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--system", action="append", default=[], metavar="NAME=BUNDLE:CHECKPOINT",
                    help="a stage-2 model: its ST bundle and checkpoint (repeatable)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=MANIFEST",
                    help="a parallel test set with 'text' and 'translation' (repeatable)")
    ap.add_argument("--blank-penalties", default="0,1", metavar="LIST",
                    help="ST blank penalties, comma-separated (default 0,1)")
    ap.add_argument("--modes", default="streaming,full", metavar="LIST",
                    help="streaming and/or full (default both)")
    ap.add_argument("--pair", default=DEFAULT_PAIR, help="apertium mode of the cascade rows")
    ap.add_argument("--no-cascade", action="store_true", help="skip the apertium rows")
    ap.add_argument("--limit", type=int, default=None, metavar="N", help="utterances per set")
    ap.add_argument("--num-threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    systems = [parse_system(s) for s in args.system]
    paths = _parse_sets(args.set)
    if not systems or not paths:
        raise SystemExit("give at least one --system and one --set")
    try:
        penalties = [float(x) for x in args.blank_penalties.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--blank-penalties {args.blank_penalties!r}: not numbers") from None
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"streaming", "full"}:
        raise SystemExit(f"--modes {args.modes!r}: choose from streaming, full")
    import torch
    from edgeasr.train.st import load_st_model

    from edgeasr.features import FeatureConfig
    from edgeasr.tokenizer import Tokenizer

    torch.set_num_threads(args.num_threads)
    t0 = time.time()
    rows: list[dict[str, Any]] = []
    utterances: dict[str, Any] = {}
    cascade: dict[str, Any] = {}
    try:
        sets = {name: load_parallel(p, args.limit) for name, p in paths.items()}
        if not args.no_cascade:
            check_pair(args.pair)
        for system in systems:
            model, asr_bytes, st_bytes, state = load_st_model(system.checkpoint)
            asr_tok, st_tok = Tokenizer.from_bytes(asr_bytes), Tokenizer.from_bytes(st_bytes)
            fcfg = FeatureConfig.from_dict(state.get("feature_config") or {})
            streamed: dict[str, list[str]] = {}
            for mode in modes:
                for bp in penalties:
                    row: dict[str, Any] = {"system": system.name, "mode": mode,
                                           "blank_penalty": bp}
                    for name, cuts in sets.items():
                        o = (decode_streaming(system.bundle, cuts, bp, args.num_threads)
                             if mode == "streaming" else
                             decode_full_context(model, asr_tok, st_tok, fcfg, cuts, bp))
                        row[name] = score(cuts, o)
                        if mode == "streaming":  # the cascade translates these transcripts
                            streamed.setdefault(name, o.texts)
                        utterances[f"{system.name}|{mode}|{bp}|{name}"] = [
                            {"id": c.id, "text": c.text, "hyp": h,
                             "translation_ref": c.translation, "translation": t}
                            for c, h, t in zip(cuts, o.texts, o.translations, strict=True)]
                        print(f"{system.name} {mode} bp={bp} {name}: {row[name]}",
                              file=sys.stderr, flush=True)
                    rows.append(row)
            if not args.no_cascade and streamed:
                c = score_cascade(sets, streamed, args.pair)
                cascade[system.name] = c["sets"]
                rows.append({"system": f"cascade: {system.name} ASR head -> apertium",
                             "mode": "streaming ASR", "blank_penalty": "–",
                             **{n: r["asr"] for n, r in c["sets"].items()}})
        if cascade:
            first = next(iter(cascade.values()))
            rows.append({"system": "cascade: reference transcript -> apertium (oracle)",
                         "mode": "–", "blank_penalty": "–",
                         **{n: {**r["oracle"], "wer": 0.0} for n, r in first.items()}})
    except (EdgeAsrError, OSError) as e:
        print(f"hent_srt: {e}", file=sys.stderr)
        return 1
    print(format_table(rows, list(sets)))
    print(f"\n{', '.join(f'{n}: {len(c)} utts' for n, c in sets.items())}; "
          f"{scoring_footer(args.pair, t0)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "systems": [{"name": s.name, "bundle": str(s.bundle),
                         "checkpoint": str(s.checkpoint)} for s in systems],
            "manifests": {k: str(v) for k, v in paths.items()}, "limit": args.limit,
            "rows": rows, "utterances": utterances,
        }, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
