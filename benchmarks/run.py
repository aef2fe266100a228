"""The benchmark run: every axis of a preset over one or more bundles, into ``results.json``,
``report.md`` and PNG plots.

    python -m benchmarks --preset quick --bundle models/default --manifest test.jsonl \\
        --out results/quick

Each row of ``results.json`` is ``{"section", "name", "status", "config", "metrics",
"load_avg"}``; ``status`` is ``"ok"`` or says why the row was not run (``"not run: no CUDA on
this machine"``) or failed. Rows are never dropped: a missing backend is visible in the report.
Everything runs in this one process, one row after another, so timings share the same machine
state; the load average before each row is recorded because shared machines are noisy.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import peers
from benchmarks.metrics import (
    load_average,
    machine_info,
    peak_rss_mb,
    thread_settings,
    versions,
)
from benchmarks.presets import PRESETS, Preset, get_preset
from benchmarks.streaming import (
    Utterance,
    build_recognizer,
    load_utterances,
    run_growth,
    run_long,
    run_multistream,
    run_utterances,
)

__all__ = ["bundle_sizes", "main", "run_benchmark"]

NO_CUDA = "not run: no CUDA on this machine"


def _row(section: str, name: str, config: dict[str, Any], fn: Callable[[], dict[str, Any]],
         log: Callable[[str], None]) -> dict[str, Any]:
    """Run one measurement; an exception becomes a ``failed:`` row instead of ending the run."""
    la = load_average()
    log(f"[{section}] {name} (load {la})")
    gc.collect()
    try:
        metrics = fn()
        status = metrics.pop("status", "ok")
    except Exception as e:  # keep going: one broken backend must not hide the others
        metrics = {"traceback": traceback.format_exc(limit=3)}
        status = f"failed: {type(e).__name__}: {e}"
        log(f"  -> {status}")
    return {"section": section, "name": name, "status": status, "config": config,
            "metrics": metrics, "load_avg": la}


def _skip(section: str, name: str, config: dict[str, Any], why: str) -> dict[str, Any]:
    return {"section": section, "name": name, "status": why, "config": config, "metrics": {},
            "load_avg": load_average()}


def bundle_sizes(bundle_dir: str | Path) -> list[dict[str, Any]]:
    """Bytes per graph file and per format/precision, from model.json's file list."""
    from edgeasr.bundle import Bundle

    b = Bundle.load(bundle_dir, verify_hashes=False)
    rows = []
    for fmt, prec in b.variants():
        graphs = b.graphs(fmt, prec)
        per = {n: b.manifest.files[g.file].size if g.file in b.manifest.files
               else b.path(g.file).stat().st_size for n, g in graphs.items()}
        rows.append({"format": fmt, "precision": prec, "graphs": per,
                     "total_bytes": sum(per.values())})
    return rows


def _variants(bundle_dir: Path, preset: Preset, checkpoint: Path | None) -> list[tuple[str, str]]:
    """(backend, precision) pairs: every ONNX/ExecuTorch precision present, torch if possible."""
    from edgeasr.bundle import Bundle

    b = Bundle.load(bundle_dir, verify_hashes=False)
    have = set(b.variants())
    out = []
    has_ckpt = checkpoint is not None or any(
        Path(p).name == "checkpoint.pt" for p in b.manifest.files)
    out.append(("torch", "fp32") if has_ckpt else ("torch", "-"))
    for fmt, backend in (("onnx", "onnxruntime"), ("executorch", "executorch")):
        for prec in preset.precisions:
            out.append((backend, prec) if (fmt, prec) in have else (backend, f"!{prec}"))
    return out


def _decoder_configs(bundle_dir: Path, preset: Preset) -> list[tuple[str, Any]]:
    """Decoding configs the model supports, named for the report."""
    from edgeasr.bundle import Bundle
    from edgeasr.decoding import DecodingConfig

    m = Bundle.load(bundle_dir, verify_hashes=False).model
    out: list[tuple[str, Any]] = []
    for method in preset.decoders:
        if method == "gated":
            out += [(f"gated θ_IAM={th:g}", DecodingConfig(method="gated", iam_threshold=th))
                    for th in preset.gated_thetas]
        elif method == "beam":
            out.append((f"beam {preset.beam_size}",
                        DecodingConfig(method="beam", beam_size=preset.beam_size)))
        elif (method == "tdt" and not m.is_tdt) or (
            method in ("iam-ctc", "nar", "sar", "viterbi") and not m.has_iam
        ):
            out.append((method, None))
        else:
            out.append((method, DecodingConfig(method=method)))
    return out


def _threads(n: int | None, cores: int) -> int:
    return cores if n is None else n


