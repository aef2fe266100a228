"""Transducer/CTC losses against brute-force enumeration of every alignment on tiny cases."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F
from edgeasr.train.losses import (
    ctc_loss,
    do_rnnt_pruning,
    get_rnnt_prune_ranges,
    rnnt_loss,
    rnnt_loss_pruned,
    rnnt_loss_simple,
    tdt_loss,
)

DT = torch.float64


def hat_logprobs(logits: torch.Tensor) -> torch.Tensor:
    """The project's HAT joint output: [logsigmoid(b), logsigmoid(-b) + log_softmax(labels)]."""
    b = logits[..., :1]
    return torch.cat([F.logsigmoid(b), F.logsigmoid(-b) + logits[..., 1:].log_softmax(-1)], dim=-1)


# ----------------------------------------------------------------------------- brute force
def brute_rnnt(lp: torch.Tensor, y: Sequence[int], blank: int = 0) -> torch.Tensor:
    """-log sum over every RNN-T path of lp [T, U+1, V] (explicit path enumeration)."""
    T, U = lp.shape[0], len(y)
    scores: list[torch.Tensor] = []

    def walk(t: int, u: int, acc: torch.Tensor) -> None:
        if t == T - 1 and u == U:
            scores.append(acc + lp[t, u, blank])
        if u < U:
            walk(t, u + 1, acc + lp[t, u, y[u]])
        if t + 1 < T:
            walk(t + 1, u, acc + lp[t, u, blank])

    walk(0, 0, lp.new_zeros(()))
    return -torch.logsumexp(torch.stack(scores), 0)


def brute_tdt(lp, dlp, y, durations, blank=0, sigma=0.0) -> torch.Tensor:
    """-log sum over every TDT path (NeMo semantics: final blank lands exactly on T)."""
    T, U = lp.shape[0], len(y)
    scores: list[torch.Tensor] = []

    def walk(t: int, u: int, acc: torch.Tensor) -> None:
        for k, d in enumerate(durations):
            if d >= 1:
                s = acc + lp[t, u, blank] + dlp[t, u, k] - sigma
                if t + d == T and u == U:
                    scores.append(s)
                elif t + d < T:
                    walk(t + d, u, s)
            if u < U and t + d < T:
                walk(t + d, u + 1, acc + lp[t, u, y[u]] + dlp[t, u, k] - sigma)

    walk(0, 0, lp.new_zeros(()))
    return -torch.logsumexp(torch.stack(scores), 0)


def brute_ctc(lp: torch.Tensor, y: Sequence[int], blank: int = 0) -> torch.Tensor:
    T, V = lp.shape
    scores = []
    for path in itertools.product(range(V), repeat=T):
        collapsed = [p for i, p in enumerate(path) if p != blank and (i == 0 or path[i - 1] != p)]
        if collapsed == list(y):
            scores.append(lp[torch.arange(T), torch.tensor(path)].sum())
    return -torch.logsumexp(torch.stack(scores), 0)


def _lens(*xs: int) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.long)


# ----------------------------------------------------------------------------- RNN-T
@pytest.mark.parametrize(
    "T,U,V,seed", [(1, 0, 2, 0), (1, 2, 3, 1), (3, 2, 4, 2), (4, 3, 4, 3), (2, 3, 3, 4)]
)
def test_rnnt_matches_brute_force_value_and_grad(T, U, V, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, T, U + 1, V, generator=g, dtype=DT, requires_grad=True)
    y = torch.randint(1, V, (1, U), generator=g)
    loss = rnnt_loss(hat_logprobs(logits), y, _lens(T), _lens(U))
    (grad,) = torch.autograd.grad(loss, logits)
    ref = brute_rnnt(hat_logprobs(logits)[0], y[0].tolist())
    (ref_grad,) = torch.autograd.grad(ref, logits)
    assert loss.item() == pytest.approx(ref.item(), abs=1e-5)
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=1e-6)


def test_rnnt_float32_close_to_float64():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 6, 4, 5, generator=g, dtype=DT)
    y = torch.randint(1, 5, (2, 3), generator=g)
    a = rnnt_loss(hat_logprobs(logits), y, _lens(6, 5), _lens(3, 2), reduction="none")
    b = rnnt_loss(hat_logprobs(logits.float()), y, _lens(6, 5), _lens(3, 2), reduction="none")
    torch.testing.assert_close(b.double(), a, atol=1e-4, rtol=1e-5)


