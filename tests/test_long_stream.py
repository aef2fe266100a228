"""Ten minutes of looped audio through one stream of a tiny exported bundle, as fast as it
decodes: the per-stream state stays bounded (encoder caches of fixed shape, consumed feature
frames dropped, no per-frame history in the decoder state), with endpoint resets as a live
microphone session does them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeasr.stream import Recognizer, Stream

pytest.importorskip("torch")

SR = 16000


@pytest.fixture
def bundle(tiny_bundle) -> Path:
    return tiny_bundle().root


def state_sizes(s: Stream) -> dict[str, int]:
    """Element counts of everything a stream holds that could grow with time."""
    out = {f"cache.{k}": int(np.asarray(v).size) for k, v in s._caches.items()}
    out["features_held"] = s._features.num_frames_available
    for k, v in vars(s._state).items():
        if isinstance(v, (list, tuple, np.ndarray)):
            out[f"state.{k}"] = len(v)
    return out


@pytest.mark.slow  # ~45 s on a busy 2-core machine: 3750 encoder chunks, 15000 joint steps
def test_ten_minutes_stay_bounded(bundle) -> None:
    from edgeasr.decoding import DecodingConfig

    # one symbol per frame keeps the random model's joint calls to ~2 per frame
    rec = Recognizer.from_bundle(
        bundle, decoding=DecodingConfig(method="greedy", max_symbols_per_frame=1))
    rng = np.random.default_rng(0)
    # 4 s loop: 2.5 s "speech" then 1.5 s silence, so endpoints fire and segments close
    loop = np.concatenate([0.3 * rng.standard_normal(int(2.5 * SR)),
                           np.zeros(int(1.5 * SR))]).astype(np.float32)
    s = rec.create_stream()
    shapes0 = {k: np.asarray(v).shape for k, v in s._caches.items()}
    piece = SR // 2  # 500 ms per call
    total_s, segments, peak_tokens, tokens_seen = 0.0, 0, 0, 0
    sizes_early: dict[str, int] = {}
    peaks: dict[str, int] = {}
    while total_s < 600.0:
        for a in range(0, loop.size, piece):
            s.accept_waveform(SR, loop[a : a + piece])
            rec.decode_streams([s])
            assert s.error is None
            r = s.result
            peak_tokens = max(peak_tokens, len(r.tokens))
            if rec.is_endpoint(s):
                tokens_seen += len(r.tokens)
                segments += 1
                rec.reset(s)
            for k, v in state_sizes(s).items():
                peaks[k] = max(peaks.get(k, 0), v)
        total_s += loop.size / SR
        if not sizes_early and total_s >= 60.0:
            sizes_early = dict(peaks)
    assert {k: np.asarray(v).shape for k, v in s._caches.items()} == shapes0
    assert int(np.asarray(s._caches["processed_frames"]).reshape(-1)[0]) > 0
    # the minute-1 peaks are never exceeded in the next nine minutes: nothing accumulates
    assert peaks == sizes_early
    # features: at most one encoder input window plus one call's worth of new frames
    assert peaks["features_held"] <= rec.spec.feature_frames + piece // 160 + 1
    # endpoint rule 3 closes a segment at the latest after 20 s, so the result is bounded too
    assert segments >= 600 / 20 - 1
    assert tokens_seen > 0 and peak_tokens <= 21.0 / rec.spec.frame_shift_s
    assert s.result.start_time >= 600.0 - 21.0  # the time line stays global across resets
