"""Pruned RNN-T (Kuang et al., 2022, "Pruned RNN-T for fast, memory-efficient ASR training"),
following k2's ``rnnt_loss.py`` semantics in pure PyTorch.

The full joint over ``[B, T, U+1, V]`` dominates RNN-T training memory. Pruned RNN-T:

1. :func:`rnnt_loss_simple`: an RNN-T loss with the *trivial* joiner ``log_softmax(am + lm)``,
   computable from ``[B, T, V]`` and ``[B, U+1, V]`` without the 4-D tensor (the normalizer
   is a matmul of exponentials). Optional smoothing mixes in an LM-only and an AM-only
   (unigram-LM) lattice, k2's ``rnnt_loss_smoothed``. It also returns the occupation
   probabilities (gradients of log-likelihood w.r.t. the lattice's label/blank scores).
2. :func:`get_rnnt_prune_ranges`: from those occupancies, choose for every frame a window of
   ``s_range`` consecutive target positions that holds most probability mass.
3. :func:`do_rnnt_pruning`: gather encoder/predictor outputs for those windows; the model then
   applies its real joint to ``am_pruned + lm_pruned`` ([B, T, s_range, J]).
4. :func:`rnnt_loss_pruned`: the RNN-T loss over only the kept nodes.

Layouts follow k2 so icefall readers feel at home: ``px_grad`` is ``[B, U, T+1]`` (label from
(t, u), last column 0) and ``py_grad`` is ``[B, U+1, T]`` (blank from (t, u)).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .rnnt import (
    LOG_ZERO,
    reduce_loss,
    rnnt_lattice_logz,
    rnnt_logz_with_occupancy,
    safe_targets,
    validate_transducer_inputs,
)

__all__ = ["rnnt_loss_simple", "get_rnnt_prune_ranges", "do_rnnt_pruning", "rnnt_loss_pruned"]


def _simple_lattice_scores(
    lm: Tensor, am: Tensor, targets: Tensor, blank: int, lm_only_scale: float, am_only_scale: float
) -> tuple[Tensor, Tensor]:
    """``(blank, label)`` node scores ``[B, T, U+1]`` of the smoothed trivial-joiner lattice
    (k2 ``get_rnnt_logprobs_smoothed``); ``targets`` must already be padding-safe."""
    B, U1, V = lm.shape
    U = U1 - 1
    lm_max = lm.max(dim=2, keepdim=True).values  # [B, U+1, 1]
    am_max = am.max(dim=2, keepdim=True).values  # [B, T, 1]
    lm_probs = (lm - lm_max).exp()
    am_probs = (am - am_max).exp()
    tiny = torch.finfo(am.dtype).tiny
    # log sum_v exp(am[t, v] + lm[u, v]), [B, T, U+1], without materializing [B, T, U+1, V].
    norm = torch.log(torch.matmul(am_probs, lm_probs.transpose(1, 2)) + tiny)
    norm = norm + am_max + lm_max.transpose(1, 2)

    tg = torch.cat([targets, targets.new_full((B, 1), blank)], dim=1)  # [B, U+1]
    lab_lm = lm.gather(2, tg[:, :, None]).squeeze(2)[:, None, :]  # [B, 1, U+1]
    lab_am = am.gather(2, tg[:, None, :].expand(B, am.shape[1], U1))  # [B, T, U+1]
    blk_lm = lm[:, :, blank][:, None, :]  # [B, 1, U+1]
    blk_am = am[:, :, blank][:, :, None]  # [B, T, 1]

    label = lab_am + lab_lm - norm
    blank_s = blk_am + blk_lm - norm
    if lm_only_scale == 0.0 and am_only_scale == 0.0:
        return blank_s, label

    # LM-only lattice: log_softmax(lm), independent of t.
    lm_lse = torch.logsumexp(lm, dim=2)  # [B, U+1]
    lab_lmonly = lab_lm - lm_lse[:, None, :]
    blk_lmonly = blk_lm - lm_lse[:, None, :]
    # AM-only lattice: am combined with the batch's unigram LM distribution (k2's choice: a
    # smoothing that cannot be satisfied by the LM alone).
    unigram = (lm[:, :U] - lm_lse[:, :U, None]).exp().mean(dim=(0, 1)) + tiny  # [V]
    if U == 0:
        unigram = torch.full_like(unigram, 1.0 / V)
    am_norm = torch.log(am_probs @ unigram)[..., None] + am_max  # [B, T, 1]
    log_uni = unigram.log()
    lab_amonly = lab_am + log_uni[tg][:, None, :] - am_norm
    blk_amonly = blk_am + log_uni[blank] - am_norm

    combined = 1.0 - lm_only_scale - am_only_scale
    label = combined * label + lm_only_scale * lab_lmonly + am_only_scale * lab_amonly
    blank_s = combined * blank_s + lm_only_scale * blk_lmonly + am_only_scale * blk_amonly
    return blank_s, label


def _to_k2_layout(g_blank: Tensor, g_label: Tensor) -> tuple[Tensor, Tensor]:
    """``[B, T, U+1]`` occupancies -> k2's ``px_grad [B, U, T+1]``, ``py_grad [B, U+1, T]``."""
    B, T, U1 = g_blank.shape
    px = g_label[:, :, : U1 - 1].transpose(1, 2)
    px = torch.cat([px, px.new_zeros(B, U1 - 1, 1)], dim=2)
    return px.contiguous(), g_blank.transpose(1, 2).contiguous()


