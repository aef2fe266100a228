"""Encoder front end: global CMVN (a fixed buffer) and the convolutional frame-rate reduction.

Both are part of the exported encoder graph, so every consumer (sherpa-onnx included) feeds raw
fbank features and gets identical normalization.

Frame arithmetic. The subsampling is two valid (unpadded) stride-2 Conv2d layers. The first has
a 3x3 kernel; the second has a 5-frame (x 3-bin) kernel: with two 3-frame kernels an input of
``4C + 7`` frames would give ``C + 1`` outputs, with the 5-frame second kernel it gives exactly
``C`` and every one of the 7 pad frames is used (output frame ``t`` sees feature frames
``4t .. 4t + 10``). So ``T`` feature frames give ``(T - 7) // 4`` frames, consecutive chunks of
``4C + 7`` frames that advance by ``4C`` tile the utterance exactly, and chunked and full
computation agree frame by frame. The optional third stage (80 ms frames) merges pairs of 40 ms
frames with a kernel-2, stride-2 Conv1d, which is chunk-aligned for the same reason.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import PAD_LENGTH


class GlobalCMVN(nn.Module):
    """``(x - mean) / std`` with fixed buffers (identity until :meth:`set_stats` is called).

    Buffers (not parameters): the statistics come from training data, are saved in checkpoints,
    and are constant-folded into exported graphs.
    """

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(feature_dim))
        self.register_buffer("inv_std", torch.ones(feature_dim))

    def set_stats(self, mean: Tensor, std: Tensor, eps: float = 1e-5) -> None:
        """Install per-bin mean/std (shape ``[feature_dim]``) computed over training features."""
        if mean.shape != self.mean.shape or std.shape != self.mean.shape:
            raise ValueError(
                f"CMVN stats must have shape {tuple(self.mean.shape)}, got mean "
                f"{tuple(mean.shape)} and std {tuple(std.shape)}"
            )
        if bool((std < 0).any()):
            raise ValueError("CMVN std must be non-negative")
        self.mean.copy_(mean.to(self.mean))
        self.inv_std.copy_(1.0 / std.to(self.inv_std).clamp_min(eps))

    @property
    def is_identity(self) -> bool:
        return bool((self.mean == 0).all() and (self.inv_std == 1).all())

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) * self.inv_std


class Conv2dSubsampling(nn.Module):
    """``[N, T, F]`` features -> ``[N, (T - 7) // 4 (// 2), d_model]`` frames (see module doc)."""

    def __init__(
        self, feature_dim: int, channels: int, d_model: int, factor: int = 4
    ) -> None:
        super().__init__()
        if factor not in (4, 8):
            raise ValueError(f"subsampling factor must be 4 or 8, got {factor}")
        self.feature_dim = feature_dim
        self.factor = factor
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=(5, 3), stride=2),
            nn.ReLU(),
        )
        freq = ((feature_dim - 3) // 2 + 1 - 3) // 2 + 1
        self.out = nn.Linear(channels * freq, d_model)
        # 40 ms -> 80 ms: merge aligned pairs of frames (no look-ahead beyond the pair).
        self.merge = nn.Conv1d(d_model, d_model, kernel_size=2, stride=2) if factor == 8 else None

    @staticmethod
    def output_lengths(lengths: Tensor, factor: int = 4) -> Tensor:
        """Number of output frames for ``lengths`` feature frames (0 when shorter than 11)."""
        out = torch.div(lengths - PAD_LENGTH, 4, rounding_mode="floor").clamp_min(0)
        return out // 2 if factor == 8 else out

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.feature_dim:
            raise ValueError(
                f"features must be [N, T, {self.feature_dim}], got {tuple(x.shape)}"
            )
        if x.shape[1] < 4 + PAD_LENGTH:
            raise ValueError(
                f"need at least {4 + PAD_LENGTH} feature frames for one output frame, "
                f"got {x.shape[1]}"
            )
        y = self.conv(x.unsqueeze(1))  # [N, C, T', F']
        n, c, t, f = y.shape
        y = self.out(y.permute(0, 2, 1, 3).reshape(n, t, c * f))
        if self.merge is not None:
            y = self.merge(y.transpose(1, 2)).transpose(1, 2)
        return y
