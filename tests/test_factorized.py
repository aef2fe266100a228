"""Factorized transducer (Transducer-Llama): the label/blank factorization, the weak-to-strong
LM swap and the MWER loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from edgeasr.train.llama.model import Llama, tiny_llama_config
from edgeasr.train.model import tiny_config
from edgeasr.train.model.factorized import (
    FactorizedConfig,
    FactorizedTransducer,
    StatelessLM,
    mwer_loss,
)

V = 16


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> object:
    """One torch thread: these models are tiny and the CI machine has 2 shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _batch(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(2, 4 * 6 + 7, 80, generator=g)
    feat_lens = torch.tensor([31, 27])
    targets = torch.tensor([[3, 5, 7], [2, 9, 0]])
    target_lens = torch.tensor([3, 2])
    return feats, feat_lens, targets, target_lens


def _model(**kw: object) -> FactorizedTransducer:
    torch.manual_seed(0)
    return FactorizedTransducer(tiny_config(vocab_size=V, mask_prob=0.0), FactorizedConfig(**kw))


def test_lattice_is_hat_with_log_linear_labels() -> None:
    m = _model(lm_weight=0.7).eval()
    e = torch.randn(1, 3, 32)
    hist = torch.tensor([[0, 4, 6]])
    p = m.predictor(hist)
    lm_lp = m.lm_log_probs(hist)
    logp, dur = m.lattice(e, p, lm_lp)
    assert dur is None and logp.shape == (1, 3, 3, V)
    # a proper distribution over V at every (t, u)
    torch.testing.assert_close(logp.logsumexp(-1), torch.zeros(1, 3, 3), atol=1e-5, rtol=0)
    # by hand at (t=2, u=1)
    b = m.joint.blank_head(torch.tanh(e[0, 2] + p[0, 1])).squeeze()
    am = torch.log_softmax(m.joint.label_head(torch.tanh(e[0, 2])), -1)
    labels = torch.log_softmax(am + 0.7 * lm_lp[0, 1], -1)
    expect = torch.cat([torch.log(torch.sigmoid(b))[None],
                        torch.log(torch.sigmoid(-b)) + labels])
    torch.testing.assert_close(logp[0, 2, 1], expect, atol=1e-5, rtol=0)


def test_runtime_combination_matches_lattice() -> None:
    """The numpy combination the runtime decoder uses equals the training lattice's labels."""
    from edgeasr.decoding.llama_predictor import factorized_label_log_probs

    m = _model(lm_weight=0.5).eval()
    e = torch.randn(1, 2, 32)
    hist = torch.tensor([[0, 4]])
    with torch.no_grad():
        p, lm_lp = m.predictor(hist), m.lm_log_probs(hist)
        logp, _ = m.lattice(e, p, lm_lp)
        am = m.acoustic_log_probs(e)
    got = factorized_label_log_probs(am[0, 1].numpy(), lm_lp[0, 1].numpy(), 0.5)
    b = m.joint.blank_head(torch.tanh(e[0, 1] + p[0, 1])).squeeze()
    expect = logp[0, 1, 1, 1:] - torch.nn.functional.logsigmoid(-b)
    np.testing.assert_allclose(got, expect.detach().numpy(), atol=1e-5)


def test_train_step_with_weak_lm_updates_everything() -> None:
    m = _model().train()
    out = m(*_batch(), chunk_size=-1)
    assert set(out.parts) == {"transducer", "lm", "iam_ctc"}
    assert torch.isfinite(out.loss) and out.parts["transducer"] > 0
    # LM loss of an untrained LM is about log(V-1)
    assert abs(float(out.parts["lm"]) - math.log(V - 1)) < 0.5
    out.loss.backward()
    assert isinstance(m.lm, StatelessLM)
    for name in ("lm.out.weight", "joint.blank_head.weight", "joint.label_head.weight"):
        assert dict(m.named_parameters())[name].grad.abs().sum() > 0, name


def test_loss_decreases_with_training() -> None:
    m = _model().train()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    batch = _batch()
    losses = []
    for _ in range(15):
        out = m(*batch, chunk_size=-1)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.parts["transducer"]))
    assert losses[-1] < 0.7 * losses[0]


def test_weak_to_strong_swap_llama_frozen() -> None:
    m = _model().train()
    llama = Llama(tiny_llama_config(vocab_size=V))
    m.swap_lm(llama)
    out = m(*_batch(), chunk_size=-1)
    assert "lm" not in out.parts  # frozen: no LM loss
    out.loss.backward()
    assert all(p.grad is None for p in llama.parameters())
    assert m.joint.label_head.weight.grad.abs().sum() > 0
    # the Llama really is in the lattice: its log-probs at the history are used
    hist = torch.tensor([[0, 3, 5]])
    torch.testing.assert_close(m.lm_log_probs(hist), llama.label_log_probs(hist))
    with pytest.raises(ValueError, match="adapt it first"):
        m.swap_lm(Llama(tiny_llama_config(vocab_size=V + 1)))


def test_swap_unfrozen_trains_llama() -> None:
    m = _model().train()
    llama = Llama(tiny_llama_config(vocab_size=V))
    m.swap_lm(llama, freeze=False)
    out = m(*_batch(), chunk_size=-1)
    assert "lm" in out.parts
    out.loss.backward()
    assert llama.tok_embeddings.weight.grad.abs().sum() > 0


def test_sequence_log_probs_match_loss() -> None:
    m = _model(lm_loss_scale=0.0).eval()
    feats, feat_lens, targets, target_lens = _batch()
    hyps = [[[3, 5, 7], [3, 5]], [[2, 9]]]
    scores = m.sequence_log_probs(feats, feat_lens, hyps)
    assert scores.shape == (2, 2) and scores[1, 1] == float("-inf")
    m.cfg.iam_ctc_weight = 0.0
    out = m(feats, feat_lens, targets, target_lens, chunk_size=-1)
    # the loss is the batch mean NLL of the references, which are hyps[0][0] and hyps[1][0]
    torch.testing.assert_close(-(scores[0, 0] + scores[1, 0]) / 2, out.loss, atol=1e-4, rtol=0)
    assert scores[0, 0] < 0 and scores[0, 1] < 0


def test_mwer_loss_hand_made_nbest() -> None:
    # one utterance, three hypotheses with 0, 1 and 3 word errors
    s = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    w = torch.tensor([[0.0, 1.0, 3.0]])
    loss = mwer_loss(s, w)
    post = [math.exp(-1), math.exp(-2), math.exp(-3)]
    post = [x / sum(post) for x in post]  # 0.6652, 0.2447, 0.0900
    expected_err = post[1] * 1 + post[2] * 3  # 0.5149
    assert float(loss.detach()) == pytest.approx(expected_err - 4 / 3, abs=1e-6)  # -0.8184
    loss.backward()
    grad = [p * (e - expected_err) for p, e in zip(post, [0, 1, 3], strict=True)]
    torch.testing.assert_close(s.grad, torch.tensor([grad]), atol=1e-6, rtol=0)
    assert s.grad[0, 0] < 0 < s.grad[0, 2]  # descent raises the best hypothesis


def test_mwer_loss_padding_and_errors() -> None:
    s = torch.tensor([[-1.0, float("-inf")], [-0.5, -0.5]])
    w = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    # utterance 1: single hypothesis -> 0; utterance 2: 0.5*1 + 0.5*3 - 2 = 0
    assert float(mwer_loss(s, w)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="finite score"):
        mwer_loss(torch.full((1, 2), float("-inf")), torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        mwer_loss(torch.zeros(2), torch.zeros(2))
