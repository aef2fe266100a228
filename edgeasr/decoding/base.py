"""Shared pieces of all decoders: hypothesis and state dataclasses, counters, log-prob helpers.

A decoder is stateless apart from its configuration and the backend it calls; everything a
stream carries between chunks is a :class:`DecoderState` (subclassed per algorithm). Decoders
work on a *batch* of streams: ``decode_chunk(frames[N, C, J], states)`` advances N states by one
encoder chunk each, calling the backend on all streams at once where the algorithm allows.
Feeding the frames of an utterance chunk by chunk gives the same result as one call with all the
frames (tested for every decoder): nothing depends on where a chunk boundary falls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edgeasr.backends.base import Backend, RecognizerError

__all__ = [
    "BLANK",
    "DecodeStats",
    "Decoder",
    "DecoderState",
    "DecodingError",
    "Hypothesis",
    "full_logprobs",
    "log_sigmoid",
    "sigmoid",
]

BLANK = 0


class DecodingError(RecognizerError):
    """A decoding method cannot run on this model or configuration."""


@dataclass
class DecodeStats:
    """Work counters of one stream (since its last segment reset), reported in the Result.

    ``label_softmaxes`` counts label-head evaluations (one per frame visit that needed the
    non-blank distribution); ``skipped_softmaxes`` counts visits where the HAT blank threshold
    decided "blank" without it; ``skipped_frames`` counts frames the IAM gate dropped entirely.
    """

    frames: int = 0
    skipped_frames: int = 0
    label_softmaxes: int = 0
    skipped_softmaxes: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "frames": self.frames,
            "skipped_frames": self.skipped_frames,
            "label_softmaxes": self.label_softmaxes,
            "skipped_softmaxes": self.skipped_softmaxes,
        }


@dataclass(frozen=True)
class Hypothesis:
    """A decoded token sequence with the (global) encoder frame each token was emitted on."""

    tokens: tuple[int, ...] = ()
    frames: tuple[int, ...] = ()
    score: float = 0.0


@dataclass
class DecoderState:
    """What every decoder keeps per stream.

    ``frame_offset`` is the global index of the next encoder frame to arrive; ``segment_start``
    the frame where the current segment (after an endpoint reset) began.
    """

    frame_offset: int = 0
    segment_start: int = 0
    stats: DecodeStats = field(default_factory=DecodeStats)


class Decoder(Protocol):
    """One decoding algorithm over a :class:`~edgeasr.backends.base.Backend`."""

    backend: Backend

    def init_state(self) -> DecoderState:
        """State of a fresh stream."""
        ...

    def decode_chunk(self, frames: np.ndarray, states: list) -> None:
        """Advance each state by its stream's chunk ``frames[i]`` (``[N, C, J]``), in place."""
        ...

    def finalize(self, states: list) -> None:
        """No more frames will come (end of input); settle anything still provisional."""
        ...

    def best(self, state) -> Hypothesis:
        """The current best hypothesis of the segment (partial until finalized)."""
        ...

    def new_segment(self, state) -> DecoderState:
        """State for the next segment after an endpoint: empty result, same time base, and
        the predictor context kept (the audio continues)."""
        ...


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (float32 in, float32 out)."""
    x = np.asarray(x, dtype=np.float32)
    return np.exp(-np.logaddexp(np.float32(0), -x)).astype(np.float32)


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    """``log(sigmoid(x))`` without overflow."""
    return (-np.logaddexp(np.float32(0), -np.asarray(x, dtype=np.float32))).astype(np.float32)


def full_logprobs(blank_logit: np.ndarray, label_logprobs: np.ndarray) -> np.ndarray:
    """HAT log-probs over all V ids: ``[log sigmoid(b), log sigmoid(-b) + label_logprobs]``."""
    b = np.asarray(blank_logit, dtype=np.float32)
    return np.concatenate(
        [log_sigmoid(b)[..., None], log_sigmoid(-b)[..., None] + label_logprobs], axis=-1
    )


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Log-softmax along ``axis`` (used for duration logits)."""
    x = np.asarray(x, dtype=np.float32)
    m = np.max(x, axis=axis, keepdims=True)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def check_frames(frames: np.ndarray, num_states: int, joint_dim: int) -> None:
    """Reject a chunk whose shape does not match the batch or the model's joint width."""
    if frames.ndim != 3 or frames.shape[0] != num_states or frames.shape[2] != joint_dim:
        raise DecodingError(
            f"expected frames [{num_states}, C, {joint_dim}], got {list(frames.shape)}"
        )
