"""The backend interface: the few graph calls a streaming transducer needs, over numpy arrays.

Every backend (ONNX Runtime, ExecuTorch, PyTorch) implements :class:`Backend`, so decoders and
the recognizer are written once and tested once (against a small numpy backend in the tests).
The call names are the graph names of the bundle (docs/architecture.md, last section):

- ``encoder(features[N, T, F], caches) -> (frames[N, C, J], caches)``
- ``predictor(context[N, K] int64) -> p[N, J]``
- ``joint_blank(e[N, J], p[N, J]) -> (h[N, J], blank_logit[N], duration_logits[N, D])``
- ``joint_labels(h[N, J]) -> label_logprobs[N, V-1]``
- ``iam_joint(frames[N, C, J]) -> (blank_logit[N, C], label_logprobs[N, C, V-1],
  duration_logits[N, C, D])``

The joint is split in two so that a decoder that has already decided "blank" from the cheap
blank head never pays for the label softmax (dual blank thresholding). ``D`` is 0 for a model
without a TDT duration head.

Encoder caches are an ordered ``dict[name, array]`` whose layout (batch axis in particular) is
described by :class:`CacheSpec`; :func:`stack_caches` / :func:`split_caches` move per-stream
caches in and out of one batched encoder call.

The runtimes that execute the bundle's exported graphs (ONNX Runtime, ExecuTorch) differ only in
how one graph is loaded and run. :class:`LoadedGraph` is that difference (one subclass per
runtime), and :class:`GraphBackend` is everything else, written once: finding the five graphs of
a bundle variant (:func:`load_graphs`), binding inputs and outputs by the names model.json
records, and mapping the interface calls onto the graphs. This module imports no runtime.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from edgeasr.bundle import EDGEASR_GRAPHS
from edgeasr.errors import EdgeAsrError

if TYPE_CHECKING:
    from edgeasr.bundle import Bundle, GraphSpec

__all__ = [
    "GRAPHS",
    "Backend",
    "BackendError",
    "CacheSpec",
    "Caches",
    "BackendSpec",
    "GraphBackend",
    "LoadedGraph",
    "RecognizerError",
    "load_graphs",
    "split_caches",
    "stack_caches",
]

#: Per-stream (or batched) encoder caches, in the order the encoder graph takes them.
Caches = dict[str, np.ndarray]


class RecognizerError(EdgeAsrError, ValueError):
    """Base class of every error the streaming runtime raises on purpose (bad input, bad model).

    Catching this catches all of them; the message always names the problem.
    """


class BackendError(RecognizerError):
    """A model graph could not be loaded or run (missing file, shape mismatch, runtime absent)."""


@dataclass(frozen=True)
class CacheSpec:
    """One encoder cache tensor: name, per-stream shape (batch dim = 1), dtype and batch axis.

    Example (sherpa-onnx conformer layout): ``CacheSpec("attn", (L, left, 1, D), "float32", 2)``.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    batch_axis: int

    def __post_init__(self) -> None:
        if not 0 <= self.batch_axis < len(self.shape):
            raise BackendError(
                f"cache {self.name!r}: batch_axis {self.batch_axis} outside shape {self.shape}"
            )
        if self.shape[self.batch_axis] != 1:
            raise BackendError(
                f"cache {self.name!r}: per-stream shape {self.shape} must have 1 on the batch axis"
            )

    def zeros(self, batch: int) -> np.ndarray:
        """Initial (empty-history) cache for ``batch`` streams."""
        shape = list(self.shape)
        shape[self.batch_axis] = batch
        return np.zeros(shape, dtype=np.dtype(self.dtype))


