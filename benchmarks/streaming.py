"""Streaming measurements on one recognizer: one utterance at a time, many streams batched,
and long streams. Audio is fed as a live source would (``feed_seconds`` per
``accept_waveform``), and ``decode_streams`` runs after each piece, so latencies are the ones an
app sees.

Latency definitions (all recorded per utterance, aggregated by the caller):

* per-chunk compute: one encoder call plus the decoder's ``decode_chunk`` on its frames, from
  :class:`~benchmarks.metrics.TimedBackend` / :class:`~benchmarks.metrics.TimedDecoder`.
* first partial: audio time from speech onset until the piece after which the first token is
  visible, plus the compute of that ``decode_streams`` call (what a user waits, given real-time
  audio arrival and ``feed_seconds`` granularity).
* final: wall time of the ``decode_streams`` call after ``input_finished()`` (tail padding,
  flush and finalize): the wait after the speaker stops.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.metrics import (
    RssSampler,
    TimedBackend,
    TimedDecoder,
    current_rss_mb,
    load_average,
    percentiles,
)

__all__ = [
    "Utterance",
    "build_recognizer",
    "load_utterances",
    "looped_audio",
    "run_long",
    "run_multistream",
    "run_utterances",
    "speech_onset",
]

RATE = 16000


@dataclass
class Utterance:
    """Test audio (16 kHz float32) with its reference text and detected speech onset (s)."""

    id: str
    audio: np.ndarray
    text: str
    onset_s: float

    @property
    def duration(self) -> float:
        return len(self.audio) / RATE


def speech_onset(audio: np.ndarray, rate: int = RATE, rel: float = 0.05) -> float:
    """Start (s) of the first 10 ms frame whose RMS reaches ``rel`` of the loudest frame's.

    A crude energy detector is enough here: it only anchors "first partial latency" to where
    speech starts, so leading silence is not counted as model latency.
    """
    hop = rate // 100
    n = len(audio) // hop
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(audio[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    peak = float(rms.max())
    if peak <= 0:
        return 0.0
    idx = int(np.argmax(rms >= max(rel * peak, 1e-4)))
    return idx * hop / rate


def load_utterances(manifest: str | Path, limit: int) -> list[Utterance]:
    """The first ``limit`` cuts of a JSONL manifest, loaded and cut to their span."""
    from edgeasr.commands.eval import load_cut_audio
    from edgeasr.manifest import iter_manifest

    out: list[Utterance] = []
    for cut in iter_manifest(manifest):
        if len(out) >= limit:
            break
        x = np.ascontiguousarray(load_cut_audio(cut, RATE), dtype=np.float32)
        if x.size == 0:
            continue
        out.append(Utterance(cut.id, x, cut.text, speech_onset(x)))
    if not out:
        raise ValueError(f"{manifest}: no usable utterances")
    return out


def looped_audio(utts: list[Utterance], seconds: float, start: int = 0) -> np.ndarray:
    """``seconds`` of audio made by concatenating the test utterances (from ``start``) in a loop:
    real speech for growth/long runs without needing hour-long recordings."""
    need = int(round(seconds * RATE))
    parts, have, i = [], 0, start
    while have < need:
        a = utts[i % len(utts)].audio
        parts.append(a[: need - have])
        have += len(parts[-1])
        i += 1
    return np.concatenate(parts).astype(np.float32, copy=False)


@dataclass
class Timed:
    """A recognizer rebuilt over timing proxies, with how long the load took."""

    rec: Any
    backend: TimedBackend
    decoder: TimedDecoder
    load_s: float
    rss_before_load_mb: float

    def reset(self) -> None:
        self.backend.reset()
        self.decoder.reset()

    def chunk_latencies(self) -> dict[str, Any]:
        """Per-round encoder / decoder / total compute percentiles (ms)."""
        enc = self.backend.calls.get("encoder", [])
        dec = self.decoder.chunk_times
        n = min(len(enc), len(dec))
        total = [enc[i] + dec[i] for i in range(n)]
        out: dict[str, Any] = {
            "encoder_ms": percentiles(enc),
            "decoder_ms": percentiles(dec),
            "chunk_total_ms": percentiles(total),
        }
        for g in ("predictor", "joint_blank", "joint_labels", "iam_joint"):
            if self.backend.calls.get(g):
                out[f"graph_{g}_ms"] = percentiles(self.backend.calls[g])
        return out


def build_recognizer(
    bundle: str | Path | None,
    backend: str,
    precision: str = "fp32",
    threads: int = 1,
    decoding: Any = None,
    *,
    checkpoint: str | Path | None = None,
    providers: list[str] | None = None,
    device: str = "cpu",
) -> Timed:
    """Load the model as a user would (``Recognizer.from_bundle`` / ``from_checkpoint``) and time
    it, then rebuild the recognizer over :class:`TimedBackend` so the decoder's graph calls are
    timed too, and wrap the decoder in :class:`TimedDecoder`."""
    from edgeasr.stream import Recognizer, RecognizerConfig

    gc.collect()
    rss0 = current_rss_mb()
    t0 = time.perf_counter()
    if backend == "torch" and (checkpoint is not None or device != "cpu"):
        if checkpoint is None:
            raise ValueError("torch on CUDA needs --checkpoint")
        if device == "cpu":
            rec0 = Recognizer.from_checkpoint(checkpoint, decoding, num_threads=threads)
        else:
            from edgeasr.train.checkpoint import load_checkpoint

            from edgeasr.backends.torch import TorchBackend
            from edgeasr.features import FeatureConfig
            from edgeasr.tokenizer import Tokenizer

            be, tok = TorchBackend.from_checkpoint(checkpoint, device=device)
            feats = FeatureConfig.from_dict(dict(load_checkpoint(checkpoint)["feature_config"]))
            rec0 = Recognizer(be, Tokenizer.from_bytes(tok, str(checkpoint)), feats,
                              RecognizerConfig(decoding=decoding))
    else:
        rec0 = Recognizer.from_bundle(bundle, backend=backend, decoding=decoding,
                                      num_threads=threads, precision=precision,
                                      providers=providers)
    load_s = time.perf_counter() - t0
    tb = TimedBackend(rec0.backend)
    rec = Recognizer(tb, rec0.tokenizer, rec0.feature_config, rec0.config)
    td = TimedDecoder(rec.decoder)
    rec.decoder = td
    return Timed(rec, tb, td, load_s, rss0)


def stream_one(t: Timed, utt: Utterance, feed_seconds: float) -> dict[str, Any]:
    """Stream one utterance; returns text, compute, first-partial and final latency."""
    rec = t.rec
    s = rec.create_stream()
    piece = max(1, int(round(feed_seconds * RATE)))
    n = len(utt.audio)
    compute = 0.0
    first: dict[str, float] | None = None
    for a in range(0, n, piece):
        s.accept_waveform(RATE, utt.audio[a : a + piece])
        t0 = time.perf_counter()
        rec.decode_streams([s])
        dt = time.perf_counter() - t0
        compute += dt
        if first is None and s.result.tokens:
            arrived = min(a + piece, n) / RATE
            wait = max(0.0, arrived - utt.onset_s)
            first = {"audio_s": wait, "compute_s": dt, "latency_s": wait + dt}
    t0 = time.perf_counter()
    s.input_finished()
    rec.decode_streams([s])
    final_s = time.perf_counter() - t0
    if s.error is not None:
        raise s.error
    res = s.result
    return {
        "id": utt.id,
        "text": res.text,
        "duration_s": utt.duration,
        "compute_s": compute + final_s,
        "final_s": final_s,
        "first_partial": first,
        "stats": res.stats,
    }


def run_utterances(t: Timed, utts: list[Utterance], feed_seconds: float) -> dict[str, Any]:
    """Stream each utterance in turn: RTF, per-chunk latencies, first-partial and final
    latencies, WER (against the manifest text), RSS during the run."""
    from edgeasr.metrics import wer

    t.reset()
    la0 = load_average()
    with RssSampler() as rss:
        rows = [stream_one(t, u, feed_seconds) for u in utts]
    audio = sum(r["duration_s"] for r in rows)
    compute = sum(r["compute_s"] for r in rows)
    firsts = [r["first_partial"] for r in rows if r["first_partial"]]
    w = wer([u.text for u in utts], [r["text"] for r in rows], ids=[u.id for u in utts])
    stats: dict[str, int] = {}
    for r in rows:
        for k, v in r["stats"].items():
            stats[k] = stats.get(k, 0) + int(v)
    return {
        "utterances": len(rows),
        "audio_s": round(audio, 3),
        "compute_s": round(compute, 4),
        "rtf": round(compute / audio, 5) if audio else None,
        "wer": round(w.rate, 4),
        "wer_detail": w.summary(),
        **t.chunk_latencies(),
        "first_partial_ms": percentiles([f["latency_s"] for f in firsts]),
        "first_partial_audio_ms": percentiles([f["audio_s"] for f in firsts]),
        "first_partial_missing": len(rows) - len(firsts),
        "final_ms": percentiles([r["final_s"] for r in rows]),
        "load_s": round(t.load_s, 4),
        "rss_peak_mb": round(rss.peak_mb, 1),
        "rss_model_mb": round(rss.peak_mb - t.rss_before_load_mb, 1),
        "decode_stats": stats,
        "load_avg_start": la0,
        "hyps": [{"id": r["id"], "text": r["text"]} for r in rows],
    }


def run_multistream(
    t: Timed, utts: list[Utterance], streams: int, seconds: float, feed_seconds: float
) -> dict[str, Any]:
    """``streams`` live streams (different looped audio each) fed in lockstep, one
    ``decode_streams`` over all of them per feed period: aggregate throughput and the latency of
    each batched round that decoded a chunk (calls with nothing buffered count in the compute
    but not in the round percentiles)."""
    rec = t.rec
    audios = [looped_audio(utts, seconds, start=i) for i in range(streams)]
    ss = [rec.create_stream() for _ in range(streams)]
    piece = max(1, int(round(feed_seconds * RATE)))
    t.reset()
    rounds: list[float] = []
    idle = 0.0  # decode_streams calls with no full chunk buffered (cheap, but still compute)
    with RssSampler() as rss:
        t_all = time.perf_counter()
        n = len(audios[0])
        for a in range(0, n, piece):
            for s, x in zip(ss, audios, strict=True):
                s.accept_waveform(RATE, x[a : a + piece])
            calls = len(t.backend.calls.get("encoder", ()))
            t0 = time.perf_counter()
            rec.decode_streams(ss)
            dt = time.perf_counter() - t0
            idle += dt
            if len(t.backend.calls.get("encoder", ())) > calls:  # a chunk was decoded
                rounds.append(dt)
                idle -= dt
        for s in ss:
            s.input_finished()
        t0 = time.perf_counter()
        rec.decode_streams(ss)
        final = time.perf_counter() - t0
        wall = time.perf_counter() - t_all
    failed = [s for s in ss if s.error is not None]
    compute = sum(rounds) + idle + final
    audio = streams * seconds
    return {
        "streams": streams,
        "audio_per_stream_s": seconds,
        "compute_s": round(compute, 4),
        "rtf_aggregate": round(compute / audio, 5),
        "x_realtime": round(audio / compute, 2) if compute else None,
        "wall_s": round(wall, 3),
        "round_ms": percentiles(rounds),
        "final_ms": percentiles([final]),
        **t.chunk_latencies(),
        "rss_peak_mb": round(rss.peak_mb, 1),
        "rss_growth_mb": round(rss.peak_mb - rss.start_mb, 1),
        "failed_streams": len(failed),
    }


def run_growth(t: Timed, utts: list[Utterance], seconds: float,
               feed_seconds: float) -> dict[str, Any]:
    """One stream of ``seconds`` looped audio: RTF, latency tail and RSS growth vs length."""
    x = looped_audio(utts, seconds)
    u = Utterance(f"loop{seconds:g}s", x, "", 0.0)
    t.reset()
    with RssSampler(interval=0.1) as rss:
        r = stream_one(t, u, feed_seconds)
    return {
        "seconds": seconds,
        "rtf": round(r["compute_s"] / seconds, 5),
        "final_ms": round(1000 * r["final_s"], 3),
        **t.chunk_latencies(),
        "rss_start_mb": round(rss.start_mb, 1),
        "rss_peak_mb": round(rss.peak_mb, 1),
        "rss_end_mb": round(rss.end_mb, 1),
        "rss_growth_mb": round(rss.peak_mb - rss.start_mb, 1),
        "tokens": len(r["text"].split()),
    }


def run_long(t: Timed, utts: list[Utterance], seconds: float, feed_seconds: float,
             sample_every: int, reset_at_endpoints: bool = True) -> dict[str, Any]:
    """One stream of ``seconds`` of audio (e.g. an hour), fed as fast as it decodes. Every
    ``sample_every`` decoded chunks record audio time, that round's compute and RSS: a flat
    curve means no state or memory grows with stream length.

    Like an application, the stream is reset at each endpoint (``reset_at_endpoints``): without
    that the hypothesis *is* the hour's transcript and grows with it (~2 MB/h of token lists at
    this model's rate), which is not state the runtime could drop. The timing proxies' per-call
    lists are folded into preallocated float32 arrays as the run goes, so the benchmark's own
    bookkeeping does not show up as growth in the RSS curve."""
    rec = t.rec
    s = rec.create_stream()
    piece = max(1, int(round(feed_seconds * RATE)))
    # Loop a 60 s base signal instead of materialising an hour of audio.
    base = looped_audio(utts, min(seconds, 60.0))
    need = int(round(seconds * RATE))
    t.reset()
    trace: list[dict[str, float]] = []
    spec = t.backend.spec
    cap = int(seconds / (spec.chunk_frames * spec.frame_shift_s)) + 64
    rounds = np.zeros(cap, dtype=np.float32)  # whole decode_streams round (s)
    enc = np.zeros(cap, dtype=np.float32)  # encoder call(s) of that round
    dec = np.zeros(cap, dtype=np.float32)  # decoder's decode_chunk of that round
    fed, i, compute, segments = 0, 0, 0.0, 0
    rss0 = current_rss_mb()
    t_all = time.perf_counter()
    while fed < need:
        off = fed % len(base)
        x = base[off : off + min(piece, need - fed)]
        s.accept_waveform(RATE, x)
        fed += len(x)
        t0 = time.perf_counter()
        rec.decode_streams([s])
        dt = time.perf_counter() - t0
        compute += dt
        calls = t.backend.calls.get("encoder", [])
        if calls and i < cap:
            rounds[i], enc[i], dec[i] = dt, sum(calls), sum(t.decoder.chunk_times)
            if i % sample_every == 0:
                trace.append({"audio_s": round(fed / RATE, 2), "round_ms": round(1000 * dt, 3),
                              "rss_mb": round(current_rss_mb(), 1)})
            i += 1
        t.reset()  # drop this round's per-call records (folded above)
        if reset_at_endpoints and rec.is_endpoint(s):
            segments += 1
            rec.reset(s)
    s.input_finished()
    rec.decode_streams([s])
    wall = time.perf_counter() - t_all
    first_half = [r["rss_mb"] for r in trace[: max(1, len(trace) // 2)]]
    return {
        "seconds": seconds,
        "rtf": round(compute / seconds, 5),
        "wall_s": round(wall, 2),
        "round_ms": percentiles(rounds[:i]),
        "encoder_ms": percentiles(enc[:i]),
        "decoder_ms": percentiles(dec[:i]),
        "chunk_total_ms": percentiles(enc[:i] + dec[:i]),
        "segments": segments,
        "reset_at_endpoints": reset_at_endpoints,
        "rss_start_mb": round(rss0, 1),
        "rss_end_mb": round(current_rss_mb(), 1),
        "rss_max_first_half_mb": max(first_half),
        "rss_max_mb": max(r["rss_mb"] for r in trace),
        "trace": trace,
        "error": str(s.error) if s.error else None,
    }