def rnnt_loss_simple(
    lm: Tensor,
    am: Tensor,
    targets: Tensor,
    logit_lengths: Tensor,
    target_lengths: Tensor,
    blank: int = 0,
    lm_only_scale: float = 0.25,
    am_only_scale: float = 0.0,
    reduction: str = "mean",
    return_grad: bool = True,
) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
    """RNN-T loss with the trivial joiner ``log_softmax(am[t] + lm[u])``.

    k2's ``rnnt_loss_smoothed`` (icefall's "simple loss").

    Args:
      lm: ``[B, U+1, V]`` predictor logits (projected to the vocabulary).
      am: ``[B, T, V]`` encoder logits.
      targets, logit_lengths, target_lengths, blank, reduction: as in :func:`rnnt_loss`.
      lm_only_scale, am_only_scale: weights of the LM-only / AM-only lattices mixed into each
        node score (``1 - lm_only_scale - am_only_scale`` goes to the joint lattice).
      return_grad: also return ``(px_grad [B, U, T+1], py_grad [B, U+1, T])``, the occupation
        probabilities that :func:`get_rnnt_prune_ranges` consumes (detached).
    """
    if lm.dim() != 3 or am.dim() != 3 or lm.shape[0] != am.shape[0] or lm.shape[2] != am.shape[2]:
        raise ValueError(
            f"expected lm [B, U+1, V] and am [B, T, V], got {tuple(lm.shape)} and {tuple(am.shape)}"
        )
    if lm_only_scale < 0 or am_only_scale < 0 or lm_only_scale + am_only_scale > 1:
        raise ValueError("lm_only_scale and am_only_scale must be >= 0 and sum to at most 1")
    B, U1, V = lm.shape
    T = am.shape[1]
    validate_transducer_inputs(
        B, T, U1 - 1, V, targets, logit_lengths, target_lengths, blank, reduction
    )
    if lm.dtype not in (torch.float32, torch.float64):
        lm, am = lm.float(), am.float()
    tg = safe_targets(targets, target_lengths, blank)
    blank_s, label_s = _simple_lattice_scores(lm, am, tg, blank, lm_only_scale, am_only_scale)
    if not return_grad:
        return reduce_loss(
            -rnnt_lattice_logz(blank_s, label_s, logit_lengths, target_lengths), reduction
        )
    logz, g_blank, g_label = rnnt_logz_with_occupancy(
        blank_s, label_s, logit_lengths, target_lengths
    )
    return reduce_loss(-logz, reduction), _to_k2_layout(g_blank, g_label)


