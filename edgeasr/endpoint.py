"""Endpoint detection: when has the speaker finished an utterance?

The rules are sherpa-onnx's (``online-recognizer`` endpoint config), with time measured from the
decoder's output rather than from audio energy: *trailing silence* is the time since the last
non-blank token of the current segment (or since the segment began, if it has none), and the
*utterance length* is the time decoded in the segment. Both come in encoder frames and are
converted with the model's frame shift (taken from the bundle, never hard-coded: 40 ms for 4x
subsampling of 10 ms features, 80 ms for 8x).

An endpoint fires when any rule is active:

- rule 1: trailing silence >= 2.4 s, even if nothing was decoded (a long pause);
- rule 2: trailing silence >= 1.2 s after some speech was decoded (end of a sentence);
- rule 3: the segment is >= 20 s long, whatever was decoded (bounds latency and memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgeasr.backends.base import RecognizerError

__all__ = ["EndpointConfig", "EndpointRule", "detect_endpoint"]


@dataclass(frozen=True)
class EndpointRule:
    """One rule: all three conditions must hold for it to fire.

    Attributes:
        must_contain_nonsilence: require at least one decoded token in the segment.
        min_trailing_silence: seconds since the last token (or the segment start).
        min_utterance_length: seconds decoded in the segment.
    """

    must_contain_nonsilence: bool
    min_trailing_silence: float
    min_utterance_length: float

    def validate(self, name: str = "rule") -> None:
        for attr in ("min_trailing_silence", "min_utterance_length"):
            v = getattr(self, attr)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise RecognizerError(f"endpoint {name}.{attr} must be a number >= 0, got {v!r}")

    def fires(self, has_speech: bool, trailing_silence: float, utterance_length: float) -> bool:
        return (
            (has_speech or not self.must_contain_nonsilence)
            and trailing_silence >= self.min_trailing_silence
            and utterance_length >= self.min_utterance_length
        )


@dataclass(frozen=True)
class EndpointConfig:
    """The three sherpa-onnx rules (defaults as there); ``enabled=False`` never fires."""

    enabled: bool = True
    rule1: EndpointRule = field(default_factory=lambda: EndpointRule(False, 2.4, 0.0))
    rule2: EndpointRule = field(default_factory=lambda: EndpointRule(True, 1.2, 0.0))
    rule3: EndpointRule = field(default_factory=lambda: EndpointRule(False, 0.0, 20.0))

    def validate(self) -> None:
        for name in ("rule1", "rule2", "rule3"):
            getattr(self, name).validate(name)


def detect_endpoint(
    config: EndpointConfig,
    *,
    segment_frames: int,
    trailing_blank_frames: int,
    has_speech: bool,
    frame_shift_s: float,
) -> bool:
    """Whether any rule fires for a segment of ``segment_frames`` decoded encoder frames whose
    last ``trailing_blank_frames`` carried no token."""
    if not config.enabled or segment_frames <= 0:
        return False
    length = segment_frames * frame_shift_s
    silence = trailing_blank_frames * frame_shift_s
    return any(
        rule.fires(has_speech, silence, length)
        for rule in (config.rule1, config.rule2, config.rule3)
    )
