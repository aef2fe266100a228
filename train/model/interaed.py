"""interAED-KD: distil a masked LM into intermediate encoder layers via auxiliary attention
decoders (Hentschel et al. 2024, "Keep Decoding Parallel with Effective Knowledge Distillation
from Language Models to End-to-end Speech Recognisers"; docs/interaed-kd.md).

Why: the non-autoregressive decoders of this project (IAM-CTC greedy, HAINAN NAR) have no
label context, so they cannot use an LM at decode time without giving up parallel decoding.
Instead the LM's knowledge is pushed into the *encoder* during training: a small attention
decoder reads an encoder layer's output (cross-attention) and the reference prefix (causal
self-attention) and is trained to match, at every target position ``i``, the teacher MLM's
distribution for token ``i`` given the whole sentence with ``i`` masked. The gradient flows
into the encoder through the cross-attention. Tapping *intermediate* layers (not only the last,
which is "conventional KD") is the paper's point: the encoder's lower half already has to
carry linguistic context.

Training-only: the decoders live in ``Transducer.kd`` (saved in training checkpoints so a run
resumes exactly), but no exported graph touches them and loading a checkpoint into a model
without ``kd`` drops their weights (``Transducer`` registers that load hook), so bundles are
byte-for-byte what they would be without KD. The teacher is frozen and deliberately *not* a
registered submodule: it is not trained, not in the optimizer, not in checkpoints.

Per decoder (tapped layer ``l``)::

    L_l = alpha * tau^2 * KL(teacher_tau || student_tau) + (1 - alpha) * CE(reference)

averaged over the target tokens of the batch; the transducer's loss gets
``sum_l weight_l * L_l``, reported as ``parts["kd"]`` with ``kd_kl_l{l}`` / ``kd_ce_l{l}``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import BLANK_ID

__all__ = ["AuxAttentionDecoder", "FrozenTeacher", "InterAEDKD", "KDConfig", "attach_kd",
           "kd_kl", "masked_ce"]


@dataclass
class KDConfig:
    """The ``[kd]`` table of a training config (empty table = no distillation).

    ``layers``: 1-based encoder layers whose outputs feed an auxiliary decoder; the final layer
    alone (``[num_layers]``) is conventional KD, adding intermediate layers is interAED-KD.
    ``weights``: one loss weight per entry of ``layers``.
    ``alpha``: share of the teacher KL in each decoder's loss (the rest is CE on the reference).
    ``temperature``: softens teacher and student alike (the KL is scaled by ``tau^2``).
    ``teacher_max_rows``: masked copies per teacher forward (bounds memory, see
    ``BertMLM.position_logits``).
    """

    teacher: str = ""
    layers: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    alpha: float = 1.0
    temperature: float = 1.0
    dec_dim: int = 256
    dec_layers: int = 1
    dec_heads: int = 4
    dec_ffn_dim: int = 1024
    dropout: float = 0.1
    teacher_max_rows: int = 4096

    def validate(self, num_layers: int) -> KDConfig:
        """Raise ValueError naming the bad ``kd.*`` field; ``num_layers`` of the encoder."""
        if not self.layers:
            raise ValueError("kd.layers: at least one encoder layer (1-based) is required")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"kd.layers must be distinct, got {list(self.layers)}")
        bad = [i for i in self.layers if not 1 <= i <= num_layers]
        if bad:
            raise ValueError(f"kd.layers {bad} outside 1..{num_layers} (the encoder's layers)")
        if len(self.weights) != len(self.layers):
            raise ValueError(f"kd.weights needs one weight per layer: {len(self.layers)} "
                             f"layers, {len(self.weights)} weights")
        if any(w < 0 for w in self.weights):
            raise ValueError(f"kd.weights must be >= 0, got {list(self.weights)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"kd.alpha must be in [0, 1], got {self.alpha}")
        if not self.temperature > 0:
            raise ValueError(f"kd.temperature must be > 0, got {self.temperature}")
        for name in ("dec_dim", "dec_layers", "dec_heads", "dec_ffn_dim", "teacher_max_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"kd.{name} must be >= 1, got {getattr(self, name)}")
        if self.dec_dim % self.dec_heads:
            raise ValueError(f"kd.dec_dim ({self.dec_dim}) must be divisible by kd.dec_heads "
                             f"({self.dec_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"kd.dropout must be in [0, 1), got {self.dropout}")
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KDConfig:
        """From the ``[kd]`` TOML table; unknown keys are an error (typos)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join('kd.' + k for k in unknown)}")
        d = dict(d)
        for key in ("layers", "weights"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


def kd_kl(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor,
          temperature: float = 1.0) -> Tensor:
    """``tau^2 * KL(softmax(t/tau) || softmax(s/tau))`` averaged over ``mask`` positions.

    ``[N, U, K]`` logits, ``mask [N, U]`` bool. Zero exactly when the distributions agree.
    """
    t = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(dim=-1)
    return (kl * mask).sum() / mask.sum().clamp_min(1) * temperature**2


def masked_ce(student_logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Cross-entropy to the reference ids (labels ``1..V-1`` = classes ``0..V-2``) over
    ``mask`` positions."""
    nll = F.cross_entropy(student_logits.float().transpose(1, 2),
                          (targets - 1).clamp_min(0), reduction="none")
    return (nll * mask).sum() / mask.sum().clamp_min(1)


def _sinusoids(length: int, dim: int, device: torch.device) -> Tensor:
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    inv = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * inv)
    table[:, 1::2] = torch.cos(pos * inv[: dim // 2])
    return table


class AuxAttentionDecoder(nn.Module):
    """Teacher-forced Transformer decoder over one encoder layer: label logits ``[N, U, V-1]``.

    Input is the blank-prefixed reference (blank = BOS, as for the predictor), so position
    ``i`` sees ``y_<i`` and all (unpadded) encoder frames, and predicts ``y_i``.
    """

    def __init__(self, enc_dim: int, vocab_size: int, cfg: KDConfig) -> None:
        super().__init__()
        self.dim = cfg.dec_dim
        self.mem_proj = nn.Linear(enc_dim, cfg.dec_dim)
        self.embed = nn.Embedding(vocab_size, cfg.dec_dim)
        layer = nn.TransformerDecoderLayer(cfg.dec_dim, cfg.dec_heads, cfg.dec_ffn_dim,
                                           cfg.dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.dec_layers)
        self.norm = nn.LayerNorm(cfg.dec_dim)
        self.head = nn.Linear(cfg.dec_dim, vocab_size - 1)

    def forward(self, memory: Tensor, mem_lens: Tensor, targets: Tensor,
                target_lens: Tensor) -> Tensor:
        """``memory [N, T, enc_dim]``, ``mem_lens [N]``, ``targets [N, U]``,
        ``target_lens [N]`` -> ``[N, U, V-1]`` label logits (padding rows are garbage)."""
        n, u = targets.shape
        pos = torch.arange(u, device=targets.device)
        y = torch.where(pos[None, :] < target_lens[:, None], targets, BLANK_ID)
        inp = torch.cat([y.new_full((n, 1), BLANK_ID), y[:, :-1]], dim=1)
        x = self.embed(inp) * math.sqrt(self.dim) + _sinusoids(u, self.dim, targets.device)
        causal = pos[None, :] > pos[:, None]  # True = may not attend (future)
        t = memory.shape[1]
        mem_pad = torch.arange(t, device=memory.device)[None, :] >= mem_lens.clamp_min(1)[:, None]
        h = self.decoder(x, self.mem_proj(memory), tgt_mask=causal,
                         memory_key_padding_mask=mem_pad, tgt_is_causal=True)
        return self.head(self.norm(h))


class FrozenTeacher:
    """The MLM teacher, held outside the module tree on purpose (not trained, not saved, not
    seen by the optimizer or DDP); moved to the batch's device on first use."""

    def __init__(self, mlm: nn.Module, max_rows: int) -> None:
        mlm.eval()
        for p in mlm.parameters():
            p.requires_grad_(False)
        self.mlm = mlm
        self.max_rows = max_rows

    @torch.no_grad()
    def soft_labels(self, targets: Tensor, target_lens: Tensor) -> Tensor:
        """``[N, U, V-1]`` teacher logits, one masked copy per target token."""
        if next(self.mlm.parameters()).device != targets.device:
            self.mlm.to(targets.device)
        return self.mlm.position_logits(targets, target_lens, self.max_rows)  # type: ignore[operator]


class InterAEDKD(nn.Module):
    """One :class:`AuxAttentionDecoder` per tapped layer, and the weighted KD objective."""

    def __init__(self, cfg: KDConfig, enc_dim: int, vocab_size: int, num_layers: int,
                 teacher: FrozenTeacher) -> None:
        super().__init__()
        self.cfg = cfg.validate(num_layers)
        self.teacher = teacher
        self.decoders = nn.ModuleDict(
            {f"l{i}": AuxAttentionDecoder(enc_dim, vocab_size, cfg) for i in cfg.layers})

    def forward(self, layer_outputs: list[Tensor], frame_lens: Tensor, targets: Tensor,
                target_lens: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``layer_outputs``: every encoder layer's output ``[N, T, D]`` in order ->
        ``(weighted KD loss, detached parts for logging)``."""
        cfg = self.cfg
        if len(layer_outputs) < max(cfg.layers):
            raise ValueError(f"kd.layers {list(cfg.layers)} needs {max(cfg.layers)} encoder "
                             f"layer outputs, got {len(layer_outputs)}")
        mask = torch.arange(targets.shape[1], device=targets.device)[None, :] < \
            target_lens[:, None]
        teacher = self.teacher.soft_labels(targets, target_lens) if cfg.alpha > 0 else None
        total = layer_outputs[0].new_zeros(())
        parts: dict[str, Tensor] = {}
        for layer, weight in zip(cfg.layers, cfg.weights, strict=True):
            logits = self.decoders[f"l{layer}"](layer_outputs[layer - 1], frame_lens, targets,
                                                target_lens)
            loss = logits.new_zeros(())
            if teacher is not None:
                kl = kd_kl(logits, teacher, mask, cfg.temperature)
                parts[f"kd_kl_l{layer}"] = kl.detach()
                loss = loss + cfg.alpha * kl
            if cfg.alpha < 1:
                ce = masked_ce(logits, targets, mask)
                parts[f"kd_ce_l{layer}"] = ce.detach()
                loss = loss + (1 - cfg.alpha) * ce
            total = total + weight * loss
        parts["kd"] = total.detach()
        return total, parts


def attach_kd(model: nn.Module, cfg: KDConfig, teacher: nn.Module | None = None,
              tokenizer_bytes: bytes | None = None) -> InterAEDKD:
    """Give a ``Transducer`` its training-only KD decoders (call before building the
    optimizer). ``teacher``: a ``BertMLM``; None loads ``cfg.teacher`` (an ``edgeasr-train
    mlm`` checkpoint). ``tokenizer_bytes``: the ASR tokenizer, checked against the teacher's.
    """
    mcfg = model.cfg
    if teacher is None:
        from ..bert.train_mlm import load_mlm

        if not cfg.teacher:
            raise ValueError("kd.teacher: path of the masked-LM checkpoint (edgeasr-train mlm) "
                             "is required")
        teacher, teacher_tok, _ = load_mlm(cfg.teacher)
        if tokenizer_bytes is not None and teacher_tok.model_bytes != tokenizer_bytes:
            raise ValueError(f"kd.teacher {cfg.teacher}: trained with a different tokenizer "
                             "than the ASR model (the distributions would not line up)")
    if teacher.cfg.vocab_size != mcfg.vocab_size:
        raise ValueError(f"kd teacher vocab_size {teacher.cfg.vocab_size} != model vocab_size "
                         f"{mcfg.vocab_size}")
    kd = InterAEDKD(cfg, mcfg.d_model, mcfg.vocab_size, mcfg.num_layers,
                    FrozenTeacher(teacher, cfg.teacher_max_rows))
    device = next(model.parameters()).device
    model.kd = kd.to(device)
    return model.kd
