"""CR-CTC: consistency-regularized CTC (Yao et al. 2024), the self-distillation of HENT-SRT.

Two SpecAugment views of the same batch go through the encoder; CTC is applied to both and a
symmetric KL term pulls their frame posteriors together, each direction using the *other*
view's posteriors as a stop-gradient target::

    L_cr = sum_t KL(sg(p_b[t]) || p_a[t]) + KL(sg(p_a[t]) || p_b[t])

Why stop-gradient on the target: each view learns to predict the other (self-distillation)
instead of both collapsing to a flat distribution that would trivially agree.

Reduction follows the project convention (see :mod:`edgeasr.train.losses`): per-utterance sums
over valid frames, averaged over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .ctc import ctc_loss, ctc_min_frames

__all__ = ["CrCtcOutput", "consistency_loss", "cr_ctc_loss", "feasible_ctc_loss"]


@dataclass
class CrCtcOutput:
    """``ctc``: mean CTC NLL over both views; ``cr``: the consistency term (batch mean)."""

    ctc: Tensor
    cr: Tensor


def consistency_loss(logp_a: Tensor, logp_b: Tensor, lengths: Tensor) -> Tensor:
    """Symmetric stop-gradient KL between two views' log-posteriors ``[N, T, V]``.

    Frames at or beyond ``lengths [N]`` are padding and do not count. Zero when the views agree
    exactly; gradients reach both ``logp_a`` and ``logp_b`` (each as the "student" side).
    """
    if logp_a.shape != logp_b.shape or logp_a.dim() != 3:
        raise ValueError(f"views must both be [N, T, V], got {tuple(logp_a.shape)} and "
                         f"{tuple(logp_b.shape)}")
    if lengths.shape != (logp_a.shape[0],):
        raise ValueError(f"lengths must be [N={logp_a.shape[0]}], got {tuple(lengths.shape)}")
    t = logp_a.shape[1]
    frame = torch.arange(t, device=logp_a.device)[None, :]
    valid = (lengths.to(logp_a.device)[:, None] > frame)[..., None]
    kl_a = F.kl_div(logp_a, logp_b.detach(), reduction="none", log_target=True)
    kl_b = F.kl_div(logp_b, logp_a.detach(), reduction="none", log_target=True)
    return ((kl_a + kl_b) * valid).sum() / logp_a.shape[0]


def feasible_ctc_loss(
    logprobs: Tensor, targets: Tensor, lengths: Tensor, target_lens: Tensor, blank: int = 0
) -> Tensor:
    """Batch-mean CTC where utterances too short for their targets contribute 0.

    A translation can need more frames than a down-sampled encoder gives for a short utterance;
    such an utterance should not abort the batch (the transducer loss still trains it).
    """
    feasible = ctc_min_frames(targets, target_lens) <= lengths
    if bool(feasible.all()):
        return ctc_loss(logprobs, targets, lengths, target_lens, blank=blank)
    idx = feasible.nonzero().squeeze(1)
    if idx.numel() == 0:
        return logprobs.sum() * 0.0
    nll = ctc_loss(logprobs[idx], targets[idx], lengths[idx], target_lens[idx], blank=blank,
                   reduction="sum")
    return nll / targets.shape[0]


def cr_ctc_loss(
    logp_a: Tensor, logp_b: Tensor, targets: Tensor, target_lens: Tensor, lengths: Tensor,
    blank: int = 0,
) -> CrCtcOutput:
    """CTC on both views (averaged) plus :func:`consistency_loss` between them."""
    ctc = 0.5 * (feasible_ctc_loss(logp_a, targets, lengths, target_lens, blank)
                 + feasible_ctc_loss(logp_b, targets, lengths, target_lens, blank))
    return CrCtcOutput(ctc=ctc, cr=consistency_loss(logp_a, logp_b, lengths))
