"""RNN-T loss in vectorized PyTorch, plus the lattice helpers the other transducer losses share.

Why not a library: torchaudio has no build for our torch, fast-rnnt cannot build offline and
numba's CPU path is far too slow (see docs, design notes). The loss is small once written on the
right tensors:

1. Gather, from the full ``[B, T, U+1, V]`` log-probs, only the two numbers each lattice node
   needs: ``blank[b, t, u]`` (log P(blank)) and ``label[b, t, u]`` (log P(y_{u+1}), the next
   target). Everything after this works on ``[B, T, U+1]`` tensors, so memory is dominated by the
   input and its gradient, not by the recursion.
2. Run the forward (alpha) recursion over *anti-diagonals* ``n = t + u``: every node on a diagonal
   depends only on the previous diagonal, so one Python loop of ``T + U`` steps with batch-and-U
   vector ops computes all alphas exactly (no cumulative-sum tricks that lose float32 precision
   when label log-probs are very negative).
3. Autograd gives gradients; for the pruned/simple losses (k2 style) the occupation
   probabilities ``d logZ / d label`` and ``d logZ / d blank`` are computed together with ``logZ``
   by :class:`_LatticeLogZ`, which also serves as the backward.

Lattice convention (same as torchaudio/k2 "regular" RNN-T): from node (t, u) a blank moves to
(t+1, u), a label y_{u+1} moves to (t, u+1); paths start at (0, 0) and end with the blank
emitted at (T_b - 1, U_b). Element ``b`` only reads frames ``t < logit_lengths[b]`` and
``u <= target_lengths[b]``; values outside that region (padding, even NaN) never reach its loss
or its gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "rnnt_loss",
    "rnnt_lattice_logz",
    "gather_transducer_scores",
    "validate_transducer_inputs",
]

# A finite stand-in for log(0). Using -inf inside logaddexp makes its backward compute
# exp(-inf - -inf) = nan; a large finite value gives exact zeros instead.
LOG_ZERO = -1.0e30

_REDUCTIONS = ("mean", "sum", "none")


def _check_int_vector(name: str, x: Tensor, batch: int) -> None:
    if not isinstance(x, Tensor) or x.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{name} must be an int32/int64 tensor, got {getattr(x, 'dtype', type(x))}")
    if x.shape != (batch,):
        raise ValueError(f"{name} must have shape [B]=[{batch}], got {tuple(x.shape)}")


def validate_transducer_inputs(
    batch: int,
    num_frames: int,
    max_targets: int,
    vocab_size: int,
    targets: Tensor,
    logit_lengths: Tensor,
    target_lengths: Tensor,
    blank: int,
    reduction: str = "mean",
) -> None:
    """Raise a clear ``ValueError``/``TypeError`` for inconsistent transducer inputs.

    Checks shapes, that lengths lie in range (``1 <= T_b <= T``, ``0 <= U_b <= U``), that
    ``blank`` is a valid id, and that every *valid* target (``u < U_b``) is a non-blank id in
    ``[0, V)``. Padding positions of ``targets`` may hold anything (e.g. -1).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not 0 <= blank < vocab_size:
        raise ValueError(f"blank={blank} is not a valid id for vocabulary size {vocab_size}")
    if not isinstance(targets, Tensor) or targets.dtype not in (torch.int32, torch.int64):
        raise TypeError(
            f"targets must be an int32/int64 tensor, got {getattr(targets, 'dtype', type(targets))}"
        )
    if targets.shape != (batch, max_targets):
        raise ValueError(
            f"targets must have shape [B, U]=[{batch}, {max_targets}] to match the log-probs, "
            f"got {tuple(targets.shape)}"
        )
    _check_int_vector("logit_lengths", logit_lengths, batch)
    _check_int_vector("target_lengths", target_lengths, batch)
    if batch == 0:
        return
    if int(logit_lengths.min()) < 1 or int(logit_lengths.max()) > num_frames:
        raise ValueError(
            f"logit_lengths must lie in [1, T={num_frames}], got {logit_lengths.tolist()}"
        )
    if int(target_lengths.min()) < 0 or int(target_lengths.max()) > max_targets:
        raise ValueError(
            f"target_lengths must lie in [0, U={max_targets}], got {target_lengths.tolist()}"
        )
    valid = (
        torch.arange(max_targets, device=targets.device)
        < target_lengths.to(targets.device)[:, None]
    )
    vals = targets[valid]
    if vals.numel():
        if int(vals.min()) < 0 or int(vals.max()) >= vocab_size:
            raise ValueError(f"targets must lie in [0, V={vocab_size}) within target_lengths")
        if bool((vals == blank).any()):
            raise ValueError(f"targets must not contain the blank id {blank} within target_lengths")


