"""A small Llama language model (RMSNorm, rotary positions, SwiGLU, tied or untied embeddings).

It is the "LLM" of Transducer-Llama at edge size: the same block structure as Llama 2 so that
llama.cpp runs it unchanged (``gguf_export.py`` writes it in llama.cpp's ``llama``
architecture), small enough to train on a CPU in minutes.

Conventions shared with the rest of the project:

* token id 0 (the ASR blank, sentencepiece ``pad``) is the *beginning-of-sentence* token: text
  never encodes to it, and the transducer's predictor input is blank-prefixed too, so
  ``lm([0, y1 .. yk])`` gives ``P(y_{k+1} | y_1..y_k)`` exactly where the transducer needs it;
* rotary embeddings use the Hugging Face "rotate half" layout (the two halves of each head are
  the real and imaginary parts). llama.cpp's ``llama`` architecture expects Meta's interleaved
  layout, so the exporter permutes the rows of ``wq`` / ``wk`` as convert_hf_to_gguf.py does.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BOS_ID = 0
"""The blank id doubles as the LM's beginning-of-sentence token (see module docstring)."""


@dataclass
class LlamaConfig:
    """Shape of the model; every field is a plain JSON value (stored in checkpoints)."""

    vocab_size: int = 2048
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 4
    hidden_dim: int = 0  # SwiGLU width; 0 = Llama's rule (8/3 * dim rounded up to 32)
    max_seq_len: int = 128
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_embeddings: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.hidden_dim == 0:
            self.hidden_dim = 32 * math.ceil(8 * self.dim / 3 / 32)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"LlamaConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.n_heads or self.head_dim % 2:
            raise ValueError(f"LlamaConfig.dim ({self.dim}) must split into n_heads "
                             f"({self.n_heads}) heads of even size")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LlamaConfig.dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LlamaConfig:
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown LlamaConfig keys: {unknown}")
        cfg = cls(**d)
        cfg.validate()
        return cfg


def tiny_llama_config(**overrides: Any) -> LlamaConfig:
    """A model of a few ten thousand parameters for tests. Widths are multiples of 32 so that
    every matrix can be stored as q8_0 (32-value blocks) in GGUF."""
    base: dict[str, Any] = dict(vocab_size=64, dim=64, n_layers=2, n_heads=2, hidden_dim=96,
                                max_seq_len=64)
    base.update(overrides)
    cfg = LlamaConfig(**base)
    cfg.validate()
    return cfg


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotary_tables(head_dim: int, positions: Tensor, theta: float) -> tuple[Tensor, Tensor]:
    """``cos, sin [T, head_dim]`` for the rotate-half layout (frequency ``i`` on dims i and
    i + head_dim/2)."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    ang = positions.float()[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x [N, H, T, Dh]`` by position (Hugging Face ``rotate_half`` convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        n, t, d = x.shape
        q, k, v = (w(x).view(n, t, self.n_heads, self.head_dim).transpose(1, 2)
                   for w in (self.wq, self.wk, self.wv))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.wo(y.transpose(1, 2).reshape(n, t, d))


class FeedForward(nn.Module):
    """SwiGLU: ``w2(silu(w1 x) * w3 x)`` (llama.cpp: w1 = ffn_gate, w3 = ffn_up, w2 =
    ffn_down)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.w2 = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.drop(self.attention(self.attention_norm(x), cos, sin))
        return x + self.drop(self.feed_forward(self.ffn_norm(x)))


class Llama(nn.Module):
    """Decoder-only LM: ``tokens [N, T]`` -> next-token logits ``[N, T, vocab]``."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.apply(self._init)
        # GPT-2 / nanoGPT: residual projections scaled down with depth for a stable start.
        for name, p in self.named_parameters():
            if name.endswith(("wo.weight", "w2.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [N, T], got {tuple(tokens.shape)}")
        t = tokens.shape[1]
        if t > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {t} tokens exceeds max_seq_len={self.cfg.max_seq_len}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.cfg.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.cfg.vocab_size})")
        cos, sin = rotary_tables(self.cfg.head_dim, torch.arange(t, device=tokens.device),
                                 self.cfg.rope_theta)
        x = self.tok_embeddings(tokens)
        for layer in self.layers:
            x = layer(x, cos.to(x.dtype), sin.to(x.dtype))
        return self.output(self.norm(x))

    def label_log_probs(self, tokens: Tensor) -> Tensor:
        """Log-probs over the ASR labels 1..V-1 (blank/BOS excluded and renormalized away):
        ``[N, T]`` blank-prefixed history -> ``[N, T, V-1]``. What the factorized transducer
        and the runtime predictor consume."""
        return torch.log_softmax(self.forward(tokens)[..., 1:], dim=-1)


def lm_loss(model: Llama, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, int]:
    """Summed next-token NLL and token count of a padded batch of sentences.

    ``tokens [N, L]`` hold sentence ids (no BOS; padding arbitrary), ``lengths [N]`` their
    lengths. Input is ``[BOS] + ids[:-1]``, target ``ids``; the LM never predicts BOS/EOS, so
    the perplexity is per text token, the quantity that matters inside the transducer."""
    if tokens.dim() != 2 or lengths.shape != (tokens.shape[0],):
        raise ValueError(f"expected tokens [N, L] and lengths [N], got {tuple(tokens.shape)} "
                         f"and {tuple(lengths.shape)}")
    inp = torch.cat([tokens.new_full((tokens.shape[0], 1), BOS_ID), tokens[:, :-1]], dim=1)
    mask = torch.arange(tokens.shape[1], device=tokens.device)[None] < lengths[:, None]
    logits = model(inp.clamp(0, model.cfg.vocab_size - 1))
    nll = F.cross_entropy(logits.flatten(0, 1), tokens.clamp_min(0).flatten(), reduction="none")
    return (nll * mask.flatten()).sum(), int(mask.sum())
