"""VAD segmentation with the Silero ONNX model on synthesized speech: boundaries at the known
utterance positions (padded), noise between utterances ignored, length cap, bounded streaming
memory, and ``transcribe --vad`` giving the words of each utterance transcribed alone."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr
from test_stream import make_rec

from edgeasr.vad import (
    SAMPLE_RATE as SR,
)
from edgeasr.vad import (
    SileroVad,
    VadConfig,
    VadError,
    VadSegmenter,
    detect_speech,
    silero_model_path,
    transcribe_segments,
)

pytest.importorskip("silero_vad", reason="pip install silero-vad --no-deps")

TEXTS = ("the quick brown fox jumps over the lazy dog", "ada lovelace wrote the first program",
         "kubernetes runs many containers")
PAD = 0.3


@pytest.fixture(scope="module")
def utterances() -> list[np.ndarray]:
    """Three utterances (flite), trimmed to the speech itself, peak 0.5."""
    from edgeasr.train.corpus.voices import Voice, engine_available, synthesize

    if not engine_available("flite"):
        pytest.skip("flite is not installed")
    out = []
    for i, text in enumerate(TEXTS):
        a, sr, _ = synthesize(Voice("flite", "kal16"), text, np.random.default_rng(i))
        a = soxr.resample(a, sr, SR).astype(np.float32)
        idx = np.flatnonzero(np.abs(a) > 0.02 * np.abs(a).max())
        a = a[idx[0] : idx[-1] + 1]
        out.append((0.5 * a / np.abs(a).max()).astype(np.float32))
    return out


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def zeros(s: float) -> np.ndarray:
    return np.zeros(int(s * SR), dtype=np.float32)


def recording(utts: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Silence, utt 0, silence + white noise + silence, utt 1, silence, utt 2, silence;
    returns the signal and each utterance's (start, end) sample."""
    noise = (0.02 * np.random.default_rng(0).standard_normal(int(0.6 * SR))).astype(np.float32)
    parts = [zeros(1.0), utts[0], zeros(0.6), noise, zeros(0.6), utts[1], zeros(1.2), utts[2],
             zeros(0.8)]
    spans, pos = [], 0
    for p in parts:
        if any(p is u for u in utts):
            spans.append((pos, pos + len(p)))
        pos += len(p)
    return np.concatenate(parts), spans


def test_model_is_found_without_importing_torch() -> None:
    code = ("import sys, numpy as np; from edgeasr.vad import SileroVad, silero_model_path; "
            "v = SileroVad(); p = v(np.zeros(512, np.float32)); "
            "print(silero_model_path().name, 'torch' in sys.modules, 0 <= p <= 1)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["silero_vad.onnx", "False", "True"]
    assert silero_model_path().is_file()


def test_segments_match_the_utterances(utterances, vad) -> None:
    x, spans = recording(utterances)
    segs = detect_speech(x, VadConfig(pad_s=PAD), vad)
    assert len(segs) == len(spans)  # the noise burst between utterances is not speech
    for seg, (a, b) in zip(segs, spans, strict=True):
        assert seg.start <= a and seg.end >= b  # nothing of the speech is cut
        assert abs(seg.start_s - (a / SR - PAD)) < 0.1
        assert abs(seg.end_s - (b / SR + PAD)) < 0.15
        assert np.array_equal(seg.samples, x[seg.start : seg.end])


def test_words_equal_each_utterance_transcribed_alone(utterances, vad) -> None:
    x, spans = recording(utterances)
    rec = make_rec()
    total, parts = transcribe_segments(rec, x, VadConfig(pad_s=PAD), vad)
    assert len(parts) == 3
    for (seg, r), (a, b), utt in zip(parts, spans, utterances, strict=True):
        # the segment is the utterance with the same silence on each side as the VAD padding
        alone = np.concatenate([zeros((a - seg.start) / SR), utt, zeros((seg.end - b) / SR)])
        ref = rec.transcribe(alone, sample_rate=SR)
        assert r.tokens == ref.tokens and r.text and r.text == ref.text
    assert total.text == " ".join(r.text for _, r in parts)
    assert total.tokens == [t for _, r in parts for t in r.tokens]
    # timestamps move to the recording's time line, inside each segment
    k = 0
    for seg, r in parts:
        for t in r.timestamps:
            assert total.timestamps[k] == pytest.approx(t + seg.start_s)
            assert seg.start_s <= total.timestamps[k] <= seg.end_s
            k += 1


def test_long_speech_is_capped_and_close_segments_merge(utterances, vad) -> None:
    x = np.concatenate([zeros(0.5), *[np.concatenate([u, zeros(0.1)]) for u in utterances],
                        zeros(0.5)])
    segs = detect_speech(x, VadConfig(max_segment_s=2.5), vad)
    assert len(segs) >= 3 and all(s.end - s.start <= 2.5 * SR for s in segs)
    assert segs[0].start < 0.5 * SR and segs[-1].end > x.size - 0.5 * SR
    # without the cap the 0.1 s gaps (shorter than min_silence) keep it one segment
    one = detect_speech(x, VadConfig(max_segment_s=30.0), vad)
    assert len(one) == 1


def test_streaming_memory_is_bounded(utterances, vad) -> None:
    seg = VadSegmenter(VadConfig(max_segment_s=5.0), vad)
    block = np.concatenate([zeros(1.0), utterances[2]])
    peak, found = 0, 0
    for _ in range(12):  # ~28 s fed in 100 ms pieces
        for a in range(0, block.size, SR // 10):
            found += len(seg.accept_waveform(block[a : a + SR // 10]))
            peak = max(peak, seg.buffered_samples)
    found += len(seg.flush())
    assert found == 12
    assert peak <= 2 * 5.0 * SR  # a pending segment + the open one at most


def test_bad_config_and_missing_model(tmp_path) -> None:
    with pytest.raises(VadError, match="threshold"):
        VadConfig(threshold=1.5).validate()
    with pytest.raises(VadError, match="does not exist"):
        SileroVad(tmp_path / "nope.onnx")


def test_transcribe_cli_with_vad(utterances, tiny_bundle, tmp_path, capsys) -> None:
    from edgeasr.cli import main

    root = tiny_bundle().root
    x, spans = recording(utterances)
    wav = tmp_path / "long.wav"
    sf.write(wav, x, SR, subtype="FLOAT")
    assert main(["transcribe", str(wav), "--bundle", str(root), "--vad", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [(round(s["start"], 2), round(s["end"], 2)) for s in d["segments"]] == [
        (round(s.start_s, 2), round(s.end_s, 2)) for s in detect_speech(x)]
    assert len(d["timestamps"]) == len(d["tokens"])