def test_rnnt_gradcheck():
    g = torch.Generator().manual_seed(6)
    lp = torch.randn(2, 3, 3, 3, generator=g, dtype=DT).log_softmax(-1).requires_grad_(True)
    y = torch.tensor([[1, 2], [2, 0]])
    assert torch.autograd.gradcheck(
        lambda x: rnnt_loss(x, y, _lens(3, 2), _lens(2, 1), reduction="sum"), (lp,)
    )


def test_rnnt_mixed_lengths_equal_per_item_and_padding_cannot_leak():
    g = torch.Generator().manual_seed(7)
    B, T, U, V = 3, 5, 3, 4
    tl, ul = _lens(5, 2, 4), _lens(3, 0, 2)
    lp = hat_logprobs(torch.randn(B, T, U + 1, V, generator=g, dtype=DT))
    for b in range(B):  # poison padding: must not reach values or gradients
        lp[b, tl[b] :] = float("nan")
        lp[b, :, ul[b] + 1 :] = float("nan")
    lp.requires_grad_(True)
    y = torch.randint(1, V, (B, U), generator=g)
    y[1, :] = -1  # padding ids are ignored
    y[2, 2] = -1
    per = rnnt_loss(lp, y, tl, ul, reduction="none")
    per.sum().backward()
    assert torch.isfinite(per).all() and torch.isfinite(lp.grad).all()
    for b in range(B):
        sub = lp.detach()[b : b + 1, : tl[b], : ul[b] + 1].clone().requires_grad_(True)
        one = rnnt_loss(sub, y[b : b + 1, : ul[b]], tl[b : b + 1], ul[b : b + 1])
        one.backward()
        assert per[b].item() == pytest.approx(one.item(), abs=1e-9)
        torch.testing.assert_close(lp.grad[b, : tl[b], : ul[b] + 1], sub.grad[0])
        assert lp.grad[b].abs().sum().item() == pytest.approx(sub.grad.abs().sum().item())
    mean = rnnt_loss(lp.detach(), y, tl, ul)
    total = rnnt_loss(lp.detach(), y, tl, ul, reduction="sum")
    assert mean.item() == pytest.approx(per.mean().item())
    assert total.item() == pytest.approx(per.sum().item())


def test_rnnt_single_path_closed_form():
    # T=1, U=2: the only path is y1, y2, blank all at t=0.
    lp = torch.randn(1, 1, 3, 4, dtype=DT).log_softmax(-1)
    y = torch.tensor([[3, 1]])
    expect = -(lp[0, 0, 0, 3] + lp[0, 0, 1, 1] + lp[0, 0, 2, 0])
    assert rnnt_loss(lp, y, _lens(1), _lens(2)).item() == pytest.approx(expect.item())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(logit_lengths=_lens(0, 3)), "logit_lengths must lie"),
        (dict(logit_lengths=_lens(4, 3)), "logit_lengths must lie"),
        (dict(target_lengths=_lens(3, 1)), "target_lengths must lie"),
        (dict(target_lengths=_lens(-1, 1)), "target_lengths must lie"),
        (dict(targets=torch.tensor([[0, 1], [1, 1]])), "blank"),
        (dict(targets=torch.tensor([[5, 1], [1, 1]])), r"targets must lie in \[0, V=4\)"),
        (dict(targets=torch.tensor([[1, 1, 1], [1, 1, 1]])), "targets must have shape"),
        (dict(logit_lengths=torch.tensor([3.0, 3.0])), "int32/int64"),
        (dict(reduction="avg"), "reduction"),
    ],
)
def test_rnnt_invalid_inputs_raise(kwargs, match):
    args = dict(
        logprobs=torch.randn(2, 3, 3, 4).log_softmax(-1),
        targets=torch.tensor([[1, 2], [3, 1]]),
        logit_lengths=_lens(3, 3),
        target_lengths=_lens(2, 1),
    )
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        rnnt_loss(**args)


def test_rnnt_bad_logprob_rank_raises():
    with pytest.raises(ValueError, match=r"\[B, T, U\+1, V\]"):
        rnnt_loss(
            torch.zeros(2, 3, 4), torch.ones(2, 2, dtype=torch.long), _lens(3, 3), _lens(2, 2)
        )


