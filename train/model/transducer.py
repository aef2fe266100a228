"""The transducer model and its training objective, plus a reference greedy decoder.

Objective (one forward pass):

* main loss on the predictor joint: HAT RNN-T (``durations == ()``) or TDT, over the full
  ``[N, T, U+1, V]`` lattice, or k2-style pruned RNN-T (``loss="pruned"``: a cheap "simple" loss
  on ``am/lm`` projections to ``V`` picks ``prune_range`` target positions per frame, and the
  real joint is evaluated only there);
* HAINAN predictor masking: during training the predictor output of a whole utterance is
  replaced by 0 (the null predictor) with probability ``mask_prob``, so the same joint also works
  without label context (NAR / SAR decoding);
* the HAT internal acoustic model: CTC on the null-predictor joint ``joint(e, None)``, weighted by
  ``iam_ctc_weight`` (it is what the IAM blank gate thresholds at decode time).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..losses import (
    ctc_loss,
    do_rnnt_pruning,
    get_rnnt_prune_ranges,
    rnnt_loss,
    rnnt_loss_pruned,
    rnnt_loss_simple,
    tdt_loss,
)
from ..losses.ctc import ctc_min_frames
from .config import BLANK_ID, ModelConfig
from .encoder import Encoder, sample_chunk_size
from .joint import Joint
from .predictor import Predictor
from .specaugment import SpecAugment


@dataclass
class LossOutput:
    """``loss``: the scalar to minimize; ``parts``: its detached components for logging
    (``transducer``, ``iam_ctc``, and for the pruned loss ``simple`` and ``pruned``)."""

    loss: Tensor
    parts: dict[str, Tensor]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class Transducer(nn.Module):
    """Encoder + stateless predictor + HAT joint (optionally TDT durations)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.predictor = Predictor(cfg.vocab_size, cfg.predictor_dim, cfg.joint_dim,
                                   cfg.context_size)
        self.joint = Joint(cfg.joint_dim, cfg.vocab_size, len(cfg.durations))
        self.specaugment = SpecAugment(cfg.specaugment)
        if cfg.loss == "pruned":
            # icefall's simple_am_proj / simple_lm_proj: the trivial joiner of the simple loss.
            self.simple_am_proj = nn.Linear(cfg.joint_dim, cfg.vocab_size)
            self.simple_lm_proj = nn.Linear(cfg.joint_dim, cfg.vocab_size)
        else:
            self.simple_am_proj = None
            self.simple_lm_proj = None
        #: Training-only auxiliary losses (interAED-KD, set by ``interaed.attach_kd``): never
        #: exported; their weights are dropped when a checkpoint loads into a model without them.
        self.kd: nn.Module | None = None
        self.register_load_state_dict_pre_hook(_drop_absent_kd_weights)

    # ---------------------------------------------------------------- pieces used by the loss
    @staticmethod
    def predictor_input(targets: Tensor, target_lens: Tensor) -> Tensor:
        """``[N, U]`` padded targets -> ``[N, U+1]`` blank-prefixed, padding replaced by blank."""
        u = torch.arange(targets.shape[1], device=targets.device)
        y = torch.where(u[None, :] < target_lens[:, None], targets, BLANK_ID)
        return torch.cat([y.new_full((y.shape[0], 1), BLANK_ID), y], dim=1)

    def predictor_keep_mask(self, batch: int, device: torch.device) -> Tensor:
        """``[N]`` float, 0 for utterances whose predictor output is masked (HAINAN), else 1.
        All ones outside training or with ``mask_prob = 0``."""
        if not self.training or self.cfg.mask_prob <= 0:
            return torch.ones(batch, device=device)
        return (torch.rand(batch, device=device) >= self.cfg.mask_prob).float()

    def forward(
        self, feats: Tensor, feat_lens: Tensor, targets: Tensor, target_lens: Tensor,
        chunk_size: int | None = None,
    ) -> LossOutput:
        """Training objective for a padded batch.

        ``feats [N, T, F]``, ``feat_lens [N]``, ``targets [N, U]`` (padding arbitrary, no blank
        inside ``target_lens``), ``target_lens [N]``. ``chunk_size``: None = dynamic chunk
        sampling in training (:func:`sample_chunk_size`) and full context in eval; -1 = full
        context; a positive int = that chunk size.
        """
        cfg = self.cfg
        if targets.dim() != 2 or targets.shape[0] != feats.shape[0] or \
                target_lens.shape != (feats.shape[0],):
            raise ValueError(f"expected targets [N, U] and target_lens [N] with "
                             f"N={feats.shape[0]}, got {tuple(targets.shape)} and "
                             f"{tuple(target_lens.shape)}")
        if chunk_size is None and self.training:
            chunk_size = sample_chunk_size(cfg.train_chunk_sizes, cfg.full_context_prob)
        feats = self.specaugment(feats, feat_lens)
        taps: list[Tensor] | None = [] if self.kd is not None else None
        e, e_lens = self.encoder(feats, feat_lens, chunk_size=chunk_size, layer_outputs=taps)
        targets = targets.long()
        target_lens = target_lens.long()
        p = self.predictor(self.predictor_input(targets, target_lens))  # [N, U+1, J]
        p = p * self.predictor_keep_mask(p.shape[0], p.device)[:, None, None]

        parts: dict[str, Tensor] = {}
        if cfg.loss == "pruned":
            main = self._pruned_loss(e, p, targets, e_lens, target_lens, parts)
        else:
            out = self.joint(e[:, :, None], p[:, None])  # [N, T, U+1, ...]
            if cfg.is_tdt:
                main = tdt_loss(out.token_log_probs(), out.duration_log_probs(), targets,
                                e_lens, target_lens, durations=cfg.durations, blank=BLANK_ID)
            else:
                main = rnnt_loss(out.token_log_probs(), targets, e_lens, target_lens,
                                 blank=BLANK_ID)
        parts["transducer"] = main.detach()
        loss = main
        if cfg.iam_ctc_weight > 0:
            ctc = self._iam_ctc_loss(e, targets, e_lens, target_lens)
            parts["iam_ctc"] = ctc.detach()
            loss = loss + cfg.iam_ctc_weight * ctc
        if self.kd is not None and taps is not None:
            kd, kd_parts = self.kd(taps, e_lens, targets, target_lens)
            parts.update(kd_parts)
            loss = loss + kd
        return LossOutput(loss=loss, parts=parts)

    def _pruned_loss(
        self, e: Tensor, p: Tensor, targets: Tensor, e_lens: Tensor, target_lens: Tensor,
        parts: dict[str, Tensor],
    ) -> Tensor:
        cfg = self.cfg
        assert self.simple_am_proj is not None and self.simple_lm_proj is not None
        simple, (px_grad, py_grad) = rnnt_loss_simple(
            self.simple_lm_proj(p), self.simple_am_proj(e), targets, e_lens, target_lens,
            blank=BLANK_ID, lm_only_scale=cfg.lm_only_scale, am_only_scale=cfg.am_only_scale,
            return_grad=True,
        )
        ranges = get_rnnt_prune_ranges(px_grad, py_grad, e_lens, target_lens, cfg.prune_range)
        am_pruned, lm_pruned = do_rnnt_pruning(e, p, ranges)
        logprobs = self.joint.log_probs(am_pruned, lm_pruned)  # [N, T, R, V]
        pruned = rnnt_loss_pruned(logprobs, targets, ranges, e_lens, target_lens, blank=BLANK_ID)
        parts["simple"] = simple.detach()
        parts["pruned"] = pruned.detach()
        return cfg.simple_loss_scale * simple + pruned

    def _iam_ctc_loss(
        self, e: Tensor, targets: Tensor, e_lens: Tensor, target_lens: Tensor
    ) -> Tensor:
        """CTC on the null-predictor joint. Utterances too short for CTC (more labels than
        frames) contribute 0 instead of aborting the batch; the mean is over the whole batch."""
        logprobs = self.joint.log_probs(e)  # p = None: the IAM
        feasible = ctc_min_frames(targets, target_lens) <= e_lens
        if bool(feasible.all()):
            return ctc_loss(logprobs, targets, e_lens, target_lens, blank=BLANK_ID)
        idx = feasible.nonzero().squeeze(1)
        if idx.numel() == 0:
            return logprobs.sum() * 0.0
        nll = ctc_loss(logprobs[idx], targets[idx], e_lens[idx], target_lens[idx],
                       blank=BLANK_ID, reduction="sum")
        return nll / targets.shape[0]