def reduce_loss(nll: Tensor, reduction: str) -> Tensor:
    """Apply the project reduction: "mean" is the batch mean of per-utterance NLL (not divided
    by target length, unlike ``torch.nn.functional.ctc_loss``)."""
    if reduction == "mean":
        return nll.mean()
    if reduction == "sum":
        return nll.sum()
    return nll


def safe_targets(targets: Tensor, target_lengths: Tensor, blank: int) -> Tensor:
    """Targets with padding positions (``u >= U_b``) replaced by ``blank`` so gathers never
    index out of range; those positions never contribute to any loss."""
    u = torch.arange(targets.shape[1], device=targets.device)
    valid = u < target_lengths.to(targets.device)[:, None]
    return torch.where(valid, targets.long(), torch.full_like(targets, blank, dtype=torch.long))


def gather_transducer_scores(
    logprobs: Tensor, targets: Tensor, target_lengths: Tensor, blank: int
) -> tuple[Tensor, Tensor]:
    """Reduce ``[B, T, U+1, V]`` log-probs to ``(blank, label)``, each ``[B, T, U+1]``.

    ``label[b, t, u] = logprobs[b, t, u, targets[b, u]]`` for ``u < U``; the last column (no next
    target) is 0 and never used. Computed in at least float32.
    """
    B, T, U1, V = logprobs.shape
    tg = safe_targets(targets, target_lengths, blank)
    tg = torch.cat([tg, tg.new_full((B, 1), blank)], dim=1)  # [B, U+1]
    idx = tg[:, None, :, None].expand(B, T, U1, 1)
    label = logprobs.gather(3, idx).squeeze(3)
    blank_lp = logprobs[..., blank]
    if label.dtype not in (torch.float32, torch.float64):
        label, blank_lp = label.float(), blank_lp.float()
    return blank_lp, label


