"""End of input on a tiny exported bundle: ``input_finished()`` appends exactly the tail padding
recorded in model.json, every real feature frame then falls inside a decoded chunk, and the
streamed result equals an offline chunk-by-chunk decode of the padded audio (the last token is
not lost), whether the audio ends on a chunk boundary or inside a chunk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeasr.features import compute_features
from edgeasr.stream import Recognizer

pytest.importorskip("torch")

SR = 16000


@pytest.fixture
def bundle(tiny_bundle) -> Path:
    return tiny_bundle().root


def offline_decode(rec: Recognizer, padded: np.ndarray) -> tuple[list[int], int]:
    """Whole-signal features, cut into the encoder's overlapping chunks by hand, encoded with
    carried caches and decoded by a fresh decoder state: (tokens, chunks decoded)."""
    spec = rec.spec
    feats = compute_features(padded, rec.feature_config)
    caches = rec.backend.init_caches(1)
    state = rec.decoder.init_state()
    n = 0
    while n * spec.feature_shift + spec.feature_frames <= len(feats):
        a = n * spec.feature_shift
        frames, caches = rec.backend.encoder(feats[None, a : a + spec.feature_frames], caches)
        rec.decoder.decode_chunk(np.asarray(frames, dtype=np.float32), [state])
        n += 1
    rec.decoder.finalize([state])
    return list(rec.decoder.best(state).tokens), n


@pytest.mark.parametrize("method", ["greedy", "beam"])
@pytest.mark.parametrize("where", ["boundary", "mid_chunk", "one_frame_past"])
def test_tail_flush(bundle, method: str, where: str) -> None:
    from edgeasr.decoding import DecodingConfig

    model = json.loads((bundle / "model.json").read_text())
    chunk = model["chunk"]
    shift = chunk["feature_frames_per_chunk"]
    pad = int(round((chunk["tail_padding_frames"] + 1) * chunk["frame_shift_s"] * SR))
    rec = Recognizer.from_bundle(bundle, decoding=DecodingConfig(method=method))
    assert rec.spec.feature_shift == shift
    hop = SR // 100
    frames = {"boundary": 12 * shift, "mid_chunk": 12 * shift + shift // 2,
              "one_frame_past": 12 * shift + 1}[where]
    # feature frames of n samples (snip_edges=False) = round(n / hop): pick n for `frames`
    n = frames * hop - hop // 2 + 1
    audio = (0.3 * np.random.default_rng(frames).standard_normal(n)).astype(np.float32)
    real_frames = rec.feature_config.num_frames(n)
    assert real_frames == frames

    s = rec.create_stream()
    for a in range(0, n, 1234):
        s.accept_waveform(SR, audio[a : a + 1234])
        rec.decode_streams([s])
    s.input_finished()
    rec.decode_streams([s])
    r = s.result
    assert r.is_final
    assert s._features.num_samples_accepted == n + pad  # exactly the recorded tail padding

    padded = np.concatenate([audio, np.zeros(pad, dtype=np.float32)])
    tokens, chunks = offline_decode(rec, padded)
    assert r.tokens == tokens and len(tokens) > 0
    assert r.stats["frames"] == chunks * rec.spec.chunk_frames
    assert r.stats["encoder_frames"] == chunks * rec.spec.chunk_frames
    # every real feature frame lies in the advancing part of a decoded chunk: nothing lost
    assert chunks * shift >= real_frames
    assert r.timestamps[-1] < chunks * rec.spec.chunk_frames * rec.spec.frame_shift_s