# ----------------------------------------------------------------------------- TDT
@pytest.mark.parametrize(
    "T,U,V,durations,sigma,seed",
    [
        (1, 0, 2, (0, 1, 2), 0.0, 0),
        (3, 2, 3, (0, 1, 2), 0.0, 1),
        (4, 3, 4, (0, 1, 2), 0.0, 2),
        (4, 2, 3, (0, 1, 2), 0.3, 3),
        (4, 2, 3, (1, 2), 0.0, 4),
        (4, 3, 3, (0, 2, 3), 0.0, 5),
    ],
)
def test_tdt_matches_brute_force_value_and_grad(T, U, V, durations, sigma, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, T, U + 1, V, generator=g, dtype=DT, requires_grad=True)
    dlogits = torch.randn(1, T, U + 1, len(durations), generator=g, dtype=DT, requires_grad=True)
    y = torch.randint(1, V, (1, U), generator=g)
    lp, dlp = hat_logprobs(logits), dlogits.log_softmax(-1)
    loss = tdt_loss(lp, dlp, y, _lens(T), _lens(U), durations=durations, sigma=sigma)
    grads = torch.autograd.grad(loss, (logits, dlogits), retain_graph=True)
    ref = brute_tdt(lp[0], dlp[0], y[0].tolist(), durations, sigma=sigma)
    ref_grads = torch.autograd.grad(ref, (logits, dlogits))
    assert loss.item() == pytest.approx(ref.item(), abs=1e-5)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_tdt_with_only_duration_one_equals_rnnt_with_label_advance():
    # durations=(1,): every emission advances one frame, the lattice of "modified" RNN-T;
    # check a hand-computable case: T=2, U=1 -> paths (y,blank) and (blank,?) impossible.
    lp = torch.randn(1, 2, 2, 3, dtype=DT).log_softmax(-1)
    dlp = torch.zeros(1, 2, 2, 1, dtype=DT)
    y = torch.tensor([[2]])
    expect = -(lp[0, 0, 0, 2] + lp[0, 1, 1, 0])
    assert tdt_loss(lp, dlp, y, _lens(2), _lens(1), durations=(1,)).item() == pytest.approx(
        expect.item()
    )


def test_tdt_gradcheck():
    g = torch.Generator().manual_seed(8)
    lp = torch.randn(1, 3, 3, 3, generator=g, dtype=DT).log_softmax(-1).requires_grad_(True)
    dlp = torch.randn(1, 3, 3, 3, generator=g, dtype=DT).log_softmax(-1).requires_grad_(True)
    y = torch.tensor([[1, 2]])
    assert torch.autograd.gradcheck(
        lambda a, d: tdt_loss(a, d, y, _lens(3), _lens(2), durations=(0, 1, 2), sigma=0.1),
        (lp, dlp),
    )


def test_tdt_mixed_lengths_equal_per_item():
    g = torch.Generator().manual_seed(9)
    B, T, U, V, ds = 3, 5, 3, 4, (0, 1, 2, 3)
    tl, ul = _lens(5, 3, 1), _lens(2, 3, 0)
    lp = torch.randn(B, T, U + 1, V, generator=g, dtype=DT).log_softmax(-1)
    dlp = torch.randn(B, T, U + 1, len(ds), generator=g, dtype=DT).log_softmax(-1)
    y = torch.randint(1, V, (B, U), generator=g)
    per = tdt_loss(lp, dlp, y, tl, ul, durations=ds, reduction="none")
    for b in range(B):
        ref = brute_tdt(lp[b, : tl[b]], dlp[b, : tl[b]], y[b, : ul[b]].tolist(), ds)
        assert per[b].item() == pytest.approx(ref.item(), abs=1e-9)


def test_tdt_invalid_inputs_raise():
    lp = torch.randn(1, 3, 2, 3).log_softmax(-1)
    y, tl, ul = torch.tensor([[1]]), _lens(3), _lens(1)
    with pytest.raises(ValueError, match="duration_logprobs must have shape"):
        tdt_loss(lp, torch.zeros(1, 3, 2, 4), y, tl, ul, durations=(0, 1, 2))
    with pytest.raises(ValueError, match="distinct non-negative"):
        tdt_loss(lp, torch.zeros(1, 3, 2, 2), y, tl, ul, durations=(1, 1))
    with pytest.raises(ValueError, match=">= 1"):
        tdt_loss(lp, torch.zeros(1, 3, 2, 1), y, tl, ul, durations=(0,))


