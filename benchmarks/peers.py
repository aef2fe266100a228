"""Peer systems measured in the same run on the same audio, so "compared with what" has an
answer that does not depend on another machine or another day's load.

* pocketsphinx (PyPI ``pocketsphinx``): ships its own US English acoustic model, language model
  and dictionary: a classic small on-device recognizer; WER and RTF.
* sherpa-onnx (PyPI ``sherpa-onnx``): the reference C++ streaming runtime, running *this
  project's* sherpa-flavor export from the bundle, so the model is the same and only the
  runtime differs; its RTF is the yardstick for our own Python runtime.

Both are fed in the same ``feed_seconds`` pieces as our recognizer. A peer that is not
installed, or a bundle without the sherpa flavor, gives a row whose status says why.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.metrics import load_average, percentiles
from benchmarks.streaming import RATE, Utterance

__all__ = ["run_pocketsphinx", "run_sherpa"]


def _score(utts: list[Utterance], hyps: list[str]) -> dict[str, Any]:
    from edgeasr.metrics import wer

    w = wer([u.text for u in utts], hyps, ids=[u.id for u in utts])
    return {"wer": round(w.rate, 4), "wer_detail": w.summary()}


def run_pocketsphinx(utts: list[Utterance], feed_seconds: float) -> dict[str, Any]:
    """pocketsphinx with its bundled en-us model, fed int16 PCM in pieces."""
    try:
        from pocketsphinx import Decoder
    except ImportError:
        return {"status": "not run: pocketsphinx not installed (pip install pocketsphinx)"}
    t0 = time.perf_counter()
    dec = Decoder(samprate=RATE, loglevel="FATAL")
    load_s = time.perf_counter() - t0
    piece = max(1, int(round(feed_seconds * RATE)))
    hyps, compute, audio, finals = [], 0.0, 0.0, []
    la0 = load_average()
    for u in utts:
        pcm = (np.clip(u.audio, -1, 1) * 32767).astype("<i2")
        t0 = time.perf_counter()
        dec.start_utt()
        for a in range(0, len(pcm), piece):
            dec.process_raw(pcm[a : a + piece].tobytes(), False, False)
        t1 = time.perf_counter()
        dec.end_utt()
        t2 = time.perf_counter()
        finals.append(t2 - t1)
        compute += t2 - t0
        audio += u.duration
        hyp = dec.hyp()
        hyps.append(hyp.hypstr if hyp is not None else "")
    return {
        "status": "ok",
        "model": "pocketsphinx bundled en-us (acoustic model, LM, dictionary)",
        "rtf": round(compute / audio, 5),
        "load_s": round(load_s, 4),
        "final_ms": percentiles(finals),
        "utterances": len(utts),
        "load_avg_start": la0,
        **_score(utts, hyps),
        "hyps": [{"id": u.id, "text": h} for u, h in zip(utts, hyps, strict=True)],
    }


def run_sherpa(
    bundle_dir: str | Path, utts: list[Utterance], feed_seconds: float, precision: str = "fp32",
    threads: int = 1,
) -> dict[str, Any]:
    """sherpa-onnx's OnlineRecognizer (greedy search) over the bundle's sherpa flavor."""
    try:
        import sherpa_onnx
    except ImportError:
        return {"status": "not run: sherpa-onnx not installed (pip install sherpa-onnx)"}
    from edgeasr.bundle import Bundle

    b = Bundle.load(bundle_dir, verify_hashes=False)
    try:
        graphs = b.graphs("sherpa", precision)
    except Exception as e:  # BundleError: flavor absent
        return {"status": f"not run: {e}"}
    t0 = time.perf_counter()
    try:
        rec = sherpa_onnx.OnlineRecognizer.from_transducer(
            tokens=str(b.tokens_path),
            encoder=str(b.path(graphs["encoder"].file)),
            decoder=str(b.path(graphs["decoder"].file)),
            joiner=str(b.path(graphs["joiner"].file)),
            num_threads=threads,
            sample_rate=RATE,
            feature_dim=b.features.num_mel_bins,
            decoding_method="greedy_search",
            provider="cpu",
        )
    except Exception as e:  # sherpa raises RuntimeError / ValueError on a bad model
        return {"status": f"failed: sherpa-onnx cannot load the bundle's sherpa flavor: {e}"}
    load_s = time.perf_counter() - t0
    piece = max(1, int(round(feed_seconds * RATE)))
    tail = np.zeros(int(round(b.chunk.tail_padding_seconds * RATE)), dtype=np.float32)
    hyps, compute, audio, finals = [], 0.0, 0.0, []
    la0 = load_average()
    for u in utts:
        s = rec.create_stream()
        t0 = time.perf_counter()
        for a in range(0, len(u.audio), piece):
            s.accept_waveform(RATE, u.audio[a : a + piece])
            while rec.is_ready(s):
                rec.decode_stream(s)
        t1 = time.perf_counter()
        if tail.size:  # same tail padding our input_finished() appends
            s.accept_waveform(RATE, tail)
        s.input_finished()
        while rec.is_ready(s):
            rec.decode_stream(s)
        t2 = time.perf_counter()
        finals.append(t2 - t1)
        compute += t2 - t0
        audio += u.duration
        hyps.append(rec.get_result(s).strip() if isinstance(rec.get_result(s), str)
                    else rec.get_result(s).text)
    return {
        "status": "ok",
        "precision": precision,
        "threads": threads,
        "rtf": round(compute / audio, 5),
        "load_s": round(load_s, 4),
        "final_ms": percentiles(finals),
        "utterances": len(utts),
        "load_avg_start": la0,
        **_score(utts, hyps),
        "hyps": [{"id": u.id, "text": h} for u, h in zip(utts, hyps, strict=True)],
    }
