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

from edgeasr.backends.base import BackendError, BackendSpec, Caches

try:
    import torch
    from executorch.runtime import Runtime
except ImportError as e:  # pragma: no cover - depends on the install
    raise BackendError(
        "the executorch backend needs ExecuTorch: pip install 'edgeasr[executorch]' "
        "(or use backend='onnxruntime')"
    ) from e

__all__ = ["DEFAULT_MAX_BATCH", "ExecuTorchBackend"]

GRAPHS = ("encoder", "predictor", "joint_blank", "joint_labels", "iam_joint")

#: Largest batch the exporter plans memory for (edgeasr.export.executorch.DEFAULT_MAX_BATCH).
DEFAULT_MAX_BATCH = 8


class _Method:
    """One loaded ``.pte`` method with the names model.json gives its inputs and outputs."""

    def __init__(self, name: str, path: str, spec: Any, max_batch: int) -> None:
        try:
            program = Runtime.get().load_program(path)
            self.method = program.load_method(spec.method)
        except Exception as e:  # the runtime raises RuntimeError/ValueError variants
            raise BackendError(f"{path}: cannot load ExecuTorch graph {name!r}: {e}") from e
        self.name = name
        self.inputs = spec.input_names
        self.outputs = spec.output_names
        self.in_axes = [t.batch_axis for t in spec.inputs]
        self.out_axes = [t.batch_axis for t in spec.outputs]
        self.max_batch = max_batch

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        try:
            outs = self.method.execute([torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        except Exception as e:
            shapes = [tuple(a.shape) for a in arrays]
            raise BackendError(f"ExecuTorch graph {self.name!r} failed on {shapes}: {e}") from e
        return [o.numpy() for o in outs]

    def __call__(self, *arrays: np.ndarray) -> dict[str, np.ndarray]:
        n = arrays[0].shape[self.in_axes[0]]
        if n <= self.max_batch:
            outs = self._run(list(arrays))
        else:
            parts = []
            for a in range(0, n, self.max_batch):
                sl = [
                    np.take(x, range(a, min(n, a + self.max_batch)), axis=ax)
                    for x, ax in zip(arrays, self.in_axes, strict=True)
                ]
                parts.append(self._run(sl))
            outs = [
                np.concatenate([p[i] for p in parts], axis=ax)
                for i, ax in enumerate(self.out_axes)
            ]
        return dict(zip(self.outputs, outs, strict=True))


class ExecuTorchBackend:
    """Backend over the ``executorch`` graphs of a loaded :class:`edgeasr.bundle.Bundle`."""

    def __init__(
        self, bundle: Any, *, precision: str = "fp32", max_batch: int = DEFAULT_MAX_BATCH
    ) -> None:
        if max_batch < 1:
            raise BackendError(f"max_batch must be >= 1, got {max_batch}")
        self.spec: BackendSpec = BackendSpec.from_bundle(bundle)
        graphs = bundle.graphs("executorch", precision)
        missing = [g for g in GRAPHS if g not in graphs]
        if missing:
            raise BackendError(
                f"{bundle.source}: executorch/{precision} lacks graph(s) {missing}; the runtime "
                f"needs {list(GRAPHS)}"
            )
        self._g = {
            n: _Method(n, str(bundle.path(graphs[n].file)), graphs[n], max_batch) for n in GRAPHS
        }
        self._cache_names = [c.name for c in self.spec.caches]

    @staticmethod
    def _durations(out: dict[str, np.ndarray], lead: tuple[int, ...]) -> np.ndarray:
        d = out.get("duration_logits")
        return d if d is not None else np.zeros((*lead, 0), dtype=np.float32)

    def init_caches(self, batch: int) -> Caches:
        return {c.name: c.zeros(batch) for c in self.spec.caches}

    def encoder(self, features: np.ndarray, caches: Caches) -> tuple[np.ndarray, Caches]:
        g = self._g["encoder"]
        out = g(features.astype(np.float32, copy=False), *(caches[n] for n in self._cache_names))
        new = dict(zip(self._cache_names, (out[o] for o in g.outputs[1:]), strict=True))
        return out[g.outputs[0]], new

    def predictor(self, context: np.ndarray) -> np.ndarray:
        g = self._g["predictor"]
        return g(context.astype(np.int64, copy=False))[g.outputs[0]]

    def joint_blank(
        self, e: np.ndarray, p: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = self._g["joint_blank"](e.astype(np.float32, copy=False),
                                     p.astype(np.float32, copy=False))
        return out["h"], out["blank_logit"], self._durations(out, (len(e),))

    def joint_labels(self, h: np.ndarray) -> np.ndarray:
        return self._g["joint_labels"](h.astype(np.float32, copy=False))["label_logprobs"]

    def iam_joint(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = self._g["iam_joint"](frames.astype(np.float32, copy=False))
        return out["blank_logit"], out["label_logprobs"], self._durations(out, frames.shape[:2])
