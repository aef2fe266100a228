"""Streaming speech translation: a second decoding head driven by the same ASR encoder pass.

A HENT-SRT bundle (exported by ``edgeasr.export.st``) is an ordinary ASR bundle plus the ST
head's graphs and a ``translation.json`` sidecar (:class:`TranslationSpec`); ``model.json``
lists the sidecar and graphs in ``files``, so :meth:`Bundle.load` verifies their hashes.

Per chunk, :class:`SpeechTranslator` (a :class:`~edgeasr.stream.Recognizer`) runs the ASR
encoder once; the ASR greedy/gated decoder reads the frames as usual and the same frames go
through ``st_encoder`` (its own caches, a second set per stream) into a HAT greedy search over
the ST predictor/joint. That search *is* :class:`~edgeasr.decoding.greedy.GreedyDecoder`: the
ST graphs are wrapped in the backend interface it expects (:class:`OrtTranslationHead`), so the
ST blank penalty (HENT-SRT eq. 12, ``blank_logit - penalty``) is the decoder's own option.

ONNX Runtime only; no torch import.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeasr.backends.base import (
    BackendError,
    Caches,
    CacheSpec,
    RecognizerError,
    split_caches,
    stack_caches,
)
from edgeasr.bundle import Bundle, BundleError, GraphSpec, TensorSpec
from edgeasr.decoding.greedy import GreedyDecoder, GreedyState
from edgeasr.stream import Recognizer, RecognizerConfig, Result, Stream

__all__ = [
    "ST_CACHE_NAMES",
    "ST_GRAPH_NAMES",
    "TRANSLATION_JSON",
    "OrtTranslationHead",
    "SpeechTranslator",
    "TranslationResult",
    "TranslationSpec",
    "TranslationState",
    "Translator",
]

TRANSLATION_JSON = "translation.json"
TRANSLATION_SCHEMA_VERSION = 1
ST_GRAPH_NAMES = ("st_encoder", "st_predictor", "st_joint_blank", "st_joint_labels")
ST_CACHE_NAMES = ("st_attn_cache", "st_conv_cache", "st_processed_frames")


@dataclass
class TranslationSpec:
    """The parsed ``translation.json``: the ST head's shape, graphs, tokenizer and defaults.

    ``chunk_frames``: ST frames per ASR chunk (ASR ``chunk_frames / downsample``);
    ``caches``: the ``st_encoder`` cache inputs in order (batch axis ``"N"``).
    """

    target_lang: str
    vocab_size: int
    joint_dim: int
    context_size: int
    downsample: int
    chunk_frames: int
    caches: tuple[TensorSpec, ...]
    graphs: dict[str, dict[str, dict[str, GraphSpec]]]
    tokenizer: str
    tokens: str
    blank_penalty: float = 0.0
    model_config: dict[str, Any] = field(default_factory=dict)
    schema_version: int = TRANSLATION_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version, "target_lang": self.target_lang,
            "vocab_size": self.vocab_size, "joint_dim": self.joint_dim,
            "context_size": self.context_size, "downsample": self.downsample,
            "chunk_frames": self.chunk_frames, "caches": [c.to_dict() for c in self.caches],
            "graphs": {f: {p: {n: g.to_dict() for n, g in by_n.items()}
                           for p, by_n in by_p.items()} for f, by_p in self.graphs.items()},
            "tokenizer": self.tokenizer, "tokens": self.tokens,
            "blank_penalty": self.blank_penalty, "model_config": self.model_config,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = TRANSLATION_JSON) -> TranslationSpec:
        if not isinstance(d, dict):
            raise BundleError(f"{where}: expected an object")
        if d.get("schema_version") != TRANSLATION_SCHEMA_VERSION:
            raise BundleError(f"{where}: schema_version {d.get('schema_version')!r} is not "
                              f"{TRANSLATION_SCHEMA_VERSION} (re-export the bundle)")
        try:
            graphs = {
                f: {p: {n: GraphSpec.from_dict(g, f"{where}.graphs.{f}.{p}.{n}")
                        for n, g in by_n.items()} for p, by_n in by_f.items()}
                for f, by_f in d["graphs"].items()
            }
            spec = cls(
                target_lang=str(d["target_lang"]), vocab_size=int(d["vocab_size"]),
                joint_dim=int(d["joint_dim"]), context_size=int(d["context_size"]),
                downsample=int(d["downsample"]), chunk_frames=int(d["chunk_frames"]),
                caches=tuple(TensorSpec.from_dict(c, f"{where}.caches[{i}]")
                             for i, c in enumerate(d["caches"])),
                graphs=graphs, tokenizer=str(d["tokenizer"]), tokens=str(d["tokens"]),
                blank_penalty=float(d.get("blank_penalty", 0.0)),
                model_config=dict(d.get("model_config", {})),
            )
        except KeyError as e:
            raise BundleError(f"{where}: missing key {e}") from None
        for fmt, by_p in graphs.items():
            for prec, by_n in by_p.items():
                missing = [n for n in ST_GRAPH_NAMES if n not in by_n]
                if missing:
                    raise BundleError(f"{where}: graphs.{fmt}.{prec} lacks {missing}")
        return spec

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> TranslationSpec:
        """Read the sidecar of a loaded bundle; it must be listed (hashed) in model.json."""
        if not is_translation_bundle(bundle):
            raise BundleError(f"{bundle.root}: not a speech-translation bundle (model.json lists "
                              f"no {TRANSLATION_JSON}; export with edgeasr.export.st)")
        path = bundle.path(TRANSLATION_JSON)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise BundleError(f"{path}: cannot read ({e})") from None
        spec = cls.from_dict(raw, str(path))
        for by_p in spec.graphs.values():
            for by_n in by_p.values():
                for g in by_n.values():
                    if g.file not in bundle.manifest.files:
                        raise BundleError(f"{path}: graph {g.file} is not listed in model.json "
                                          "files (no hash to check it against)")
        return spec


@dataclass(frozen=True)
class _HeadSpec:
    """The part of :class:`~edgeasr.backends.base.BackendSpec` the greedy decoder reads."""

    vocab_size: int
    joint_dim: int
    context_size: int
    has_durations: bool = False
    durations: tuple[int, ...] = ()


class OrtTranslationHead:
    """The ST graphs under ONNX Runtime, shaped as the backend interface of the ASR decoders
    (``predictor``, ``joint_blank``, ``joint_labels``) plus ``st_encoder``."""

    def __init__(self, bundle: Bundle, spec: TranslationSpec, *, precision: str = "fp32",
                 num_threads: int = 1, providers: Sequence[str] | None = None) -> None:
        import onnxruntime as ort

        from edgeasr.backends.onnxruntime import _Graph, default_providers

        graphs = spec.graphs.get("onnx", {}).get(precision)
        if not graphs:
            raise BackendError(f"{bundle.source}: no onnx/{precision} ST graphs "
                               f"(have {sorted(spec.graphs.get('onnx', {}))})")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        prov = list(providers) if providers else default_providers()
        self._g = {n: _Graph(n, str(bundle.path(graphs[n].file)), graphs[n], opts, prov)
                   for n in ST_GRAPH_NAMES}
        self.spec = _HeadSpec(spec.vocab_size, spec.joint_dim, spec.context_size)
        self.cache_specs = tuple(
            CacheSpec(c.name, c.concrete_shape(1), c.dtype, c.batch_axis or 0)
            for c in spec.caches
        )

    def init_caches(self, batch: int) -> Caches:
        return {c.name: c.zeros(batch) for c in self.cache_specs}

    def st_encoder(self, frames: np.ndarray, caches: Caches) -> tuple[np.ndarray, Caches]:
        names = [c.name for c in self.cache_specs]
        out = self._g["st_encoder"](frames.astype(np.float32), *(caches[n] for n in names))
        new = {n: out["new_" + n] for n in names}
        return out["st_frames"], new

    def predictor(self, context: np.ndarray) -> np.ndarray:
        return self._g["st_predictor"](context.astype(np.int64))["p"]

    def joint_blank(self, e: np.ndarray, p: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = self._g["st_joint_blank"](e.astype(np.float32), p.astype(np.float32))
        return out["h"], out["blank_logit"], np.zeros((e.shape[0], 0), dtype=np.float32)

    def joint_labels(self, h: np.ndarray) -> np.ndarray:
        return self._g["st_joint_labels"](h)["label_logprobs"]


@dataclass
class TranslationState:
    """Per-stream ST state: the ST encoder caches and the ST greedy search state."""

    caches: Caches
    search: GreedyState


class Translator:
    """ST encoder + greedy HAT search over a :class:`OrtTranslationHead`, batched over streams.

    ``blank_penalty``: subtracted from the ST blank logit before the argmax (None: the bundle's
    default); ``max_symbols_per_frame``: tokens per ST frame (translations are often longer
    than the source, so more than the ASR's 1 helps).
    """

    def __init__(self, head: OrtTranslationHead, tokenizer: Any, spec: TranslationSpec,
                 blank_penalty: float | None = None, max_symbols_per_frame: int = 2) -> None:
        self.head = head
        self.tokenizer = tokenizer
        self.spec = spec
        self.blank_penalty = spec.blank_penalty if blank_penalty is None else float(blank_penalty)
        self.decoder = GreedyDecoder(head, max_symbols_per_frame=max_symbols_per_frame,
                                     blank_penalty=self.blank_penalty)  # type: ignore[arg-type]

    @classmethod
    def from_bundle(cls, bundle: Bundle, *, blank_penalty: float | None = None,
                    max_symbols_per_frame: int = 2, num_threads: int = 1,
                    providers: Sequence[str] | None = None) -> Translator:
        from edgeasr.tokenizer import Tokenizer

        spec = TranslationSpec.from_bundle(bundle)
        head = OrtTranslationHead(bundle, spec, num_threads=num_threads, providers=providers)
        tok = Tokenizer(bundle.path(spec.tokenizer))
        if tok.vocab_size != spec.vocab_size:
            raise BundleError(f"{spec.tokenizer}: {tok.vocab_size} pieces, translation.json "
                              f"says vocab_size {spec.vocab_size}")
        return cls(head, tok, spec, blank_penalty, max_symbols_per_frame)

    def init_state(self) -> TranslationState:
        return TranslationState(self.head.init_caches(1), self.decoder.init_state())

    def decode_chunk(self, frames: np.ndarray, states: list[TranslationState]) -> None:
        """``frames [N, C, J]``: the ASR encoder output of one chunk per stream."""
        batched = stack_caches([s.caches for s in states], self.head.cache_specs)
        st_frames, new = self.head.st_encoder(frames, batched)
        want = (len(states), self.spec.chunk_frames, self.spec.joint_dim)
        if tuple(st_frames.shape) != want:
            raise BackendError(f"st_encoder returned {tuple(st_frames.shape)}, expected {want}")
        for s, c in zip(states, split_caches(new, self.head.cache_specs, len(states)),
                        strict=True):
            s.caches = c
        self.decoder.decode_chunk(np.asarray(st_frames, np.float32), [s.search for s in states])

    def tokens(self, state: TranslationState) -> list[int]:
        return list(self.decoder.best(state.search).tokens)

    def new_segment(self, state: TranslationState) -> TranslationState:
        return TranslationState(state.caches, self.decoder.new_segment(state.search))


@dataclass
class TranslationResult(Result):
    """A :class:`~edgeasr.stream.Result` plus the segment's translation (target-language text
    and ST token ids)."""

    translation: str = ""
    translation_tokens: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "translation": self.translation,
                "translation_tokens": list(self.translation_tokens)}


def display_text(result: Result) -> str:
    """What a live display shows for a result: the transcript, and for a speech translator
    ``"transcript  => translation"`` (one line, so partial redraws stay one line)."""
    t = getattr(result, "translation", "")
    return f"{result.text}  => {t}" if t else result.text


def is_translation_bundle(bundle: Bundle) -> bool:
    """True when the bundle carries an ST head (``translation.json`` listed in model.json)."""
    return TRANSLATION_JSON in bundle.manifest.files


class SpeechTranslator(Recognizer):
    """A recognizer whose results also carry a translation, from the same encoder pass.

    Every ASR encoder call (:meth:`Recognizer._encode`, batched over ready streams) hands its
    frames to the :class:`Translator` before the ASR decoder sees them, so transcription and
    translation advance chunk by chunk together; endpoints/resets apply to both.
    """

    def __init__(self, backend: Any, tokenizer: Any, feature_config: Any,
                 config: RecognizerConfig | None, translator: Translator) -> None:
        super().__init__(backend, tokenizer, feature_config, config)
        self.translator = translator
        if translator.spec.chunk_frames * translator.spec.downsample != self.spec.chunk_frames:
            raise RecognizerError(
                f"ST head expects {translator.spec.chunk_frames} x {translator.spec.downsample}"
                f" ASR frames per chunk, the encoder gives {self.spec.chunk_frames}")

    @classmethod
    def from_bundle(  # type: ignore[override]
        cls, path: str | os.PathLike[str] | Bundle, *, decoding: Any = None,
        blank_penalty: float | None = None, max_symbols_per_frame: int = 2,
        num_threads: int = 1, endpoint: Any = None, verify_hashes: bool = True,
        precision: str | None = None, providers: Sequence[str] | None = None,
    ) -> SpeechTranslator:
        """Load an ST bundle (a path or a loaded :class:`Bundle`) with ONNX Runtime.

        ``blank_penalty`` overrides the bundle's ST default; ``precision`` picks the ASR graphs
        (default fp32 where present, as :meth:`Recognizer.from_bundle`); the ST head is fp32."""
        from edgeasr.backends.onnxruntime import OrtBackend
        from edgeasr.decoding import DecodingConfig
        from edgeasr.endpoint import EndpointConfig
        from edgeasr.stream import default_precision
        from edgeasr.tokenizer import Tokenizer

        bundle = path if isinstance(path, Bundle) else Bundle.load(path,
                                                                   verify_hashes=verify_hashes)
        translator = Translator.from_bundle(bundle, blank_penalty=blank_penalty,
                                            max_symbols_per_frame=max_symbols_per_frame,
                                            num_threads=num_threads, providers=providers)
        config = RecognizerConfig(decoding=decoding or DecodingConfig(),
                                  endpoint=endpoint or EndpointConfig())
        backend = OrtBackend(bundle, precision=precision or default_precision(bundle, "onnx"),
                             num_threads=num_threads, providers=providers)
        return cls(backend, Tokenizer(bundle.tokenizer_path), bundle.features, config,
                   translator)

    def create_stream(self, hotwords: Any = None) -> Stream:
        s = super().create_stream(hotwords)
        s._translation = self.translator.init_state()  # type: ignore[attr-defined]
        return s

    def _encode(self, chunks: list[np.ndarray], streams: list[Stream]):
        frames, caches = super()._encode(chunks, streams)
        try:
            self.translator.decode_chunk(frames, [s._translation for s in streams])  # type: ignore[attr-defined]
        except RecognizerError:
            raise
        except Exception as e:  # onnxruntime's own exception types
            raise BackendError(f"translation head failed: {type(e).__name__}: {e}") from e
        return frames, caches

    def get_result(self, stream: Stream) -> TranslationResult:
        base = super().get_result(stream)
        ids = self.translator.tokens(stream._translation)  # type: ignore[attr-defined]
        return TranslationResult(**vars(base), translation=self.translator.tokenizer.decode(ids),
                                 translation_tokens=ids)

    def reset(self, stream: Stream) -> None:
        super().reset(stream)
        stream._translation = self.translator.new_segment(stream._translation)  # type: ignore[attr-defined]