def _monotonic_lower_bound(x: Tensor) -> Tensor:
    """``y[..., i] = min_{j >= i} x[..., j]`` (k2.monotonic_lower_bound) along the last dim."""
    return torch.flip(torch.cummin(torch.flip(x, dims=[-1]), dim=-1).values, dims=[-1])


def _adjust_pruning_lower_bound(s_begin: Tensor, s_range: int) -> Tensor:
    """Make ``s_begin`` non-decreasing, start at 0, and grow by at most ``s_range - 1`` per
    frame (so no target is skipped). k2's trick: bounding the growth is a monotonic lower bound
    of ``-(s_begin - (s_range - 1) * t)``."""
    T = s_begin.shape[1]
    t = torch.arange(T, device=s_begin.device)
    s_begin = _monotonic_lower_bound(s_begin)
    s_begin = -(s_begin - (s_range - 1) * t)
    s_begin = _monotonic_lower_bound(s_begin)
    s_begin = s_begin.clamp(min=0)
    return -(s_begin - (s_range - 1) * t)


def get_rnnt_prune_ranges(
    px_grad: Tensor, py_grad: Tensor, logit_lengths: Tensor, target_lengths: Tensor, s_range: int
) -> Tensor:
    """Per-frame windows of target positions to keep, ``[B, T, s_range']`` (int64).

    ``ranges[b, t] = s_begin + arange(s_range')`` where ``s_begin`` maximizes the occupancy of
    blanks inside the window minus the label mass entering it from below (k2's published
    criterion), then is adjusted so paths stay connected: the first frame starts at 0, the last
    valid frame's window contains ``U_b``, and consecutive windows overlap.
    ``s_range' = min(s_range, U + 1)``: a window as large as the lattice prunes nothing.
    """
    if px_grad.dim() != 3 or py_grad.dim() != 3:
        raise ValueError("px_grad must be [B, U, T+1] and py_grad [B, U+1, T]")
    B, U, T1 = px_grad.shape
    T = py_grad.shape[2]
    if T1 != T + 1 or tuple(py_grad.shape) != (B, U + 1, T):
        raise ValueError(
            "px_grad must be [B, U, T+1] and py_grad [B, U+1, T]; "
            f"got {tuple(px_grad.shape)}, {tuple(py_grad.shape)}"
        )
    if s_range < 2:
        raise ValueError(
            f"s_range must be >= 2 for the regular RNN-T (else no path survives), got {s_range}"
        )
    s_range = min(s_range, U + 1)
    tl = logit_lengths.to(px_grad.device).long()
    ul = target_lengths.to(px_grad.device).long()
    # Window mass of blanks: sum_{j=s}^{s+R-1} py_grad[j], for s in [0, U+1-R].
    csum = torch.cat([py_grad.new_zeros(B, 1, T), py_grad.cumsum(dim=1)], dim=1)
    blk_sum = csum[:, s_range:] - csum[:, : U + 2 - s_range]  # [B, U+2-R, T]
    px_pad = torch.cat([px_grad.new_zeros(B, 1, T1), px_grad], dim=1)  # [B, U+1, T+1]
    final = blk_sum - px_pad[:, : U + 2 - s_range, :T]
    s_begin = final.argmax(dim=1)  # [B, T]

    t = torch.arange(T, device=px_grad.device)[None, :]
    pad_value = (ul - s_range + 1).clamp(min=0)[:, None]
    s_begin = torch.where(t < tl[:, None] - 1, s_begin, pad_value)
    s_begin = _adjust_pruning_lower_bound(s_begin, s_range)
    return s_begin[:, :, None] + torch.arange(s_range, device=px_grad.device)


