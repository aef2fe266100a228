"""Streaming recognition: a shared :class:`Recognizer` and per-utterance :class:`Stream` state.

The design follows sherpa-onnx's online recognizer: the recognizer holds what is shared and
read-only (backend with the loaded graphs, decoder, tokenizer, configs); a stream holds
everything that belongs to one audio source (feature extractor, encoder caches, decoder state,
segment counters) as explicit data. :meth:`Recognizer.decode_streams` batches the ready streams
by stacking their caches, runs the encoder once per round, and lets the decoder advance all of
them together.

Typical use::

    rec = Recognizer.from_bundle("models/default", decoding=DecodingConfig(method="gated"))
    s = rec.create_stream()
    for chunk in microphone():
        s.accept_waveform(16000, chunk)
        rec.decode_streams([s])
        print(s.result.text)
        if rec.is_endpoint(s):
            rec.reset(s)
    s.input_finished()
    rec.decode_streams([s])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgeasr.audio import AudioError, StreamResampler, check_sample_rate, load_audio
from edgeasr.backends.base import (
    Backend,
    BackendError,
    BackendSpec,
    RecognizerError,
    split_caches,
    stack_caches,
)
from edgeasr.decoding import DecodingConfig, LabelLM, make_decoder
from edgeasr.decoding.base import DecoderState
from edgeasr.endpoint import EndpointConfig, detect_endpoint
from edgeasr.features import FeatureConfig, OnlineFeatureExtractor
from edgeasr.hotwords import ContextGraph, Hotword, compile_hotwords

if TYPE_CHECKING:
    from edgeasr.bundle import Bundle

__all__ = [
    "BACKENDS",
    "DEFAULT_BUNDLE",
    "DecodingConfig",
    "EndpointConfig",
    "Recognizer",
    "RecognizerConfig",
    "default_precision",
    "RecognizerError",
    "Result",
    "Stream",
    "StreamError",
]

BACKENDS = ("onnxruntime", "executorch", "torch")

#: The model shipped inside the repository (``models/default``).
DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "models" / "default"

#: ``transcribe`` feeds audio in pieces of this many seconds (bounded memory per call).
TRANSCRIBE_PIECE_S = 10.0


def default_precision(bundle: Any, fmt: str) -> str:
    """The graph precision a backend loads when none is asked for: fp32 where the bundle has it
    for ``fmt`` (``onnx`` or ``executorch``), else its other one (a bundle may ship int8 only)."""
    have = {p for f, p in bundle.variants() if f == fmt}
    return "fp32" if "fp32" in have or not have else sorted(have)[0]


class StreamError(RecognizerError):
    """Bad input to a stream (sample rate, samples, call order) or a stream that failed."""


class TokenDecoder(Protocol):
    """What the recognizer needs from a tokenizer: ids -> text."""

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass
class RecognizerConfig:
    """Everything that configures a recognizer besides the model.

    Attributes:
        decoding: the decoding method and its knobs.
        endpoint: endpoint rules (used by :meth:`Recognizer.is_endpoint`).
        max_chunk_seconds: the longest audio accepted by one ``accept_waveform`` call; a larger
            array is almost certainly a mistake (a whole file passed to a live stream, or the
            wrong sample rate) and would stall every stream batched with it.
    """

    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    max_chunk_seconds: float = 600.0

    def validate(self) -> None:
        self.decoding.validate()
        self.endpoint.validate()
        if not self.max_chunk_seconds > 0:
            raise RecognizerError(f"max_chunk_seconds must be > 0, got {self.max_chunk_seconds}")


@dataclass
class Result:
    """What a stream has recognized in its current segment.

    ``timestamps[i]`` is the time (seconds from the start of the stream's audio) of the encoder
    frame on which ``tokens[i]`` was emitted. ``is_final`` is true once the input is finished
    and fully decoded. ``stats``: frames decoded, frames skipped by the IAM gate, label
    softmaxes computed and skipped (HAT blank threshold), for this segment.
    """

    text: str = ""
    tokens: list[int] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    is_final: bool = False
    segment: int = 0
    start_time: float = 0.0
    stats: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tokens": list(self.tokens),
            "timestamps": [round(t, 3) for t in self.timestamps],
            "is_final": self.is_final,
            "segment": self.segment,
            "start_time": round(self.start_time, 3),
            "stats": dict(self.stats),
        }


class Stream:
    """One audio source. Create with :meth:`Recognizer.create_stream`."""

    def __init__(self, recognizer: Recognizer) -> None:
        self._rec = recognizer
        spec = recognizer.spec
        self._features = OnlineFeatureExtractor(recognizer.feature_config)
        self._resampler: StreamResampler | None = None
        self._input_rate: int | None = None
        self._caches = recognizer.backend.init_caches(1)
        self._state: DecoderState = recognizer.decoder.init_state()
        self._next_feature = 0  # first feature frame of the next chunk
        self._finished = False
        self._finalized = False
        self._segment = 0
        self._feature_frames = spec.feature_frames
        self.error: RecognizerError | None = None
        self._hotwords: ContextGraph | None = None
        if recognizer.default_hotwords is not None:
            self._attach_hotwords(recognizer.default_hotwords)

    # -- contextual biasing ---------------------------------------------------------------------
    def set_hotwords(
        self,
        hotwords: str | Sequence[str | Hotword] | ContextGraph | None,
        boost: float | None = None,
    ) -> None:
        """Bias this stream towards ``hotwords`` (``"kubernetes, Ada Lovelace :2.5"``, a list
        of phrases, or a compiled graph); ``None`` or empty removes the biasing.

        Takes effect from the next decoded chunk; call it between utterances (after
        :meth:`Recognizer.reset`) so that no phrase match is cut in half. ``boost`` is the
        bonus per token of phrases without their own (default: the decoding config's).
        """
        if isinstance(hotwords, ContextGraph) or hotwords is None:
            graph = hotwords
        else:
            graph = self._rec.compile_hotwords(hotwords, boost)
        self._attach_hotwords(graph)

    @property
    def hotwords(self) -> ContextGraph | None:
        return self._hotwords

    def _attach_hotwords(self, graph: ContextGraph | None) -> None:
        st = self._state
        if graph is not None:
            if not hasattr(st, "hotwords"):
                raise StreamError(
                    f"decoding method {self._rec.config.decoding.method!r} does not support "
                    "hotwords; use greedy, gated, tdt or beam"
                )
            v = self._rec.spec.vocab_size
            bad = [t for p in graph.phrases for t in p if t >= v]
            if bad:
                raise StreamError(f"hotword token ids {sorted(set(bad))} >= vocabulary size {v}")
        if hasattr(st, "hotwords"):
            st.hotwords = graph
            if hasattr(st, "hotword_state"):
                st.hotword_state = None
            for h in getattr(st, "hyps", ()):
                h.hw = None
        self._hotwords = graph

    # -- input ----------------------------------------------------------------------------------
    def accept_waveform(self, sample_rate: int, samples: np.ndarray) -> None:
        """Append mono float samples in [-1, 1] at ``sample_rate`` (resampled if needed).

        Raises :class:`StreamError` for a bad sample rate (or a rate that changes mid-stream),
        non-float, non-1-D, empty, NaN/inf or oversized input, and input after
        :meth:`input_finished`.
        """
        if self._finished:
            raise StreamError("accept_waveform() after input_finished(); create a new stream")
        if self.error is not None:
            raise StreamError(f"stream has failed earlier: {self.error}")
        try:
            rate = check_sample_rate(sample_rate, "accept_waveform(sample_rate)")
        except AudioError as e:
            raise StreamError(str(e)) from None
        if self._input_rate is not None and rate != self._input_rate:
            raise StreamError(
                f"sample rate changed from {self._input_rate} Hz to {rate} Hz within one stream"
            )
        x = np.asarray(samples)
        if x.ndim != 1:
            raise StreamError(f"samples must be a 1-D mono array, got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise StreamError(
                f"samples must be float in [-1, 1], got dtype {x.dtype}; "
                "convert integer PCM with edgeasr.audio.pcm_to_float"
            )
        if x.size == 0:
            raise StreamError(
                "empty chunk (0 samples); skip the call, or call input_finished() at the end"
            )
        max_samples = int(self._rec.config.max_chunk_seconds * rate)
        if x.size > max_samples:
            raise StreamError(
                f"chunk of {x.size} samples ({x.size / rate:.1f} s) exceeds max_chunk_seconds="
                f"{self._rec.config.max_chunk_seconds:g}; feed long audio in pieces"
            )
        if not np.all(np.isfinite(x)):
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise StreamError(f"chunk contains {bad} NaN or infinite sample(s)")
        x = x.astype(np.float32, copy=False)
        self._input_rate = rate
        target = self._features.config.sample_rate
        if rate != target:
            if self._resampler is None:
                self._resampler = StreamResampler(rate, target)
            x = self._resampler.process(x)
        if x.size:
            self._features.accept_waveform(x)

    def input_finished(self) -> None:
        """No more audio: append the bundle's tail padding (silence) so that the last real
        frames fall inside a complete encoder chunk, then flush the feature extractor.
        Calling it twice is harmless."""
        if self._finished:
            return
        if self._resampler is not None:
            tail = self._resampler.flush()
            if tail.size:
                self._features.accept_waveform(tail)
        rate = self._features.config.sample_rate
        pad = int(round(self._rec.spec.tail_padding_s * rate))
        if pad:
            self._features.accept_waveform(np.zeros(pad, dtype=np.float32))
        self._features.input_finished()
        self._finished = True

    # -- state ----------------------------------------------------------------------------------
    @property
    def is_ready(self) -> bool:
        """A full encoder chunk of features is waiting."""
        return (
            self.error is None
            and self._features.num_frames_ready >= self._next_feature + self._feature_frames
        )

    @property
    def is_finished(self) -> bool:
        """Input finished and everything decoded."""
        return self._finalized

    @property
    def segment(self) -> int:
        return self._segment

    @property
    def result(self) -> Result:
        """The current segment's recognition (partial until the stream is finished)."""
        return self._rec.get_result(self)

    def _next_chunk(self) -> np.ndarray:
        feats = self._features.get_frames(self._next_feature, self._feature_frames)
        shift = self._rec.spec.feature_shift
        self._next_feature += shift
        self._features.pop(self._next_feature - self._features.first_frame)
        return feats


class Recognizer:
    """Shared, stateless-per-stream recognizer over one backend.

    Build with :meth:`from_bundle` (or :meth:`from_checkpoint` for the torch backend), or
    directly from a backend, a tokenizer and the feature config (tests, custom backends).
    A factorized model (Transducer-Llama) decodes with an LM: ``DecodingConfig(predictor=
    "llama", lm="lm.gguf")``, or any label LM object passed as ``lm`` (a PyTorch one:
    ``edgeasr.backends.torch_lm.TorchLabelLM``).
    """

    def __init__(
        self,
        backend: Backend,
        tokenizer: TokenDecoder,
        feature_config: FeatureConfig | None = None,
        config: RecognizerConfig | None = None,
        lm: LabelLM | None = None,
    ) -> None:
        self.config = config or RecognizerConfig()
        self.config.validate()
        self.backend = backend
        self.spec: BackendSpec = backend.spec
        self.tokenizer = tokenizer
        self.feature_config = feature_config or FeatureConfig()
        if self.feature_config.num_mel_bins != self.spec.feature_dim:
            raise RecognizerError(
                f"features have {self.feature_config.num_mel_bins} bins but the model expects "
                f"{self.spec.feature_dim}"
            )
        self.decoder = make_decoder(backend, self.config.decoding, lm)
        self.default_hotwords: ContextGraph | None = (
            self.compile_hotwords(list(self.config.decoding.hotwords))
            if self.config.decoding.hotwords
            else None
        )

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_bundle(
        cls,
        path: str | os.PathLike[str] | Bundle | None = None,
        backend: str = "onnxruntime",
        decoding: DecodingConfig | None = None,
        num_threads: int = 1,
        *,
        endpoint: EndpointConfig | None = None,
        precision: str | None = None,
        providers: Sequence[str] | None = None,
        verify_hashes: bool = True,
    ) -> Recognizer:
        """Load a bundle (folder, model.json or .tar, or a loaded :class:`Bundle`; default:
        ``models/default``) and build the named backend: ``onnxruntime`` (no torch),
        ``executorch`` or ``torch``.

        ``precision`` picks the graph variant (``fp32`` or ``int8``); by default fp32 where the
        bundle has it for the backend's format, else int8 (a bundle may ship int8 only)."""
        from edgeasr.bundle import Bundle
        from edgeasr.tokenizer import Tokenizer

        if backend not in BACKENDS:
            raise RecognizerError(f"unknown backend {backend!r}; choose from {BACKENDS}")
        if isinstance(path, Bundle):
            bundle = path
        else:
            if path is None:
                path = DEFAULT_BUNDLE
                if not Path(path).exists():
                    raise RecognizerError(
                        f"no model given and the default bundle {path} does not exist; pass a "
                        "bundle path (export one with edgeasr-export)"
                    )
            bundle = Bundle.load(path, verify_hashes=verify_hashes)
        if precision is None:
            precision = default_precision(bundle, "executorch" if backend == "executorch"
                                          else "onnx")
        if backend == "onnxruntime":
            from edgeasr.backends.onnxruntime import OrtBackend

            be: Backend = OrtBackend(
                bundle, precision=precision, num_threads=num_threads, providers=providers
            )
        elif backend == "executorch":
            from edgeasr.backends.executorch import ExecuTorchBackend

            be = ExecuTorchBackend(bundle, precision=precision)
        else:
            from edgeasr.backends.torch import TorchBackend

            be = TorchBackend.from_bundle(bundle, num_threads=num_threads)
        config = RecognizerConfig(
            decoding=decoding or DecodingConfig(), endpoint=endpoint or EndpointConfig()
        )
        return cls(be, Tokenizer(bundle.tokenizer_path), bundle.features, config)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        decoding: DecodingConfig | None = None,
        num_threads: int = 1,
        *,
        endpoint: EndpointConfig | None = None,
    ) -> Recognizer:
        """Stream a training checkpoint directly with the torch backend (no export needed)."""
        from edgeasr.backends.torch import TorchBackend
        from edgeasr.tokenizer import Tokenizer
        from edgeasr.train.checkpoint import load_checkpoint

        be, tok_bytes = TorchBackend.from_checkpoint(path, num_threads=num_threads)
        feats = FeatureConfig.from_dict(dict(load_checkpoint(path)["feature_config"]))
        config = RecognizerConfig(
            decoding=decoding or DecodingConfig(), endpoint=endpoint or EndpointConfig()
        )
        return cls(be, Tokenizer.from_bytes(tok_bytes, str(path)), feats, config)

    # -- streams --------------------------------------------------------------------------------
    def create_stream(
        self, hotwords: str | Sequence[str | Hotword] | ContextGraph | None = None
    ) -> Stream:
        """A new stream; ``hotwords`` replace the config's default phrases for it."""
        s = Stream(self)
        if hotwords is not None:
            s.set_hotwords(hotwords)
        return s

    def compile_hotwords(
        self, hotwords: str | Sequence[str | Hotword], boost: float | None = None
    ) -> ContextGraph | None:
        """Normalize + tokenize phrases with this model's tokenizer into a context graph
        (shareable by any number of streams); ``None`` for an empty list."""
        if not hasattr(self.tokenizer, "encode"):
            raise RecognizerError("hotwords need a tokenizer with encode()")
        b = self.config.decoding.hotwords_score if boost is None else boost
        return compile_hotwords(hotwords, self.tokenizer, b)  # type: ignore[arg-type]

    def is_ready(self, stream: Stream) -> bool:
        return stream.is_ready

    def decode_stream(self, stream: Stream) -> None:
        """Decode everything ``stream`` has buffered; raises if the stream fails."""
        self.decode_streams([stream])
        if stream.error is not None:
            raise stream.error

    def decode_streams(self, streams: Sequence[Stream]) -> list[Stream]:
        """Decode every complete chunk buffered by ``streams``, batching across streams.

        Each round stacks the caches of all ready streams and runs the encoder once, then the
        decoder advances all of them together. A stream that cannot be decoded (it belongs to
        another recognizer, or its chunk fails in the backend) gets ``stream.error`` set and is
        left out; the others are decoded normally. Returns the streams that failed.
        """
        failed: list[Stream] = []
        for s in streams:
            if s._rec is not self:
                s.error = StreamError("stream was created by another recognizer")
                failed.append(s)
        live = [s for s in streams if s.error is None]
        while True:
            ready = [s for s in live if s.is_ready]
            if not ready:
                break
            self._decode_round(ready, failed)
        done = [s for s in live if s.error is None and s._finished and not s._finalized]
        if done:
            self.decoder.finalize([s._state for s in done])
            for s in done:
                s._finalized = True
        return failed

    def _decode_round(self, ready: list[Stream], failed: list[Stream]) -> None:
        chunks, ok = [], []
        for s in ready:
            try:
                chunks.append(s._next_chunk())
                ok.append(s)
            except (IndexError, ValueError) as e:
                s.error = StreamError(f"cannot read features: {e}")
                failed.append(s)
        if not ok:
            return
        try:
            frames, caches = self._encode(chunks, ok)
        except RecognizerError:
            if len(ok) == 1:
                raise
            # isolate the stream at fault: run each alone
            good, parts = [], []
            for s, c in zip(ok, chunks, strict=True):
                try:
                    f, cs = self._encode([c], [s])
                except RecognizerError as e:
                    s.error = StreamError(f"encoder failed on this stream: {e}")
                    failed.append(s)
                    continue
                good.append(s)
                parts.append((f, cs[0]))
            if not good:
                return
            ok = good
            frames = np.concatenate([f for f, _ in parts], axis=0)
            caches = [c for _, c in parts]
        for s, c in zip(ok, caches, strict=True):
            s._caches = c
        self.decoder.decode_chunk(frames, [s._state for s in ok])

    def _encode(self, chunks: list[np.ndarray], streams: list[Stream]):
        """One batched encoder call; returns frames and per-stream caches."""
        specs = self.spec.caches
        try:
            batched = stack_caches([s._caches for s in streams], specs)
            frames, new = self.backend.encoder(np.stack(chunks), batched)
            frames = np.asarray(frames, dtype=np.float32)
            want = (len(streams), self.spec.chunk_frames, self.spec.joint_dim)
            if frames.shape != want:
                raise BackendError(f"encoder returned frames {frames.shape}, expected {want}")
            return frames, split_caches(new, specs, len(streams))
        except RecognizerError:
            raise
        except Exception as e:  # a runtime's own exception type (onnxruntime, executorch)
            raise BackendError(f"encoder call failed: {type(e).__name__}: {e}") from e

    # -- results and segments -------------------------------------------------------------------
    def get_result(self, stream: Stream) -> Result:
        st = stream._state
        hyp = self.decoder.best(st)
        shift = self.spec.frame_shift_s
        return Result(
            text=self.tokenizer.decode(list(hyp.tokens)),
            tokens=list(hyp.tokens),
            timestamps=[f * shift for f in hyp.frames],
            is_final=stream._finalized,
            segment=stream._segment,
            start_time=st.segment_start * shift,
            stats={**st.stats.as_dict(), "encoder_frames": st.frame_offset - st.segment_start},
        )

    def is_endpoint(self, stream: Stream) -> bool:
        """Whether an endpoint rule fires for the stream's current segment."""
        st = stream._state
        hyp = self.decoder.best(st)
        decoded = st.frame_offset - st.segment_start
        last = hyp.frames[-1] + 1 if hyp.frames else st.segment_start
        return detect_endpoint(
            self.config.endpoint,
            segment_frames=decoded,
            trailing_blank_frames=st.frame_offset - last,
            has_speech=bool(hyp.tokens),
            frame_shift_s=self.spec.frame_shift_s,
        )

    def reset(self, stream: Stream) -> None:
        """Start a new segment after an endpoint: the result is cleared, the audio, encoder
        caches and predictor context continue (the speaker did not change)."""
        stream._state = self.decoder.new_segment(stream._state)
        stream._segment += 1

    # -- whole files ----------------------------------------------------------------------------
    def transcribe(
        self, audio: str | os.PathLike[str] | np.ndarray, sample_rate: int | None = None
    ) -> Result:
        """Recognize a whole file (any format load_audio reads) or array, as a stream would."""
        if isinstance(audio, np.ndarray):
            if sample_rate is None:
                raise StreamError("transcribe(array) needs sample_rate=")
            samples, rate = audio, sample_rate
        else:
            if sample_rate is not None:
                raise StreamError("sample_rate= is only for arrays; a file has its own rate")
            rate = self.feature_config.sample_rate
            try:
                samples = load_audio(audio, target_rate=rate)
            except AudioError as e:
                raise StreamError(str(e)) from None
        s = self.create_stream()
        piece = int(TRANSCRIBE_PIECE_S * check_sample_rate(rate))
        for a in range(0, len(samples), piece):
            s.accept_waveform(rate, samples[a : a + piece])
            self.decode_stream(s)
        s.input_finished()
        self.decode_stream(s)
        return s.result
