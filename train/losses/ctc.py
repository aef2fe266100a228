"""CTC loss: a validated wrapper around ``torch.nn.functional.ctc_loss``.

Used for the HAT Internal Acoustic Model (the null-predictor joint) and auxiliary CTC heads.
The wrapper exists to (1) take the batch-first layout used everywhere in edgeasr, (2) reject bad
inputs with a clear message instead of a silent ``inf`` (a target needing more frames than the
utterance has is an error, not a loss of ``inf``), and (3) apply the project-wide reduction:
"mean" is the batch mean of per-utterance NLL; torch's own "mean" divides each utterance by its
target length first, which would weight losses differently from the transducer losses.

``zero_infinity``: after validation every utterance has at least one alignment, so an infinite
loss can only come from ``-inf`` log-probs on every alignment (e.g. a masked vocabulary).
With ``zero_infinity=True`` such utterances contribute 0 loss and 0 gradient (torch semantics);
the default ``False`` keeps the ``inf`` visible so the problem is noticed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .rnnt import reduce_loss, safe_targets, validate_transducer_inputs

__all__ = ["ctc_loss", "ctc_min_frames"]


def ctc_min_frames(targets: Tensor, target_lengths: Tensor) -> Tensor:
    """Fewest frames a CTC alignment of each target needs: ``U_b`` plus one blank between
    every pair of equal consecutive labels. ``[B]`` int64."""
    u = torch.arange(1, targets.shape[1], device=targets.device)
    repeats = (targets[:, 1:] == targets[:, :-1]) & (u[None, :] < target_lengths[:, None])
    return target_lengths.long() + repeats.long().sum(dim=1)


def ctc_loss(
    logprobs: Tensor,
    targets: Tensor,
    logit_lengths: Tensor,
    target_lengths: Tensor,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> Tensor:
    """CTC negative log-likelihood.

    Args:
      logprobs: ``[B, T, V]`` normalized log-probabilities (batch first).
      targets: ``[B, U]`` padded targets (padding ignored); no blank within ``target_lengths``.
      logit_lengths: ``[B]`` in ``[1, T]``. target_lengths: ``[B]`` in ``[0, U]``.
      blank: blank id (project convention: 0).
      reduction: "mean" (batch mean of per-utterance NLL), "sum" or "none".
      zero_infinity: see module docstring.

    Raises ``ValueError`` if an utterance has fewer frames than its target needs.
    """
    if not isinstance(logprobs, Tensor) or logprobs.dim() != 3:
        raise ValueError(f"logprobs must be [B, T, V], got {tuple(getattr(logprobs, 'shape', ()))}")
    B, T, V = logprobs.shape
    if not isinstance(targets, Tensor) or targets.dim() != 2 or targets.shape[0] != B:
        raise ValueError(f"targets must be [B={B}, U], got {tuple(getattr(targets, 'shape', ()))}")
    U = targets.shape[1]
    validate_transducer_inputs(B, T, U, V, targets, logit_lengths, target_lengths, blank, reduction)
    tg = safe_targets(targets, target_lengths, blank)
    need = ctc_min_frames(tg, target_lengths.to(tg.device))
    short = need > logit_lengths.to(need.device)
    if bool(short.any()):
        i = int(short.nonzero()[0, 0])
        raise ValueError(
            f"CTC target longer than frames: utterance {i} needs {int(need[i])} frames "
            f"(target length {int(target_lengths[i])} plus repeats) but has {int(logit_lengths[i])}"
        )
    if U == 0:  # torch needs a non-empty target tensor
        tg = tg.new_full((B, 1), blank)
    x = logprobs if logprobs.dtype in (torch.float32, torch.float64) else logprobs.float()
    nll = F.ctc_loss(
        x.transpose(0, 1),
        tg,
        logit_lengths.long(),
        target_lengths.long(),
        blank=blank,
        reduction="none",
        zero_infinity=zero_infinity,
    )
    return reduce_loss(nll, reduction)