def _drop_absent_kd_weights(module: nn.Module, state_dict: dict[str, Tensor], prefix: str,
                            *_: object) -> None:
    """Load hook: a checkpoint trained with KD decoders loads into a plain model (export,
    inference) by dropping the ``kd.*`` weights, which no decoding path uses."""
    if getattr(module, "kd", None) is None:
        for key in [k for k in state_dict if k.startswith(prefix + "kd.")]:
            del state_dict[key]


@torch.no_grad()
def greedy_decode(
    model: Transducer, feats: Tensor, feat_lens: Tensor | None = None,
    chunk_size: int | None = None, max_symbols_per_frame: int = 4,
) -> list[list[int]]:
    """Reference greedy search (RNN-T or TDT), one utterance at a time.

    Simple and exact rather than fast: the trainer's validation and the tests use it as the
    ground truth that the runtime decoders are compared with. ``chunk_size`` as in
    :meth:`Encoder.forward` (None = full context). Returns token ids per utterance.
    """
    if feats.dim() != 3:
        raise ValueError(f"feats must be [N, T, F], got {tuple(feats.shape)}")
    if feat_lens is None:
        feat_lens = torch.full((feats.shape[0],), feats.shape[1], dtype=torch.int64)
    was_training = model.training
    model.eval()
    try:
        cfg = model.cfg
        e, e_lens = model.encoder(feats, feat_lens.to(feats.device), chunk_size=chunk_size)
        hyps: list[list[int]] = []
        for n in range(e.shape[0]):
            context = [BLANK_ID] * cfg.context_size
            p = model.predictor.step(torch.tensor([context], device=e.device))
            hyp: list[int] = []
            t, emitted, t_end = 0, 0, int(e_lens[n])
            while t < t_end:
                out = model.joint(e[n, t : t + 1], p)
                token = int(out.token_log_probs().argmax(dim=-1))
                if token != BLANK_ID:
                    hyp.append(token)
                    context = context[1:] + [token]
                    p = model.predictor.step(torch.tensor([context], device=e.device))
                    emitted += 1
                if out.duration_logits is not None:
                    skip = cfg.durations[int(out.duration_logits.argmax(dim=-1))]
                    if skip == 0 and (token == BLANK_ID or emitted >= max_symbols_per_frame):
                        skip = 1
                else:
                    skip = int(token == BLANK_ID or emitted >= max_symbols_per_frame)
                if skip > 0:
                    t += skip
                    emitted = 0
            hyps.append(hyp)
        return hyps
    finally:
        model.train(was_training)
