"""Recognizer / Stream: chunking invariance, batching, tail flush, results and bad input.

Runs on the numpy toy backend of tests/test_decoding.py (loud audio decodes to tokens, silence
to blank) with the real feature extractor, so the whole streaming path is exercised in
milliseconds.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_decoding import ToyBackend

from edgeasr.decoding import DecodingConfig
from edgeasr.stream import (
    Recognizer,
    RecognizerConfig,
    RecognizerError,
    Result,
    StreamError,
)

SR = 16000


class LetterTokenizer:
    """ids 1.. -> letters a.. (blank 0 skipped): enough to check text assembly."""

    def decode(self, ids) -> str:
        return "".join(chr(ord("a") + int(i) - 1) for i in ids if int(i) != 0)


def make_rec(method: str = "greedy", **kw) -> Recognizer:
    backend = ToyBackend(durations=(0, 1, 2, 3) if method in ("tdt", "viterbi") else (), **kw)
    cfg = RecognizerConfig(decoding=DecodingConfig(method=method))
    return Recognizer(backend, LetterTokenizer(), config=cfg)


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(
        np.float32
    )


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.float32)


def signal() -> np.ndarray:
    return np.concatenate([silence(0.3), speech(0.6, 1), silence(0.5), speech(0.5, 2)])


def feed(rec: Recognizer, x: np.ndarray, sizes: list[int], rate: int = SR) -> Result:
    s = rec.create_stream()
    a = 0
    for n in sizes:
        if a >= len(x):
            break
        s.accept_waveform(rate, x[a : a + n])
        rec.decode_streams([s])
        a += n
    if a < len(x):
        s.accept_waveform(rate, x[a:])
    s.input_finished()
    rec.decode_streams([s])
    return s.result


@pytest.mark.parametrize("method", ["greedy", "gated", "tdt", "nar", "viterbi", "beam"])
def test_random_chunk_sizes_equal_whole_file(method: str) -> None:
    rec = make_rec(method)
    x = signal()
    whole = rec.transcribe(x, sample_rate=SR)
    assert whole.is_final and len(whole.tokens) >= 2  # CTC-style NAR merges repeats
    rng = np.random.default_rng(7)
    for _ in range(2):
        sizes = list(rng.integers(1, 5000, size=400))
        r = feed(rec, x, sizes)
        assert r.tokens == whole.tokens
        assert r.timestamps == whole.timestamps
        assert r.text == whole.text


def test_result_fields() -> None:
    rec = make_rec()
    r = rec.transcribe(signal(), sample_rate=SR)
    assert r.text == LetterTokenizer().decode(r.tokens)
    assert len(r.timestamps) == len(r.tokens)
    assert all(b >= a for a, b in zip(r.timestamps, r.timestamps[1:], strict=False))
    # timestamps are encoder frames x 40 ms; tokens only on the loud parts
    assert all(abs(t / 0.04 - round(t / 0.04)) < 1e-6 for t in r.timestamps)
    assert r.timestamps[0] >= 0.2 and r.timestamps[-1] <= len(signal()) / SR + 0.1
    assert r.stats["frames"] > 0 and r.stats["label_softmaxes"] > 0
    assert r.to_dict()["tokens"] == r.tokens


def test_gated_result_counts_skips() -> None:
    r = make_rec("gated").transcribe(signal(), sample_rate=SR)
    plain = make_rec("greedy").transcribe(signal(), sample_rate=SR)
    assert r.stats["skipped_frames"] > 0  # silence is skipped by the IAM gate
    assert r.stats["label_softmaxes"] < plain.stats["label_softmaxes"]
    assert r.tokens == plain.tokens  # toy: loud frames are never IAM-blank


def test_input_finished_keeps_the_last_word() -> None:
    """Audio that ends mid-word decodes as if silence followed it: nothing is cut off."""
    rec = make_rec()
    x = np.concatenate([silence(0.2), speech(0.37, 3)])  # not a whole number of chunks
    cut = rec.transcribe(x, sample_rate=SR)
    padded = rec.transcribe(np.concatenate([x, silence(2.0)]), sample_rate=SR)
    assert cut.tokens == padded.tokens and len(cut.tokens) >= 3
    assert cut.timestamps[-1] >= 0.5


def test_batched_streams_equal_single_streams() -> None:
    rec = make_rec("beam")
    xs = [signal(), np.concatenate([speech(0.4, 5), silence(0.3)]), speech(1.1, 6)]
    alone = [rec.transcribe(x, sample_rate=SR) for x in xs]
    streams = [rec.create_stream() for _ in xs]
    for a in range(0, max(map(len, xs)), 3000):
        for s, x in zip(streams, xs, strict=True):
            if a < len(x):
                s.accept_waveform(SR, x[a : a + 3000])
        assert rec.decode_streams(streams) == []
    for s in streams:
        s.input_finished()
    rec.decode_streams(streams)
    for s, r in zip(streams, alone, strict=True):
        assert s.result.tokens == r.tokens and s.result.is_final


def test_encoder_is_called_once_per_round_for_all_streams() -> None:
    rec = make_rec()
    streams = [rec.create_stream() for _ in range(3)]
    for s in streams:
        s.accept_waveform(SR, speech(0.64, 1))  # 64 feature frames -> 3 full chunks of 4C+7=23
    rec.decode_streams(streams)
    assert rec.backend.calls["encoder"] == 3


def test_one_bad_stream_does_not_affect_the_others() -> None:
    rec = make_rec()
    other = make_rec(chunk=2)
    x = signal()
    good = rec.create_stream()
    foreign = other.create_stream()
    broken = rec.create_stream()
    broken._caches["summary"] = np.zeros((1, 1, 3), np.float32)  # corrupt state
    for s in (good, foreign, broken):
        s.accept_waveform(SR, x)
        s.input_finished()
    failed = rec.decode_streams([good, foreign, broken])
    assert failed == [foreign, broken] or set(failed) == {foreign, broken}
    assert "another recognizer" in str(foreign.error)
    assert isinstance(broken.error, StreamError)
    assert good.error is None and good.result.tokens == rec.transcribe(x, SR).tokens
    with pytest.raises(StreamError, match="encoder failed on this stream"):
        rec.decode_stream(broken)


def test_resampled_input_chunked_equals_whole() -> None:
    rec = make_rec()
    x16 = signal()
    x8 = x16[::2].copy()
    whole = rec.transcribe(x8, sample_rate=8000)
    chunked = feed(rec, x8, [999] * 100, rate=8000)
    assert chunked.tokens == whole.tokens and len(whole.tokens) > 3


@pytest.mark.parametrize(
    ("rate", "samples", "match"),
    [
        (0, np.zeros(10, np.float32), "outside"),
        (16000.5, np.zeros(10, np.float32), "whole number"),
        ("16k", np.zeros(10, np.float32), "must be a number"),
        (10**7, np.zeros(10, np.float32), "outside"),
        (SR, np.array([0.1, np.nan, 0.2], np.float32), "NaN"),
        (SR, np.zeros(0, np.float32), "empty chunk"),
        (SR, np.zeros(601 * SR, np.float32), "max_chunk_seconds"),
        (SR, np.zeros(10, np.int16), "pcm_to_float"),
        (SR, np.zeros((10, 2), np.float32), "1-D"),
    ],
)
def test_bad_input_is_named(rate, samples, match: str) -> None:
    s = make_rec().create_stream()
    with pytest.raises(StreamError, match=match):
        s.accept_waveform(rate, samples)


def test_call_order_errors() -> None:
    rec = make_rec()
    s = rec.create_stream()
    s.accept_waveform(SR, speech(0.1))
    with pytest.raises(StreamError, match="sample rate changed"):
        s.accept_waveform(8000, speech(0.1))
    s.input_finished()
    s.input_finished()  # harmless
    with pytest.raises(StreamError, match="after input_finished"):
        s.accept_waveform(SR, speech(0.1))
    with pytest.raises(StreamError, match="sample_rate="):
        rec.transcribe(speech(0.1))


def test_transcribe_file_and_bad_file(tmp_path) -> None:
    import soundfile as sf

    rec = make_rec()
    path = tmp_path / "a.wav"
    sf.write(path, signal(), SR, subtype="FLOAT")
    assert rec.transcribe(path).tokens == rec.transcribe(signal(), sample_rate=SR).tokens
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000garbage")
    with pytest.raises(StreamError, match="bad.wav"):
        rec.transcribe(tmp_path / "bad.wav")
    with pytest.raises(StreamError, match="not found"):
        rec.transcribe(tmp_path / "missing.wav")


def test_recognizer_errors_are_project_errors() -> None:
    from edgeasr.errors import EdgeAsrError

    assert issubclass(StreamError, RecognizerError)
    assert issubclass(RecognizerError, EdgeAsrError)
    with pytest.raises(RecognizerError, match="unknown backend"):
        Recognizer.from_bundle("x", backend="tflite")


def test_lazy_top_level_exports() -> None:
    import edgeasr

    assert edgeasr.Recognizer is Recognizer
    assert edgeasr.DecodingConfig is DecodingConfig
    assert edgeasr.Result is Result
