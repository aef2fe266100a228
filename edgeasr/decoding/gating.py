"""Dual blank thresholding (HAT + Internal Acoustic Model), arXiv:2409.20313.

Two cheap blank probabilities decide when the expensive label softmax can be skipped:

1. **IAM blank** (null-predictor joint, ``p = 0``): computed for *all* frames of a chunk in one
   batched call before the decoder runs. A frame whose IAM blank probability exceeds
   ``θ_IAM`` is skipped entirely: no predictor, no joint, treated as blank.
2. **HAT blank** (the real joint's blank head, ``sigmoid(w_b · h)``): for frames that pass the
   gate, a HAT blank probability above ``θ_HAT`` decides "blank" without calling
   ``joint_labels``.

Why the IAM blank comes from ``joint_blank(frames, 0)`` rather than ``iam_joint``: the IAM blank
logit is exactly the blank head of the joint with a zero predictor output, and
``joint_blank`` computes only that one dot product, while ``iam_joint`` would also compute the
label softmax of every frame, the very cost the gate exists to avoid. (Tests check both give
the same blank logit.)

Thresholds at or above 1.0 never skip (probabilities never exceed 1), so a gate with
``θ_IAM = 1`` and ``θ_HAT >= 0.5`` decodes exactly like plain greedy search: with a HAT joint,
``P(blank) > 0.5`` already makes blank the argmax over all V ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeasr.backends.base import Backend
from edgeasr.decoding.base import DecodingError, sigmoid

__all__ = ["DualBlankGate"]


@dataclass(frozen=True)
class DualBlankGate:
    """Thresholds of dual blank thresholding; each in (0, 1], 1.0 meaning "never skip"."""

    iam_threshold: float = 0.95
    hat_threshold: float = 0.95

    def __post_init__(self) -> None:
        for name in ("iam_threshold", "hat_threshold"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise DecodingError(f"{name} must be in (0, 1], got {v}")

    @property
    def gates_frames(self) -> bool:
        """Whether the IAM gate can drop a frame at all (θ_IAM < 1)."""
        return self.iam_threshold < 1.0

    def iam_skip_logits(self, iam_blank_logit: np.ndarray) -> np.ndarray:
        """Frames whose IAM blank probability ``sigmoid(logit)`` exceeds ``θ_IAM``."""
        return sigmoid(iam_blank_logit) > self.iam_threshold

    def iam_skip(self, backend: Backend, frames: np.ndarray) -> np.ndarray:
        """``bool[N, C]``: frames whose IAM blank probability exceeds ``θ_IAM`` (one call).
        The greedy search folds this into its first joint call of a chunk instead."""
        n, c, j = frames.shape
        if not self.gates_frames:
            return np.zeros((n, c), dtype=bool)
        flat = frames.reshape(n * c, j)
        _, blank_logit, _ = backend.joint_blank(flat, np.zeros_like(flat))
        return self.iam_skip_logits(blank_logit).reshape(n, c)

    def hat_skip(self, blank_prob: np.ndarray) -> np.ndarray:
        """``bool[M]``: joint evaluations whose HAT blank probability exceeds ``θ_HAT``."""
        return blank_prob > self.hat_threshold
