"""Audio input for the runtime: decode files or raw PCM into 16 kHz mono float32 in [-1, 1].

Everything that enters a model passes through here, so every way audio can be wrong (missing
file, corrupt header, NaN samples, absurd sample rate, odd PCM byte count) becomes one
:class:`AudioError` that names the source and the problem, instead of a libsndfile traceback or,
worse, silently wrong features.

Decoding uses libsndfile (via ``soundfile``): wav, flac, ogg/vorbis, opus-in-ogg, and mp3 where
the installed libsndfile supports it (>= 1.1). Resampling uses soxr at high quality ("HQ"), the
same quality for files, raw PCM and live streams, so training data and runtime input are
band-limited identically.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import soundfile as sf
import soxr

from edgeasr.errors import EdgeAsrError

__all__ = [
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "AudioError",
    "AudioInfo",
    "StreamResampler",
    "check_sample_rate",
    "load_audio",
    "pcm_to_float",
    "probe_audio",
    "resample",
]

#: Sample rates outside this range are certainly a header error or a unit mix-up (kHz vs Hz).
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384000

#: soxr quality used everywhere ("HQ": 20-bit precision, ~95% pass band, linear phase).
RESAMPLE_QUALITY = "HQ"

BYTES_NAME = "<bytes>"

AudioSource = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO
PcmDtype = Literal["int16", "float32"]


class AudioError(EdgeAsrError, ValueError):
    """Audio that cannot be used: the message names the source (file or ``<bytes>``) and why."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


@dataclass(frozen=True)
class AudioInfo:
    """What a file header says, read without decoding the samples (for manifests)."""

    source: str
    sample_rate: int
    num_channels: int
    num_frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return self.num_frames / self.sample_rate


def check_sample_rate(rate: float, source: str = "sample_rate") -> int:
    """Return ``rate`` as int, or raise :class:`AudioError` when it is not a plausible rate."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise AudioError(source, f"sample rate must be a number, got {type(rate).__name__}")
    if not np.isfinite(rate) or int(rate) != rate:
        raise AudioError(source, f"sample rate must be a whole number of Hz, got {rate}")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            source,
            f"sample rate {int(rate)} Hz is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz",
        )
    return int(rate)


def _check_finite(x: np.ndarray, source: str) -> None:
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise AudioError(source, f"contains {bad} NaN or infinite sample(s)")


def _to_mono(x: np.ndarray) -> np.ndarray:
    """Average channels ([frames, channels] -> [frames]); the mean keeps the [-1, 1] range."""
    if x.ndim == 1:
        return x
    if x.shape[1] == 1:
        return x[:, 0]
    return x.mean(axis=1, dtype=np.float64).astype(np.float32)


def _describe(source: AudioSource) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return BYTES_NAME
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return getattr(source, "name", None) or BYTES_NAME


def _open_target(source: AudioSource, name: str) -> str | BinaryIO:
    """Check a path for the common mistakes before libsndfile sees it; wrap bytes in a buffer."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioError(name, "empty input (0 bytes)")
        return io.BytesIO(bytes(source))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            raise AudioError(name, "is a directory, not an audio file")
        if not path.exists():
            raise AudioError(name, "file not found")
        if path.stat().st_size == 0:
            raise AudioError(name, "empty file (0 bytes)")
        return os.fspath(path)
    return source


def _sf_open(target: str | BinaryIO, name: str) -> sf.SoundFile:
    try:
        return sf.SoundFile(target)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        reason = getattr(e, "error_string", None) or str(e)
        raise AudioError(
            name, f"cannot decode: unsupported format or corrupt header ({reason})"
        ) from e


def probe_audio(source: AudioSource) -> AudioInfo:
    """Read the header of an audio file (or encoded bytes) without decoding the samples.

    For compressed formats the frame count is what libsndfile reports from the container
    (exact for wav/flac/ogg; mp3 without a Xing/LAME header may be an estimate).
    """
    name = _describe(source)
    with _sf_open(_open_target(source, name), name) as f:
        rate = check_sample_rate(f.samplerate, name)
        return AudioInfo(
            source=name,
            sample_rate=rate,
            num_channels=int(f.channels),
            num_frames=int(f.frames),
            format=str(f.format),
            subtype=str(f.subtype),
        )


