"""HENT-SRT: a hierarchical streaming transducer for joint speech recognition and translation.

Structure (Zhang et al. 2025, arXiv 2506.02157, with edgeasr's own pieces)::

    fbank -> ASR Encoder (the streaming Conformer of encoder.py) -> e [N, T, J]
                |                                                  -> ASR transducer (HAT)
                +-> StEncoder: mean-pool by ``downsample`` -> Linear -> Conformer blocks
                                 -> s [N, T/ds, J_st]              -> ST transducer (HAT)

Why this shape:

* Hierarchy: the ST encoder reads the ASR encoder's output, so translation starts from a
  representation already trained to be monotonic in the source words; the extra layers learn the
  reordering. The ST encoder reads the *exported* ASR frames ``e`` (already in ``J``), so at run
  time the ST head is driven from the very same ASR encoder pass, with no change to its graph.
* Streaming: the ST encoder is made of the same :class:`ConformerBlock` with the same chunk mask
  and the same cache layout (a second :class:`EncoderCaches`), so chunk-by-chunk equals the
  masked full forward exactly as for the ASR encoder. Its down-sampling is a mean over
  ``downsample`` consecutive frames, aligned to chunk starts (the chunk size must be a multiple),
  so it needs no cache at all.
* Objective: pruned RNN-T for the ST head (its target/frame lattice is the big one), the ASR
  head's loss as configured, and CR-CTC (two SpecAugment views in one doubled batch, CTC on the
  null-predictor joints of both heads, symmetric stop-gradient KL between the views).
* The ASR half is a plain :class:`Transducer`, so stage 1 (ASR pre-training) is the ordinary
  ``edgeasr-train fit`` run and its checkpoint loads into :attr:`HierarchicalTransducer.asr`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..losses import (
    do_rnnt_pruning,
    get_rnnt_prune_ranges,
    rnnt_loss,
    rnnt_loss_pruned,
    rnnt_loss_simple,
)
from ..losses.crctc import consistency_loss, feasible_ctc_loss
from .config import BLANK_ID, LOSS_KINDS, ModelConfig, _check_keys, tiny_config
from .encoder import (
    ConformerBlock,
    EncoderCaches,
    chunk_attention_mask,
    chunk_through_layers,
    sample_chunk_size,
)
from .joint import Joint, hat_log_probs
from .predictor import Predictor
from .transducer import LossOutput, Transducer

__all__ = [
    "HierarchicalConfig",
    "HierarchicalTransducer",
    "StEncoder",
    "StHeadConfig",
    "st_greedy_decode",
    "tiny_hierarchical_config",
]


@dataclass
class StHeadConfig:
    """The translation half: ST encoder, stateless predictor, HAT joint, loss weights.

    ``left_context`` counts ST frames (``downsample`` ASR frames each). The weights combine the
    stage-2 objective: ``asr_weight * L_asr + st_weight * L_st + asr.iam_ctc_weight * CTC_asr +
    st_ctc_weight * CTC_st + cr_weight * (CR_asr + CR_st)``; ``cr_weight = 0`` trains on one
    view (no batch doubling).
    """

    vocab_size: int = 256
    d_model: int = 192
    num_layers: int = 4
    num_heads: int = 4
    ffn_dim: int = 768
    conv_kernel: int = 15
    left_context: int = 32
    downsample: int = 2
    dropout: float = 0.1
    joint_dim: int = 320
    predictor_dim: int = 256
    context_size: int = 2
    loss: str = "pruned"
    prune_range: int = 10
    simple_loss_scale: float = 0.5
    lm_only_scale: float = 0.25
    am_only_scale: float = 0.0
    asr_weight: float = 1.0
    st_weight: float = 1.0
    st_ctc_weight: float = 0.1
    cr_weight: float = 0.2

    def validate(self) -> None:
        for name in ("vocab_size", "d_model", "num_layers", "num_heads", "ffn_dim",
                     "conv_kernel", "downsample", "joint_dim", "predictor_dim", "context_size",
                     "prune_range"):
            if getattr(self, name) < 1:
                raise ValueError(f"StHeadConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.vocab_size < 2:
            raise ValueError(f"StHeadConfig.vocab_size must count blank plus >= 1 token, "
                             f"got {self.vocab_size}")
        if self.d_model % self.num_heads:
            raise ValueError(f"StHeadConfig.d_model ({self.d_model}) must be divisible by "
                             f"num_heads ({self.num_heads})")
        if self.left_context < 0:
            raise ValueError(f"StHeadConfig.left_context must be >= 0, got {self.left_context}")
        if self.loss not in LOSS_KINDS:
            raise ValueError(f"StHeadConfig.loss must be one of {LOSS_KINDS}, got {self.loss!r}")
        if not 0.0 <= self.dropout <= 1.0:
            raise ValueError(f"StHeadConfig.dropout must be in [0, 1], got {self.dropout}")
        for name in ("simple_loss_scale", "lm_only_scale", "am_only_scale", "asr_weight",
                     "st_weight", "st_ctc_weight", "cr_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"StHeadConfig.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class HierarchicalConfig:
    """``asr``: the ASR transducer (stage 1's ``ModelConfig``); ``st``: the translation head."""

    asr: ModelConfig = field(default_factory=ModelConfig)
    st: StHeadConfig = field(default_factory=StHeadConfig)

    def validate(self) -> None:
        self.asr.validate()
        self.st.validate()
        if self.asr.is_tdt:
            raise ValueError("HENT-SRT uses an RNN-T (HAT) ASR head; set asr.durations=()")
        ds = self.st.downsample
        sizes = (self.asr.chunk_size, *self.asr.train_chunk_sizes)
        if any(c % ds for c in sizes):
            raise ValueError(f"ASR chunk sizes {sizes} must be multiples of st.downsample={ds} "
                             "(ST frames are pooled inside a chunk)")

    def st_chunk_size(self) -> int:
        """ST frames per streaming chunk."""
        return self.asr.chunk_size // self.st.downsample

    def st_block_config(self) -> ModelConfig:
        """A :class:`ModelConfig` carrying the ST encoder's layer shape, so the ASR encoder's
        :class:`ConformerBlock` and :meth:`EncoderCaches.init` serve it unchanged."""
        st = self.st
        return dataclasses.replace(
            self.asr, vocab_size=st.vocab_size, d_model=st.d_model, num_layers=st.num_layers,
            num_heads=st.num_heads, ffn_dim=st.ffn_dim, conv_kernel=st.conv_kernel,
            left_context=st.left_context, chunk_size=self.st_chunk_size(), dropout=st.dropout,
            joint_dim=st.joint_dim,
            train_chunk_sizes=tuple(c // st.downsample for c in self.asr.train_chunk_sizes),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"asr": self.asr.to_dict(), "st": dataclasses.asdict(self.st)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HierarchicalConfig:
        _check_keys(cls, d)
        st = dict(d.get("st", {}))
        _check_keys(StHeadConfig, st)
        cfg = cls(asr=ModelConfig.from_dict(dict(d.get("asr", {}))), st=StHeadConfig(**st))
        cfg.validate()
        return cfg


def tiny_hierarchical_config(
    asr_overrides: dict[str, Any] | None = None, **st_overrides: Any
) -> HierarchicalConfig:
    """A model of a few ten thousand parameters for tests (milliseconds per step on CPU)."""
    st: dict[str, Any] = dict(vocab_size=12, d_model=16, num_layers=2, num_heads=2, ffn_dim=32,
                              conv_kernel=3, left_context=3, downsample=2, dropout=0.0,
                              joint_dim=16, predictor_dim=16, prune_range=3)
    st.update(st_overrides)
    cfg = HierarchicalConfig(asr=tiny_config(**(asr_overrides or {})), st=StHeadConfig(**st))
    cfg.validate()
    return cfg


class StEncoder(nn.Module):
    """Pool ``downsample`` ASR frames -> Linear -> streaming Conformer blocks -> Linear(J_st)."""

    def __init__(self, cfg: HierarchicalConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.block_cfg = cfg.st_block_config()
        self.downsample = cfg.st.downsample
        self.in_proj = nn.Linear(cfg.asr.joint_dim, cfg.st.d_model)
        self.input_dropout = nn.Dropout(cfg.st.dropout)
        self.layers = nn.ModuleList(
            ConformerBlock(self.block_cfg) for _ in range(cfg.st.num_layers)
        )
        self.out_norm = nn.LayerNorm(cfg.st.d_model)  # pre-norm blocks: one norm at the end
        self.out_proj = nn.Linear(cfg.st.d_model, cfg.st.joint_dim)

    def pool(self, frames: Tensor) -> Tensor:
        """``[N, T, J]`` -> ``[N, T // ds, J]``: mean of each group of ``ds`` frames."""
        n, t, j = frames.shape
        ds = self.downsample
        if ds == 1:
            return frames
        return frames[:, : (t // ds) * ds].reshape(n, t // ds, ds, j).mean(dim=2)

    def init_caches(self, batch: int, device: torch.device | str | None = None) -> EncoderCaches:
        return EncoderCaches.init(batch, self.block_cfg, device=device)

    def forward(
        self, frames: Tensor, lens: Tensor, chunk_size: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """``frames [N, T, J]`` (ASR encoder output), ``lens [N]``, ``chunk_size`` in *ASR*
        frames (None/-1: full context) -> (``[N, T//ds, J_st]``, ``[N]``)."""
        x = self.input_dropout(self.in_proj(self.pool(frames)))
        st_lens = torch.div(lens, self.downsample, rounding_mode="floor").clamp_max(x.shape[1])
        t = x.shape[1]
        st_chunk = None if chunk_size is None or chunk_size < 0 else chunk_size // self.downsample
        if st_chunk == 0:
            raise ValueError(f"chunk_size {chunk_size} is smaller than st.downsample "
                             f"{self.downsample}")
        pos = torch.arange(t, device=x.device)
        allowed = chunk_attention_mask(t, st_chunk, self.block_cfg.left_context, x.device)
        allowed = allowed[None] & (pos[None, None, :] < st_lens[:, None, None])
        distance = (pos[:, None] - pos[None, :]).to(x.dtype)
        for layer in self.layers:
            x = layer(x, allowed, distance)
        return self.out_proj(self.out_norm(x)), st_lens

    def forward_chunk(self, frames: Tensor, caches: EncoderCaches) -> tuple[Tensor, EncoderCaches]:
        """One streaming step: ``frames [N, C, J]`` of one ASR chunk -> (``[N, C/ds, J_st]``,
        new caches). Static shapes apart from ``N`` (exported as the ``st_encoder`` graph)."""
        n, c_asr, _ = frames.shape
        if c_asr % self.downsample:
            raise ValueError(f"chunk of {c_asr} ASR frames is not a multiple of st.downsample "
                             f"{self.downsample}")
        bc = self.block_cfg
        left = bc.left_context
        want = ((bc.num_layers, left, n, bc.d_model), (bc.num_layers, bc.conv_kernel - 1, n,
                                                         bc.d_model))
        if (tuple(caches.attn.shape), tuple(caches.conv.shape)) != want:
            raise ValueError(f"ST caches must be attn {want[0]}, conv {want[1]}; got "
                             f"{tuple(caches.attn.shape)}, {tuple(caches.conv.shape)}")
        x, out = chunk_through_layers(self.layers, self.in_proj(self.pool(frames)), caches)
        return self.out_proj(self.out_norm(x)), out

    def forward_chunk_tuple(
        self, frames: Tensor, attn_cache: Tensor, conv_cache: Tensor, processed_frames: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`forward_chunk` over flat tensors (the exported graph's signature)."""
        out, caches = self.forward_chunk(
            frames, EncoderCaches(attn_cache, conv_cache, processed_frames)
        )
        return (out, *caches.to_tuple())


class TransducerHead(nn.Module):
    """Stateless predictor + HAT joint (+ the simple-loss projections of pruned RNN-T)."""

    def __init__(self, vocab_size: int, predictor_dim: int, joint_dim: int, context_size: int,
                 loss: str) -> None:
        super().__init__()
        self.predictor = Predictor(vocab_size, predictor_dim, joint_dim, context_size)
        self.joint = Joint(joint_dim, vocab_size)
        self.simple_am_proj = nn.Linear(joint_dim, vocab_size) if loss == "pruned" else None
        self.simple_lm_proj = nn.Linear(joint_dim, vocab_size) if loss == "pruned" else None


def transducer_loss(
    e: Tensor, e_lens: Tensor, p: Tensor, targets: Tensor, target_lens: Tensor, joint: Joint,
    am_proj: nn.Module | None, lm_proj: nn.Module | None, *, loss: str, prune_range: int,
    simple_loss_scale: float, lm_only_scale: float, am_only_scale: float,
    parts: dict[str, Tensor], prefix: str,
) -> Tensor:
    """Full or pruned HAT RNN-T loss of one head (``p``: predictor output ``[N, U+1, J]``)."""
    if loss == "full":
        return rnnt_loss(joint.log_probs(e[:, :, None], p[:, None]), targets, e_lens,
                         target_lens, blank=BLANK_ID)
    assert am_proj is not None and lm_proj is not None
    simple, (px_grad, py_grad) = rnnt_loss_simple(
        lm_proj(p), am_proj(e), targets, e_lens, target_lens, blank=BLANK_ID,
        lm_only_scale=lm_only_scale, am_only_scale=am_only_scale, return_grad=True,
    )
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, e_lens, target_lens, prune_range)
    am_pruned, lm_pruned = do_rnnt_pruning(e, p, ranges)
    pruned = rnnt_loss_pruned(joint.log_probs(am_pruned, lm_pruned), targets, ranges, e_lens,
                              target_lens, blank=BLANK_ID)
    parts[f"{prefix}_simple"] = simple.detach()
    parts[f"{prefix}_pruned"] = pruned.detach()
    return simple_loss_scale * simple + pruned


class HierarchicalTransducer(nn.Module):
    """ASR :class:`Transducer` + :class:`StEncoder` + ST transducer head (see module doc)."""

    def __init__(self, cfg: HierarchicalConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.asr = Transducer(cfg.asr)
        self.st_encoder = StEncoder(cfg)
        st = cfg.st
        self.st_head = TransducerHead(st.vocab_size, st.predictor_dim, st.joint_dim,
                                      st.context_size, st.loss)

    # ------------------------------------------------------------------ encoders
    def encode(
        self, feats: Tensor, feat_lens: Tensor, chunk_size: int | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Both encoders, whole batch: -> (``e [N, T, J]``, ``e_lens``, ``s [N, T/ds, J_st]``,
        ``s_lens``). ``chunk_size`` in ASR frames, None/-1 = full context."""
        e, e_lens = self.asr.encoder(feats, feat_lens, chunk_size=chunk_size)
        s, s_lens = self.st_encoder(e, e_lens, chunk_size=chunk_size)
        return e, e_lens, s, s_lens

    def forward_chunk(
        self, feats: Tensor, asr_caches: EncoderCaches, st_caches: EncoderCaches
    ) -> tuple[Tensor, Tensor, EncoderCaches, EncoderCaches]:
        """One streaming step of both encoders: the ST encoder consumes exactly the frames the
        ASR encoder emitted for this chunk."""
        e, asr_caches = self.asr.encoder.forward_chunk(feats, asr_caches)
        s, st_caches = self.st_encoder.forward_chunk(e, st_caches)
        return e, s, asr_caches, st_caches

    # ------------------------------------------------------------------ objective
    def forward(
        self, feats: Tensor, feat_lens: Tensor, targets: Tensor, target_lens: Tensor,
        st_targets: Tensor, st_target_lens: Tensor, chunk_size: int | None = None,
    ) -> LossOutput:
        """Stage-2 multitask objective (see :class:`StHeadConfig` for the weights).

        In training with ``cr_weight > 0`` the batch is doubled with two independent SpecAugment
        views (one encoder call, same chunk size), and every loss term is averaged over both.
        """
        cfg, st = self.cfg, self.cfg.st
        n = feats.shape[0]
        for name, t, tl in (("targets", targets, target_lens),
                            ("st_targets", st_targets, st_target_lens)):
            if t.dim() != 2 or t.shape[0] != n or tl.shape != (n,):
                raise ValueError(f"expected {name} [N, U] and lengths [N] with N={n}, got "
                                 f"{tuple(t.shape)} and {tuple(tl.shape)}")
        if chunk_size is None and self.training:
            chunk_size = sample_chunk_size(cfg.asr.train_chunk_sizes, cfg.asr.full_context_prob)
        two_views = self.training and st.cr_weight > 0
        aug = self.asr.specaugment
        views = 2 if two_views else 1
        x = torch.cat([aug(feats, feat_lens) for _ in range(views)])

        def rep(t: Tensor) -> Tensor:
            return torch.cat([t] * views)

        x_lens = rep(feat_lens)
        y, y_lens = rep(targets.long()), rep(target_lens.long())
        z, z_lens = rep(st_targets.long()), rep(st_target_lens.long())
        e, e_lens, s, s_lens = self.encode(x, x_lens, chunk_size)

        parts: dict[str, Tensor] = {}
        a = cfg.asr
        p = self.asr.predictor(Transducer.predictor_input(y, y_lens))
        p = p * self.asr.predictor_keep_mask(p.shape[0], p.device)[:, None, None]
        l_asr = transducer_loss(
            e, e_lens, p, y, y_lens, self.asr.joint, self.asr.simple_am_proj,
            self.asr.simple_lm_proj, loss=a.loss, prune_range=a.prune_range,
            simple_loss_scale=a.simple_loss_scale, lm_only_scale=a.lm_only_scale,
            am_only_scale=a.am_only_scale, parts=parts, prefix="asr")
        h = self.st_head
        q = h.predictor(Transducer.predictor_input(z, z_lens))
        l_st = transducer_loss(
            s, s_lens, q, z, z_lens, h.joint, h.simple_am_proj, h.simple_lm_proj, loss=st.loss,
            prune_range=st.prune_range, simple_loss_scale=st.simple_loss_scale,
            lm_only_scale=st.lm_only_scale, am_only_scale=st.am_only_scale, parts=parts,
            prefix="st")
        parts["asr_transducer"] = l_asr.detach()
        parts["st_transducer"] = l_st.detach()
        loss = st.asr_weight * l_asr + st.st_weight * l_st

        # CR-CTC on the null-predictor joints (the ASR one is the HAT IAM) of every head with a
        # CTC weight: CTC on both views, consistency between them.
        for name, w, logp, lens, tg, tl in (
            ("asr", a.iam_ctc_weight, lambda: self.asr.joint.log_probs(e), e_lens, y, y_lens),
            ("st", st.st_ctc_weight, lambda: h.joint.log_probs(s), s_lens, z, z_lens),
        ):
            if w <= 0:
                continue
            lp = logp()
            ctc = feasible_ctc_loss(lp, tg, lens, tl, blank=BLANK_ID)
            parts[f"{name}_ctc"] = ctc.detach()
            loss = loss + w * ctc
            if two_views:
                cr = consistency_loss(lp[:n], lp[n:], lens[:n])
                parts[f"{name}_cr"] = cr.detach()
                loss = loss + st.cr_weight * cr
        return LossOutput(loss=loss, parts=parts)

    @staticmethod
    def from_asr_checkpoint_state(cfg: HierarchicalConfig, asr_state: dict[str, Tensor]
                                  ) -> HierarchicalTransducer:
        """Stage 2 init: a fresh model whose ASR half is the stage-1 ``Transducer`` weights."""
        model = HierarchicalTransducer(cfg)
        model.asr.load_state_dict(asr_state)
        return model


@torch.no_grad()
def st_greedy_decode(
    model: HierarchicalTransducer, feats: Tensor, feat_lens: Tensor,
    chunk_size: int | None = None, blank_penalty: float = 0.0, max_symbols_per_frame: int = 4,
) -> list[list[int]]:
    """Reference greedy search of the ST head (one utterance at a time, exact, slow).

    ``blank_penalty`` is subtracted from the HAT blank logit (HENT-SRT eq. 12): larger values
    emit more tokens, countering the transducer's bias to under-generate translations.
    """
    was_training = model.training
    model.eval()
    try:
        _, _, s, s_lens = model.encode(feats, feat_lens, chunk_size)
        head = model.st_head
        k = model.cfg.st.context_size
        hyps: list[list[int]] = []
        for i in range(s.shape[0]):
            context = [BLANK_ID] * k
            p = head.predictor.step(torch.tensor([context], device=s.device))
            hyp: list[int] = []
            t, emitted = 0, 0
            while t < int(s_lens[i]):
                out = head.joint(s[i, t : t + 1], p)
                logp = hat_log_probs(out.blank_logit - blank_penalty, out.label_logits)
                token = int(logp.argmax(dim=-1))
                if token != BLANK_ID:
                    hyp.append(token)
                    context = context[1:] + [token]
                    p = head.predictor.step(torch.tensor([context], device=s.device))
                    emitted += 1
                if token == BLANK_ID or emitted >= max_symbols_per_frame:
                    t += 1
                    emitted = 0
            hyps.append(hyp)
        return hyps
    finally:
        model.train(was_training)