def do_rnnt_pruning(am: Tensor, lm: Tensor, ranges: Tensor) -> tuple[Tensor, Tensor]:
    """``am [B, T, J]``, ``lm [B, U+1, J]`` -> ``(am_pruned, lm_pruned)``, ``[B, T, s_range, J]``
    (``am_pruned`` is an expanded view), ready for ``joint(am_pruned + lm_pruned)``."""
    if am.dim() != 3 or lm.dim() != 3 or ranges.dim() != 3:
        raise ValueError("expected am [B, T, J], lm [B, U+1, J], ranges [B, T, s_range]")
    B, T, J = am.shape
    if lm.shape[0] != B or lm.shape[2] != J or ranges.shape[:2] != (B, T):
        raise ValueError(
            f"shape mismatch: am {tuple(am.shape)}, lm {tuple(lm.shape)}, "
            f"ranges {tuple(ranges.shape)}"
        )
    R = ranges.shape[2]
    U1 = lm.shape[1]
    am_pruned = am[:, :, None, :].expand(B, T, R, J)
    lm_pruned = torch.gather(
        lm[:, None].expand(B, T, U1, J), 2, ranges[..., None].expand(B, T, R, J)
    )
    return am_pruned, lm_pruned


def rnnt_loss_pruned(
    logprobs: Tensor,
    targets: Tensor,
    ranges: Tensor,
    logit_lengths: Tensor,
    target_lengths: Tensor,
    blank: int = 0,
    reduction: str = "mean",
) -> Tensor:
    """RNN-T NLL over the pruned lattice: node (t, u) exists only if ``u`` is in ``ranges[b, t]``.

    Args:
      logprobs: ``[B, T, s_range, V]`` normalized log-probs of the joint at the kept nodes
        (``logprobs[b, t, j]`` belongs to node ``(t, ranges[b, t, j])``).
      ranges: ``[B, T, s_range]`` from :func:`get_rnnt_prune_ranges`.
      Other arguments as in :func:`rnnt_loss`. With ``s_range = U + 1`` this equals it.
    """
    if logprobs.dim() != 4:
        raise ValueError(f"logprobs must be [B, T, s_range, V], got {tuple(logprobs.shape)}")
    B, T, R, V = logprobs.shape
    if not isinstance(targets, Tensor) or targets.dim() != 2:
        raise ValueError(f"targets must be [B, U], got {tuple(getattr(targets, 'shape', ()))}")
    U = targets.shape[1]
    validate_transducer_inputs(B, T, U, V, targets, logit_lengths, target_lengths, blank, reduction)
    if tuple(ranges.shape) != (B, T, R) or ranges.dtype != torch.int64:
        raise ValueError(
            f"ranges must be int64 [B, T, s_range]={(B, T, R)}, "
            f"got {ranges.dtype} {tuple(ranges.shape)}"
        )
    if R > U + 1:
        raise ValueError(f"s_range={R} exceeds U+1={U + 1}")
    if int(ranges.min()) < 0 or int(ranges.max()) > U:
        raise ValueError(f"ranges must lie in [0, U={U}]")

    tg = safe_targets(targets, target_lengths, blank)
    tg = torch.cat([tg, tg.new_full((B, 1), blank)], dim=1)  # [B, U+1]
    sym = torch.gather(tg[:, None, :].expand(B, T, U + 1), 2, ranges)  # [B, T, R]
    label_p = logprobs.gather(3, sym[..., None]).squeeze(3)
    blank_p = logprobs[..., blank]
    if label_p.dtype not in (torch.float32, torch.float64):
        label_p, blank_p = label_p.float(), blank_p.float()
    # Scatter the kept nodes into the full [B, T, U+1] lattice; pruned nodes get log(0).
    full = label_p.new_full((B, T, U + 1), LOG_ZERO)
    label = full.scatter(2, ranges, label_p)
    blank_s = full.scatter(2, ranges, blank_p)
    return reduce_loss(-rnnt_lattice_logz(blank_s, label, logit_lengths, target_lengths), reduction)
