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

from edgeasr.backends.base import (
    BackendError,
    BackendSpec,
    GraphBackend,
    LoadedGraph,
    load_graphs,
)

try:
    import onnxruntime as ort
except ImportError as e:  # pragma: no cover - onnxruntime is a base dependency
    raise BackendError("the onnxruntime backend needs onnxruntime: pip install onnxruntime") from e

__all__ = ["OrtBackend", "default_providers"]


def default_providers() -> list[str]:
    """CUDA first when available in this onnxruntime build, CPU always."""
    have = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


class _Graph(LoadedGraph):
    """One ``InferenceSession``; its inputs must carry the names model.json records (feeds are
    bound by name)."""

    runtime = "ONNX"

    def __init__(self, name: str, path: str, spec: Any, options: Any, providers: list[str]):
        self._options, self._providers = options, providers
        super().__init__(name, path, spec)
        got = [i.name for i in self.session.get_inputs()]
        if got != self.inputs:
            raise BackendError(f"{path}: graph inputs {got} differ from model.json {self.inputs}")

    def _load(self, path: str, spec: Any) -> None:
        self.session = ort.InferenceSession(
            path, sess_options=self._options, providers=self._providers
        )

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.outputs, dict(zip(self.inputs, arrays, strict=True)))


class OrtBackend(GraphBackend):
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
        graphs = load_graphs(
            bundle, "onnx", precision,
            lambda name, path, spec: _Graph(name, path, spec, opts, self.providers),
            remedy=" (re-export with the split joint)",
        )
        super().__init__(BackendSpec.from_bundle(bundle), graphs)
