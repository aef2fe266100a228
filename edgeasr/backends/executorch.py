"""ExecuTorch backend: the bundle's ``.pte`` graphs run by the ExecuTorch python runtime.

The same five graphs as the ONNX bundle (:mod:`edgeasr.export.graphs`), lowered to XNNPACK.
ExecuTorch plans memory for the largest shape a graph was exported with, so a ``.pte`` accepts
at most ``max_batch`` rows; larger batches (many streams, or a beam over many streams) are run
in slices of ``max_batch`` and concatenated, which is exact because every graph is row-wise
independent along the batch axis.

The python runtime exchanges torch tensors, so this backend imports torch (the ExecuTorch
package depends on it); only the ONNX Runtime backend is torch-free.
"""

from __future__ import annotations

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
    import torch
    from executorch.runtime import Runtime
except ImportError as e:  # pragma: no cover - depends on the install
    raise BackendError(
        "the executorch backend needs ExecuTorch: pip install 'edgeasr[executorch]' "
        "(or use backend='onnxruntime')"
    ) from e

__all__ = ["DEFAULT_MAX_BATCH", "ExecuTorchBackend"]

#: Largest batch the exporter plans memory for (edgeasr.export.executorch.DEFAULT_MAX_BATCH).
DEFAULT_MAX_BATCH = 8


class _Method(LoadedGraph):
    """One loaded ``.pte`` method; batches beyond ``max_batch`` run in slices."""

    runtime = "ExecuTorch"

    def __init__(self, name: str, path: str, spec: Any, max_batch: int) -> None:
        super().__init__(name, path, spec)
        self.in_axes = [t.batch_axis for t in spec.inputs]
        self.out_axes = [t.batch_axis for t in spec.outputs]
        self.max_batch = max_batch

    def _load(self, path: str, spec: Any) -> None:
        self.method = Runtime.get().load_program(path).load_method(spec.method)

    def _execute(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        outs = self.method.execute([torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        # copies: outputs may live in the program's planned memory, which the next call reuses
        # (and a stream's new caches are fed back in as that call's inputs)
        return [o.numpy().copy() for o in outs]

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        n = arrays[0].shape[self.in_axes[0]]
        if n <= self.max_batch:
            return self._execute(arrays)
        parts = []
        for a in range(0, n, self.max_batch):
            sl = [
                np.take(x, range(a, min(n, a + self.max_batch)), axis=ax)
                for x, ax in zip(arrays, self.in_axes, strict=True)
            ]
            parts.append(self._execute(sl))
        return [
            np.concatenate([p[i] for p in parts], axis=ax) for i, ax in enumerate(self.out_axes)
        ]


class ExecuTorchBackend(GraphBackend):
    """Backend over the ``executorch`` graphs of a loaded :class:`edgeasr.bundle.Bundle`."""

    def __init__(
        self, bundle: Any, *, precision: str = "fp32", max_batch: int = DEFAULT_MAX_BATCH
    ) -> None:
        if max_batch < 1:
            raise BackendError(f"max_batch must be >= 1, got {max_batch}")
        graphs = load_graphs(
            bundle, "executorch", precision,
            lambda name, path, spec: _Method(name, path, spec, max_batch),
        )
        super().__init__(BackendSpec.from_bundle(bundle), graphs)
