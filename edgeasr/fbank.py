"""Vectorized numpy Kaldi fbank: kaldi-native-fbank's arithmetic on a batch of frames at once.

Why this exists: kaldi-native-fbank computes one frame per C++ loop iteration (setting up its
FFT every frame) behind a pybind layer that copies every chunk and every output frame: 3-6 ms
per second of audio, a large share of the runtime's whole budget (RTF 0.02 on one thread).
Here all pending frames are cut from the waveform with one strided view and processed as a
``[frames, window]`` matrix: one ``rfft`` and one mel matrix product per batch, and frames are
computed lazily, when read, so a streaming consumer pays numpy's per-call overhead once per
encoder chunk however small the audio pieces are (``python -m benchmarks.features_bench``).

The arithmetic follows kaldi-native-fbank (``feature-window.cc``, ``feature-fbank.cc``,
``mel-computations.cc``, ``online-feature.cc``) step by step, including where it rounds to
float32, because the target is agreement with sherpa-onnx (which uses it), not with ideal
float64 Kaldi:

1. framing: ``FirstSampleOfFrame`` / ``NumFrames`` (a frame is ready once its last sample
   arrived; ``input_finished`` flushes the rest), samples outside the signal mirrored back in
   (``s < 0 -> -s - 1``, ``s >= n -> 2n - 1 - s``) within the waveform that
   ``OnlineGenericBaseFeature`` still holds at that point, exactly as it does;
2. remove DC with a *sequential* float32 sum (:func:`sequential_sum`), as the C++ loop sums;
3. preemphasis ``y[i] = x[i] - c x[i-1]``, ``y[0] = x[0] - c x[0]`` and the window, in float32:
   steps 2-3 give bit for bit the frame kaldi-native-fbank passes to its FFT;
4. zero-padded real FFT in float64, power spectrum rounded to float32. kaldi-native-fbank
   (1.23 here) uses KissFFT in float32, whose rounding (about 1e-7 of the frame's largest
   coefficient) is the one remaining difference: it shows after the log only in bins some
   15+ nats below the frame's loudest, up to ~2e-3 on real recordings, where this port is
   the closer one to exact Kaldi (tests/test_fbank.py measures both);
5. Kaldi mel banks (triangles on the ``1127 ln(1 + f / 700)`` axis at FFT bin centres, Nyquist
   bin unused), natural log with a FLT_EPSILON floor.

Not implemented here, so :mod:`edgeasr.features` keeps kaldi-native-fbank for them: dither
(random; sherpa-onnx and this runtime use 0) and librosa mel banks (``is_librosa``), whose
definition depends on kaldi-native-fbank options that FeatureConfig does not expose.
:func:`unsupported_reason` says which applies. numpy only; never imports torch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # features.py imports this module; only the config's attributes are used here
    from edgeasr.features import FeatureConfig

__all__ = [
    "FbankComputer",
    "NumpyOnlineFbank",
    "first_sample_of_frame",
    "kaldi_mel_banks",
    "kaldi_window",
    "num_frames",
    "sequential_sum",
    "unsupported_reason",
]

_FLT_EPSILON = np.float32(np.finfo(np.float32).eps)

#: kaldi-native-fbank's default ``blackman_coeff`` (sherpa-onnx does not set it).
BLACKMAN_COEFF = 0.42

#: Frames computed per batch, and the most frames left pending (ready but unread) before
#: accept_waveform computes them anyway: bounds the float64 temporaries (4 KiB per frame at 512
#: points) and the waveform kept for unread frames, while keeping batches large.
MAX_FRAMES_PER_BATCH = 256


def unsupported_reason(config: FeatureConfig) -> str | None:
    """Why the numpy fbank cannot compute ``config`` (None when it can)."""
    if config.dither != 0.0:
        return (
            f"dither={config.dither} adds random noise that only kaldi-native-fbank reproduces "
            "(the runtime uses dither 0)"
        )
    if config.is_librosa:
        return "is_librosa=True (librosa mel banks) is computed by kaldi-native-fbank only"
    return None


def kaldi_window(config: FeatureConfig) -> np.ndarray:
    """The analysis window, ``float32 [window_size]``: computed in double and stored in float,
    as kaldi-native-fbank's FeatureWindowFunction does."""
    n = config.window_size
    i = np.arange(n, dtype=np.float64)
    a = 2 * math.pi / (n - 1)
    kind = config.window_type
    if kind == "povey":
        w = (0.5 - 0.5 * np.cos(a * i)) ** 0.85
    elif kind == "hanning":
        w = 0.5 - 0.5 * np.cos(a * i)
    elif kind == "hamming":
        w = 0.54 - 0.46 * np.cos(a * i)
    elif kind == "sine":
        w = np.sin(0.5 * a * i)
    elif kind == "rectangular":
        w = np.ones(n)
    elif kind == "blackman":
        c = BLACKMAN_COEFF
        w = c - 0.5 * np.cos(a * i) + (0.5 - c) * np.cos(2 * a * i)
    else:
        raise ValueError(
            f"window_type {kind!r} is not implemented by the numpy fbank; use one of "
            "povey, hanning, hamming, sine, rectangular, blackman"
        )
    return w.astype(np.float32)


