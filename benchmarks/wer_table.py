"""WER of one bundle over several test sets and decoders, with pocketsphinx beside it.

Why a separate script: the model card needs one table, measured in one run on the same audio,
of accuracy per test set (clean / noisy held-out voices, out-of-domain text, real speech) for
the decoders that share the joint: HAT greedy, TDT greedy, the null-predictor (IAM) joint as
CTC greedy and as HAINAN NAR, the gated decoder, and a classic on-device baseline
(pocketsphinx with its own US English model). Every utterance is streamed exactly as
``edgeasr eval`` streams it (:func:`edgeasr.commands.eval.decode_cut`), so the numbers agree
with that command.

Run::

    python -m benchmarks.wer_table --bundle models/default \\
        --set clean=/work/corpus/dev/test_clean.jsonl \\
        --set noisy=/work/corpus/dev/test_noisy.jsonl \\
        --decoders greedy,tdt,iam-ctc,nar --limit 200 --out results/wer_table.json

Prints a markdown table (WER %, decode RTF per cell) and writes the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from edgeasr.commands.eval import decode_cut
from edgeasr.decoding import DecodingConfig
from edgeasr.errors import EdgeAsrError
from edgeasr.manifest import read_manifest
from edgeasr.metrics import wer
from edgeasr.stream import Recognizer


def _parse_sets(items: list[str]) -> dict[str, Path]:
    sets: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--set expects NAME=MANIFEST.jsonl, got {item!r}")
        if not Path(path).is_file():
            raise SystemExit(f"--set {name}: no such manifest {path}")
        sets[name] = Path(path)
    return sets


def decoding_config(spec: str) -> DecodingConfig:
    """``METHOD[@θ][:bp=PENALTY]``: ``greedy``, ``beam``, ..., ``gated@0.9`` (θ_IAM; θ_HAT
    stays the bundle's), ``greedy:bp=0.5`` (a blank penalty, so that one run can sweep it on
    the same audio)."""
    head, _, opts = spec.partition(":")
    method, _, theta = head.partition("@")
    kwargs: dict[str, Any] = {"method": method}
    if theta:
        if method != "gated":
            raise SystemExit(f"--decoders {spec!r}: only gated takes @θ")
        kwargs["iam_threshold"] = _number(spec, theta)
    for opt in filter(None, opts.split(":")):
        key, sep, value = opt.partition("=")
        if key != "bp" or not sep:
            raise SystemExit(f"--decoders {spec!r}: unknown option {opt!r} (expected bp=PENALTY)")
        kwargs["blank_penalty"] = _number(spec, value)
    config = DecodingConfig(**kwargs)
    try:
        config.validate()
    except EdgeAsrError as e:
        raise SystemExit(f"--decoders {spec!r}: {e}") from None
    return config


def _number(spec: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SystemExit(f"--decoders {spec!r}: {text!r} is not a number") from None


def eval_decoder(rec: Recognizer, cuts: list[Any]) -> dict[str, Any]:
    """WER, decode RTF (encoder + search) and search RTF (the decoder's ``decode_chunk`` and
    ``finalize`` alone: what the IAM gate and TDT skipping save) of ``rec`` on ``cuts``
    (failed cuts are counted, not fatal)."""
    from benchmarks.metrics import TimedDecoder

    timed = TimedDecoder(rec.decoder)
    rec.decoder = timed
    refs, hyps, ids, audio, decode, failed = [], [], [], 0.0, 0.0, 0
    stats = {"frames": 0, "skipped_frames": 0, "encoder_frames": 0}
    for cut in cuts:
        try:
            r, dur, dec, _ = decode_cut(rec, cut)
        except (EdgeAsrError, OSError) as e:
            if not failed:
                print(f"  {cut.id}: {e} (reported once per cell)", file=sys.stderr)
            failed += 1
            continue
        refs.append(cut.text)
        hyps.append(r.text)
        ids.append(cut.id)
        audio += dur
        decode += dec
        for k in stats:
            stats[k] += r.stats.get(k, 0)
    rec.decoder = timed.inner
    search = sum(timed.chunk_times) + sum(timed.finalize_times)
    w = wer(refs, hyps, ids=ids)
    return {
        "wer": round(100 * w.rate, 2), "rtf": round(decode / audio, 4) if audio else None,
        "search_rtf": round(search / audio, 5) if audio else None,
        "utts": len(refs), "failed": failed, "audio_s": round(audio, 1),
        "frame_skip": round(stats["skipped_frames"] / stats["frames"], 4)
        if stats["frames"] else 0.0,
        # frames the predictor joint never evaluated: TDT jumps plus IAM-gated frames
        "joint_skip": round(1 - (stats["frames"] - stats["skipped_frames"])
                            / stats["encoder_frames"], 4) if stats["encoder_frames"] else 0.0,
        "examples": [{"id": i, "ref": r, "hyp": h} for i, r, h in
                     list(zip(ids, refs, hyps, strict=True))[:3]],
    }


def eval_pocketsphinx(cuts: list[Any], manifest: Path, limit: int) -> dict[str, Any]:
    from benchmarks.peers import run_pocketsphinx
    from benchmarks.streaming import load_utterances

    out = run_pocketsphinx(load_utterances(manifest, limit), feed_seconds=0.1)
    if out.get("status") != "ok":
        return {"wer": None, "rtf": None, "status": out.get("status")}
    return {"wer": round(100 * out["wer"], 2), "rtf": out["rtf"], "utts": out["utterances"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None, help="model bundle (default: models/default)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=MANIFEST",
                    help="a test set (repeatable)")
    ap.add_argument("--decoders", default="greedy,tdt,iam-ctc,nar",
                    help="comma-separated decoding methods; gated@0.9 sets θ_IAM, "
                         "greedy:bp=0.5 a blank penalty")
    ap.add_argument("--backend", default="onnxruntime",
                    choices=["onnxruntime", "executorch", "torch"])
    ap.add_argument("--precision", default=None, choices=["fp32", "int8"])
    ap.add_argument("--limit", type=int, default=200, help="utterances per set")
    ap.add_argument("--num-threads", type=int, default=1)
    ap.add_argument("--no-pocketsphinx", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    sets = _parse_sets(args.set)
    if not sets:
        raise SystemExit("give at least one --set NAME=MANIFEST.jsonl")
    methods = [m for m in args.decoders.split(",") if m]  # "gated@0.9" sets θ_IAM
    results: dict[str, dict[str, Any]] = {}
    t0 = time.time()
    for method in methods:
        try:
            rec = Recognizer.from_bundle(args.bundle, backend=args.backend,
                                         decoding=decoding_config(method),
                                         num_threads=args.num_threads, precision=args.precision)
        except EdgeAsrError as e:
            results[method] = {name: {"wer": None, "status": str(e)} for name in sets}
            continue
        results[method] = {}
        for name, manifest in sets.items():
            cuts = read_manifest(manifest)[: args.limit]
            results[method][name] = eval_decoder(rec, cuts)
            c = results[method][name]
            print(f"{method:10s} {name:8s} WER {c['wer']}%  RTF {c['rtf']}  "
                  f"search RTF {c['search_rtf']}", file=sys.stderr, flush=True)
    if not args.no_pocketsphinx:
        results["pocketsphinx"] = {
            name: eval_pocketsphinx(read_manifest(m)[: args.limit], m, args.limit)
            for name, m in sets.items()
        }
    names = list(sets)
    print(f"| decoder | {' | '.join(names)} |")
    print(f"|---|{'---|' * len(names)}")
    for method, row in results.items():
        cells = []
        for n in names:
            c = row[n]
            if c.get("wer") is None or c.get("utts") == 0:
                cells.append("n/a" if not c.get("failed") else f"failed ({c['failed']} utts)")
                continue
            skip = f", IAM skip {100 * c['frame_skip']:.0f}%" if c.get("frame_skip") else ""
            if c.get("joint_skip"):
                skip += f", unjoined {100 * c['joint_skip']:.0f}%"
            search = f", search {c['search_rtf']:.4f}" if c.get("search_rtf") is not None else ""
            cells.append(f"{c['wer']:.1f} (RTF {c['rtf']:.3f}{search}{skip})")
        print(f"| {method} | {' | '.join(cells)} |")
    print(f"\n{args.backend} {args.precision or 'default precision'}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{args.num_threads} thread(s), load {os.getloadavg()[0]:.2f}, "
          f"{time.time() - t0:.0f} s; cells: WER % (decode RTF = encoder + search "
          f"compute / audio, search RTF = decoder alone, IAM-gated frames, frames the predictor "
          f"joint never saw)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"sets": {k: str(v) for k, v in sets.items()},
                                        "backend": args.backend, "precision": args.precision,
                                        "limit": args.limit, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
