"""Token-and-Duration Transducer (TDT) loss, NeMo semantics, vectorized PyTorch.

TDT (Xu et al., 2023; used by HAINAN) lets every emission also predict how many frames to
advance. With durations ``D = (d_0, ..., d_{K-1})``:

* a label y_{u+1} emitted at (t, u) with duration d moves to (t + d, u + 1); d = 0 is allowed;
* a blank emitted at (t, u) with duration d >= 1 moves to (t + d, u); blank with d = 0 is never
  used (it would not advance, making the lattice cyclic).

Each emission scores ``log P(token) + log P(duration) - sigma`` (``sigma`` is NeMo's logit
under-normalization; 0 gives the plain likelihood). Termination follows NeMo's
``compute_tdt_alphas_kernel`` exactly: alphas exist only for ``t < T_b``; the path ends with a
*blank* emitted at (T_b - d, U_b) whose duration d lands exactly on ``T_b``. A label whose
duration jumps to or beyond ``T_b`` (or a blank overshooting ``T_b``) is not a complete path.

Every transition increases ``n = t + u`` by at least one, so the forward recursion runs over
anti-diagonals like :mod:`rnnt`, each diagonal reading up to ``max(D) + 1`` earlier ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .rnnt import (
    LOG_ZERO,
    gather_transducer_scores,
    reduce_loss,
    skew,
    valid_node_mask,
    validate_transducer_inputs,
)

__all__ = ["tdt_loss"]


def _check_durations(durations: Sequence[int]) -> list[int]:
    ds = [int(d) for d in durations]
    if not ds or len(set(ds)) != len(ds) or min(ds) < 0 or any(int(d) != d for d in durations):
        raise ValueError(f"durations must be distinct non-negative ints, got {list(durations)}")
    if max(ds) < 1:
        raise ValueError(f"durations must contain a value >= 1 for blanks, got {ds}")
    return ds


def tdt_loss(
    token_logprobs: Tensor,
    duration_logprobs: Tensor,
    targets: Tensor,
    logit_lengths: Tensor,
    target_lengths: Tensor,
    durations: Sequence[int] = (0, 1, 2, 3, 4),
    blank: int = 0,
    sigma: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood of the TDT lattice.

    Args:
      token_logprobs: ``[B, T, U+1, V]`` normalized token log-probs (HAT form is fine).
      duration_logprobs: ``[B, T, U+1, K]`` normalized log-probs over ``durations``
        (entry k is the log-prob of ``durations[k]``).
      targets: ``[B, U]``; logit_lengths ``[B]`` in ``[1, T]``;
        target_lengths ``[B]`` in ``[0, U]``.
      durations: the duration value of each of the K duration classes (distinct, >= 0).
      blank: blank id. sigma: subtracted once per emission (NeMo under-normalization).
      reduction: "mean" (batch mean of per-utterance NLL), "sum" or "none".
    """
    if not isinstance(token_logprobs, Tensor) or token_logprobs.dim() != 4:
        raise ValueError(
            "token_logprobs must be [B, T, U+1, V], "
            f"got {tuple(getattr(token_logprobs, 'shape', ()))}"
        )
    B, T, U1, V = token_logprobs.shape
    ds = _check_durations(durations)
    K = len(ds)
    if not isinstance(duration_logprobs, Tensor) or tuple(duration_logprobs.shape) != (B, T, U1, K):
        raise ValueError(
            f"duration_logprobs must have shape [B, T, U+1, len(durations)]={(B, T, U1, K)}, "
            f"got {tuple(getattr(duration_logprobs, 'shape', ()))}"
        )
    validate_transducer_inputs(
        B, T, U1 - 1, V, targets, logit_lengths, target_lengths, blank, reduction
    )

    blank_lp, label_lp = gather_transducer_scores(token_logprobs, targets, target_lengths, blank)
    dur = duration_logprobs.to(blank_lp.dtype)
    ok_blank, ok_label = valid_node_mask((B, T, U1), logit_lengths, target_lengths, blank_lp.device)
    zero = blank_lp.new_zeros(())
    kb = [k for k, d in enumerate(ds) if d >= 1]
    # Per-duration emission scores; masked to 0 outside each utterance (never read, NaN-safe).
    eb = torch.where(ok_blank[..., None], blank_lp[..., None] + dur[..., kb] - sigma, zero)
    el = torch.where(ok_label[..., None], label_lp[..., None] + dur - sigma, zero)
    sb, sl = skew(eb).unbind(1), skew(el).unbind(1)  # N x [B, U1, Kb], N x [B, U1, K]

    n_diag = T + U1 - 1
    alpha = blank_lp.new_full((B, U1), LOG_ZERO)
    alpha[:, 0] = 0.0
    alphas = [alpha]
    pad = blank_lp.new_full((B, 1), LOG_ZERO)
    for n in range(1, n_diag):
        terms = []
        for j, k in enumerate(kb):
            m = n - ds[k]
            if m >= 0:
                terms.append(alphas[m] + sb[m][:, :, j])
        for k, d in enumerate(ds):
            m = n - d - 1
            if m >= 0:
                terms.append(torch.cat([pad, alphas[m][:, :-1] + sl[m][:, :-1, k]], dim=1))
        if terms:
            alpha = torch.logsumexp(torch.stack(terms), dim=0)
        else:
            alpha = blank_lp.new_full((B, U1), LOG_ZERO)
        alphas.append(alpha)
    all_alpha = torch.stack(alphas, dim=1)  # [B, N, U1]

    dev = blank_lp.device
    tl = logit_lengths.to(dev).long()
    ul = target_lengths.to(dev).long()
    bidx = torch.arange(B, device=dev)
    finals = []
    for j, k in enumerate(kb):
        t0 = tl - ds[k]
        ok = t0 >= 0
        tc = t0.clamp(min=0)
        term = all_alpha[bidx, tc + ul, ul] + eb[bidx, tc, ul, j]
        finals.append(torch.where(ok, term, torch.full_like(term, LOG_ZERO)))
    logz = torch.logsumexp(torch.stack(finals), dim=0)
    return reduce_loss(-logz, reduction)
