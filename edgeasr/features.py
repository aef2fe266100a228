"""THE feature definition: Kaldi log-mel fbank from kaldi-native-fbank, set up as sherpa-onnx does.

An exported model only decodes correctly in sherpa-onnx if it was trained on the features
sherpa-onnx computes. ``sherpa-onnx/csrc/features.{h,cc}`` builds a ``knf::FbankOptions`` from
its ``FeatureExtractorConfig``: dither 0, snip_edges false, 16 kHz, 25/10 ms frames, remove DC,
preemphasis 0.97, povey window, FFT size rounded to a power of two, ``num_bins`` = feature_dim,
low_freq 20, high_freq -400 (i.e. Nyquist - 400 Hz), Kaldi (not librosa) mel banks; everything
else stays at the kaldi-native-fbank default (power spectrum, natural log with a FLT_EPSILON
floor, no energy term). :class:`FeatureConfig` mirrors exactly those fields, so
``FeatureConfig()`` *is* the sherpa-onnx default and ``model.json`` can record it.

Waveform scale: sherpa-onnx's ``normalize_samples`` defaults to true, meaning samples are passed
to kaldi-native-fbank as floats in [-1, 1] unchanged (only with ``normalize_samples=false``
does it multiply by 32768, the old Kaldi int16 scale, which adds log(32768^2) ~= 20.79 to every
feature). We follow the default: feed [-1, 1] floats.

Implementation: kaldi-native-fbank is the *definition*; the computation is by default the
vectorized numpy port in :mod:`edgeasr.fbank` (several times cheaper in streaming use, see
``python -m benchmarks.features_bench``), which follows kaldi-native-fbank's arithmetic and is
parity-tested against it (tests/test_fbank.py). Configs the port does not implement (dither > 0,
librosa mel banks) fall back to kaldi-native-fbank; ``backend="knf"`` forces it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import kaldi_native_fbank as knf
import numpy as np

from edgeasr.fbank import NumpyOnlineFbank, unsupported_reason

__all__ = [
    "BACKENDS",
    "FeatureConfig",
    "OnlineFeatureExtractor",
    "compute_features",
    "resolve_backend",
]

#: Feature computation backends: "numpy" (edgeasr.fbank), "knf" (kaldi-native-fbank), or
#: "auto": numpy when it implements the config, else kaldi-native-fbank.
BACKENDS = ("auto", "numpy", "knf")
Backend = Literal["auto", "numpy", "knf"]

WINDOW_TYPES = ("povey", "hamming", "hanning", "rectangular", "blackman", "sine")

#: int16 full scale; see the module docstring on ``normalize_samples``.
INT16_SCALE = 32768.0


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel fbank settings; field names and defaults follow sherpa-onnx FeatureExtractorConfig.

    ``high_freq <= 0`` is an offset from the Nyquist frequency (Kaldi convention), so -400 at
    16 kHz means 7600 Hz.
    """

    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0
    snip_edges: bool = False
    low_freq: float = 20.0
    high_freq: float = -400.0
    preemph_coeff: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "povey"
    round_to_power_of_two: bool = True
    is_librosa: bool = False
    normalize_samples: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field (checked at construction)."""
        if self.sample_rate <= 0 or int(self.sample_rate) != self.sample_rate:
            raise ValueError(
                f"FeatureConfig.sample_rate must be a positive int: {self.sample_rate}"
            )
        if self.num_mel_bins < 3:
            raise ValueError(f"FeatureConfig.num_mel_bins must be >= 3: {self.num_mel_bins}")
        if not 0 < self.frame_shift_ms <= self.frame_length_ms:
            raise ValueError(
                "FeatureConfig needs 0 < frame_shift_ms <= frame_length_ms, got "
                f"{self.frame_shift_ms} and {self.frame_length_ms}"
            )
        if self.window_size < 2 or self.window_shift < 1:
            raise ValueError(
                f"FeatureConfig frames are too short at {self.sample_rate} Hz: "
                f"{self.window_size} samples per window, shift {self.window_shift}"
            )
        if self.dither < 0:
            raise ValueError(f"FeatureConfig.dither must be >= 0: {self.dither}")
        if not 0.0 <= self.preemph_coeff <= 1.0:
            raise ValueError(f"FeatureConfig.preemph_coeff must be in [0, 1]: {self.preemph_coeff}")
        if self.window_type not in WINDOW_TYPES:
            raise ValueError(
                f"FeatureConfig.window_type {self.window_type!r} is not one of {WINDOW_TYPES}"
            )
        nyquist = self.sample_rate / 2
        high = self.effective_high_freq
        if not 0.0 <= self.low_freq < nyquist:
            raise ValueError(f"FeatureConfig.low_freq {self.low_freq} not in [0, {nyquist})")
        if not self.low_freq < high <= nyquist:
            raise ValueError(
                f"FeatureConfig.high_freq {self.high_freq} gives {high} Hz, which must lie in "
                f"(low_freq={self.low_freq}, nyquist={nyquist}]"
            )

    # Derived quantities, Kaldi's integer arithmetic.
    @property
    def window_size(self) -> int:
        """Samples per frame (400 at 16 kHz / 25 ms)."""
        return int(self.sample_rate * 0.001 * self.frame_length_ms)

    @property
    def window_shift(self) -> int:
        """Samples between frame starts (160 at 16 kHz / 10 ms)."""
        return int(self.sample_rate * 0.001 * self.frame_shift_ms)

    @property
    def padded_window_size(self) -> int:
        """FFT size: the window rounded up to a power of two (512) unless disabled."""
        if self.round_to_power_of_two:
            return 1 << (self.window_size - 1).bit_length()
        return self.window_size

    @property
    def effective_high_freq(self) -> float:
        """Upper edge of the mel banks in Hz (7600 at 16 kHz with high_freq=-400)."""
        return self.high_freq if self.high_freq > 0 else self.sample_rate / 2 + self.high_freq

    @property
    def frame_shift_seconds(self) -> float:
        return self.window_shift / self.sample_rate

    @property
    def dim(self) -> int:
        return self.num_mel_bins

    def num_frames(self, num_samples: int) -> int:
        """Frames an utterance of ``num_samples`` yields once input is finished (Kaldi NumFrames).

        With snip_edges=False frames are centred on multiples of the shift, so the count is
        ``round(num_samples / shift)`` rounding halves down: 16000 samples -> 100 frames.
        """
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        shift, length = self.window_shift, self.window_size
        if self.snip_edges:
            return 0 if num_samples < length else 1 + (num_samples - length) // shift
        return (num_samples + shift // 2) // shift

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict for model.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo would silently change
        the features), missing keys take the sherpa-onnx defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"FeatureConfig.from_dict: unknown key(s) {unknown}; known: {sorted(known)}"
            )
        return cls(**d)

    def to_knf(self) -> knf.FbankOptions:
        """The kaldi-native-fbank options, set field by field as sherpa-onnx InitFbank does."""
        opts = knf.FbankOptions()
        fo = opts.frame_opts
        fo.samp_freq = float(self.sample_rate)
        fo.frame_length_ms = float(self.frame_length_ms)
        fo.frame_shift_ms = float(self.frame_shift_ms)
        fo.dither = float(self.dither)
        fo.snip_edges = bool(self.snip_edges)
        fo.preemph_coeff = float(self.preemph_coeff)
        fo.remove_dc_offset = bool(self.remove_dc_offset)
        fo.window_type = self.window_type
        fo.round_to_power_of_two = bool(self.round_to_power_of_two)
        mo = opts.mel_opts
        mo.num_bins = int(self.num_mel_bins)
        mo.low_freq = float(self.low_freq)
        mo.high_freq = float(self.high_freq)
        mo.is_librosa = bool(self.is_librosa)
        # Left at the kaldi-native-fbank defaults, exactly as sherpa-onnx leaves them.
        opts.use_energy = False
        opts.use_log_fbank = True
        opts.use_power = True
        return opts


def _as_waveform(samples: np.ndarray, config: FeatureConfig) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"expected 1-D mono samples, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"expected float samples in [-1, 1], got dtype {x.dtype}; "
            "convert integer PCM with edgeasr.audio.pcm_to_float"
        )
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("samples contain NaN or infinite values")
    if not config.normalize_samples:
        x = x * np.float32(INT16_SCALE)
    return x


def resolve_backend(config: FeatureConfig, backend: str = "auto") -> str:
    """The backend that computes ``config``: "numpy" or "knf" (see :data:`BACKENDS`).

    "auto" picks numpy unless :func:`edgeasr.fbank.unsupported_reason` names a reason;
    asking for "numpy" explicitly with such a config is an error rather than a silent switch.
    """
    if backend not in BACKENDS:
        raise ValueError(f"feature backend {backend!r} is not one of {BACKENDS}")
    reason = unsupported_reason(config)
    if backend == "numpy" and reason is not None:
        raise ValueError(f"the numpy fbank cannot compute this config: {reason}; use knf")
    if backend == "auto":
        return "knf" if reason is not None else "numpy"
    return backend


class OnlineFeatureExtractor:
    """Streaming fbank: feed chunks of any size, read frames as soon as they are complete.

    Frame indices are absolute (frame ``i`` covers samples centred at ``i * shift``) and stay
    valid after :meth:`pop`, like sherpa-onnx's ``GetFrames(frame_index, n)``. Feeding a signal
    in any chunking gives the frames of :func:`compute_features` on the whole signal (bit for
    bit with kaldi-native-fbank; with numpy to float32 rounding, about 1e-6, as its BLAS mel
    product rounds differently for different batch sizes).
    The sample rate must already be ``config.sample_rate``: resample first with
    :func:`edgeasr.audio.resample` (no hidden resampler with different filters).
    ``backend`` picks the implementation (see :func:`resolve_backend`): numpy by default, the
    fast one; both agree to 1e-3 (tests/test_fbank.py).
    """

    def __init__(self, config: FeatureConfig | None = None, backend: Backend = "auto") -> None:
        self.config = config or FeatureConfig()
        self.backend = resolve_backend(self.config, backend)
        self._opts = self.config.to_knf() if self.backend == "knf" else None
        self.reset()

    def reset(self) -> None:
        """Start a new utterance."""
        if self._opts is not None:
            self._fbank: knf.OnlineFbank | NumpyOnlineFbank = knf.OnlineFbank(self._opts)
        else:
            self._fbank = NumpyOnlineFbank(self.config)
        self._first = 0  # first frame not yet popped
        self._finished = False
        self._num_samples = 0

    @property
    def dim(self) -> int:
        return self.config.num_mel_bins

    @property
    def num_frames_ready(self) -> int:
        """Absolute count of frames computed so far (popped ones included)."""
        return int(self._fbank.num_frames_ready)

    @property
    def num_frames_available(self) -> int:
        """Frames ready and not yet popped."""
        return self.num_frames_ready - self._first

    @property
    def first_frame(self) -> int:
        """Index of the oldest frame still held."""
        return self._first

    @property
    def num_samples_accepted(self) -> int:
        return self._num_samples

    @property
    def finished(self) -> bool:
        return self._finished

    def accept_waveform(self, samples: np.ndarray, sample_rate: int | None = None) -> None:
        """Append float samples in [-1, 1] at ``config.sample_rate``; any length, including 0."""
        if self._finished:
            raise RuntimeError("accept_waveform() after input_finished(); call reset() first")
        if sample_rate is not None and sample_rate != self.config.sample_rate:
            raise ValueError(
                f"got {sample_rate} Hz audio but features are defined at "
                f"{self.config.sample_rate} Hz; resample with edgeasr.audio.resample first"
            )
        x = _as_waveform(samples, self.config)
        if x.size:
            self._fbank.accept_waveform(float(self.config.sample_rate), x)
            self._num_samples += int(x.size)

    def input_finished(self) -> None:
        """No more audio: flushes the last frames (which need right-edge reflection)."""
        if not self._finished:
            self._fbank.input_finished()
            self._finished = True

    def is_last_frame(self, frame: int) -> bool:
        return bool(self._fbank.is_last_frame(frame))

    def get_frames(self, start: int, n: int) -> np.ndarray:
        """Frames ``start .. start+n-1`` (absolute indices) as a float32 ``[n, dim]`` copy."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if start < self._first:
            raise IndexError(f"frame {start} was already popped (first held: {self._first})")
        if start + n > self.num_frames_ready:
            raise IndexError(
                f"frames {start}..{start + n - 1} requested but only {self.num_frames_ready} ready"
            )
        if isinstance(self._fbank, NumpyOnlineFbank):
            return self._fbank.get_frames(start, n)
        out = np.empty((n, self.dim), dtype=np.float32)
        for i in range(n):
            out[i] = self._fbank.get_frame(start + i)
        return out

    def pop(self, n: int) -> None:
        """Discard the ``n`` oldest held frames (they are no longer needed by the encoder)."""
        if not 0 <= n <= self.num_frames_available:
            raise IndexError(f"cannot pop {n} frames; {self.num_frames_available} available")
        if n:
            self._fbank.pop(n)
            self._first += n

    def read_frames(self, max_frames: int | None = None) -> np.ndarray:
        """Return the held frames (at most ``max_frames``) and pop them: simple FIFO use."""
        n = self.num_frames_available
        if max_frames is not None:
            n = min(n, max_frames)
        out = self.get_frames(self._first, n)
        self.pop(n)
        return out


def compute_features(
    samples: np.ndarray, config: FeatureConfig | None = None, backend: Backend = "auto"
) -> np.ndarray:
    """Fbank of a whole utterance: float32 ``[config.num_frames(len(samples)), num_mel_bins]``.

    Training (edgeasr.train.data) and calibration call this too, so they see the runtime's
    features from the same code path.
    """
    ex = OnlineFeatureExtractor(config, backend)
    ex.accept_waveform(samples)
    ex.input_finished()
    return ex.read_frames()
