"""Batched torch Kaldi fbank: the runtime's feature definition, computed on the training device.

Training reads thousands of utterances per minute; computing fbank with kaldi-native-fbank on
the CPU one utterance at a time starves a GPU, and kaldi-native-fbank may not be installed on a
training machine. This module computes the *same* features as :mod:`edgeasr.features` (the
sherpa-onnx definition, recorded in :class:`~edgeasr.features.FeatureConfig`) for a padded batch,
following Kaldi's arithmetic step by step:

1. framing with snip_edges=False: frame ``t`` is centred on sample ``t * shift``; samples outside
   the utterance are mirrored back in (Kaldi's reflection), per utterance length;
2. optional dither (Gaussian, training-time augmentation only), remove DC (frame mean);
3. preemphasis ``y[i] = x[i] - c x[i-1]``, ``y[0] = x[0] - c x[0]``;
4. window (povey by default), zero-pad to the FFT size, power spectrum;
5. Kaldi mel banks (triangles on the 1127 ln(1 + f/700) axis, evaluated at FFT bin centres,
   Nyquist bin unused), natural log with a FLT_EPSILON floor.

Parity with kaldi-native-fbank is tested in tests/test_features.py. Only this module (the
training side) imports torch; :mod:`edgeasr.features` never does.
"""

from __future__ import annotations

import math

import torch

from edgeasr.features import INT16_SCALE, FeatureConfig

__all__ = ["FbankTorch", "compute_features_torch", "kaldi_mel_banks", "kaldi_window"]

_FLT_EPSILON = float(torch.finfo(torch.float32).eps)


def _mel(hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)


