"""Compare two results.json files and flag regressions beyond a noise margin.

    python -m benchmarks.compare OLD.json NEW.json [--margin 0.1]

Rows are matched by ``(section, name)``; only rows that ran in both are compared. A metric
regresses when it moves in its bad direction by more than ``margin`` (relative) *and* by more
than its absolute floor (so 0.010 -> 0.012 ms of noise on a tiny number is not a regression).
Exit status 1 if anything regressed, 0 otherwise, so CI can gate on it. The load averages of both
runs are printed: a regression measured under a much higher load deserves a re-run first.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["Change", "compare", "main"]

#: metric path -> (direction, absolute floor). "lower": larger is worse; "higher": smaller is
#: worse. Latencies in ms, sizes in bytes, RSS in MB, WER as a fraction.
TRACKED: dict[str, tuple[str, float]] = {
    "rtf": ("lower", 0.002),
    "rtf_aggregate": ("lower", 0.002),
    "x_realtime": ("higher", 0.5),
    "wer": ("lower", 0.005),
    "encoder_ms.p50": ("lower", 0.2),
    "encoder_ms.p95": ("lower", 0.2),
    "decoder_ms.p50": ("lower", 0.2),
    "decoder_ms.p95": ("lower", 0.2),
    "chunk_total_ms.p99": ("lower", 0.5),
    "round_ms.p95": ("lower", 0.5),
    "first_partial_ms.p50": ("lower", 5.0),
    "final_ms.p50": ("lower", 1.0),
    "load_s": ("lower", 0.05),
    "rss_peak_mb": ("lower", 5.0),
    "rss_growth_mb": ("lower", 5.0),
    "total_bytes": ("lower", 1024.0),
}


class Change(dict):
    """One compared metric: row, metric, old, new, relative change, regression flag."""


def _get(metrics: dict[str, Any], path: str) -> float | None:
    v: Any = metrics
    for part in path.split("."):
        if not isinstance(v, dict) or part not in v:
            return None
        v = v[part]
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def compare(old: dict[str, Any], new: dict[str, Any], margin: float = 0.1) -> list[Change]:
    """Every tracked metric present in both runs, with its relative change and verdict."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    before = {(r["section"], r["name"]): r for r in old.get("rows", []) if r["status"] == "ok"}
    out: list[Change] = []
    for r in new.get("rows", []):
        key = (r["section"], r["name"])
        if r["status"] != "ok" or key not in before:
            continue
        for path, (direction, floor) in TRACKED.items():
            a, b = _get(before[key]["metrics"], path), _get(r["metrics"], path)
            if a is None or b is None:
                continue
            worse = b - a if direction == "lower" else a - b
            rel = worse / abs(a) if a else (float("inf") if worse > 0 else 0.0)
            out.append(Change(row=f"{key[0]}/{key[1]}", metric=path, old=a, new=b,
                              change=rel, regression=worse > floor and rel > margin))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compare",
                                description="Flag regressions between two benchmark runs.")
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--margin", type=float, default=0.1,
                   help="relative noise margin (default 0.1 = 10%%)")
    p.add_argument("--all", action="store_true", help="print every compared metric")
    args = p.parse_args(argv)
    try:
        old, new = (json.loads(f.read_text()) for f in (args.old, args.new))
    except (OSError, json.JSONDecodeError) as e:
        print(f"error: cannot read results: {e}", file=sys.stderr)
        return 2
    changes = compare(old, new, args.margin)
    print(f"load average: old {old.get('load_avg_start')} new {new.get('load_avg_start')}")
    bad = [c for c in changes if c["regression"]]
    for c in changes if args.all else bad:
        flag = "REGRESSION" if c["regression"] else "ok"
        print(f"{flag:10} {c['row']:<50} {c['metric']:<22} {c['old']:.5g} -> {c['new']:.5g} "
              f"({100 * c['change']:+.1f}% worse)")
    print(f"{len(changes)} metrics compared, {len(bad)} regression(s) beyond "
          f"{100 * args.margin:.0f}%")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
