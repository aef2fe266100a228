"""Parity of an exported graph against the torch model it came from.

The encoder check streams several consecutive chunks and lets each side carry *its own* caches,
so an error in a cache output (wrong slice, wrong order) shows up in the following chunks'
frames, not only in the cache tensors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from edgeasr.export.graphs import GraphDef
from torch import nn

__all__ = ["Runner", "onnx_runner", "pte_runner", "graph_parity", "encoder_parity"]

#: Runs a graph: inputs in graph order (numpy) -> outputs in graph order (numpy).
Runner = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


def onnx_runner(path: str | os.PathLike[str]) -> Runner:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return list(sess.run(None, dict(zip(names, inputs, strict=True))))

    return run


def pte_runner(path: str | os.PathLike[str]) -> Runner:
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(Path(path)).load_method("forward")

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        outs = method.execute([torch.from_numpy(np.ascontiguousarray(x)) for x in inputs])
        return [o.detach().numpy() for o in outs]

    return run


def _max_diff(a: Sequence[np.ndarray], b: Sequence[torch.Tensor]) -> float:
    if len(a) != len(b):
        raise ValueError(f"output count differs: {len(a)} vs {len(b)}")
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        y = y.detach().numpy()
        if x.shape != y.shape:
            raise ValueError(f"output shape differs: {x.shape} vs {y.shape}")
        if x.size:
            worst = max(worst, float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max()))
    return worst


@torch.no_grad()
def graph_parity(graph: GraphDef, run: Runner, batch: int = 3, seed: int = 1) -> float:
    """Max |exported - torch| of a stateless graph on random inputs with a new batch size."""
    gen = torch.Generator().manual_seed(seed)
    inputs = []
    for x, axis in zip(graph.example_inputs, graph.input_batch_axes, strict=True):
        shape = list(x.shape)
        shape[axis] = batch
        if x.dtype == torch.int64:
            high = int(getattr(graph.module, "vocab_size", 0) or 2)
            inputs.append(torch.randint(0, max(high, 2), shape, generator=gen))
        else:
            inputs.append(torch.randn(shape, generator=gen))
    ref = graph.module(*inputs)
    ref = ref if isinstance(ref, tuple) else (ref,)
    return _max_diff(run([x.numpy() for x in inputs]), ref)


@torch.no_grad()
def encoder_parity(
    model: nn.Module,
    run: Runner,
    num_chunks: int = 3,
    batch: int = 2,
    features: np.ndarray | None = None,
    seed: int = 0,
) -> float:
    """Max |exported - torch| over ``num_chunks`` consecutive chunks, each side carrying its own
    caches. ``features [N, frames, F]`` (default: random) are sliced exactly as streaming does."""
    from edgeasr.train.model import EncoderCaches

    cfg = model.cfg
    t_in = cfg.chunk_input_frames()
    shift = cfg.subsampling * cfg.chunk_size
    if features is None:
        gen = torch.Generator().manual_seed(seed)
        total = shift * (num_chunks - 1) + t_in
        feats = torch.randn(batch, total, cfg.feature_dim, generator=gen)
    else:
        feats = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        if feats.shape[1] < shift * (num_chunks - 1) + t_in:
            raise ValueError(f"features too short for {num_chunks} chunks: {tuple(feats.shape)}")
    caches = EncoderCaches.init(feats.shape[0], cfg)
    theirs = [c.numpy() for c in caches.to_tuple()]
    worst = 0.0
    for k in range(num_chunks):
        chunk = feats[:, k * shift : k * shift + t_in]
        frames, caches = model.encoder.forward_chunk(chunk, caches)
        out = run([chunk.numpy(), *theirs])
        worst = max(worst, _max_diff(out, (frames, *caches.to_tuple())))
        theirs = out[1:]
    return worst