def export_chunk_bundles(checkpoint: Path, chunk_sizes: list[int], out: Path,
                         log: Callable[[str], None]) -> list[Path]:
    """Export ``checkpoint`` once per chunk size (ONNX fp32 + int8) with the project's exporter;
    the weights do not depend on the chunk size (the model trains on several)."""
    from edgeasr.export.writer import ExportOptions, export_bundle
    from edgeasr.train.checkpoint import load_for_inference
    from edgeasr.train.model import Transducer

    from edgeasr.features import FeatureConfig

    model, tok, configs = load_for_inference(checkpoint)
    paths = []
    for c in chunk_sizes:
        dst = out / f"chunk{c}"
        if (dst / "model.json").exists():
            paths.append(dst)
            continue
        log(f"exporting {checkpoint} with chunk_size={c} to {dst}")
        m = Transducer(dataclasses.replace(model.cfg, chunk_size=c)).eval()
        m.load_state_dict(model.state_dict())
        export_bundle(m, tok, dst, ExportOptions(formats=("onnx", "sherpa"),
                                                 precisions=("fp32", "int8"), name=f"chunk{c}"),
                      feature_config=FeatureConfig.from_dict(dict(configs["feature_config"])),
                      train_config=dict(configs["train_config"]))
        paths.append(dst)
    return paths


