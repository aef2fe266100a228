"""Streaming fbank cost: kaldi-native-fbank vs the numpy port, in ms per second of audio.

The runtime's whole budget is RTF 0.02 (20 ms of compute per second of audio on one thread),
so feature extraction has to be a small part of it. This feeds the same audio (10 s by default:
a real clip from models/samples looped, or noise with ``--noise``) through
:class:`edgeasr.features.OnlineFeatureExtractor` with each backend in fixed-size pieces, and
reads the features in one of two ways:

* ``piece``: every frame as soon as it is ready, after each piece (the worst case for the numpy
  port, whose cost is mostly per call);
* ``chunk``: as stream.py does, one encoder chunk at a time (``--chunk-frames`` frames plus
  the 7-frame right context, advancing by ``--chunk-frames``).

Each case runs ``--repeats`` times, interleaving backends; the table gives the fastest run's
process CPU time (robust to other processes competing for the cores) and its wall time.
Run: ``python -m benchmarks.features_bench`` (``--help``). Set OMP_NUM_THREADS=1 to measure
one thread, as the runtime budget assumes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from edgeasr.audio import load_audio
from edgeasr.features import FeatureConfig, OnlineFeatureExtractor

SAMPLE = Path(__file__).resolve().parents[1] / "models" / "samples" / "sample3.ogg"
#: Right-context frames the encoder re-reads per chunk (docs/architecture.md: 4*C + 7).
CHUNK_CONTEXT = 7


def make_audio(seconds: float, noise: bool, rate: int) -> np.ndarray:
    """``seconds`` of audio at ``rate``: the sample clip looped (or Gaussian noise)."""
    n = int(seconds * rate)
    if noise:
        return (0.1 * np.random.default_rng(0).standard_normal(n)).astype(np.float32)
    clip = load_audio(SAMPLE, rate)
    return np.resize(clip, n).astype(np.float32)


def run_once(
    audio: np.ndarray,
    config: FeatureConfig,
    backend: str,
    piece: int,
    read: str,
    chunk_frames: int,
) -> tuple[float, float, int]:
    """Feed ``audio`` in ``piece``-sample pieces; return (cpu s, wall s, frames read)."""
    ex = OnlineFeatureExtractor(config, backend=backend)
    needed = chunk_frames + CHUNK_CONTEXT
    next_frame = frames_read = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, len(audio) + piece, piece):
        if start < len(audio):
            ex.accept_waveform(audio[start : start + piece])
        else:
            ex.input_finished()
        if read == "piece":
            frames_read += len(ex.read_frames())
            continue
        while ex.num_frames_ready >= next_frame + needed:
            frames_read += len(ex.get_frames(next_frame, needed))
            next_frame += chunk_frames
            ex.pop(next_frame - ex.first_frame)
    return time.process_time() - cpu, time.perf_counter() - wall, frames_read


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="audio length (default 10)")
    ap.add_argument(
        "--pieces",
        type=float,
        nargs="+",
        default=[0.1, 0.32],
        help="piece sizes in seconds (default 0.1 0.32)",
    )
    ap.add_argument("--read", nargs="+", choices=("piece", "chunk"), default=["piece", "chunk"])
    ap.add_argument("--chunk-frames", type=int, default=32, help="encoder chunk (default 32)")
    ap.add_argument("--repeats", type=int, default=7, help="runs per case; fastest kept")
    ap.add_argument("--noise", action="store_true", help="Gaussian noise instead of speech")
    args = ap.parse_args(argv)

    config = FeatureConfig()
    audio = make_audio(args.seconds, args.noise, config.sample_rate)
    seconds = len(audio) / config.sample_rate
    source = "noise" if args.noise else f"{SAMPLE.name} looped"
    print(f"{seconds:.1f} s of {source}, {config.dim} mel bins, fastest of {args.repeats} runs")
    print(f"{'piece':>7} {'read':>6} {'backend':>8} {'cpu ms/s':>9} {'wall ms/s':>10} {'RTF':>8}")
    for piece_s in args.pieces:
        piece = max(1, int(round(piece_s * config.sample_rate)))
        for read in args.read:
            best: dict[str, tuple[float, float]] = {}
            counts = set()
            for _ in range(args.repeats):
                for backend in ("knf", "numpy"):
                    cpu, wall, frames = run_once(
                        audio, config, backend, piece, read, args.chunk_frames
                    )
                    counts.add(frames)
                    old = best.get(backend, (np.inf, np.inf))
                    best[backend] = (min(old[0], cpu), min(old[1], wall))
            if len(counts) != 1:
                raise RuntimeError(f"backends read different frame counts: {sorted(counts)}")
            for backend, (cpu, wall) in best.items():
                print(
                    f"{piece_s:>6g}s {read:>6} {backend:>8} {1e3 * cpu / seconds:>9.3f} "
                    f"{1e3 * wall / seconds:>10.3f} {cpu / seconds:>8.5f}"
                )
            ratio = best["knf"][0] / best["numpy"][0]
            print(f"{'':>7} {'':>6} {'speedup':>8} {ratio:>8.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