def _mel_scale(hz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def kaldi_mel_banks(config: FeatureConfig) -> np.ndarray:
    """Kaldi mel weights, ``float32 [padded_window_size // 2 + 1, num_mel_bins]``.

    Transposed so that ``power @ banks`` gives the mel energies directly; the last row (the
    Nyquist bin, which Kaldi never uses) is zero. Raises ValueError when a bin covers no FFT
    bin, which kaldi-native-fbank treats as a fatal error.
    """
    if config.is_librosa:
        raise ValueError("kaldi_mel_banks builds Kaldi mel banks only (is_librosa=False)")
    n_fft = config.padded_window_size
    num_fft_bins = n_fft // 2
    lo = _mel_scale(float(config.low_freq))
    hi = _mel_scale(float(config.effective_high_freq))
    delta = (hi - lo) / (config.num_mel_bins + 1)
    b = np.arange(config.num_mel_bins, dtype=np.float64)[:, None]
    left, centre, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
    mel = _mel_scale(np.arange(num_fft_bins) * (config.sample_rate / n_fft))[None, :]
    rising, falling = (mel - left) / (centre - left), (right - mel) / (right - centre)
    weights = np.where(mel <= centre, rising, falling)
    weights = np.where((mel > left) & (mel < right), weights, 0.0)
    empty = np.flatnonzero(weights.sum(axis=1) == 0).tolist()
    if empty:
        raise ValueError(f"mel bins {empty} cover no FFT bin; num_mel_bins is too large")
    banks = np.zeros((n_fft // 2 + 1, config.num_mel_bins), dtype=np.float32)
    banks[:num_fft_bins] = weights.T
    return banks


def first_sample_of_frame(frame: int, config: FeatureConfig) -> int:
    """Absolute index of a frame's first sample (Kaldi ``FirstSampleOfFrame``)."""
    shift = config.window_shift
    if config.snip_edges:
        return frame * shift
    return frame * shift + shift // 2 - config.window_size // 2


def num_frames(num_samples: int, config: FeatureConfig, flush: bool) -> int:
    """Kaldi ``NumFrames``: frames computable from ``num_samples`` samples.

    With ``flush=False`` (more audio may come) a frame counts only when its last sample has
    arrived; ``flush=True`` is :meth:`FeatureConfig.num_frames` (snip_edges=False then adds the
    tail frames that reach past the end and mirror the signal back in). Kaldi decrements the
    flushed count while the last frame ends past the signal; this is that loop in closed form.
    """
    count = config.num_frames(num_samples)
    if flush or config.snip_edges:
        return count
    # Frame k-1 ends at (k-1)*shift + first_sample_of_frame(0) + window_size.
    end_of_first = first_sample_of_frame(0, config) + config.window_size
    return max(0, min(count, (num_samples - end_of_first) // config.window_shift + 1))


def sequential_sum(frames: np.ndarray) -> np.ndarray:
    """Row sums of float32 ``[T, L]`` added left to right in float32, as Kaldi's C++ loop does.

    ``frames.sum(axis=1)`` adds pairwise, which rounds differently; the difference is a tiny DC
    error after mean removal that shows in the quietest low bins. Reducing the transposed copy
    over its outer axis adds whole rows in order (vectorized across frames); numpy reduces a
    single contiguous row pairwise, so one frame takes ``cumsum`` instead.
    """
    if len(frames) == 1:
        return np.cumsum(frames[0], dtype=np.float32)[-1:]
    return np.add.reduce(np.ascontiguousarray(frames.T), axis=0)


class FbankComputer:
    """Log-mel fbank of a batch of raw frames (Kaldi ``ProcessWindow`` + ``FbankComputer``)."""

    def __init__(self, config: FeatureConfig) -> None:
        reason = unsupported_reason(config)
        if reason is not None:
            raise ValueError(f"the numpy fbank cannot compute this config: {reason}")
        self.config = config
        self.window = kaldi_window(config)
        self.mel_banks = kaldi_mel_banks(config)
        self._length = config.window_size
        self._padded = config.padded_window_size
        self._remove_dc = bool(config.remove_dc_offset)
        self._preemph = np.float32(config.preemph_coeff) if config.preemph_coeff else None

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """``frames float32 [T, window_size]`` (overwritten) -> ``float32 [T, num_mel_bins]``."""
        return self.log_mel(self.windowed(frames))

    def windowed(self, frames: np.ndarray) -> np.ndarray:
        """Kaldi ``ProcessWindow``: DC removal, preemphasis and window in float32 (``frames``
        is overwritten), zero-padded to the FFT size: float64 ``[T, padded_window_size]``
        holding exactly the float32 values kaldi-native-fbank hands to its FFT."""
        if self._remove_dc:
            frames -= (sequential_sum(frames) / np.float32(self._length))[:, None]
        if self._preemph is not None:
            frames[:, 1:] -= self._preemph * frames[:, :-1]
            frames[:, 0] -= self._preemph * frames[:, 0]
        padded = np.zeros((len(frames), self._padded), dtype=np.float64)
        np.multiply(frames, self.window, out=padded[:, : self._length], dtype=np.float32)
        return padded

    def log_mel(self, padded: np.ndarray) -> np.ndarray:
        """Power spectrum, mel energies, log with the FLT_EPSILON floor: float32 ``[T, bins]``."""
        # |X|^2 from the interleaved (re, im) float64 pairs, then float32 like knf's power.
        squares = np.square(np.fft.rfft(padded, axis=1).view(np.float64))
        power = (squares[:, 0::2] + squares[:, 1::2]).astype(np.float32)
        mel = power @ self.mel_banks
        np.maximum(mel, _FLT_EPSILON, out=mel)
        return np.log(mel, out=mel)


class NumpyOnlineFbank:
    """Drop-in for ``knf.OnlineFbank`` (same methods, same frames), vectorized and lazy.

    A frame counts as ready exactly when kaldi-native-fbank would have computed it (Kaldi
    ``NumFrames``: its last sample arrived, or input is finished), but it is *computed* only
    when a frame is read: every pending frame in one batch. A consumer that reads one encoder
    chunk at a time (stream.py) therefore pays the per-call numpy overhead once per chunk, not
    once per audio piece, whatever size the pieces have.

    The waveform is kept from the first sample of the first frame not yet computed, and frames
    are held until :meth:`pop`, with absolute indices, as in ``OnlineGenericBaseFeature``.
    Frames popped before they were read are never computed.
    """

    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        self._compute = FbankComputer(config)
        self._length = config.window_size
        self._shift = config.window_shift
        self._base = first_sample_of_frame(0, config)  # frame f starts at f*shift + base
        self._wave = np.zeros(0, dtype=np.float32)  # contiguous; self._wave[0] is sample _offset
        self._offset = 0
        self._total = 0  # samples accepted
        self._finished = False
        self._ready = 0  # frames kaldi-native-fbank would have computed by now
        self._computed = 0  # frames actually computed (or skipped by pop)
        self._popped = 0  # absolute index of the first frame still held
        self._buf = np.empty((256, config.num_mel_bins), dtype=np.float32)
        self._buf_start = 0  # absolute index of self._buf[0]

    @property
    def num_frames_ready(self) -> int:
        return self._ready

    def is_last_frame(self, frame: int) -> bool:
        return self._finished and frame == self._ready - 1

    def accept_waveform(self, sampling_rate: float, waveform: np.ndarray) -> None:
        """Append float32 samples; frames that became complete count as ready."""
        if sampling_rate != self.config.sample_rate:
            raise ValueError(
                f"sampling rate {sampling_rate} differs from the config's {self.config.sample_rate}"
            )
        if self._finished:
            raise RuntimeError("accept_waveform() after input_finished()")
        x = np.asarray(waveform, dtype=np.float32).reshape(-1)
        if x.size == 0:
            return
        self._wave = np.concatenate([self._wave, x]) if self._wave.size else x.copy()
        self._total += x.size
        self._ready = num_frames(self._total, self.config, flush=False)
        if self._ready - self._computed >= MAX_FRAMES_PER_BATCH:
            self._compute_pending()  # bound the waveform kept for unread frames

    def input_finished(self) -> None:
        """No more audio: the tail frames (mirrored at the end when snip_edges=False) count."""
        if not self._finished:
            self._finished = True
            self._ready = num_frames(self._total, self.config, flush=True)

    def get_frame(self, frame: int) -> np.ndarray:
        return self.get_frames(frame, 1)[0]

    def get_frames(self, start: int, n: int) -> np.ndarray:
        """Frames ``start .. start+n-1`` (absolute), float32 ``[n, num_mel_bins]`` copy."""
        if start < self._popped or start + n > self._ready or n < 0:
            raise IndexError(
                f"frames {start}..{start + n - 1} not held "
                f"(held: {self._popped}..{self._ready - 1})"
            )
        if start + n > self._computed:
            self._compute_pending()
        row = start - self._buf_start
        return self._buf[row : row + n].copy()

    def pop(self, n: int) -> None:
        """Discard the ``n`` oldest held frames (fewer if fewer are held, as knf does)."""
        self._popped = min(self._popped + max(n, 0), self._ready)
        if self._popped > self._computed:  # popped unread: they need never be computed
            self._computed = self._buf_start = self._popped
            self._discard_samples()

    # -- internals ------------------------------------------------------------------------------
    def _compute_pending(self) -> None:
        for lo in range(self._computed, self._ready, MAX_FRAMES_PER_BATCH):
            hi = min(self._ready, lo + MAX_FRAMES_PER_BATCH)
            self._append(self._compute(self._extract(lo, hi)))
            self._computed = hi
        self._discard_samples()

    def _discard_samples(self) -> None:
        """Keep the waveform from the first sample of the first frame not computed yet."""
        discard = self._computed * self._shift + self._base - self._offset
        if discard > 0:
            if discard >= self._wave.size:
                self._offset += self._wave.size
                self._wave = np.zeros(0, dtype=np.float32)
            else:
                self._wave = self._wave[discard:].copy()
                self._offset += discard

    def _extract(self, lo: int, hi: int) -> np.ndarray:
        """Raw samples of frames ``lo .. hi-1``, float32 ``[hi - lo, window_size]``."""
        length, shift, wave = self._length, self._shift, self._wave
        first = self._base - self._offset  # frame f starts at f * shift + first in self._wave
        # Frames wholly inside the signal are one run a..b-1 (starts grow with f): one view.
        a = min(max(lo, -(self._base // shift)), hi)
        b = max(min(hi, (self._total - self._base - length) // shift + 1), a)
        out = np.empty((hi - lo, length), dtype=np.float32)
        if b > a:
            item = wave.itemsize
            out[a - lo : b - lo] = np.ndarray(
                (b - a, length),
                dtype=np.float32,
                buffer=wave,
                offset=(a * shift + first) * item,
                strides=(shift * item, item),
            )
        edges = [*range(lo, a), *range(b, hi)]
        if edges:
            out[np.array(edges) - lo] = wave[self._reflected(np.array(edges))]
        return out

    def _reflected(self, frames: np.ndarray) -> np.ndarray:
        """Indices into ``self._wave`` of edge frames' samples, mirrored as knf mirrors them.

        knf mirrors inside its waveform remainder: all of the signal for frames computed before
        input_finished (only the start can be crossed then), and from the first sample of the
        first unflushed frame for the tail frames computed by input_finished. The repeated
        reflection (``s < 0 -> -s - 1``, ``s >= n -> 2n - 1 - s``) has period ``2n``.
        """
        unflushed = num_frames(self._total, self.config, flush=False)
        origin = np.where(
            frames < unflushed, 0, max(0, first_sample_of_frame(unflushed, self.config))
        )[:, None]
        n = self._total - origin
        idx = frames[:, None] * self._shift + self._base + np.arange(self._length) - origin
        idx %= 2 * n
        idx = np.where(idx >= n, 2 * n - 1 - idx, idx)
        return idx + origin - self._offset

    def _append(self, feats: np.ndarray) -> None:
        held = self._computed - self._popped
        used = self._computed - self._buf_start
        if used + len(feats) > len(self._buf):
            keep = self._buf[self._popped - self._buf_start : used]
            if held + len(feats) > len(self._buf) // 2:
                grown = np.empty((2 * (held + len(feats)), self._buf.shape[1]), dtype=np.float32)
                grown[:held] = keep
                self._buf = grown
            else:
                self._buf[:held] = keep.copy()
            self._buf_start = self._popped
        row = self._computed - self._buf_start
        self._buf[row : row + len(feats)] = feats
