"""Factorized transducer (Transducer-Llama): blank and labels predicted by different parts.

* **Blank** comes from the ordinary HAT joint of the encoder and the stateless predictor:
  ``P(blank | t, u) = sigmoid(w_b . tanh(e_t + p_u) + c)`` (plus TDT durations if configured).
  It needs no strong LM, so it stays cheap and streamable.
* **Labels** (ids ``1..V-1``) come from a log-linear combination of an *acoustic* and a
  *language* distribution, renormalized over the labels (the factorized neural transducer)::

      log P(y | t,u, not blank) = log_softmax_y(log P_am(y | e_t) + lm_weight * log P_lm(y | y_<u))

  ``P_am`` is the joint's label head on the null-predictor hidden ``tanh(e_t)``, i.e. exactly the
  HAT internal acoustic model that IAM-CTC already trains and the bundle already exports as
  ``iam_joint``; ``P_lm`` is a standalone LM over the ASR vocabulary fed the blank-prefixed
  label history. The renormalization keeps the HAT output a proper distribution over ``V``.

Weak-to-strong LM swap (the paper's recipe): train with the *weak* LM (:class:`StatelessLM`, an
embedding + short convolution, cheap in the ``[N, T, U+1, V]`` loss), then :meth:`swap_lm` the
vocabulary-adapted Llama in (frozen by default) for decoding and for MWER fine-tuning on N-best
lists (:func:`mwer_loss`, with :meth:`FactorizedTransducer.sequence_log_probs` as the
differentiable hypothesis score).

Checkpoints (:func:`lm_record` / :func:`build_lm`): the LM travels as plain data (kind, config,
weights) beside the ASR weights, so a factorized checkpoint stays loadable by every tool that
reads the plain transducer (its encoder, blank predictor and joint are exactly that model);
``edgeasr.train.transducer_llama`` writes and reads them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..llama.model import Llama, LlamaConfig
from ..losses import rnnt_loss, tdt_loss
from .config import BLANK_ID, ModelConfig
from .encoder import sample_chunk_size
from .predictor import Predictor
from .transducer import LossOutput, Transducer

__all__ = ["FactorizedConfig", "FactorizedTransducer", "LabelLM", "StatelessLM", "build_lm",
           "lm_record", "mwer_loss"]


class LabelLM(Protocol):
    """What the factorized transducer needs from an LM: ``tokens [N, U+1]`` (blank-prefixed
    label history, padding = blank) -> log-probs over the labels ``[N, U+1, V-1]``; position
    ``u`` is the distribution of label ``u + 1``. ``Llama.label_log_probs`` fits."""

    def label_log_probs(self, tokens: Tensor) -> Tensor: ...


@dataclass
class FactorizedConfig:
    """``lm_weight``: weight of the LM log-probs in the label combination; ``lm_loss_scale``:
    weight of the LM's own cross-entropy on the transcripts (as in the factorized transducer,
    it keeps the vocabulary predictor a language model); skipped when the LM is frozen."""

    lm_weight: float = 1.0
    lm_loss_scale: float = 0.2

    def validate(self) -> None:
        for name in ("lm_weight", "lm_loss_scale"):
            if getattr(self, name) < 0:
                raise ValueError(f"FactorizedConfig.{name} must be >= 0, got "
                                 f"{getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FactorizedConfig:
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown FactorizedConfig keys: {unknown}")
        cfg = cls(**d)
        cfg.validate()
        return cfg


class StatelessLM(nn.Module):
    """The weak LM: the stateless predictor (embedding + conv over the last ``context_size``
    tokens) with a ``V-1`` label output. Cheap, so the RNN-T loss trains fast with it."""

    def __init__(self, vocab_size: int, dim: int, context_size: int = 2) -> None:
        super().__init__()
        self.shape = {"vocab_size": vocab_size, "dim": dim, "context_size": context_size}
        self.body = Predictor(vocab_size, dim, dim, context_size)
        self.out = nn.Linear(dim, vocab_size - 1)

    def label_log_probs(self, tokens: Tensor) -> Tensor:
        return torch.log_softmax(self.out(F.relu(self.body(tokens))), dim=-1)


def lm_record(lm: nn.Module) -> dict[str, Any]:
    """The LM as plain checkpoint data: ``{"kind": "stateless" | "llama", "config", "state"}``."""
    if isinstance(lm, StatelessLM):
        kind, config = "stateless", dict(lm.shape)
    elif isinstance(lm, Llama):
        kind, config = "llama", lm.cfg.to_dict()
    else:
        raise TypeError(f"cannot store an LM of type {type(lm).__name__}")
    return {"kind": kind, "config": config, "state": lm.state_dict()}


def build_lm(record: dict[str, Any]) -> nn.Module:
    """Inverse of :func:`lm_record` (weights loaded, eval mode)."""
    kind, config = record.get("kind"), dict(record.get("config", {}))
    lm: nn.Module
    if kind == "stateless":
        lm = StatelessLM(**config)
    elif kind == "llama":
        lm = Llama(LlamaConfig.from_dict(config))
    else:
        raise ValueError(f"unknown LM kind {kind!r} (stateless or llama)")
    lm.load_state_dict(record["state"])
    return lm.eval()


class FactorizedTransducer(Transducer):
    """Encoder + stateless blank predictor + HAT joint (blank, IAM label head) + label LM."""

    def __init__(self, cfg: ModelConfig, fcfg: FactorizedConfig | None = None,
                 lm: nn.Module | None = None) -> None:
        if cfg.loss != "full":
            raise ValueError("FactorizedTransducer supports loss='full' only (the pruned loss "
                             "needs an additive joint)")
        super().__init__(cfg)
        self.fcfg = fcfg or FactorizedConfig()
        self.fcfg.validate()
        self.lm: nn.Module = lm if lm is not None else StatelessLM(
            cfg.vocab_size, cfg.predictor_dim, cfg.context_size)
        self.lm_frozen = False

    def swap_lm(self, lm: nn.Module, freeze: bool = True) -> None:
        """Weak-to-strong: replace the LM (e.g. the vocabulary-adapted Llama). Frozen by
        default: its parameters get no gradient and its own LM loss is skipped."""
        if not callable(getattr(lm, "label_log_probs", None)):
            raise TypeError(f"{type(lm).__name__} has no label_log_probs(tokens)")
        vocab = getattr(getattr(lm, "cfg", None), "vocab_size", self.cfg.vocab_size)
        if vocab != self.cfg.vocab_size:
            raise ValueError(f"LM vocabulary ({vocab}) differs from the ASR vocabulary "
                             f"({self.cfg.vocab_size}): adapt it first (vocab_adapt.py)")
        self.lm = lm
        self.lm_frozen = freeze
        lm.requires_grad_(not freeze)

    # ---------------------------------------------------------------- the factorized joint
    def lm_log_probs(self, history: Tensor) -> Tensor:
        """``[N, U+1]`` blank-prefixed history -> ``[N, U+1, V-1]``."""
        max_len = getattr(getattr(self.lm, "cfg", None), "max_seq_len", None)
        if max_len is not None and history.shape[1] > max_len:
            raise ValueError(f"{history.shape[1] - 1} labels exceed the LM context "
                             f"(max_seq_len={max_len})")
        if self.lm_frozen:
            with torch.no_grad():
                return self.lm.label_log_probs(history)
        return self.lm.label_log_probs(history)

    def acoustic_log_probs(self, e: Tensor) -> Tensor:
        """Encoder-side label log-probs ``[..., V-1]``: the IAM label head on ``tanh(e)``."""
        return torch.log_softmax(self.joint.label_head(self.joint.hidden(e)), dim=-1)

    def lattice(self, e: Tensor, p: Tensor, lm_lp: Tensor) -> tuple[Tensor, Tensor | None]:
        """``e [N, T, J]``, ``p [N, U+1, J]``, ``lm_lp [N, U+1, V-1]`` ->
        (``[N, T, U+1, V]`` normalized log-probs, blank first; duration log-probs or None)."""
        h = self.joint.hidden(e[:, :, None], p[:, None])  # [N, T, U+1, J]
        b = self.joint.blank_head(h).squeeze(-1)
        labels = torch.log_softmax(self.acoustic_log_probs(e)[:, :, None]
                                   + self.fcfg.lm_weight * lm_lp[:, None], dim=-1)
        logp = torch.cat([F.logsigmoid(b)[..., None], F.logsigmoid(-b)[..., None] + labels], -1)
        dur = None
        if self.joint.duration_head is not None:
            dur = torch.log_softmax(self.joint.duration_head(h), dim=-1)
        return logp, dur

    def _transducer_nll(self, e: Tensor, e_lens: Tensor, targets: Tensor, target_lens: Tensor,
                        mask_predictor: bool) -> tuple[Tensor, Tensor]:
        """Per-utterance NLL ``[N]`` and the LM log-probs (for the LM loss)."""
        history = self.predictor_input(targets, target_lens)
        p = self.predictor(history)
        if mask_predictor:
            p = p * self.predictor_keep_mask(p.shape[0], p.device)[:, None, None]
        lm_lp = self.lm_log_probs(history)
        logp, dur = self.lattice(e, p, lm_lp)
        if dur is not None:
            nll = tdt_loss(logp, dur, targets, e_lens, target_lens, durations=self.cfg.durations,
                           blank=BLANK_ID, reduction="none")
        else:
            nll = rnnt_loss(logp, targets, e_lens, target_lens, blank=BLANK_ID,
                            reduction="none")
        return nll, lm_lp

    def forward(self, feats: Tensor, feat_lens: Tensor, targets: Tensor, target_lens: Tensor,
                chunk_size: int | None = None) -> LossOutput:
        """RNN-T/TDT loss of the factorized model + LM cross-entropy + IAM CTC (see module
        docstring); arguments as :meth:`Transducer.forward`."""
        if targets.dim() != 2 or target_lens.shape != (feats.shape[0],):
            raise ValueError(f"expected targets [N, U] and target_lens [N] with "
                             f"N={feats.shape[0]}, got {tuple(targets.shape)} and "
                             f"{tuple(target_lens.shape)}")
        if chunk_size is None and self.training:
            chunk_size = sample_chunk_size(self.cfg.train_chunk_sizes,
                                           self.cfg.full_context_prob)
        feats = self.specaugment(feats, feat_lens)
        e, e_lens = self.encoder(feats, feat_lens, chunk_size=chunk_size)
        targets, target_lens = targets.long(), target_lens.long()
        nll, lm_lp = self._transducer_nll(e, e_lens, targets, target_lens, True)
        main = nll.mean()
        parts = {"transducer": main.detach()}
        loss = main
        if self.fcfg.lm_loss_scale > 0 and not self.lm_frozen:
            u = torch.arange(targets.shape[1], device=targets.device)
            valid = u[None] < target_lens[:, None]
            tok_lp = lm_lp[:, :-1].gather(-1, (targets.clamp_min(1) - 1)[..., None])[..., 0]
            lm = -(tok_lp * valid).sum() / valid.sum().clamp_min(1)
            parts["lm"] = lm.detach()
            loss = loss + self.fcfg.lm_loss_scale * lm
        if self.cfg.iam_ctc_weight > 0:
            ctc = self._iam_ctc_loss(e, targets, e_lens, target_lens)
            parts["iam_ctc"] = ctc.detach()
            loss = loss + self.cfg.iam_ctc_weight * ctc
        return LossOutput(loss=loss, parts=parts)

    def sequence_log_probs(self, feats: Tensor, feat_lens: Tensor, hyps: list[list[list[int]]],
                           chunk_size: int | None = -1) -> Tensor:
        """``log P(y | x)`` (all alignments summed) of every hypothesis: ``hyps[n][k]`` is the
        ``k``-th token list of utterance ``n``; returns ``[N, K]`` (``-inf`` where an utterance
        has fewer than ``K`` hypotheses). Differentiable: the MWER score."""
        if len(hyps) != feats.shape[0] or not all(hyps):
            raise ValueError("need a non-empty N-best list for every utterance")
        e, e_lens = self.encoder(feats, feat_lens, chunk_size=chunk_size)
        k_max = max(len(h) for h in hyps)
        rows = [(n, k) for n in range(len(hyps)) for k in range(len(hyps[n]))]
        idx = torch.tensor([n for n, _ in rows], device=e.device)
        seqs = [hyps[n][k] for n, k in rows]
        lens = torch.tensor([len(s) for s in seqs], device=e.device)
        targets = torch.zeros(len(seqs), max(1, int(lens.max())), dtype=torch.long,
                              device=e.device)
        for i, s in enumerate(seqs):
            targets[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        nll, _ = self._transducer_nll(e[idx], e_lens[idx], targets, lens, False)
        out = torch.full((len(hyps), k_max), float("-inf"), device=e.device)
        out[idx, torch.tensor([k for _, k in rows], device=e.device)] = -nll
        return out


def mwer_loss(log_probs: Tensor, word_errors: Tensor) -> Tensor:
    """Minimum word error rate loss over N-best lists (Prabhavalkar et al., 2018).

    ``log_probs [N, K]``: model scores of the hypotheses (``-inf`` for missing ones);
    ``word_errors [N, K]``: their word errors against the reference. The hypothesis
    distribution is renormalized over each N-best list, and the plain mean error of the list
    is subtracted (a baseline that lowers the gradient variance without changing its
    expectation)::

        L = mean_n  sum_k  P̂(y_k | x_n) * (W_k - mean_k W)

    Gradient wrt ``log P(y_k)``: ``P̂_k (W_k - E_P̂[W])``, pushing mass to hypotheses with fewer
    errors than the expected number."""
    if log_probs.shape != word_errors.shape or log_probs.dim() != 2:
        raise ValueError(f"log_probs and word_errors must both be [N, K], got "
                         f"{tuple(log_probs.shape)} and {tuple(word_errors.shape)}")
    present = torch.isfinite(log_probs)
    if not bool(present.any(dim=1).all()):
        raise ValueError("every utterance needs at least one hypothesis with a finite score")
    post = torch.softmax(log_probs.masked_fill(~present, float("-inf")), dim=1)
    errors = word_errors.to(post.dtype).masked_fill(~present, 0.0)
    mean_err = errors.sum(1, keepdim=True) / present.sum(1, keepdim=True)
    return (post * (errors - mean_err)).sum(1).mean()