# ----------------------------------------------------------------------------- CTC
@pytest.mark.parametrize("y", [[1, 2], [2, 2], [3], []])
def test_ctc_matches_brute_force(y):
    g = torch.Generator().manual_seed(len(y))
    lp = torch.randn(1, 4, 4, generator=g, dtype=DT).log_softmax(-1)
    tg = torch.tensor([y + [0] * (2 - len(y))])
    loss = ctc_loss(lp, tg, _lens(4), _lens(len(y)))
    assert loss.item() == pytest.approx(brute_ctc(lp[0], y).item(), abs=1e-6)


def test_ctc_mean_is_batch_mean_and_short_input_raises():
    lp = torch.randn(2, 4, 4, dtype=DT).log_softmax(-1)
    tg, tl, ul = torch.tensor([[1, 2, 3], [2, 0, 0]]), _lens(4, 3), _lens(3, 1)
    per = ctc_loss(lp, tg, tl, ul, reduction="none")
    assert ctc_loss(lp, tg, tl, ul).item() == pytest.approx(per.mean().item())
    with pytest.raises(ValueError, match="target longer than frames"):
        ctc_loss(
            lp, torch.tensor([[1, 1, 2], [2, 0, 0]]), _lens(3, 3), _lens(3, 1)
        )  # 1,1 needs a blank
    with pytest.raises(ValueError, match="blank"):
        ctc_loss(lp, torch.tensor([[1, 0, 2], [2, 0, 0]]), tl, ul)


def test_ctc_zero_infinity():
    lp = torch.full((1, 2, 3), float("-inf"), dtype=DT)
    lp[..., 0] = 0.0  # only blank is possible -> target [1] impossible
    lp.requires_grad_(True)
    y = torch.tensor([[1]])
    assert torch.isinf(ctc_loss(lp, y, _lens(2), _lens(1)))
    z = ctc_loss(lp, y, _lens(2), _lens(1), zero_infinity=True)
    z.backward()
    assert z.item() == 0.0 and torch.all(lp.grad == 0)


# ----------------------------------------------------------------------------- pruned / simple
def _simple_case(seed: int, B=2, T=6, U=3, V=5):
    g = torch.Generator().manual_seed(seed)
    am = torch.randn(B, T, V, generator=g, dtype=DT)
    lm = torch.randn(B, U + 1, V, generator=g, dtype=DT)
    y = torch.randint(1, V, (B, U), generator=g)
    return am, lm, y, _lens(T, T - 2), _lens(U, U - 1)


def test_simple_loss_equals_full_rnnt_of_trivial_joiner():
    am, lm, y, tl, ul = _simple_case(10)
    full = (am[:, :, None] + lm[:, None]).log_softmax(-1)
    loss, (px_grad, py_grad) = rnnt_loss_simple(
        lm, am, y, tl, ul, lm_only_scale=0.0, reduction="none"
    )
    torch.testing.assert_close(loss, rnnt_loss(full, y, tl, ul, reduction="none"))
    # Occupancies: every path emits exactly T_b blanks and U_b labels.
    torch.testing.assert_close(py_grad.sum(dim=(1, 2)), tl.to(DT))
    torch.testing.assert_close(px_grad.sum(dim=(1, 2)), ul.to(DT))
    assert px_grad.shape == (2, 3, 7) and py_grad.shape == (2, 4, 6)


def test_simple_loss_smoothing_terms():
    am, lm, y, tl, ul = _simple_case(11)
    B, T, V = am.shape
    lm_only = lm.log_softmax(-1)[:, None].expand(B, T, -1, V)
    loss = rnnt_loss_simple(
        lm, am, y, tl, ul, lm_only_scale=1.0, reduction="none", return_grad=False
    )
    torch.testing.assert_close(loss, rnnt_loss(lm_only, y, tl, ul, reduction="none"))
    uni = lm[:, :-1].softmax(-1).mean(dim=(0, 1))
    am_only = (am + uni.log()).log_softmax(-1)[:, :, None].expand(B, T, lm.shape[1], V)
    loss = rnnt_loss_simple(
        lm, am, y, tl, ul, lm_only_scale=0.0, am_only_scale=1.0, reduction="none"
    )[0]
    torch.testing.assert_close(loss, rnnt_loss(am_only, y, tl, ul, reduction="none"))


