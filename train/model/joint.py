"""HAT joint network with the null predictor (IAM / HAINAN NAR) as the ``p = None`` case.

``h = tanh(e + p)``; heads on ``h``: a single blank logit (``P(blank) = sigmoid``), ``V - 1``
label logits (softmax over the non-blank ids 1..V-1) and, for TDT, duration logits. Splitting
blank from labels (HAT) lets a decoder decide "blank" from one dot product and skip the label
softmax (dual blank thresholding), and makes the null-predictor joint a proper internal acoustic
model. ``p = None`` means ``p = 0``: there is exactly one code path for both uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def hat_log_probs(blank_logit: Tensor, label_logits: Tensor) -> Tensor:
    """Full normalized HAT log-probs over ``V``: ``[logsigmoid(b), logsigmoid(-b) +
    log_softmax(labels)]`` (blank id 0 first).

    ``blank_logit [...]``, ``label_logits [..., V-1]`` -> ``[..., V]``."""
    blank = F.logsigmoid(blank_logit).unsqueeze(-1)
    labels = F.logsigmoid(-blank_logit).unsqueeze(-1) + torch.log_softmax(label_logits, dim=-1)
    return torch.cat([blank, labels], dim=-1)


@dataclass
class JointOutput:
    """Raw joint heads. ``blank_logit [...]``, ``label_logits [..., V-1]``,
    ``duration_logits [..., D]`` or None (plain HAT RNN-T)."""

    blank_logit: Tensor
    label_logits: Tensor
    duration_logits: Tensor | None = None

    def token_log_probs(self) -> Tensor:
        """``[..., V]`` normalized HAT log-probs (see :func:`hat_log_probs`)."""
        return hat_log_probs(self.blank_logit, self.label_logits)

    def duration_log_probs(self) -> Tensor | None:
        """``[..., D]`` log-softmax over durations, None without a duration head."""
        if self.duration_logits is None:
            return None
        return torch.log_softmax(self.duration_logits, dim=-1)


class Joint(nn.Module):
    """``h = tanh(e + p)`` then blank / label / duration heads (all inputs already in ``J``)."""

    def __init__(self, joint_dim: int, vocab_size: int, num_durations: int = 0) -> None:
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (blank + labels), got {vocab_size}")
        self.joint_dim = joint_dim
        self.vocab_size = vocab_size
        self.blank_head = nn.Linear(joint_dim, 1)
        self.label_head = nn.Linear(joint_dim, vocab_size - 1)
        self.duration_head = nn.Linear(joint_dim, num_durations) if num_durations > 0 else None

    def hidden(self, e: Tensor, p: Tensor | None = None) -> Tensor:
        """``tanh(e + p)`` with broadcasting; ``p=None`` is the null predictor (``p = 0``)."""
        if e.shape[-1] != self.joint_dim or (p is not None and p.shape[-1] != self.joint_dim):
            raise ValueError(
                f"joint inputs must end in J={self.joint_dim}, got e {tuple(e.shape)}"
                + ("" if p is None else f", p {tuple(p.shape)}")
            )
        return torch.tanh(e if p is None else e + p)

    def heads(self, h: Tensor) -> JointOutput:
        return JointOutput(
            blank_logit=self.blank_head(h).squeeze(-1),
            label_logits=self.label_head(h),
            duration_logits=None if self.duration_head is None else self.duration_head(h),
        )

    def forward(self, e: Tensor, p: Tensor | None = None) -> JointOutput:
        return self.heads(self.hidden(e, p))

    def log_probs(self, e: Tensor, p: Tensor | None = None) -> Tensor:
        """``[..., V]`` normalized HAT log-probs of ``joint(e, p)``."""
        return self.forward(e, p).token_log_probs()