def valid_node_mask(
    shape: tuple[int, int, int], logit_lengths: Tensor, target_lengths: Tensor, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Masks ``[B, T, U+1]`` of lattice nodes that may emit a blank (t < T_b, u <= U_b) and a
    label (t < T_b, u < U_b) for their own utterance."""
    B, T, U1 = shape
    t_ok = torch.arange(T, device=device)[None, :, None] < logit_lengths.to(device)[:, None, None]
    u = torch.arange(U1, device=device)[None, None, :]
    ul = target_lengths.to(device)[:, None, None]
    return t_ok & (u <= ul), t_ok & (u < ul)


def skew(x: Tensor, fill: float = 0.0) -> Tensor:
    """Rearrange ``x[B, T, U1, ...]`` into anti-diagonals: ``out[b, n, u] = x[b, n - u, u]``.

    The result has ``T + U1 - 1`` diagonals; positions with ``n - u`` outside ``[0, T)`` hold
    ``fill``. This lets the recursion read a whole diagonal with one slice.
    """
    B, T, U1 = x.shape[:3]
    n = torch.arange(T + U1 - 1, device=x.device)[:, None]
    u = torch.arange(U1, device=x.device)[None, :]
    t = n - u
    ok = (t >= 0) & (t < T)
    out = x[:, t.clamp(0, T - 1), u.expand_as(t)]  # [B, N, U1, ...]
    ok = ok.view(1, *ok.shape, *([1] * (x.dim() - 3)))
    return torch.where(ok, out, torch.full((), fill, dtype=x.dtype, device=x.device))


def rnnt_lattice_logz(
    blank: Tensor, label: Tensor, logit_lengths: Tensor, target_lengths: Tensor
) -> Tensor:
    """log P(y | x) per utterance for the regular RNN-T lattice given node scores.

    Args:
      blank: ``[B, T, U+1]`` log-prob of blank at node (t, u).
      label: ``[B, T, U+1]`` log-prob of the next target y_{u+1} at (t, u) (column U unused).
      logit_lengths, target_lengths: ``[B]`` valid sizes (already validated).

    Returns ``[B]``; differentiable by autograd. Entries outside each utterance's region are
    masked to 0 before use, so padding (even NaN) cannot leak into values or gradients.
    """
    B, T, U1 = blank.shape
    ok_blank, ok_label = valid_node_mask((B, T, U1), logit_lengths, target_lengths, blank.device)
    zero = blank.new_zeros(())
    blank = torch.where(ok_blank, blank, zero)
    label = torch.where(ok_label, label, zero)
    # unbind (not per-step slicing): its backward is one stack, where slicing a big tensor
    # inside the loop would allocate and zero a full-size gradient at every step.
    sb, sl = skew(blank).unbind(1), skew(label).unbind(1)  # N x [B, U1]
    alpha = blank.new_full((B, U1), LOG_ZERO)
    alpha[:, 0] = 0.0
    alphas = [alpha]
    for n in range(1, T + U1 - 1):
        stay = alpha + sb[n - 1]  # blank from (t-1, u)
        move = alpha[:, :-1] + sl[n - 1][:, :-1]  # label from (t, u-1)
        alpha = torch.cat([stay[:, :1], torch.logaddexp(stay[:, 1:], move)], dim=1)
        alphas.append(alpha)
    all_alpha = torch.stack(alphas, dim=1)  # [B, N, U1]
    tl = logit_lengths.to(blank.device).long()
    ul = target_lengths.to(blank.device).long()
    bidx = torch.arange(B, device=blank.device)
    return all_alpha[bidx, tl - 1 + ul, ul] + blank[bidx, tl - 1, ul]


class _LatticeLogZ(torch.autograd.Function):
    """``logZ`` of the RNN-T lattice with its occupation gradients computed in the forward.

    k2's pruned RNN-T needs ``d logZ / d px`` and ``d logZ / d py`` to choose pruning ranges;
    computing them once here and reusing them as the backward avoids a second pass.
    """

    @staticmethod
    def forward(ctx, blank: Tensor, label: Tensor, logit_lengths: Tensor, target_lengths: Tensor):  # type: ignore[override]
        with torch.enable_grad():
            b = blank.detach().requires_grad_(True)
            lab = label.detach().requires_grad_(True)
            logz = rnnt_lattice_logz(b, lab, logit_lengths, target_lengths)
            g_blank, g_label = torch.autograd.grad(logz.sum(), (b, lab))
        ctx.save_for_backward(g_blank, g_label)
        ctx.mark_non_differentiable(g_blank, g_label)
        return logz.detach(), g_blank, g_label

    @staticmethod
    def backward(ctx, grad_logz: Tensor, _gb: Tensor, _gl: Tensor):  # type: ignore[override]
        g_blank, g_label = ctx.saved_tensors
        scale = grad_logz[:, None, None]
        return scale * g_blank, scale * g_label, None, None


def rnnt_logz_with_occupancy(
    blank: Tensor, label: Tensor, logit_lengths: Tensor, target_lengths: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``(logZ[B], d logZ/d blank [B,T,U+1], d logZ/d label [B,T,U+1])``; logZ stays
    differentiable w.r.t. ``blank`` and ``label`` (the occupancies are its exact gradient)."""
    return _LatticeLogZ.apply(blank, label, logit_lengths, target_lengths)


def rnnt_loss(
    logprobs: Tensor,
    targets: Tensor,
    logit_lengths: Tensor,
    target_lengths: Tensor,
    blank: int = 0,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood of the regular RNN-T (transducer) lattice.

    Args:
      logprobs: ``[B, T, U+1, V]`` normalized log-probabilities (e.g. the HAT joint's
        ``[logsigmoid(b), logsigmoid(-b) + log_softmax(labels)]``); not re-normalized here.
      targets: ``[B, U]`` int targets, padding beyond ``target_lengths`` is ignored.
      logit_lengths: ``[B]`` frames per utterance, in ``[1, T]``.
      target_lengths: ``[B]`` targets per utterance, in ``[0, U]``.
      blank: blank id (project convention: 0).
      reduction: "mean" (batch mean of per-utterance NLL), "sum" or "none" (``[B]``).
    """
    if not isinstance(logprobs, Tensor) or logprobs.dim() != 4:
        raise ValueError(
            f"logprobs must be [B, T, U+1, V], got shape {tuple(getattr(logprobs, 'shape', ()))}"
        )
    B, T, U1, V = logprobs.shape
    if U1 < 1:
        raise ValueError("logprobs dim 2 (U+1) must be >= 1")
    validate_transducer_inputs(
        B, T, U1 - 1, V, targets, logit_lengths, target_lengths, blank, reduction
    )
    blank_lp, label_lp = gather_transducer_scores(logprobs, targets, target_lengths, blank)
    nll = -rnnt_lattice_logz(blank_lp, label_lp, logit_lengths, target_lengths)
    return reduce_loss(nll, reduction)
