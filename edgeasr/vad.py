"""Voice activity detection: split long recordings into padded speech segments.

The model is Silero VAD (MIT license), the ``silero_vad.onnx`` file shipped inside the
``silero-vad`` PyPI package (``pip install silero-vad --no-deps``: its declared torch
dependency is only needed by the package's own Python helpers). The file is located without
importing the package (whose ``__init__`` imports torch) and run with onnxruntime:

- input ``input[N, 64 + 512]`` float32: 512 new samples at 16 kHz preceded by the last 64
  samples of the previous window (the context the package's own wrapper prepends);
- ``state[2, N, 128]`` float32 recurrent state, ``sr`` int64 scalar;
- outputs ``output[N, 1]`` speech probability and ``stateN`` (the next state).

Segmentation (:class:`VadSegmenter`, streaming; :func:`detect_speech` over a whole array) is
hysteresis on the per-window probability as in Silero's ``get_speech_timestamps`` and
sherpa-onnx's VAD: speech starts at ``p >= threshold``, ends after ``min_silence_s`` of
``p < threshold - 0.15``. Segments shorter than ``min_speech_s`` are dropped, each is padded
by ``pad_s`` on both sides so that onsets and endings are not cut (the recognizer hears a
little silence, as it does around training utterances), segments whose padded ends come
within ``merge_gap_s`` are merged, and none is longer than ``max_segment_s`` (a long run of
speech is cut at its least speech-like window).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeasr.errors import EdgeAsrError

if TYPE_CHECKING:
    from edgeasr.stream import Recognizer, Result

__all__ = [
    "SAMPLE_RATE",
    "WINDOW",
    "SileroVad",
    "SpeechSegment",
    "VadConfig",
    "VadError",
    "VadSegmenter",
    "detect_speech",
    "silero_model_path",
    "transcribe_segments",
]

SAMPLE_RATE = 16000
WINDOW = 512  # samples per Silero decision at 16 kHz (32 ms)
_CONTEXT = 64  # samples of the previous window prepended to each input


class VadError(EdgeAsrError):
    """The VAD model is missing or the configuration / input is invalid."""


def silero_model_path() -> Path:
    """``silero_vad.onnx`` inside the installed ``silero-vad`` package (not imported)."""
    try:
        spec = importlib.util.find_spec("silero_vad")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise VadError(
            "the Silero VAD model is not installed; install it with "
            "`pip install silero-vad --no-deps` (or pass VadConfig(model=PATH))"
        )
    for root in spec.submodule_search_locations:
        path = Path(root) / "data" / "silero_vad.onnx"
        if path.is_file():
            return path
    raise VadError(f"silero-vad is installed but has no data/silero_vad.onnx under "
                   f"{list(spec.submodule_search_locations)}")


@dataclass
class VadConfig:
    """Segmentation settings (seconds; see the module docstring for what each does)."""

    model: str | os.PathLike[str] | None = None
    threshold: float = 0.5
    neg_threshold: float | None = None  # default: threshold - 0.15
    min_speech_s: float = 0.25
    min_silence_s: float = 0.3
    pad_s: float = 0.3
    merge_gap_s: float = 0.2
    max_segment_s: float = 20.0
    num_threads: int = 1

    def validate(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise VadError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.neg_threshold is not None and not 0.0 <= self.neg_threshold <= self.threshold:
            raise VadError(f"neg_threshold must be in [0, threshold], got {self.neg_threshold}")
        for name in ("min_speech_s", "min_silence_s", "pad_s", "merge_gap_s"):
            if getattr(self, name) < 0:
                raise VadError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_segment_s < 2 * self.pad_s + 1.0:
            raise VadError(f"max_segment_s must be >= 2 * pad_s + 1, got {self.max_segment_s}")

    @property
    def off_threshold(self) -> float:
        return self.neg_threshold if self.neg_threshold is not None else max(
            self.threshold - 0.15, 0.01)


class SileroVad:
    """The Silero VAD network over onnxruntime, one 512-sample window at a time."""

    def __init__(self, model: str | os.PathLike[str] | None = None, num_threads: int = 1) -> None:
        import onnxruntime as ort

        path = Path(model) if model is not None else silero_model_path()
        if not path.is_file():
            raise VadError(f"VAD model {path} does not exist")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
        try:
            self._sess = ort.InferenceSession(str(path), opts,
                                              providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types
            raise VadError(f"cannot load VAD model {path}: {e}") from e
        names = {i.name for i in self._sess.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise VadError(f"{path} is not a Silero VAD v5+ model (inputs {sorted(names)})")
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)

    def __call__(self, window: np.ndarray) -> float:
        """Speech probability of the next ``WINDOW`` samples (16 kHz float32)."""
        if window.shape != (WINDOW,):
            raise VadError(f"a VAD window is {WINDOW} samples, got shape {window.shape}")
        x = np.concatenate([self._context, window.astype(np.float32, copy=False)])[None]
        out, self._state = self._sess.run(None, {"input": x, "state": self._state,
                                                 "sr": self._sr})
        self._context = x[0, -_CONTEXT:]
        return float(out[0, 0])


@dataclass
class SpeechSegment:
    """Samples ``start:end`` (16 kHz, from the start of the audio) of one padded segment."""

    start: int
    end: int
    samples: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.float32))

    @property
    def start_s(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end / SAMPLE_RATE


class VadSegmenter:
    """Streaming segmentation: feed audio of any length, collect finished segments.

    Audio is kept only from the earliest sample a future segment may still need (a pending
    segment's padded start, or ``pad_s`` before the current position), so memory stays
    bounded by ``max_segment_s`` however long the input runs (microphone, server).
    """

    def __init__(self, config: VadConfig | None = None, vad: SileroVad | None = None) -> None:
        self.config = config or VadConfig()
        self.config.validate()
        self.vad = vad or SileroVad(self.config.model, self.config.num_threads)
        c = self.config
        self._pad = int(c.pad_s * SAMPLE_RATE)
        self._gap = int(c.merge_gap_s * SAMPLE_RATE)
        self._min_speech = int(c.min_speech_s * SAMPLE_RATE)
        self._min_silence = int(c.min_silence_s * SAMPLE_RATE)
        self._max = int(c.max_segment_s * SAMPLE_RATE)
        self.reset()

    def reset(self) -> None:
        self.vad.reset()
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # absolute index of _buf[0]
        self._leftover = np.zeros(0, dtype=np.float32)  # < WINDOW samples not yet scored
        self._pos = 0  # absolute index of the next window
        self._speech_start: int | None = None
        self._silence_start: int | None = None
        self._probs: list[tuple[int, float]] = []  # windows of the current speech run
        self._pending: tuple[int, int] | None = None  # padded, not yet released
        self._out: list[SpeechSegment] = []
        self._finished = False

    @property
    def buffered_samples(self) -> int:
        """Audio held for future segments (bounded; see the class docstring)."""
        return int(self._buf.size + self._leftover.size)

    def accept_waveform(self, samples: np.ndarray) -> list[SpeechSegment]:
        """Append 16 kHz mono float samples; return the segments finished by them."""
        if self._finished:
            raise VadError("accept_waveform() after flush(); call reset() first")
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1:
            raise VadError(f"samples must be 1-D mono, got shape {x.shape}")
        self._buf = np.concatenate([self._buf, x])
        data = np.concatenate([self._leftover, x])
        n = data.size // WINDOW * WINDOW
        for a in range(0, n, WINDOW):
            self._window(self.vad(data[a : a + WINDOW]))
        self._leftover = data[n:]
        self._release_old()
        self._trim()
        return self._take()

    def flush(self) -> list[SpeechSegment]:
        """End of input: close an open speech run and release everything pending."""
        if not self._finished:
            end = self._buf_start + self._buf.size
            if self._speech_start is not None:
                self._close(self._silence_start if self._silence_start is not None else end)
            if self._pending is not None:
                self._emit(*self._pending)
                self._pending = None
            self._finished = True
        return self._take()

    # -- internals ----------------------------------------------------------------------------
    def _window(self, p: float) -> None:
        c, t = self.config, self._pos
        self._pos += WINDOW
        if self._speech_start is None:
            if p >= c.threshold:
                self._speech_start, self._silence_start, self._probs = t, None, [(t, p)]
            return
        self._probs.append((t, p))
        if p >= c.threshold:
            self._silence_start = None
        elif p < c.off_threshold and self._silence_start is None:
            self._silence_start = t
        if self._silence_start is not None and self._pos - self._silence_start >= self._min_silence:
            self._close(self._silence_start)
        elif self._pos - self._speech_start >= self._max - 2 * self._pad:
            self._split()

    def _split(self) -> None:
        """A run reached the length cap: cut at its least speech-like window (later half)."""
        assert self._speech_start is not None
        half = len(self._probs) // 2
        k = half + int(np.argmin([p for _, p in self._probs[half:]]))
        cut = self._probs[k][0]
        rest = self._probs[k:]
        self._close(cut)
        self._speech_start, self._probs = cut, rest

    def _close(self, end: int) -> None:
        start = self._speech_start
        assert start is not None
        self._speech_start, self._silence_start, self._probs = None, None, []
        if end - start < self._min_speech:
            return
        total = self._buf_start + self._buf.size
        a, b = max(0, start - self._pad), min(total, end + self._pad)
        if self._pending is not None:
            pa, pb = self._pending
            if a - pb <= self._gap and b - pa <= self._max:
                self._pending = (pa, b)
                return
            self._emit(pa, pb)
        self._pending = (a, b)

    def _release_old(self) -> None:
        """Release the pending segment once its padding has arrived and no later speech can
        be merged into it (a run that starts later is at least at the current position)."""
        if self._pending is None:
            return
        pb = self._pending[1]
        if self._buf_start + self._buf.size < pb:
            return
        nxt = self._speech_start if self._speech_start is not None else self._pos
        if nxt - self._pad - pb > self._gap:
            self._emit(*self._pending)
            self._pending = None

    def _emit(self, a: int, b: int) -> None:
        b = min(b, self._buf_start + self._buf.size)
        seg = self._buf[a - self._buf_start : b - self._buf_start].copy()
        self._out.append(SpeechSegment(a, b, seg))

    def _trim(self) -> None:
        keep = self._pos - self._pad - WINDOW
        if self._pending is not None:
            keep = min(keep, self._pending[0])
        if self._speech_start is not None:
            keep = min(keep, self._speech_start - self._pad)
        drop = keep - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start += drop

    def _take(self) -> list[SpeechSegment]:
        out, self._out = self._out, []
        return out


def detect_speech(
    samples: np.ndarray,
    config: VadConfig | None = None,
    vad: SileroVad | None = None,
    piece_s: float = 10.0,
) -> list[SpeechSegment]:
    """Padded speech segments of a whole 16 kHz recording (fed in ``piece_s`` pieces)."""
    seg = VadSegmenter(config, vad)
    x = np.asarray(samples, dtype=np.float32)
    step = max(WINDOW, int(piece_s * SAMPLE_RATE))
    out: list[SpeechSegment] = []
    for a in range(0, x.size, step):
        out += seg.accept_waveform(x[a : a + step])
    return out + seg.flush()


def iter_segments(
    samples: np.ndarray, config: VadConfig | None = None, vad: SileroVad | None = None
) -> Iterator[SpeechSegment]:
    """:func:`detect_speech` as a generator (first segments before the whole file is read)."""
    seg = VadSegmenter(config, vad)
    x = np.asarray(samples, dtype=np.float32)
    step = 10 * SAMPLE_RATE
    for a in range(0, x.size, step):
        yield from seg.accept_waveform(x[a : a + step])
    yield from seg.flush()


def transcribe_segments(
    rec: Recognizer, samples: np.ndarray, config: VadConfig | None = None,
    vad: SileroVad | None = None,
) -> tuple[Result, list[tuple[SpeechSegment, Result]]]:
    """Transcribe each VAD segment of a 16 kHz recording as its own utterance; return the
    concatenated result (timestamps offset to the recording's time line, segments joined
    with a space) and the per-segment results."""
    from edgeasr.stream import Result

    if rec.feature_config.sample_rate != SAMPLE_RATE:
        raise VadError(f"VAD segmentation needs a {SAMPLE_RATE} Hz model")
    parts: list[tuple[SpeechSegment, Result]] = []
    for seg in iter_segments(samples, config, vad):
        parts.append((seg, rec.transcribe(seg.samples, sample_rate=SAMPLE_RATE)))
    tokens: list[int] = []
    times: list[float] = []
    stats: dict[str, int] = {}
    for seg, r in parts:
        tokens += r.tokens
        times += [t + seg.start_s for t in r.timestamps]
        for k, v in r.stats.items():
            stats[k] = stats.get(k, 0) + v
    text = " ".join(r.text.strip() for _, r in parts if r.text.strip())
    merged = Result(text=text, tokens=tokens, timestamps=times, is_final=True, stats=stats)
    if parts and hasattr(parts[0][1], "translation"):  # a SpeechTranslator: join those too
        from edgeasr.translation import TranslationResult

        merged = TranslationResult(
            **vars(merged),
            translation=" ".join(t for _, r in parts if (t := r.translation.strip())),
            translation_tokens=[i for _, r in parts for i in r.translation_tokens])
    return merged, parts
