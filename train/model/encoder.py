"""Cache-aware chunked Conformer encoder (one definition for training, export and streaming).

Two entry points compute the same function:

* :meth:`Encoder.forward` runs a whole padded batch with a *chunk mask*: frame ``i`` in chunk
  ``c = i // C`` attends to every frame of its own chunk and to the ``left_context`` frames before
  the chunk start. This is what training sees (with dynamic chunk sizes, see
  :func:`sample_chunk_size`) and what simulated streaming evaluates.
* :meth:`Encoder.forward_chunk` runs one chunk of ``subsampling * C + 7`` feature frames with
  explicit :class:`EncoderCaches` and returns exactly ``C`` frames. Consecutive chunks reproduce
  the masked full forward (tested to 1e-4).

Design choices that keep the chunk step cheap and exportable (ONNX opset 18, ExecuTorch):

* Positional information is a per-head linear distance penalty (ALiBi-style) with *learned*
  slopes, one for the past and one for the future direction. It needs no tables or relative
  shift tricks, only ``|i - j|`` over static index ranges, which exporters constant-fold.
* The attention cache stores each layer's normalized attention *input* over the left context
  (keys/values are recomputed), the conv cache stores the causal depthwise conv's past inputs:
  the sherpa-onnx ``conformer`` cache layout.
* LayerNorm everywhere (no BatchNorm): per-frame, so padding and chunking cannot change a frame.
* No data-dependent Python control flow in :meth:`Encoder.forward_chunk`: cache slots not yet
  filled are masked with a tensor comparison against ``processed_frames``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import PAD_LENGTH, ModelConfig
from .subsampling import Conv2dSubsampling, GlobalCMVN

CACHE_NAMES = ("attn_cache", "conv_cache", "processed_frames")
"""Order of the cache tensors in :meth:`EncoderCaches.to_tuple` and in exported graphs."""


@dataclass
class EncoderCaches:
    """Streaming state of the encoder; batch dimension ``N`` is the number of streams.

    ``attn``: ``[L, left_context, N, d_model]`` float, each layer's normalized self-attention
    input over the last ``left_context`` frames (oldest first).
    ``conv``: ``[L, conv_kernel - 1, N, d_model]`` float, each layer's past depthwise-conv inputs.
    ``processed_frames``: ``[N]`` int64, encoder frames already emitted per stream; attention
    cache slots older than the stream's start are masked out.

    Tuple order (export, model.json): ``(attn, conv, processed_frames)`` = :data:`CACHE_NAMES`.
    """

    attn: Tensor
    conv: Tensor
    processed_frames: Tensor

    @classmethod
    def init(
        cls, batch: int, cfg: ModelConfig, dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> EncoderCaches:
        """Zero caches for ``batch`` fresh streams."""
        d = cfg.d_model
        return cls(
            attn=torch.zeros(cfg.num_layers, cfg.left_context, batch, d, dtype=dtype,
                             device=device),
            conv=torch.zeros(cfg.num_layers, cfg.conv_kernel - 1, batch, d, dtype=dtype,
                             device=device),
            processed_frames=torch.zeros(batch, dtype=torch.int64, device=device),
        )

    def to_tuple(self) -> tuple[Tensor, Tensor, Tensor]:
        return (self.attn, self.conv, self.processed_frames)

    @classmethod
    def from_tuple(cls, caches: tuple[Tensor, ...] | list[Tensor]) -> EncoderCaches:
        if len(caches) != len(CACHE_NAMES):
            raise ValueError(f"expected {len(CACHE_NAMES)} cache tensors {CACHE_NAMES}, "
                             f"got {len(caches)}")
        return cls(*caches)

    @staticmethod
    def stack(caches: list[EncoderCaches]) -> EncoderCaches:
        """Batch single-or-multi-stream caches along ``N`` (for decoding several streams)."""
        return EncoderCaches(
            attn=torch.cat([c.attn for c in caches], dim=2),
            conv=torch.cat([c.conv for c in caches], dim=2),
            processed_frames=torch.cat([c.processed_frames for c in caches], dim=0),
        )

    def select(self, index: int) -> EncoderCaches:
        """The caches of stream ``index`` (batch of one)."""
        return EncoderCaches(
            attn=self.attn[:, :, index : index + 1],
            conv=self.conv[:, :, index : index + 1],
            processed_frames=self.processed_frames[index : index + 1],
        )


torch.export.register_dataclass(EncoderCaches)


def sample_chunk_size(
    chunk_sizes: tuple[int, ...], full_context_prob: float, rng: random.Random | None = None
) -> int:
    """Dynamic chunk training (WeNet/icefall): full context (-1) with ``full_context_prob``,
    otherwise a uniformly chosen size from ``chunk_sizes``; one draw per batch, so a single
    model serves every latency in ``chunk_sizes`` as well as offline decoding."""
    if not chunk_sizes:
        raise ValueError("chunk_sizes must be non-empty")
    r = rng if rng is not None else random
    if r.random() < full_context_prob:
        return -1
    return r.choice(list(chunk_sizes))


def chunk_attention_mask(
    num_frames: int, chunk_size: int | None, left_context: int | None,
    device: torch.device | None = None,
) -> Tensor:
    """``[T, T]`` bool, True where query ``i`` may attend key ``j``.

    ``chunk_size`` None or -1: full context. Otherwise ``j`` must lie in ``i``'s chunk or in the
    ``left_context`` frames before that chunk (``left_context`` None or -1: unlimited).
    """
    if chunk_size is None or chunk_size < 0:
        return torch.ones(num_frames, num_frames, dtype=torch.bool, device=device)
    if chunk_size == 0:
        raise ValueError("chunk_size must be positive, or None/-1 for full context")
    idx = torch.arange(num_frames, device=device)
    chunk_start = (idx // chunk_size) * chunk_size
    j = idx[None, :]
    allowed = j < (chunk_start + chunk_size)[:, None]
    if left_context is not None and left_context >= 0:
        allowed &= j >= (chunk_start - left_context)[:, None]
    return allowed


class FeedForward(nn.Module):
    """Pre-norm position-wise FFN with SiLU (used twice per block, macaron style)."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.lin1 = nn.Linear(d_model, ffn_dim)
        self.lin2 = nn.Linear(ffn_dim, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.lin2(self.dropout(F.silu(self.lin1(self.norm(x))))))


