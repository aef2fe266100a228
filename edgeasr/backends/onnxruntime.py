"""ONNX Runtime backend: the bundle's five ONNX graphs behind the backend interface.

One ``InferenceSession`` per graph, created once per recognizer and shared by all its streams
(batch = streams). Inputs and outputs are bound by the names recorded in ``model.json``, so a
graph re-exported with another output order still works. This module must never import torch.

Threads: ``num_threads`` sets intra-op parallelism of every session (inter-op is 1: the graphs
are small and sequential). Providers: by default CUDA when this onnxruntime build has it, then
CPU; pass ``providers=["CPUExecutionProvider"]`` to force the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeasr.backends.base import BackendError, BackendSpec, Caches

try:
    import onnxruntime as ort
except ImportError as e:  # pragma: no cover - onnxruntime is a base dependency
    raise BackendError("the onnxruntime backend needs onnxruntime: pip install onnxruntime") from e

__all__ = ["OrtBackend", "default_providers"]

GRAPHS = ("encoder", "predictor", "joint_blank", "joint_labels", "iam_joint")


def default_providers() -> list[str]:
    """CUDA first when available in this onnxruntime build, CPU always."""
    have = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


class _Graph:
    """One session with the names it was exported with."""

    def __init__(self, name: str, path: str, spec: Any, options: Any, providers: list[str]):
        try:
            self.session = ort.InferenceSession(path, sess_options=options, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BackendError(f"{path}: cannot load ONNX graph {name!r}: {e}") from e
        self.name = name
        self.inputs = spec.input_names
        self.outputs = spec.output_names
        got = [i.name for i in self.session.get_inputs()]
        if got != self.inputs:
            raise BackendError(f"{path}: graph inputs {got} differ from model.json {self.inputs}")

    def __call__(self, *arrays: np.ndarray) -> dict[str, np.ndarray]:
        feeds = dict(zip(self.inputs, arrays, strict=True))
        try:
            outs = self.session.run(self.outputs, feeds)
        except Exception as e:
            shapes = {k: tuple(v.shape) for k, v in feeds.items()}
            raise BackendError(f"ONNX graph {self.name!r} failed on inputs {shapes}: {e}") from e
        return dict(zip(self.outputs, outs, strict=True))


class OrtBackend:
    """Backend over the ``onnx`` graphs of a loaded :class:`edgeasr.bundle.Bundle`."""

    def __init__(
        self,
        bundle: Any,
        *,
        precision: str = "fp32",
        num_threads: int = 1,
        providers: Sequence[str] | None = None,
    ) -> None:
        if num_threads < 1:
            raise BackendError(f"num_threads must be >= 1, got {num_threads}")
        self.spec: BackendSpec = BackendSpec.from_bundle(bundle)
        graphs = bundle.graphs("onnx", precision)
        missing = [g for g in GRAPHS if g not in graphs]
        if missing:
            raise BackendError(
                f"{bundle.source}: onnx/{precision} lacks graph(s) {missing}; the runtime needs "
                f"{list(GRAPHS)} (re-export with the split joint)"
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.providers = list(providers) if providers else default_providers()
        unknown = sorted(set(self.providers) - set(ort.get_available_providers()))
        if unknown:
            raise BackendError(
                f"provider(s) {unknown} not available in this onnxruntime "
                f"(have {ort.get_available_providers()})"
            )
        self._g = {
            name: _Graph(name, str(bundle.path(graphs[name].file)), graphs[name], opts,
                         self.providers)
            for name in GRAPHS
        }
        self._cache_names = [c.name for c in self.spec.caches]
        enc_out = self._g["encoder"].outputs
        if len(enc_out) != 1 + len(self._cache_names):
            raise BackendError(f"encoder outputs {enc_out}: expected frames + one per cache")

    def _durations(self, out: dict[str, np.ndarray], lead: tuple[int, ...]) -> np.ndarray:
        d = out.get("duration_logits")
        return d if d is not None else np.zeros((*lead, 0), dtype=np.float32)

    def init_caches(self, batch: int) -> Caches:
        return {c.name: c.zeros(batch) for c in self.spec.caches}

    def encoder(self, features: np.ndarray, caches: Caches) -> tuple[np.ndarray, Caches]:
        g = self._g["encoder"]
        ins = [np.ascontiguousarray(features, dtype=np.float32)]
        ins += [caches[n] for n in self._cache_names]
        out = g(*ins)
        names = g.outputs
        new = {n: out[o] for n, o in zip(self._cache_names, names[1:], strict=True)}
        return out[names[0]], new

    def predictor(self, context: np.ndarray) -> np.ndarray:
        g = self._g["predictor"]
        return g(np.ascontiguousarray(context, dtype=np.int64))[g.outputs[0]]

    def joint_blank(
        self, e: np.ndarray, p: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = self._g["joint_blank"](
            np.ascontiguousarray(e, dtype=np.float32), np.ascontiguousarray(p, dtype=np.float32)
        )
        return out["h"], out["blank_logit"], self._durations(out, (len(e),))

    def joint_labels(self, h: np.ndarray) -> np.ndarray:
        return self._g["joint_labels"](np.ascontiguousarray(h, dtype=np.float32))[
            "label_logprobs"
        ]

    def iam_joint(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = self._g["iam_joint"](np.ascontiguousarray(frames, dtype=np.float32))
        return out["blank_logit"], out["label_logprobs"], self._durations(out, frames.shape[:2])
