"""A compact BERT-style masked language model over the ASR vocabulary (the KD teacher).

Why a bidirectional MLM and not the project's Llama: knowledge distillation into an attention
decoder (interAED-KD, docs/interaed-kd.md) wants, for every target position ``i``, a
distribution over the token at ``i`` that uses the *whole* sentence (left and right context).
A masked LM gives exactly that: mask position ``i``, read the prediction there
(:meth:`BertMLM.position_logits`).

Token ids (shared with the transducer, docs/architecture.md): ``0`` is the blank, which never
occurs in text, so it doubles as *padding*; ``1..V-1`` are the ASR labels; the extra id ``V``
(= ``vocab_size``) is ``[MASK]``. The output head predicts only the labels ``1..V-1`` (class
``k`` = id ``k + 1``), the same ``V-1`` classes as the transducer's HAT label head, so teacher
and student distributions are directly comparable.

Building blocks: pre-norm RMSNorm and rotary positions from :mod:`edgeasr.train.llama.model`
(rotary has no length table, so a sentence longer than the training crop still works);
the attention here is bidirectional with a key-padding mask, which the Llama block (causal
only) does not offer. Output weights are tied to the label rows of the input embedding, plus
a bias (as in BERT), which also lets tests craft a model with a known constant prediction.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..llama.model import RMSNorm, apply_rotary, rotary_tables

__all__ = ["PAD_ID", "BertConfig", "BertMLM", "tiny_bert_config"]

PAD_ID = 0
"""Padding id: the blank, which text never encodes to."""


@dataclass
class BertConfig:
    """Shape of the teacher; plain JSON values (stored in checkpoints).

    ``vocab_size`` is the ASR vocabulary size ``V`` (blank included); the embedding has ``V + 1``
    rows, the extra one being ``[MASK]``.
    """

    vocab_size: int = 256
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 4
    hidden_dim: int = 0  # SwiGLU width; 0 = 8/3 * dim rounded up to 32 (Llama's rule)
    max_seq_len: int = 128  # training crop; inference works beyond it (rotary positions)
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.hidden_dim == 0:
            self.hidden_dim = 32 * math.ceil(8 * self.dim / 3 / 32)

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def validate(self) -> BertConfig:
        """Raise ValueError naming the first bad field."""
        if self.vocab_size < 3:
            raise ValueError(f"BertConfig.vocab_size must be >= 3 (blank, unk, a label), "
                             f"got {self.vocab_size}")
        for name in ("dim", "n_layers", "n_heads", "hidden_dim", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"BertConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.n_heads or self.head_dim % 2:
            raise ValueError(f"BertConfig.dim ({self.dim}) must split into n_heads "
                             f"({self.n_heads}) heads of even size")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"BertConfig.dropout must be in [0, 1), got {self.dropout}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BertConfig:
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown BertConfig keys: {unknown}")
        return cls(**d).validate()


def tiny_bert_config(**overrides: Any) -> BertConfig:
    """A few-ten-thousand-parameter teacher for tests."""
    base: dict[str, Any] = dict(vocab_size=16, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                max_seq_len=32, dropout=0.0)
    base.update(overrides)
    return BertConfig(**base).validate()


class _SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention with rotary positions and key padding."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, key_ok: Tensor) -> Tensor:
        """``x [N, T, D]``, ``key_ok [N, T]`` bool (False = padding) -> ``[N, T, D]``."""
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_ok[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(n, t, d))


class _Block(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = _SelfAttention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.w_gate = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.w_up = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.w_down = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, key_ok: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin, key_ok))
        h = self.ffn_norm(x)
        return x + self.drop(self.w_down(F.silu(self.w_gate(h)) * self.w_up(h)))


class BertMLM(nn.Module):
    """``tokens [N, T]`` (ids ``0..V``, 0 = pad, V = [MASK]) -> label logits ``[N, T, V-1]``."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size + 1, cfg.dim)
        self.layers = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.out_bias = nn.Parameter(torch.zeros(cfg.vocab_size - 1))
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
        for name, p in self.named_parameters():  # residual projections scaled with depth
            if name.endswith(("attn.out.weight", "w_down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Label logits at every position; ``lengths [N]`` marks padding (None = no padding)."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [N, T], got {tuple(tokens.shape)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) > self.cfg.mask_id):
            raise ValueError(f"token ids must be in [0, {self.cfg.mask_id}] "
                             f"({self.cfg.mask_id} = [MASK])")
        n, t = tokens.shape
        pos = torch.arange(t, device=tokens.device)
        if lengths is None:
            key_ok = torch.ones(n, t, dtype=torch.bool, device=tokens.device)
        else:
            if lengths.shape != (n,):
                raise ValueError(f"lengths must be [{n}], got {tuple(lengths.shape)}")
            key_ok = pos[None, :] < lengths.to(tokens.device)[:, None]
        cos, sin = rotary_tables(self.cfg.head_dim, pos, self.cfg.rope_theta)
        x = self.embed(tokens)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, key_ok)
        labels = self.embed.weight[1 : self.cfg.vocab_size]  # tied: rows of ids 1..V-1
        return F.linear(self.norm(x), labels, self.out_bias)

    @torch.no_grad()
    def position_logits(self, tokens: Tensor, lengths: Tensor, max_rows: int = 4096) -> Tensor:
        """Teacher soft labels: ``[N, U, V-1]`` logits where row ``(n, i)`` is the prediction
        at position ``i`` of sentence ``n`` with *only* that token replaced by ``[MASK]``.

        One masked copy per target token (``sum(lengths)`` rows of length ``U``), run in slices
        of ``max_rows`` copies to bound memory. Padding rows are zero.
        """
        if tokens.dim() != 2 or lengths.shape != (tokens.shape[0],):
            raise ValueError(f"expected tokens [N, U] and lengths [N], got "
                             f"{tuple(tokens.shape)} and {tuple(lengths.shape)}")
        n, u = tokens.shape
        lengths = lengths.to(tokens.device)
        valid = torch.arange(u, device=tokens.device)[None, :] < lengths[:, None]
        rows, cols = valid.nonzero(as_tuple=True)
        out = tokens.new_zeros((n, u, self.cfg.vocab_size - 1), dtype=self.embed.weight.dtype)
        clean = torch.where(valid, tokens, PAD_ID)
        for s in range(0, rows.numel(), max_rows):
            r, c = rows[s : s + max_rows], cols[s : s + max_rows]
            copies = clean[r].clone()
            copies[torch.arange(r.numel(), device=r.device), c] = self.cfg.mask_id
            logits = self.forward(copies, lengths[r])
            out[r, c] = logits[torch.arange(r.numel(), device=r.device), c]
        return out