def kaldi_mel_banks(config: FeatureConfig) -> torch.Tensor:
    """Mel weights ``[num_mel_bins, padded_window_size // 2 + 1]`` (float64, last column 0).

    Kaldi uses only the first ``n_fft / 2`` FFT bins; the extra zero column lets the matrix
    multiply the full ``rfft`` output directly.
    """
    if config.is_librosa:
        raise ValueError(
            "compute_features_torch implements Kaldi mel banks only (is_librosa=False)"
        )
    n_fft = config.padded_window_size
    num_fft_bins = n_fft // 2
    lo = _mel(torch.tensor(float(config.low_freq), dtype=torch.float64))
    hi = _mel(torch.tensor(float(config.effective_high_freq), dtype=torch.float64))
    delta = (hi - lo) / (config.num_mel_bins + 1)
    bins = torch.arange(config.num_mel_bins, dtype=torch.float64)[:, None]
    left, centre, right = lo + bins * delta, lo + (bins + 1) * delta, lo + (bins + 2) * delta
    mel = _mel(torch.arange(num_fft_bins, dtype=torch.float64) * (config.sample_rate / n_fft))
    rising = (mel - left) / (centre - left)
    falling = (right - mel) / (right - centre)
    weights = torch.where(mel <= centre, rising, falling)
    weights = torch.where((mel > left) & (mel < right), weights, torch.zeros_like(weights))
    empty = (weights.sum(dim=1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"mel bins {empty} cover no FFT bin; num_mel_bins is too large")
    return torch.nn.functional.pad(weights, (0, n_fft // 2 + 1 - num_fft_bins))


def kaldi_window(config: FeatureConfig) -> torch.Tensor:
    """The analysis window of ``config.window_type`` (float64), as Kaldi's FeatureWindowFunction."""
    n = config.window_size
    i = torch.arange(n, dtype=torch.float64)
    a = 2 * math.pi / (n - 1)
    kind = config.window_type
    if kind == "povey":
        return (0.5 - 0.5 * torch.cos(a * i)).pow(0.85)
    if kind == "hanning":
        return 0.5 - 0.5 * torch.cos(a * i)
    if kind == "hamming":
        return 0.54 - 0.46 * torch.cos(a * i)
    if kind == "sine":
        return torch.sin(0.5 * a * i)
    if kind == "rectangular":
        return torch.ones(n, dtype=torch.float64)
    if kind == "blackman":
        # kaldi-native-fbank's default blackman_coeff (not exposed by sherpa-onnx).
        c = 0.42
        return c - 0.5 * torch.cos(a * i) + (0.5 - c) * torch.cos(2 * a * i)
    raise ValueError(f"unsupported window_type {kind!r}")


def _frame_indices(lengths: torch.Tensor, num_frames: int, config: FeatureConfig) -> torch.Tensor:
    """Sample index of every frame element, ``[B, T, window]``, mirrored at both utterance ends.

    Kaldi mirrors repeatedly (``s < 0 -> -s - 1``, ``s >= n -> 2n - 1 - s``) until inside; that
    is a reflection with period ``2n``, computed here in closed form.
    """
    shift, size = config.window_shift, config.window_size
    device = lengths.device
    if config.snip_edges:
        starts = torch.arange(num_frames, device=device) * shift
    else:
        starts = torch.arange(num_frames, device=device) * shift + shift // 2 - size // 2
    idx = starts[:, None] + torch.arange(size, device=device)  # [T, W]
    n = lengths.clamp(min=1)[:, None, None]  # [B, 1, 1]
    idx = torch.remainder(idx[None], 2 * n)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


class FbankTorch(torch.nn.Module):
    """Module form of :func:`compute_features_torch`: window and mel banks held as buffers so
    they move with ``.to(device)`` and are built once. No trainable parameters."""

    def __init__(self, config: FeatureConfig | None = None, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.config = config or FeatureConfig()
        self.compute_dtype = dtype
        self.register_buffer("window", kaldi_window(self.config).to(dtype), persistent=False)
        self.register_buffer("mel_banks", kaldi_mel_banks(self.config).to(dtype), persistent=False)

    def num_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frame count per utterance, Kaldi NumFrames (integer tensor like ``lengths``)."""
        shift, size = self.config.window_shift, self.config.window_size
        if self.config.snip_edges:
            return torch.where(
                lengths < size, 0, 1 + (lengths - size).div(shift, rounding_mode="floor")
            )
        return (lengths + shift // 2).div(shift, rounding_mode="floor")

    def forward(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``waveforms [B, S]`` in [-1, 1] (padded), ``lengths [B]`` valid samples ->
        ``(feats [B, T, num_mel_bins] float32, feat_lens [B] int64)``; frames past
        ``feat_lens`` are zero."""
        cfg = self.config
        if waveforms.dim() != 2:
            raise ValueError(
                f"waveforms must be [batch, samples], got shape {tuple(waveforms.shape)}"
            )
        batch, max_len = waveforms.shape
        if lengths is None:
            lengths = torch.full((batch,), max_len, dtype=torch.long, device=waveforms.device)
        lengths = lengths.to(device=waveforms.device, dtype=torch.long)
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must be [{batch}], got shape {tuple(lengths.shape)}")
        if batch and (int(lengths.min()) < 0 or int(lengths.max()) > max_len):
            raise ValueError(f"lengths must lie in [0, {max_len}], got {lengths.tolist()}")
        feat_lens = self.num_frames(lengths)
        num_frames = int(feat_lens.max()) if batch else 0
        if num_frames == 0:
            empty = waveforms.new_zeros((batch, 0, cfg.num_mel_bins), dtype=torch.float32)
            return empty, feat_lens

        x = waveforms.to(self.compute_dtype)
        if not cfg.normalize_samples:
            x = x * INT16_SCALE
        idx = _frame_indices(lengths, num_frames, cfg)  # [B, T, W]
        frames = torch.gather(x, 1, idx.reshape(batch, -1)).reshape(idx.shape)
        if cfg.dither > 0:
            noise = torch.randn(
                frames.shape, generator=generator, device=frames.device, dtype=frames.dtype
            )
            frames = frames + cfg.dither * noise
        if cfg.remove_dc_offset:
            frames = frames - frames.mean(dim=-1, keepdim=True)
        if cfg.preemph_coeff != 0.0:
            previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
            frames = frames - cfg.preemph_coeff * previous
        frames = frames * self.window
        spectrum = torch.fft.rfft(frames, n=cfg.padded_window_size)
        power = spectrum.real.square() + spectrum.imag.square()
        mel = torch.matmul(power, self.mel_banks.T)
        feats = torch.log(mel.clamp(min=_FLT_EPSILON)).to(torch.float32)
        valid = torch.arange(num_frames, device=feats.device)[None, :] < feat_lens[:, None]
        return feats.masked_fill(~valid[..., None], 0.0), feat_lens


def compute_features_torch(
    waveforms: torch.Tensor,
    lengths: torch.Tensor | None = None,
    config: FeatureConfig | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kaldi fbank of a padded batch on its own device; see :class:`FbankTorch`.

    ``dtype=torch.float64`` trades speed for agreement with kaldi-native-fbank in very quiet
    frequency bands (float32 FFT rounding shows up there after the log).
    """
    module = FbankTorch(config, dtype=dtype).to(waveforms.device)
    return module(waveforms, lengths)
