"""results.json -> report.md + PNG plots (matplotlib, Agg: no display needed).

The report leads with the machine, versions, load average and the exact command, because a
number without them cannot be reproduced or compared. Every row of results.json appears,
including the ones that were not run, with their reason.

    python -m benchmarks.report results/quick/results.json   # re-render an existing run
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["plot_all", "render_markdown", "write_report"]


def _pct(m: dict[str, Any], key: str, stat: str) -> str:
    v = m.get(key, {})
    return f"{v[stat]:.2f}" if isinstance(v, dict) and stat in v else "–"


def _f(v: Any, fmt: str = "{:.4f}") -> str:
    return fmt.format(v) if isinstance(v, int | float) else "–"


def _rows(results: dict[str, Any], section: str) -> list[dict[str, Any]]:
    return [r for r in results["rows"] if r["section"] == section]


def _table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(x) + " |" for x in lines]
    return "\n".join(out)


def _status(r: dict[str, Any]) -> str:
    return "" if r["status"] == "ok" else r["status"]


def _streaming_table(rows: list[dict[str, Any]]) -> str:
    head = ["row", "RTF", "WER", "enc p50/p95/p99 ms", "dec p50/p95/p99 ms",
            "chunk p99 ms", "first partial p50 ms", "final p50 ms", "load s", "RSS peak MB",
            "load avg", "status"]
    lines = []
    for r in rows:
        m = r["metrics"]
        enc = "/".join(_pct(m, "encoder_ms", s) for s in ("p50", "p95", "p99"))
        dec = "/".join(_pct(m, "decoder_ms", s) for s in ("p50", "p95", "p99"))
        lines.append([r["name"], _f(m.get("rtf")), _f(m.get("wer"), "{:.2%}"),
                      enc if m else "–", dec if m else "–", _pct(m, "chunk_total_ms", "p99"),
                      _pct(m, "first_partial_ms", "p50"), _pct(m, "final_ms", "p50"),
                      _f(m.get("load_s"), "{:.3f}"), _f(m.get("rss_peak_mb"), "{:.0f}"),
                      str(r.get("load_avg", [""])[0] if r.get("load_avg") else "–"),
                      _status(r)])
    return _table(head, lines)


def render_markdown(results: dict[str, Any], plots: list[str]) -> str:
    """The whole report as Markdown."""
    mach, ver = results["machine"], results["versions"]
    b = results["bundle"]
    md = [f"# edgeasr benchmark: preset `{results['preset']['name']}`", ""]
    md += ["Command (reproduce every number below):", "", "```", results.get("command", ""),
           "```", ""]
    md += [f"- bundle: `{b['path']}` ({b['name']}, created {b.get('created') or '?'}, chunk "
           f"{1000 * b['chunk_seconds']:.0f} ms)",
           f"- manifest: `{results['manifest']['path']}`, {results['manifest']['utterances']} "
           f"utterances, {results['manifest']['audio_s']} s",
           f"- machine: {mach['cpu']}, {mach['cores_logical']} logical cores "
           f"({mach['cores_usable']} usable), {mach.get('memory_gb')} GB, {mach['platform']}",
           f"- CUDA: torch {mach['cuda'].get('torch_cuda')}, onnxruntime "
           f"{mach['cuda'].get('ort_cuda')}",
           "- versions: " + ", ".join(f"{k} {v}" for k, v in ver.items() if v),
           f"- threads: {results['threads']['counts']} ({results['threads']['note']}); env "
           f"{ {k: v for k, v in results['threads']['env'].items() if v} or 'unset'}",
           f"- load average (1/5/15 min) at start {results['load_avg_start']}, at end "
           f"{results.get('load_avg_end')}: timings on a loaded machine are noisy; each row "
           "records the 1-min load when it started.",
           f"- elapsed {results.get('elapsed_s')} s; process peak RSS "
           f"{results.get('process_peak_rss_mb')} MB", ""]
    head = results.get("headline") or {}
    if head:
        md += ["## Headline", ""]
        for prec in ("fp32", "int8"):
            if f"rtf_ratio_vs_sherpa_{prec}" in head:
                md.append(f"- {prec}: edgeasr RTF {head[f'edgeasr_rtf_{prec}']} / sherpa-onnx "
                          f"RTF {head[f'sherpa_rtf_{prec}']} = **"
                          f"{head[f'rtf_ratio_vs_sherpa_{prec}']}x** (same model, audio, 1 "
                          "thread; > 1: slower than sherpa-onnx)")
        md.append("")
    md += ["Definitions: RTF = compute / audio (1 stream). enc/dec = per-chunk wall time of the "
           "encoder call and of the decoder's decode_chunk (its graph calls + Python). first "
           "partial = audio from speech onset until the first token is visible + compute of "
           "that call. final = time from input_finished() to the final result. RSS peak: "
           "whole process during the row.", ""]
    sizes = _rows(results, "sizes")
    if sizes:
        md += ["## Bundle sizes", ""]
        md.append(_table(["variant", "total KiB", "per graph KiB"], [
            [r["name"], f"{r['metrics']['total_bytes'] / 1024:.1f}",
             ", ".join(f"{k} {v / 1024:.1f}" for k, v in r["metrics"]["graphs"].items())]
            for r in sizes]))
        md.append("")
    for section, title in (("backends", "Backends (greedy, 1 stream)"),
                           ("decoders", "Decoders (onnxruntime fp32, 1 thread)"),
                           ("chunks", "Chunk sizes (onnxruntime fp32, 1 thread)"),
                           ("peers", "Peers (same utterances)")):
        rows = _rows(results, section)
        if rows:
            md += [f"## {title}", "", _streaming_table(rows), ""]
    ms = _rows(results, "multistream") + _rows(results, "gpu")
    if ms:
        md += ["## Batched streams (decode_streams)", ""]
        md.append(_table(["row", "x realtime", "RTF aggregate", "round p50/p95/p99 ms",
                          "RSS growth MB", "load avg", "status"], [
            [r["name"], _f(r["metrics"].get("x_realtime"), "{:.1f}"),
             _f(r["metrics"].get("rtf_aggregate")),
             "/".join(_pct(r["metrics"], "round_ms", s) for s in ("p50", "p95", "p99"))
             if r["metrics"] else "–",
             _f(r["metrics"].get("rss_growth_mb"), "{:.1f}"),
             str(r["load_avg"][0]) if r.get("load_avg") else "–", _status(r)] for r in ms]))
        md.append("")
    gr = _rows(results, "growth")
    if gr:
        md += ["## Growth with utterance length (1 stream, looped test audio)", ""]
        md.append(_table(["length", "RTF", "chunk p50/p99 ms", "RSS start/peak/end MB",
                          "load avg", "status"], [
            [r["name"], _f(r["metrics"].get("rtf")),
             f"{_pct(r['metrics'], 'chunk_total_ms', 'p50')}/"
             f"{_pct(r['metrics'], 'chunk_total_ms', 'p99')}",
             f"{_f(r['metrics'].get('rss_start_mb'), '{:.0f}')}/"
             f"{_f(r['metrics'].get('rss_peak_mb'), '{:.0f}')}/"
             f"{_f(r['metrics'].get('rss_end_mb'), '{:.0f}')}",
             str(r["load_avg"][0]) if r.get("load_avg") else "–", _status(r)] for r in gr]))
        md.append("")
    for r in _rows(results, "long"):
        m = r["metrics"]
        md += [f"## Long stream: {r['name']}", ""]
        if r["status"] != "ok":
            md += [r["status"], ""]
            continue
        md += [f"RTF {m['rtf']}, round p50/p99 {_pct(m, 'round_ms', 'p50')}/"
               f"{_pct(m, 'round_ms', 'p99')} ms, RSS {m['rss_start_mb']} -> {m['rss_end_mb']} MB "
               f"(max in first half {m['rss_max_first_half_mb']}, overall {m['rss_max_mb']}); "
               "flat is the target."
               + (f" The stream was reset at each of its {m['segments']} endpoints, as an "
                  "application does." if m.get("reset_at_endpoints") else ""), ""]
    if plots:
        md += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(md)


def plot_all(results: dict[str, Any], out: Path) -> list[str]:
    """Write the PNG plots that have data; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        made.append(name)

    lat = [r for r in _rows(results, "backends") + _rows(results, "chunks")
           if r["status"] == "ok" and r["metrics"].get("encoder_ms", {}).get("n")]
    if lat:
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(lat)), 4))
        width = 0.13
        for j, (key, stat) in enumerate([(k, s) for k in ("encoder_ms", "decoder_ms")
                                         for s in ("p50", "p95", "p99")]):
            ax.bar([i + (j - 2.5) * width for i in range(len(lat))],
                   [r["metrics"][key].get(stat, 0) for r in lat], width,
                   label=f"{key.split('_')[0]} {stat}")
        ax.set_xticks(range(len(lat)), [r["name"] for r in lat], rotation=30, ha="right")
        ax.set_ylabel("ms per chunk")
        ax.set_title("Per-chunk compute latency")
        ax.legend(fontsize=7)
        save(fig, "latency.png")

    rtf = [r for r in _rows(results, "backends") + _rows(results, "decoders")
           + _rows(results, "peers") if r["status"] == "ok" and r["metrics"].get("rtf")]
    if rtf:
        fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(rtf)), 4))
        ax.bar(range(len(rtf)), [r["metrics"]["rtf"] for r in rtf],
               color=[{"backends": "C0", "decoders": "C1", "peers": "C2"}[r["section"]]
                      for r in rtf])
        ax.set_xticks(range(len(rtf)), [r["name"] for r in rtf], rotation=40, ha="right",
                      fontsize=7)
        ax.set_ylabel("RTF (lower is faster)")
        ax.set_title("Real-time factor: backends (blue), decoders (orange), peers (green)")
        save(fig, "rtf.png")

    gr = [r for r in _rows(results, "growth") if r["status"] == "ok"]
    if gr:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [r["metrics"]["seconds"] for r in gr]
        ax.plot(xs, [r["metrics"]["rtf"] for r in gr], "o-", label="RTF")
        ax.set_xscale("log")
        ax.set_xlabel("utterance length (s)")
        ax.set_ylabel("RTF")
        ax2 = ax.twinx()
        ax2.plot(xs, [r["metrics"]["rss_peak_mb"] for r in gr], "s--", color="C3",
                 label="RSS peak MB")
        ax2.set_ylabel("RSS peak (MB)")
        ax.set_title("RTF and RSS vs utterance length")
        save(fig, "growth_length.png")

    ms = [r for r in _rows(results, "multistream") if r["status"] == "ok"]
    if ms:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [r["config"]["streams"] for r in ms]
        ax.plot(xs, [r["metrics"]["x_realtime"] for r in ms], "o-", label="x realtime")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel("aggregate x realtime")
        ax2 = ax.twinx()
        ax2.plot(xs, [r["metrics"]["round_ms"].get("p95", 0) for r in ms], "s--", color="C3")
        ax2.set_ylabel("round p95 (ms)")
        ax.set_title("Batched streams: throughput and round latency")
        save(fig, "growth_streams.png")

    dec = [r for r in _rows(results, "decoders") if r["status"] == "ok"]
    if dec:
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in dec:
            ax.scatter(r["metrics"]["rtf"], 100 * r["metrics"]["wer"])
            ax.annotate(r["name"], (r["metrics"]["rtf"], 100 * r["metrics"]["wer"]), fontsize=7)
        ax.set_xlabel("RTF")
        ax.set_ylabel("WER %")
        ax.set_title("Decoders: accuracy vs speed")
        save(fig, "decoders.png")

    for r in _rows(results, "long"):
        tr = r["metrics"].get("trace") if r["status"] == "ok" else None
        if not tr:
            continue
        fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
        xs = [p["audio_s"] / 60 for p in tr]
        a1.plot(xs, [p["round_ms"] for p in tr], ".", ms=3)
        a1.set_ylabel("round compute (ms)")
        a2.plot(xs, [p["rss_mb"] for p in tr], "-")
        a2.set_ylabel("RSS (MB)")
        a2.set_xlabel("stream position (audio minutes)")
        a1.set_title(f"Long stream ({r['name']}): flat is the target")
        save(fig, "long_stream.png")
    return made


def write_report(results: dict[str, Any], out: Path) -> Path:
    """Plots + report.md into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_all(results, out)
    path = out / "report.md"
    path.write_text(render_markdown(results, plots) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m benchmarks.report RESULTS.json", file=sys.stderr)
        return 2
    p = Path(args[0])
    write_report(json.loads(p.read_text()), p.parent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
