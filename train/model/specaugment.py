"""SpecAugment (Park et al. 2019) on padded fbank batches, training only.

Masks are filled with the utterance's own mean feature value (as lhotse does), so the result is
independent of the CMVN that the encoder applies afterwards. Time masks are limited in total to
``max_time_fraction`` of each utterance; everything is computed over the valid (unpadded) frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import SpecAugmentConfig


class SpecAugment(nn.Module):
    """Random time warp (optional), frequency masks and time masks; identity in ``eval()``."""

    def __init__(self, cfg: SpecAugmentConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg

    def forward(
        self, feats: Tensor, feat_lens: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """``feats [N, T, F]``, ``feat_lens [N]`` -> augmented copy (input untouched)."""
        if not self.training:
            return feats
        if feats.dim() != 3 or feat_lens.shape != (feats.shape[0],):
            raise ValueError(f"expected feats [N, T, F] and feat_lens [N], got "
                             f"{tuple(feats.shape)} and {tuple(feat_lens.shape)}")
        out = feats.clone()
        for n in range(feats.shape[0]):
            t = int(feat_lens[n])
            if t > 0:
                out[n, :t] = self._augment(out[n, :t], generator)
        return out

    def _randint(self, high: int, g: torch.Generator | None) -> int:
        """Uniform integer in ``[0, high]``."""
        return int(torch.randint(0, max(high, 0) + 1, (1,), generator=g))

    def _augment(self, x: Tensor, g: torch.Generator | None) -> Tensor:
        cfg = self.cfg
        t, f = x.shape
        if cfg.time_warp > 0 and t > 2 * cfg.time_warp + 2:
            x = self._time_warp(x, g)
        fill = x.mean()
        for _ in range(cfg.num_freq_masks):
            w = self._randint(min(cfg.max_freq_width, f), g)
            start = self._randint(f - w, g)
            x[:, start : start + w] = fill
        max_total = int(cfg.max_time_fraction * t)
        if cfg.num_time_masks > 0 and max_total > 0:
            count = min(cfg.num_time_masks, max(1, max_total // max(cfg.max_time_width, 1)))
            max_w = min(cfg.max_time_width, max_total // count)
            for _ in range(count):
                w = self._randint(max_w, g)
                start = self._randint(t - w, g)
                x[start : start + w] = fill
        return x

    def _time_warp(self, x: Tensor, g: torch.Generator | None) -> Tensor:
        """Stretch ``[0, c)`` to ``[0, c + d)`` and squeeze the rest (icefall/lhotse style)."""
        t = x.shape[0]
        w = self.cfg.time_warp
        center = w + 1 + self._randint(t - 2 * w - 3, g)
        warped = center + self._randint(2 * w, g) - w
        if warped == center:
            return x
        y = x.t()[None]  # [1, F, T]
        left = F.interpolate(y[..., :center], size=warped, mode="linear", align_corners=False)
        right = F.interpolate(y[..., center:], size=t - warped, mode="linear",
                              align_corners=False)
        return torch.cat([left, right], dim=-1)[0].t().contiguous()