@dataclass(frozen=True)
class BackendSpec:
    """What the runtime must know about a model; filled from the bundle's model.json.

    Attributes:
        vocab_size: ``V``, blank (id 0) included.
        joint_dim: ``J``, width of encoder frames, predictor output and joint hidden.
        chunk_frames: ``C``, encoder frames produced per encoder call.
        feature_frames: ``T``, feature frames the encoder reads per call (``4C + 7``).
        feature_shift: feature frames between consecutive chunks (``4C``); the rest is re-read
            right context (``pad_length``).
        frame_shift_s: seconds between encoder frames (feature shift x subsampling); used for
            timestamps and endpointing, never hard-coded.
        feature_dim: fbank bins per feature frame.
        context_size: tokens the stateless predictor looks at.
        durations: TDT durations (encoder frames) of the duration head, empty if none.
        tail_padding_s: silence appended by ``input_finished()`` so the last word is emitted.
        caches: encoder cache layout, in graph order.
        iam_threshold, hat_threshold: recommended gate thresholds (dual blank thresholding).
        max_symbols_per_frame: recommended cap on tokens per frame in greedy search.
    """

    vocab_size: int
    joint_dim: int
    chunk_frames: int
    feature_frames: int
    feature_shift: int
    frame_shift_s: float
    feature_dim: int = 80
    context_size: int = 2
    durations: tuple[int, ...] = ()
    tail_padding_s: float = 0.5
    caches: tuple[CacheSpec, ...] = field(default_factory=tuple)
    iam_threshold: float = 0.95
    hat_threshold: float = 0.95
    max_symbols_per_frame: int = 1

    def __post_init__(self) -> None:
        checks = {
            "vocab_size": self.vocab_size >= 2,
            "joint_dim": self.joint_dim >= 1,
            "chunk_frames": self.chunk_frames >= 1,
            "feature_shift": self.feature_shift >= 1,
            "feature_frames": self.feature_frames >= self.feature_shift,
            "frame_shift_s": self.frame_shift_s > 0,
            "context_size": self.context_size >= 1,
            "tail_padding_s": self.tail_padding_s >= 0,
            "durations": all(d >= 0 for d in self.durations)
            and len(set(self.durations)) == len(self.durations),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise BackendError(f"invalid model spec field(s) {bad}: {self}")

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> BackendSpec:
        """The runtime view of a loaded bundle's ``model.json``."""
        m, c, d = bundle.model, bundle.chunk, bundle.decoding
        caches = []
        for t in bundle.caches:
            axis = t.batch_axis
            if axis is None:
                raise BackendError(f"cache {t.name!r} has no batch dimension 'N' in {t.shape}")
            caches.append(CacheSpec(t.name, t.concrete_shape(1), t.dtype, axis))
        return cls(
            vocab_size=m.vocab_size,
            joint_dim=m.joint_dim,
            chunk_frames=c.chunk_frames,
            feature_frames=c.input_frames,
            feature_shift=c.feature_frames_per_chunk,
            frame_shift_s=c.encoder_frame_shift_s,
            feature_dim=bundle.features.num_mel_bins,
            context_size=m.context_size,
            durations=tuple(int(x) for x in m.tdt_durations),
            tail_padding_s=c.tail_padding_seconds,
            caches=tuple(caches),
            iam_threshold=d.theta_iam,
            hat_threshold=d.theta_hat,
            max_symbols_per_frame=d.max_symbols_per_frame,
        )

    @property
    def num_labels(self) -> int:
        """``V - 1``: width of the label head (blank excluded)."""
        return self.vocab_size - 1

    @property
    def has_durations(self) -> bool:
        return len(self.durations) > 0


@runtime_checkable
class Backend(Protocol):
    """The graph calls of one loaded model; stateless apart from the loaded weights.

    All arrays are numpy; float tensors are float32, token contexts int64. A backend is shared
    by every stream of a recognizer, so it must not keep per-stream state.
    """

    spec: BackendSpec

    def init_caches(self, batch: int) -> Caches:
        """Zero caches for ``batch`` streams, in graph order."""
        ...

    def encoder(self, features: np.ndarray, caches: Caches) -> tuple[np.ndarray, Caches]:
        """One chunk: ``features[N, T, F]`` -> ``(frames[N, C, J], new_caches)``."""
        ...

    def predictor(self, context: np.ndarray) -> np.ndarray:
        """``context[N, K]`` int64 (blank 0 pads the start) -> ``p[N, J]``."""
        ...

    def joint_blank(
        self, e: np.ndarray, p: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(e[N, J], p[N, J])`` -> ``(h[N, J], blank_logit[N], duration_logits[N, D])``."""
        ...

    def joint_labels(self, h: np.ndarray) -> np.ndarray:
        """``h[N, J]`` -> label log-probs ``[N, V-1]`` (softmax over non-blank ids 1..V-1)."""
        ...

    def iam_joint(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Null-predictor joint of a whole chunk: ``frames[N, C, J]`` ->
        ``(blank_logit[N, C], label_logprobs[N, C, V-1], duration_logits[N, C, D])``."""
        ...


def stack_caches(per_stream: Sequence[Caches], specs: Sequence[CacheSpec]) -> Caches:
    """Concatenate single-stream caches along each cache's batch axis (one encoder call)."""
    if not per_stream:
        raise BackendError("stack_caches: no streams given")
    if len(per_stream) == 1:  # one stream: its own arrays, no copy (they are never mutated)
        c = per_stream[0]
        missing = [s.name for s in specs if s.name not in c]
        if missing:
            raise BackendError(f"stream caches lack {missing[0]!r}")
        return {s.name: c[s.name] for s in specs}
    out: Caches = {}
    for spec in specs:
        try:
            parts = [c[spec.name] for c in per_stream]
            out[spec.name] = np.concatenate(parts, axis=spec.batch_axis)
        except KeyError as e:
            raise BackendError(f"stream caches lack {spec.name!r}") from e
        except ValueError as e:
            raise BackendError(f"cache {spec.name!r} shapes differ between streams: {e}") from e
    return out


def split_caches(batched: Caches, specs: Sequence[CacheSpec], n: int) -> list[Caches]:
    """Inverse of :func:`stack_caches`: one contiguous single-stream dict per stream."""
    out: list[Caches] = [{} for _ in range(n)]
    for spec in specs:
        arr = batched[spec.name]
        if arr.shape[spec.batch_axis] != n:
            raise BackendError(
                f"cache {spec.name!r}: batch axis {spec.batch_axis} has "
                f"{arr.shape[spec.batch_axis]} entries, expected {n}"
            )
        if n == 1:
            out[0][spec.name] = np.ascontiguousarray(arr)  # a runtime's output: no copy
            continue
        for i, part in enumerate(np.split(arr, n, axis=spec.batch_axis)):
            out[i][spec.name] = np.ascontiguousarray(part)
    return out


# ------------------------------------------------------------------------------ graph backends

#: The graphs a bundle variant must hold for the runtime (docs/architecture.md), in load order.
GRAPHS = EDGEASR_GRAPHS


class LoadedGraph(ABC):
    """One exported graph loaded in some runtime, called with positional numpy arrays and
    answering ``{output name: array}``.

    The input and output names come from model.json, not from the graph file, so a graph
    re-exported with another output order still binds correctly. A subclass says how its
    runtime loads a file (:meth:`_load`) and runs it (:meth:`_run`); loading and running
    errors of any runtime become one :class:`BackendError` naming the graph and the shapes.
    """

    #: The runtime's name in error messages ("ONNX", "ExecuTorch").
    runtime: str = "model"

    def __init__(self, name: str, path: str, spec: GraphSpec) -> None:
        self.name = name
        self.inputs: list[str] = list(spec.input_names)
        self.outputs: list[str] = list(spec.output_names)
        try:
            self._load(path, spec)
        except Exception as e:  # each runtime raises its own exception types
            raise BackendError(f"{path}: cannot load {self.runtime} graph {name!r}: {e}") from e

    @abstractmethod
    def _load(self, path: str, spec: GraphSpec) -> None:
        """Load the graph file (called once, from the constructor)."""

    @abstractmethod
    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Run the graph; the outputs in :attr:`outputs` order."""

    def __call__(self, *arrays: np.ndarray) -> dict[str, np.ndarray]:
        try:
            outs = self._run(list(arrays))
        except BackendError:
            raise
        except Exception as e:
            shapes = {k: tuple(a.shape) for k, a in zip(self.inputs, arrays, strict=False)}
            raise BackendError(
                f"{self.runtime} graph {self.name!r} failed on inputs {shapes}: {e}"
            ) from e
        return dict(zip(self.outputs, outs, strict=True))


def load_graphs(
    bundle: Bundle,
    fmt: str,
    precision: str,
    load: Callable[[str, str, GraphSpec], LoadedGraph],
    remedy: str = "",
) -> dict[str, LoadedGraph]:
    """Load the :data:`GRAPHS` of the bundle variant ``fmt/precision`` with ``load(name, path,
    spec)``; a variant lacking any of them is refused before anything loads, naming them
    (``remedy`` tells how to get them)."""
    graphs = bundle.graphs(fmt, precision)
    missing = [g for g in GRAPHS if g not in graphs]
    if missing:
        raise BackendError(
            f"{bundle.source}: {fmt}/{precision} lacks graph(s) {missing}; the runtime needs "
            f"{list(GRAPHS)}{remedy}"
        )
    return {n: load(n, str(bundle.path(graphs[n].file)), graphs[n]) for n in GRAPHS}


class GraphBackend:
    """The backend interface over the five loaded graphs of a bundle, for any runtime.

    Inputs are made contiguous arrays of the dtype the graphs were exported with (float32
    tensors, int64 token contexts); a model without a duration head gets empty duration
    logits, as the interface promises.
    """

    def __init__(self, spec: BackendSpec, graphs: dict[str, LoadedGraph]) -> None:
        self.spec = spec
        self._g = graphs
        self._cache_names = [c.name for c in spec.caches]
        enc_out = graphs["encoder"].outputs
        if len(enc_out) != 1 + len(self._cache_names):
            raise BackendError(f"encoder outputs {enc_out}: expected frames + one per cache")

    @staticmethod
    def _f32(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.float32)

    @staticmethod
    def _durations(out: dict[str, np.ndarray], lead: tuple[int, ...]) -> np.ndarray:
        d = out.get("duration_logits")
        return d if d is not None else np.zeros((*lead, 0), dtype=np.float32)

    def init_caches(self, batch: int) -> Caches:
        return {c.name: c.zeros(batch) for c in self.spec.caches}

    def encoder(self, features: np.ndarray, caches: Caches) -> tuple[np.ndarray, Caches]:
        g = self._g["encoder"]
        out = g(self._f32(features), *(caches[n] for n in self._cache_names))
        new = {n: out[o] for n, o in zip(self._cache_names, g.outputs[1:], strict=True)}
        return out[g.outputs[0]], new

    def predictor(self, context: np.ndarray) -> np.ndarray:
        g = self._g["predictor"]
        return g(np.ascontiguousarray(context, dtype=np.int64))[g.outputs[0]]

    def joint_blank(
        self, e: np.ndarray, p: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = self._g["joint_blank"](self._f32(e), self._f32(p))
        return out["h"], out["blank_logit"], self._durations(out, (len(e),))

    def joint_labels(self, h: np.ndarray) -> np.ndarray:
        return self._g["joint_labels"](self._f32(h))["label_logprobs"]

    def iam_joint(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = self._g["iam_joint"](self._f32(frames))
        return out["blank_logit"], out["label_logprobs"], self._durations(out, frames.shape[:2])