class BiasedSelfAttention(nn.Module):
    """Multi-head attention with a learned linear distance bias (ALiBi-style, two directions).

    ``bias[h, i, j] = -past_slope[h] * max(i - j, 0) - future_slope[h] * max(j - i, 0)``.
    Slopes start at ALiBi's geometric sequence and stay positive through softplus.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / num_heads) for h in range(num_heads)])
        raw = torch.log(torch.expm1(slopes))  # inverse softplus
        self.past_slope = nn.Parameter(raw.clone())
        self.future_slope = nn.Parameter(raw.clone())

    def position_bias(self, distance: Tensor) -> Tensor:
        """``distance[Tq, Tk] = i - j`` (float) -> ``[H, Tq, Tk]`` additive bias."""
        past = F.softplus(self.past_slope)[:, None, None]
        future = F.softplus(self.future_slope)[:, None, None]
        return -(past * distance.clamp_min(0) + future * (-distance).clamp_min(0))

    def forward(self, q_in: Tensor, kv_in: Tensor, allowed: Tensor, distance: Tensor) -> Tensor:
        """``q_in [N, Tq, D]``, ``kv_in [N, Tk, D]``, ``allowed [N|1, Tq, Tk]`` bool,
        ``distance [Tq, Tk]`` -> ``[N, Tq, D]``."""
        n, tq, d = q_in.shape
        tk = kv_in.shape[1]
        h, hd = self.num_heads, self.head_dim
        w_q, w_kv = self.qkv.weight.split([d, 2 * d], dim=0)
        b_q, b_kv = self.qkv.bias.split([d, 2 * d], dim=0)
        q = F.linear(q_in, w_q, b_q).view(n, tq, h, hd).transpose(1, 2)
        k, v = F.linear(kv_in, w_kv, b_kv).view(n, tk, 2, h, hd).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
        scores = scores + self.position_bias(distance)
        scores = scores.masked_fill(~allowed[:, None], torch.finfo(scores.dtype).min)
        attn = self.dropout(torch.softmax(scores, dim=-1))
        y = torch.matmul(attn, v).transpose(1, 2).reshape(n, tq, d)
        return self.out(y)


class CausalConvModule(nn.Module):
    """Conformer conv module with a *causal* depthwise conv (no look-ahead, cacheable).

    LN -> pointwise (GLU) -> depthwise causal conv -> LN -> SiLU -> pointwise. The cache is the
    last ``kernel - 1`` depthwise-conv inputs.
    """

    def __init__(self, d_model: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.kernel = kernel
        self.norm = nn.LayerNorm(d_model)
        self.pw1 = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, groups=d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.pw2 = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, cache: Tensor | None) -> tuple[Tensor, Tensor]:
        """``x [N, T, D]``, ``cache [N, D, kernel-1]`` (None: zeros) -> (``[N, T, D]``,
        new cache ``[N, D, kernel-1]``)."""
        y = F.glu(self.pw1(self.norm(x)), dim=-1).transpose(1, 2)  # [N, D, T]
        y = F.pad(y, (self.kernel - 1, 0)) if cache is None else torch.cat([cache, y], dim=2)
        new_cache = y[:, :, y.shape[2] - (self.kernel - 1) :]
        y = self.depthwise(y).transpose(1, 2)
        y = self.pw2(F.silu(self.norm2(y)))
        return self.dropout(y), new_cache


class ConformerBlock(nn.Module):
    """Macaron Conformer block, pure pre-norm: ½FFN, MHSA, causal conv, ½FFN, each as
    ``x + f(LayerNorm(x))``.

    No LayerNorm on the block's output (the original Conformer has one): once training grows the
    residual stream, every such norm divides the gradient by the stream's scale (7-26x per
    block measured on a stalled run of the default model, so its lower layers got ~1e-5 of the
    top layer's gradient and never learned). The residual path is left as an identity and the
    stack ends in one LayerNorm (``Encoder.out_norm``).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.ff1 = FeedForward(d, cfg.ffn_dim, cfg.dropout)
        self.attn_norm = nn.LayerNorm(d)
        self.attn = BiasedSelfAttention(d, cfg.num_heads, cfg.dropout)
        self.conv = CausalConvModule(d, cfg.conv_kernel, cfg.dropout)
        self.ff2 = FeedForward(d, cfg.ffn_dim, cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, allowed: Tensor, distance: Tensor) -> Tensor:
        """Whole-sequence mode: ``x [N, T, D]``, ``allowed [N, T, T]``."""
        x = x + 0.5 * self.ff1(x)
        a = self.attn_norm(x)
        x = x + self.dropout(self.attn(a, a, allowed, distance))
        x = x + self.conv(x, None)[0]
        x = x + 0.5 * self.ff2(x)
        return x

    def forward_chunk(
        self, x: Tensor, attn_cache: Tensor, conv_cache: Tensor, allowed: Tensor,
        distance: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Chunk mode: ``x [N, C, D]``, ``attn_cache [left, N, D]``, ``conv_cache [k-1, N, D]``,
        ``allowed [N, C, left + C]`` -> (``[N, C, D]``, new attn cache, new conv cache)."""
        left = attn_cache.shape[0]
        x = x + 0.5 * self.ff1(x)
        a = self.attn_norm(x)
        kv = torch.cat([attn_cache.transpose(0, 1), a], dim=1)  # [N, left + C, D]
        new_attn = kv[:, kv.shape[1] - left :].transpose(0, 1)
        x = x + self.dropout(self.attn(a, kv, allowed, distance))
        c, new_conv = self.conv(x, conv_cache.permute(1, 2, 0))
        x = x + c
        x = x + 0.5 * self.ff2(x)
        return x, new_attn, new_conv.permute(2, 0, 1)


def chunk_through_layers(layers: nn.ModuleList, x: Tensor,
                         caches: EncoderCaches) -> tuple[Tensor, EncoderCaches]:
    """Run one chunk ``x [N, C, D]`` through cache-aware conformer ``layers``.

    The key-validity mask (cache slots not yet filled at the start of a stream are masked) and
    the relative distances are built once and shared by every layer; shared by the ASR encoder
    and the HENT-SRT translation encoder so both stream by the same rule.
    """
    n, c = x.shape[0], x.shape[1]
    left = caches.attn.shape[1]
    # Cache slot p holds frame (start - left + p); it is valid once p >= left - processed.
    slot = torch.arange(left, device=x.device)
    cache_valid = slot[None, :] >= (left - caches.processed_frames)[:, None]
    key_valid = torch.cat(
        [cache_valid, torch.ones(n, c, dtype=torch.bool, device=x.device)], dim=1
    )
    allowed = key_valid[:, None, :].expand(n, c, left + c)
    q_pos = torch.arange(left, left + c, device=x.device)
    k_pos = torch.arange(left + c, device=x.device)
    distance = (q_pos[:, None] - k_pos[None, :]).to(x.dtype)
    new_attn, new_conv = [], []
    for i, layer in enumerate(layers):
        x, a, cv = layer.forward_chunk(x, caches.attn[i], caches.conv[i], allowed, distance)
        new_attn.append(a)
        new_conv.append(cv)
    out = EncoderCaches(
        attn=torch.stack(new_attn), conv=torch.stack(new_conv),
        # a tensor, not ``+ c``: PT2E quantization turns a Python scalar operand into a float32
        # constant, and the int8 .pte then returned processed_frames as float
        processed_frames=caches.processed_frames + torch.full_like(caches.processed_frames, c),
    )
    return x, out


class Encoder(nn.Module):
    """CMVN -> conv subsampling -> Conformer blocks -> projection to the joint dim ``J``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.cmvn = GlobalCMVN(cfg.feature_dim)
        self.subsampling = Conv2dSubsampling(
            cfg.feature_dim, cfg.subsampling_channels, cfg.d_model, cfg.subsampling
        )
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.num_layers))
        self.out_norm = nn.LayerNorm(cfg.d_model)  # the pre-norm stack's one output norm
        self.out_proj = nn.Linear(cfg.d_model, cfg.joint_dim)

    def output_lengths(self, feat_lens: Tensor) -> Tensor:
        return Conv2dSubsampling.output_lengths(feat_lens, self.cfg.subsampling)

    def forward(
        self, feats: Tensor, feat_lens: Tensor, chunk_size: int | None = None,
        left_context: int | None = None, layer_outputs: list[Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``feats [N, T, F]``, ``feat_lens [N]`` -> (``frames [N, T', J]``, ``frame_lens [N]``).

        ``chunk_size`` (encoder frames) None or -1 = full context; ``left_context`` None = the
        config's, -1 = unlimited. Frames at or beyond ``frame_lens`` are padding (garbage).
        ``layer_outputs``: if a list is given, each Conformer layer's output ``[N, T', D]`` is
        appended to it (training-only auxiliary losses tap them, e.g. interAED-KD).
        """
        if feats.dim() != 3 or feat_lens.shape != (feats.shape[0],):
            raise ValueError(f"expected feats [N, T, {self.cfg.feature_dim}] and feat_lens [N], "
                             f"got {tuple(feats.shape)} and {tuple(feat_lens.shape)}")
        if left_context is None:
            left_context = self.cfg.left_context
        x = self.input_dropout(self.subsampling(self.cmvn(feats)))
        lens = self.output_lengths(feat_lens).clamp_max(x.shape[1])
        t = x.shape[1]
        pos = torch.arange(t, device=x.device)
        allowed = chunk_attention_mask(t, chunk_size, left_context, x.device)
        allowed = allowed[None] & (pos[None, None, :] < lens[:, None, None])
        distance = (pos[:, None] - pos[None, :]).to(x.dtype)
        for layer in self.layers:
            x = layer(x, allowed, distance)
            if layer_outputs is not None:
                layer_outputs.append(x)
        return self.out_proj(self.out_norm(x)), lens

    def forward_chunk(
        self, feats: Tensor, caches: EncoderCaches
    ) -> tuple[Tensor, EncoderCaches]:
        """One streaming step: ``feats [N, subsampling*C + 7, F]`` -> (``[N, C, J]``, caches).

        Static shapes apart from ``N``; no data-dependent control flow (export-friendly).
        """
        cfg = self.cfg
        n, t_in, f = feats.shape
        if f != cfg.feature_dim or (t_in - PAD_LENGTH) % cfg.subsampling or t_in <= PAD_LENGTH:
            raise ValueError(
                f"chunk features must be [N, {cfg.subsampling}*C + {PAD_LENGTH}, "
                f"{cfg.feature_dim}] with C >= 1, got {tuple(feats.shape)}"
            )
        left, k1 = cfg.left_context, cfg.conv_kernel - 1
        want_attn = (cfg.num_layers, left, n, cfg.d_model)
        want_conv = (cfg.num_layers, k1, n, cfg.d_model)
        if tuple(caches.attn.shape) != want_attn or tuple(caches.conv.shape) != want_conv or \
                tuple(caches.processed_frames.shape) != (n,):
            raise ValueError(
                f"caches must be attn {want_attn}, conv {want_conv}, processed_frames ({n},); "
                f"got {tuple(caches.attn.shape)}, {tuple(caches.conv.shape)}, "
                f"{tuple(caches.processed_frames.shape)}"
            )
        x, out = chunk_through_layers(self.layers, self.subsampling(self.cmvn(feats)), caches)
        return self.out_proj(self.out_norm(x)), out

    def forward_chunk_tuple(
        self, feats: Tensor, attn_cache: Tensor, conv_cache: Tensor, processed_frames: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`forward_chunk` over flat tensors in :data:`CACHE_NAMES` order (for exporters
        that want positional graph inputs/outputs): returns ``(frames, *new_caches)``."""
        frames, caches = self.forward_chunk(
            feats, EncoderCaches(attn_cache, conv_cache, processed_frames)
        )
        return (frames, *caches.to_tuple())


class StreamingEncoder(nn.Module):
    """The export view of an :class:`Encoder`: ``forward`` is one streaming step over flat
    tensors, ``(feats, attn_cache, conv_cache, processed_frames) -> (frames, attn_cache,
    conv_cache, processed_frames)`` (sherpa-onnx ``conformer`` order). Shares the weights."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self, feats: Tensor, attn_cache: Tensor, conv_cache: Tensor, processed_frames: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.encoder.forward_chunk_tuple(feats, attn_cache, conv_cache, processed_frames)