def load_audio(source: AudioSource, target_rate: int | None = 16000) -> np.ndarray:
    """Decode an audio file (path, encoded bytes or binary file object) to mono float32.

    Channels are averaged, then the signal is resampled with soxr to ``target_rate``
    (``None`` keeps the file's rate). Integer formats come back scaled to [-1, 1).
    A file whose data stops before its header says (an interrupted copy) decodes to the
    samples that are present, as libsndfile, sox and ffmpeg all do.

    Raises:
        AudioError: missing file, directory, empty or zero-length file, corrupt or unsupported
            format, NaN/inf samples, or a sample rate outside [1000, 384000] Hz.
    """
    name = _describe(source)
    if target_rate is not None:
        target_rate = check_sample_rate(target_rate, f"{name} (target_rate)")
    with _sf_open(_open_target(source, name), name) as f:
        rate = check_sample_rate(f.samplerate, name)
        try:
            data = f.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            reason = getattr(e, "error_string", None) or str(e)
            raise AudioError(name, f"decoding failed part way: corrupt data ({reason})") from e
    if data.shape[0] == 0:
        raise AudioError(name, "contains no samples (zero-length audio)")
    _check_finite(data, name)
    x = _to_mono(data)
    if target_rate is not None and target_rate != rate:
        x = resample(x, rate, target_rate)
    return np.ascontiguousarray(x, dtype=np.float32)


def pcm_to_float(
    data: bytes | bytearray | memoryview | np.ndarray,
    dtype: PcmDtype = "int16",
    num_channels: int = 1,
) -> np.ndarray:
    """Convert raw little-endian PCM (e.g. from stdin or a socket) to mono float32 in [-1, 1].

    ``int16`` samples are divided by 32768 (the Kaldi/sherpa-onnx convention), ``float32``
    samples are taken as they are but must be finite. Interleaved multi-channel input is
    averaged to mono. A numpy array must already have the declared dtype.
    """
    if dtype not in ("int16", "float32"):
        raise AudioError(BYTES_NAME, f"unsupported PCM dtype {dtype!r}; use 'int16' or 'float32'")
    if num_channels < 1:
        raise AudioError(BYTES_NAME, f"num_channels must be >= 1, got {num_channels}")
    np_dtype = np.dtype("<i2") if dtype == "int16" else np.dtype("<f4")
    if isinstance(data, np.ndarray):
        if data.dtype.newbyteorder("<") != np_dtype:
            raise AudioError(BYTES_NAME, f"array has dtype {data.dtype}, expected {dtype}")
        samples = data.reshape(-1)
    elif isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        frame_bytes = np_dtype.itemsize * num_channels
        if len(raw) % frame_bytes:
            raise AudioError(
                BYTES_NAME,
                f"{len(raw)} bytes is not a whole number of {dtype} frames "
                f"({frame_bytes} bytes each with {num_channels} channel(s))",
            )
        samples = np.frombuffer(raw, dtype=np_dtype)
    else:
        raise AudioError(BYTES_NAME, f"expected bytes or numpy array, got {type(data).__name__}")
    if samples.size % num_channels:
        raise AudioError(
            BYTES_NAME, f"{samples.size} samples do not split into {num_channels} channels"
        )
    if dtype == "int16":
        x = samples.astype(np.float32) / np.float32(32768.0)
    else:
        x = samples.astype(np.float32)
        _check_finite(x, BYTES_NAME)
    if num_channels > 1:
        x = _to_mono(x.reshape(-1, num_channels))
    return np.ascontiguousarray(x)


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample a 1-D float32 signal with soxr (HQ); returns ``x`` as float32 if rates match."""
    from_rate = check_sample_rate(from_rate, "resample(from_rate)")
    to_rate = check_sample_rate(to_rate, "resample(to_rate)")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise AudioError("resample", f"expected a 1-D signal, got shape {x.shape}")
    if from_rate == to_rate or x.size == 0:
        return x
    return soxr.resample(x, from_rate, to_rate, quality=RESAMPLE_QUALITY).astype(np.float32)


class StreamResampler:
    """Chunk-by-chunk resampling for live input (microphone, socket) with soxr's stream API.

    Feeding chunks and then ``flush()`` gives the same signal as :func:`resample` on the whole
    input up to filter-edge effects of a few samples, without buffering the whole stream.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate = check_sample_rate(from_rate, "StreamResampler(from_rate)")
        self.to_rate = check_sample_rate(to_rate, "StreamResampler(to_rate)")
        self._passthrough = self.from_rate == self.to_rate
        self._stream = (
            None
            if self._passthrough
            else soxr.ResampleStream(
                self.from_rate, self.to_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )
        )

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Resample one chunk of 1-D float32 samples; may return fewer samples (filter delay)."""
        x = np.ascontiguousarray(chunk, dtype=np.float32)
        if x.ndim != 1:
            raise AudioError("StreamResampler", f"expected a 1-D chunk, got shape {x.shape}")
        _check_finite(x, "StreamResampler")
        if self._stream is None:
            return x
        return self._stream.resample_chunk(x, last=False)

    def flush(self) -> np.ndarray:
        """Return the samples still held in the filter; call once at end of stream."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
