"""Endpointing: the three rules in isolation, and segmentation of a multi-utterance signal on
the toy backend (loud audio decodes to tokens, silence to blanks)."""

from __future__ import annotations

import numpy as np
import pytest
from test_stream import SR, LetterTokenizer, silence, speech

from edgeasr.backends.base import RecognizerError
from edgeasr.decoding import DecodingConfig
from edgeasr.endpoint import EndpointConfig, EndpointRule, detect_endpoint
from edgeasr.stream import Recognizer, RecognizerConfig

SHIFT = 0.04


def fires(frames: int, trailing: int, speech_seen: bool, cfg: EndpointConfig | None = None):
    return detect_endpoint(
        cfg or EndpointConfig(),
        segment_frames=frames,
        trailing_blank_frames=trailing,
        has_speech=speech_seen,
        frame_shift_s=SHIFT,
    )


def test_rule1_long_silence_without_speech() -> None:
    assert not fires(59, 59, False)  # 2.36 s
    assert fires(60, 60, False)  # 2.40 s


def test_rule2_shorter_silence_after_speech() -> None:
    assert not fires(100, 29, True)  # 1.16 s
    assert fires(100, 30, True)  # 1.20 s
    assert not fires(40, 30, False)  # same silence, nothing decoded: rule 2 needs speech


def test_rule3_maximum_utterance_length() -> None:
    assert not fires(499, 0, True)
    assert fires(500, 0, True)  # 20 s of non-stop speech


def test_frame_shift_comes_from_the_model() -> None:
    # 80 ms frames (8x subsampling): 15 frames of silence are 1.2 s
    assert detect_endpoint(
        EndpointConfig(), segment_frames=40, trailing_blank_frames=15, has_speech=True,
        frame_shift_s=0.08,
    )


def test_disabled_and_invalid_configs() -> None:
    assert not fires(10_000, 10_000, True, EndpointConfig(enabled=False))
    with pytest.raises(RecognizerError, match="rule2.min_trailing_silence"):
        EndpointConfig(rule2=EndpointRule(True, -1.0, 0.0)).validate()


def segment(rec: Recognizer, x: np.ndarray, piece: int = 1600):
    """Feed ``x`` like a live source; return (text, start_time, token times) per segment."""
    s = rec.create_stream()
    out = []
    for a in range(0, len(x), piece):
        s.accept_waveform(SR, x[a : a + piece])
        rec.decode_streams([s])
        if rec.is_endpoint(s):
            r = s.result
            out.append((r.text, r.start_time, r.timestamps))
            rec.reset(s)
    s.input_finished()
    rec.decode_streams([s])
    if s.result.tokens:
        r = s.result
        out.append((r.text, r.start_time, r.timestamps))
    return out


def test_signal_with_pauses_splits_into_utterances() -> None:
    from test_decoding import ToyBackend

    rec = Recognizer(ToyBackend(), LetterTokenizer(), config=RecognizerConfig(
        decoding=DecodingConfig(method="greedy")))
    spans = [(0.5, 1.3), (2.8, 3.4), (5.0, 5.9)]  # speech; 1.5 s pauses; 2 s tail
    x = np.concatenate([
        silence(0.5), speech(0.8, 1), silence(1.5), speech(0.6, 2), silence(1.6),
        speech(0.9, 3), silence(2.0),
    ])
    segs = segment(rec, x)
    assert len(segs) == 3
    for (text, start, times), (a, b) in zip(segs, spans, strict=True):
        assert text
        assert all(a - 0.1 <= t <= b + 0.3 for t in times), (times, a, b)
        assert start <= times[0]
    # the same audio decoded whole contains the same tokens, in order
    whole = rec.transcribe(x, sample_rate=SR)
    assert whole.text == "".join(t for t, _, _ in segs)


def test_rule1_fires_on_silence_only_and_rule3_cuts_long_speech() -> None:
    from test_decoding import ToyBackend

    quick = EndpointConfig(rule3=EndpointRule(False, 0.0, 1.0))
    rec = Recognizer(ToyBackend(), LetterTokenizer(),
                     config=RecognizerConfig(endpoint=quick))
    rec2 = Recognizer(ToyBackend(), LetterTokenizer())
    s2 = rec2.create_stream()
    s2.accept_waveform(SR, silence(2.2))
    rec2.decode_streams([s2])
    assert not rec2.is_endpoint(s2)
    s2.accept_waveform(SR, silence(0.4))
    rec2.decode_streams([s2])
    assert rec2.is_endpoint(s2) and s2.result.tokens == []  # rule 1
    # rule 3 (1 s here): continuous speech is cut into ~1 s segments
    segs = segment(rec, speech(3.2, 4))
    assert len(segs) >= 3