def test_simple_loss_gradcheck():
    am, lm, y, tl, ul = _simple_case(12, B=2, T=3, U=2, V=3)
    am.requires_grad_(True)
    lm.requires_grad_(True)
    fn = lambda a, m: rnnt_loss_simple(m, a, y, tl, ul, lm_only_scale=0.25, am_only_scale=0.1)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (am, lm))


def test_pruned_with_full_range_equals_full_loss_and_grad():
    am, lm, y, tl, ul = _simple_case(13)
    am.requires_grad_(True)
    lm.requires_grad_(True)
    _, (px_grad, py_grad) = rnnt_loss_simple(lm, am, y, tl, ul)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, tl, ul, s_range=10)
    assert ranges.shape == (2, 6, 4)
    am_p, lm_p = do_rnnt_pruning(am, lm, ranges)
    pruned = rnnt_loss_pruned(hat_logprobs(torch.tanh(am_p + lm_p)), y, ranges, tl, ul)
    full = rnnt_loss(hat_logprobs(torch.tanh(am[:, :, None] + lm[:, None])), y, tl, ul)
    g_p = torch.autograd.grad(pruned, (am, lm))
    g_f = torch.autograd.grad(full, (am, lm))
    assert pruned.item() == pytest.approx(full.item(), abs=1e-9)
    for a, b in zip(g_p, g_f, strict=True):
        torch.testing.assert_close(a, b)


def test_prune_ranges_properties_and_pruned_loss_bounds_full():
    g = torch.Generator().manual_seed(14)
    B, T, U, V, R = 3, 12, 6, 7, 3
    am = torch.randn(B, T, V, generator=g, dtype=DT) * 3
    lm = torch.randn(B, U + 1, V, generator=g, dtype=DT) * 3
    y = torch.randint(1, V, (B, U), generator=g)
    tl, ul = _lens(12, 9, 5), _lens(6, 4, 5)
    _, (px_grad, py_grad) = rnnt_loss_simple(lm, am, y, tl, ul)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, tl, ul, s_range=R)
    s0 = ranges[:, :, 0]
    assert ranges.shape == (B, T, R) and (s0[:, 0] == 0).all()
    assert (s0.diff(dim=1) >= 0).all() and (s0.diff(dim=1) <= R - 1).all()
    assert (ranges <= U).all()
    for b in range(B):
        assert int(ul[b]) in ranges[b, tl[b] - 1].tolist()  # the final node survives
    joint = torch.randn(B, T, U + 1, V, generator=g, dtype=DT).log_softmax(-1)
    pruned_lp = torch.gather(joint, 2, ranges[..., None].expand(B, T, R, V))
    pruned = rnnt_loss_pruned(pruned_lp, y, ranges, tl, ul, reduction="none")
    full = rnnt_loss(joint, y, tl, ul, reduction="none")
    assert torch.isfinite(pruned).all() and (pruned >= full - 1e-9).all()
    # The window follows the occupancy: most of the simple lattice's blank mass is kept.
    kept = torch.zeros_like(py_grad).scatter(1, ranges.transpose(1, 2), 1.0)
    assert ((py_grad * kept).sum(dim=(1, 2)) / tl).min() > 0.6


def test_pruned_invalid_inputs_raise():
    lp = torch.randn(1, 3, 2, 4).log_softmax(-1)
    y, tl, ul = torch.tensor([[1, 2]]), _lens(3), _lens(2)
    with pytest.raises(ValueError, match="ranges must lie"):
        rnnt_loss_pruned(lp, y, torch.full((1, 3, 2), 2, dtype=torch.long) + 1, tl, ul)
    with pytest.raises(ValueError, match="ranges must be int64"):
        rnnt_loss_pruned(lp, y, torch.zeros(1, 3, 3, dtype=torch.long), tl, ul)
    with pytest.raises(ValueError, match="s_range must be >= 2"):
        get_rnnt_prune_ranges(torch.zeros(1, 2, 4), torch.zeros(1, 3, 3), tl, ul, s_range=1)