def run_benchmark(
    bundles: list[Path], manifest: Path, out: Path, preset: Preset, *,
    checkpoint: Path | None = None, long_seconds: float | None = None,
    sections: tuple[str, ...] | None = None, command: str = "",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every section of ``preset``; write results.json, report.md and plots into ``out``."""
    from benchmarks.report import write_report
    from edgeasr.bundle import Bundle

    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    mach = machine_info()
    cores = int(mach["cores_usable"] or 1)
    want = set(sections or ("sizes", "backends", "decoders", "chunks", "multistream", "growth",
                            "gpu", "peers", "long"))
    utts = load_utterances(manifest, preset.max_utterances)
    main_bundle = bundles[0]
    b = Bundle.load(main_bundle, verify_hashes=False)
    feed = preset.feed_seconds
    rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {
        "schema": 1,
        "command": command,
        "preset": preset.to_dict(),
        "bundle": {"path": str(main_bundle), "name": b.manifest.name,
                   "created": b.manifest.created, "chunk_seconds": b.chunk.chunk_seconds,
                   "model": b.model.to_dict(),
                   "model_config": dict(b.manifest.model_config or {})},
        "bundles": [str(p) for p in bundles],
        "checkpoint": str(checkpoint) if checkpoint else None,
        "manifest": {"path": str(manifest), "utterances": len(utts),
                     "audio_s": round(sum(u.duration for u in utts), 3)},
        "machine": mach,
        "versions": versions(),
        "threads": {"counts": [_threads(n, cores) for n in preset.thread_counts],
                    "env": thread_settings(), "note": "intra-op threads of every session; "
                    "inter-op 1 (ORT); torch.set_num_threads for torch"},
        "load_avg_start": load_average(),
        "rows": rows,
    }

    def save() -> None:
        results["load_avg_end"] = load_average()
        results["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        results["process_peak_rss_mb"] = round(peak_rss_mb(), 1)
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    if "sizes" in want:
        for bd in bundles:
            for r in bundle_sizes(bd):
                rows.append({"section": "sizes", "name": f"{Path(bd).name} "
                             f"{r['format']}/{r['precision']}", "status": "ok",
                             "config": {"bundle": str(bd), "format": r["format"],
                                        "precision": r["precision"]},
                             "metrics": {"total_bytes": r["total_bytes"],
                                         "graphs": r["graphs"]}, "load_avg": load_average()})

    if "backends" in want:
        for backend, prec in _variants(main_bundle, preset, checkpoint):
            for n in preset.thread_counts:
                th = _threads(n, cores)
                name = f"{backend} {prec.lstrip('!')} {th}t"
                cfg = {"backend": backend, "precision": prec.lstrip("!"), "threads": th,
                       "decoding": "greedy", "feed_seconds": feed}
                if prec == "-":
                    rows.append(_skip("backends", f"torch eager {th}t", cfg,
                                      "not run: torch eager needs the training checkpoint "
                                      "(--checkpoint, or checkpoint.pt inside the bundle)"))
                    continue
                if prec.startswith("!"):
                    rows.append(_skip("backends", name, cfg,
                                      f"not run: the bundle has no {backend} {prec[1:]} graphs"))
                    continue

                def fn(backend=backend, prec=prec, th=th) -> dict[str, Any]:
                    t = build_recognizer(main_bundle, backend, prec, th, checkpoint=checkpoint)
                    return run_utterances(t, utts, feed)

                rows.append(_row("backends", name, cfg, fn, log))
                save()

    if "decoders" in want:
        dutts = utts[: preset.decoder_utterances]
        for label, dc in _decoder_configs(main_bundle, preset):
            cfg = {"backend": "onnxruntime", "precision": "fp32", "threads": 1,
                   "decoding": dc.to_dict() if dc else label, "feed_seconds": feed}
            if dc is None:
                why = ("no TDT duration head" if label == "tdt"
                       else "model has no trained IAM (null-predictor) joint")
                rows.append(_skip("decoders", label, cfg, f"not run: {why}"))
                continue
            rows.append(_row("decoders", label, cfg, lambda dc=dc: run_utterances(
                build_recognizer(main_bundle, "onnxruntime", "fp32", 1, dc), dutts, feed), log))
            save()

    if "chunks" in want:
        for bd in bundles:
            cb = Bundle.load(bd, verify_hashes=False)
            name = f"chunk {cb.chunk.chunk_frames} ({1000 * cb.chunk.chunk_seconds:.0f} ms)"
            cfg = {"bundle": str(bd), "chunk_frames": cb.chunk.chunk_frames,
                   "chunk_seconds": cb.chunk.chunk_seconds, "backend": "onnxruntime",
                   "precision": "fp32", "threads": 1, "decoding": "greedy"}
            rows.append(_row("chunks", name, cfg, lambda bd=bd: run_utterances(
                build_recognizer(bd, "onnxruntime", "fp32", 1), utts, feed), log))
            save()

    if "multistream" in want:
        shared = None
        for n in preset.stream_counts:
            cfg = {"backend": "onnxruntime", "precision": "fp32", "threads": cores,
                   "streams": n, "seconds": preset.multistream_seconds, "decoding": "greedy"}

            def fn(n=n) -> dict[str, Any]:
                nonlocal shared
                shared = shared or build_recognizer(main_bundle, "onnxruntime", "fp32", cores)
                return run_multistream(shared, utts, n, preset.multistream_seconds, feed)

            rows.append(_row("multistream", f"{n} streams", cfg, fn, log))
            save()
        shared = None

    if "growth" in want:
        grow = None
        for sec in preset.growth_seconds:
            cfg = {"backend": "onnxruntime", "precision": "fp32", "threads": 1,
                   "seconds": sec, "decoding": "greedy", "audio": "looped test utterances"}

            def fn(sec=sec) -> dict[str, Any]:
                nonlocal grow
                grow = grow or build_recognizer(main_bundle, "onnxruntime", "fp32", 1)
                return run_growth(grow, utts, sec, feed)

            rows.append(_row("growth", f"{sec:g} s", cfg, fn, log))
            save()
        grow = None

    if "gpu" in want:
        rows += _gpu_rows(main_bundle, utts, preset, checkpoint, mach, log)
        save()

    if "peers" in want:
        putts = utts[: preset.peer_utterances]
        rows.append(_row("peers", "pocketsphinx", {"feed_seconds": feed},
                         lambda: peers.run_pocketsphinx(putts, feed), log))
        for prec in ("fp32", "int8"):
            rows.append(_row("peers", f"sherpa-onnx {prec} 1t",
                             {"precision": prec, "threads": 1, "decoding": "greedy_search"},
                             lambda prec=prec: peers.run_sherpa(main_bundle, putts, feed, prec),
                             log))
            if rows[-1]["status"] == "ok":
                rows.append(_row("peers", f"edgeasr onnxruntime {prec} 1t (same utterances)",
                                 {"precision": prec, "threads": 1, "decoding": "greedy"},
                                 lambda prec=prec: run_utterances(build_recognizer(
                                     main_bundle, "onnxruntime", prec, 1), putts, feed), log))
        results["headline"] = headline(rows)
        save()

    if "long" in want and long_seconds:
        cfg = {"backend": "onnxruntime", "precision": "fp32", "threads": 1,
               "seconds": long_seconds, "sample_every": preset.long_sample_every}
        rows.append(_row("long", f"{long_seconds:g} s stream", cfg, lambda: run_long(
            build_recognizer(main_bundle, "onnxruntime", "fp32", 1), utts, long_seconds, feed,
            preset.long_sample_every), log))

    save()
    write_report(results, out)
    log(f"wrote {out}/results.json, report.md ({results['elapsed_s']} s)")
    return results


def _gpu_rows(bundle: Path, utts: list[Utterance], preset: Preset, checkpoint: Path | None,
              mach: dict[str, Any], log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Torch CUDA batched streaming and the ORT CUDA provider, or rows saying why not."""
    rows = []
    cuda = mach["cuda"]
    for n in preset.stream_counts:
        cfg = {"backend": "torch", "device": "cuda", "streams": n, "decoding": "greedy"}
        name = f"torch cuda {n} streams"
        if not cuda.get("torch_cuda"):
            rows.append(_skip("gpu", name, cfg, NO_CUDA))
        elif checkpoint is None:
            rows.append(_skip("gpu", name, cfg, "not run: torch CUDA needs --checkpoint"))
        else:
            rows.append(_row("gpu", name, cfg, lambda n=n: run_multistream(
                build_recognizer(None, "torch", checkpoint=checkpoint, device="cuda"),
                utts, n, preset.multistream_seconds, preset.feed_seconds), log))
        cfg = {"backend": "onnxruntime", "provider": "CUDAExecutionProvider", "streams": n}
        name = f"onnxruntime cuda {n} streams"
        if not cuda.get("ort_cuda"):
            why = NO_CUDA if not cuda.get("torch_cuda") else (
                "not run: this onnxruntime build has no CUDAExecutionProvider")
            rows.append(_skip("gpu", name, cfg, why))
        else:
            rows.append(_row("gpu", name, cfg, lambda n=n: run_multistream(
                build_recognizer(bundle, "onnxruntime", "fp32", 1,
                                 providers=["CUDAExecutionProvider", "CPUExecutionProvider"]),
                utts, n, preset.multistream_seconds, preset.feed_seconds), log))
    return rows


def headline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """RTF(edgeasr ORT) / RTF(sherpa-onnx) on the same model, utterances and threads: > 1 means
    our Python runtime is that many times slower than the C++ reference."""
    by = {r["name"]: r for r in rows if r["section"] == "peers" and r["status"] == "ok"}
    out: dict[str, Any] = {}
    for prec in ("fp32", "int8"):
        ours = by.get(f"edgeasr onnxruntime {prec} 1t (same utterances)")
        theirs = by.get(f"sherpa-onnx {prec} 1t")
        if ours and theirs and theirs["metrics"].get("rtf"):
            out[f"rtf_ratio_vs_sherpa_{prec}"] = round(
                ours["metrics"]["rtf"] / theirs["metrics"]["rtf"], 3)
            out[f"edgeasr_rtf_{prec}"] = ours["metrics"]["rtf"]
            out[f"sherpa_rtf_{prec}"] = theirs["metrics"]["rtf"]
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Speed, size and accuracy of edgeasr bundles, with peers (pocketsphinx, "
        "sherpa-onnx) in the same run.")
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    p.add_argument("--bundle", action="append", type=Path, default=[],
                   help="bundle folder; repeat for several chunk sizes (the first is the main)")
    p.add_argument("--checkpoint", type=Path,
                   help="training checkpoint: enables torch eager / torch CUDA rows, and with "
                   "--chunk-sizes exports bundles on the fly")
    p.add_argument("--chunk-sizes", default="",
                   help="comma-separated encoder chunk sizes to export from --checkpoint")
    p.add_argument("--manifest", type=Path, required=True, help="test JSONL manifest")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--long", type=float, nargs="?", const=-1.0, default=None, metavar="SECONDS",
                   help="also run one long stream (default: the preset's, 3600 s) and plot "
                   "per-chunk latency and RSS over time")
    p.add_argument("--sections", default="",
                   help="comma-separated subset of sizes,backends,decoders,chunks,multistream,"
                   "growth,gpu,peers,long")
    p.add_argument("--max-utterances", type=int, help="override the preset's utterance count")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {}
    if args.max_utterances:
        overrides["max_utterances"] = args.max_utterances
    preset = get_preset(args.preset, **overrides)
    bundles = list(args.bundle)
    if args.checkpoint and args.chunk_sizes:
        sizes = [int(x) for x in args.chunk_sizes.split(",") if x.strip()]
        bundles += export_chunk_bundles(args.checkpoint, sizes, args.out / "bundles", print)
    if not bundles:
        print("error: give --bundle (or --checkpoint with --chunk-sizes)", file=sys.stderr)
        return 2
    for bd in bundles:
        if not (Path(bd) / "model.json").exists():
            print(f"error: {bd}: not a bundle folder (no model.json)", file=sys.stderr)
            return 2
    if not args.manifest.exists():
        print(f"error: manifest {args.manifest} does not exist", file=sys.stderr)
        return 2
    long_s = None
    if args.long is not None:
        long_s = preset.long_seconds if args.long < 0 else args.long
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip()) or None
    argv_used = sys.argv[1:] if argv is None else argv
    run_benchmark(bundles, args.manifest, args.out, preset, checkpoint=args.checkpoint,
                  long_seconds=long_s, sections=sections,
                  command="python -m benchmarks " + shlex.join(argv_used))
    return 0
