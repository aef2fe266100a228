"""The exported graphs as small torch modules, shared by the ONNX and ExecuTorch exporters.

Each wrapper turns one call of the runtime backend interface (docs/architecture.md, "Exported
graphs") into a module with flat tensor inputs/outputs, and :class:`GraphDef` records its names,
example inputs and batch axes. Both exporters consume the same definitions, so an ONNX graph and
a ``.pte`` graph of one bundle always have identical signatures.

Signatures (``N`` = batch of streams, ``D`` only when the model has a TDT duration head):

* ``encoder(features[N, T, F], attn_cache, conv_cache, processed_frames)
  -> (frames[N, C, J], new_attn_cache, new_conv_cache, new_processed_frames)``
* ``predictor(context[N, K] int64) -> p[N, J]``
* ``joint_blank(e[N, J], p[N, J]) -> (h[N, J], blank_logit[N] [, duration_logits[N, D]])``
* ``joint_labels(h[N, J]) -> label_logprobs[N, V-1]``: log-softmax over the non-blank ids, i.e.
  ``log P(label | not blank)``; the full HAT log-prob of label ``k`` is
  ``logsigmoid(-blank_logit) + label_logprobs[k-1]``.
* ``iam_joint(frames[N, C, J]) -> (blank_logit[N, C], label_logprobs[N, C, V-1]
  [, duration_logits[N, C, D]])``: the null-predictor joint (``p = 0``) on a whole chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edgeasr.bundle import TensorSpec

__all__ = ["GraphDef", "build_graphs", "GRAPH_NAMES", "CACHE_OUTPUT_PREFIX"]

GRAPH_NAMES = ("encoder", "predictor", "joint_blank", "joint_labels", "iam_joint")
CACHE_OUTPUT_PREFIX = "new_"

_DTYPES = {torch.float32: "float32", torch.int64: "int64", torch.int32: "int32"}


@dataclass
class GraphDef:
    """One graph to export: the module, example inputs, names and the batch axis of each tensor."""

    name: str
    module: nn.Module
    example_inputs: tuple[Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    input_batch_axes: tuple[int, ...]
    output_batch_axes: tuple[int, ...]

    def export(
        self, module: nn.Module | None = None, max_batch: int = 1024
    ) -> torch.export.ExportedProgram:
        """``torch.export`` with a dynamic batch of 1..``max_batch``.

        ExecuTorch plans memory for the largest shape, so it exports with a small
        ``max_batch``; ONNX Runtime allocates per call and takes the default. ``module``
        replaces :attr:`module` (a PT2E-quantized copy, say) with the same signature.
        """
        batch = torch.export.Dim("N", min=1, max=max_batch)
        dynamic = tuple({axis: batch} for axis in self.input_batch_axes)
        with torch.no_grad():
            return torch.export.export(
                self.module if module is None else module, self.example_inputs,
                dynamic_shapes=dynamic,
            )

    def input_specs(self) -> tuple[TensorSpec, ...]:
        return _specs(self.example_inputs, self.input_names, self.input_batch_axes)

    def output_specs(self) -> tuple[TensorSpec, ...]:
        with torch.no_grad():
            outs = self.module(*self.example_inputs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        return _specs(outs, self.output_names, self.output_batch_axes)


def _specs(
    tensors: tuple[Tensor, ...], names: tuple[str, ...], axes: tuple[int, ...]
) -> tuple[TensorSpec, ...]:
    out = []
    for t, name, axis in zip(tensors, names, axes, strict=True):
        shape: list[int | str] = list(t.shape)
        shape[axis] = "N"
        out.append(TensorSpec(name, tuple(shape), _DTYPES[t.dtype]))
    return tuple(out)


class EncoderGraph(nn.Module):
    """``Encoder.forward_chunk`` over flat tensors (caches in ``CACHE_NAMES`` order)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self, features: Tensor, attn_cache: Tensor, conv_cache: Tensor, processed_frames: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.encoder.forward_chunk_tuple(features, attn_cache, conv_cache, processed_frames)


class PredictorGraph(nn.Module):
    def __init__(self, predictor: nn.Module) -> None:
        super().__init__()
        self.predictor = predictor

    def forward(self, context: Tensor) -> Tensor:
        return self.predictor.step(context)


class JointBlankGraph(nn.Module):
    """The cheap half of the joint: hidden state, blank logit (and TDT duration logits)."""

    def __init__(self, joint: nn.Module) -> None:
        super().__init__()
        self.joint = joint

    def forward(self, e: Tensor, p: Tensor) -> tuple[Tensor, ...]:
        h = torch.tanh(e + p)
        blank = self.joint.blank_head(h).squeeze(-1)
        if self.joint.duration_head is None:
            return h, blank
        return h, blank, self.joint.duration_head(h)


class JointLabelsGraph(nn.Module):
    """The expensive half: ``log_softmax`` over the ``V - 1`` non-blank labels."""

    def __init__(self, joint: nn.Module) -> None:
        super().__init__()
        self.joint = joint

    def forward(self, h: Tensor) -> Tensor:
        return torch.log_softmax(self.joint.label_head(h), dim=-1)


class IamJointGraph(nn.Module):
    """Null-predictor joint (``p = 0``) on every frame of a chunk in one call."""

    def __init__(self, joint: nn.Module) -> None:
        super().__init__()
        self.joint = joint

    def forward(self, frames: Tensor) -> tuple[Tensor, ...]:
        h = torch.tanh(frames)
        blank = self.joint.blank_head(h).squeeze(-1)
        labels = torch.log_softmax(self.joint.label_head(h), dim=-1)
        if self.joint.duration_head is None:
            return blank, labels
        return blank, labels, self.joint.duration_head(h)


def build_graphs(model: nn.Module, batch: int = 2) -> dict[str, GraphDef]:
    """The five graphs of a ``Transducer`` (in eval mode), with example inputs of ``batch``.

    ``batch`` >= 2 so that exporters cannot specialize the batch dimension to 1.
    """
    from edgeasr.train.model import CACHE_NAMES, EncoderCaches

    if batch < 2:
        raise ValueError(f"example batch must be >= 2 (1 gets specialized away), got {batch}")
    model.eval()
    cfg = model.cfg
    j, n = cfg.joint_dim, batch
    tdt = model.joint.duration_head is not None
    gen = torch.Generator().manual_seed(0)
    caches = EncoderCaches.init(n, cfg)
    feats = torch.randn(n, cfg.chunk_input_frames(), cfg.feature_dim, generator=gen)
    e = torch.randn(n, j, generator=gen)
    frames = torch.randn(n, cfg.chunk_size, j, generator=gen)
    context = torch.zeros(n, cfg.context_size, dtype=torch.int64)
    cache_axes = (2, 2, 0)
    dur = ("duration_logits",) if tdt else ()
    return {
        "encoder": GraphDef(
            "encoder", EncoderGraph(model.encoder), (feats, *caches.to_tuple()),
            ("features", *CACHE_NAMES),
            ("frames", *(CACHE_OUTPUT_PREFIX + c for c in CACHE_NAMES)),
            (0, *cache_axes), (0, *cache_axes),
        ),
        "predictor": GraphDef(
            "predictor", PredictorGraph(model.predictor), (context,), ("context",), ("p",),
            (0,), (0,),
        ),
        "joint_blank": GraphDef(
            "joint_blank", JointBlankGraph(model.joint), (e, torch.tanh(e)), ("e", "p"),
            ("h", "blank_logit", *dur), (0, 0), (0,) * (2 + len(dur)),
        ),
        "joint_labels": GraphDef(
            "joint_labels", JointLabelsGraph(model.joint), (torch.tanh(e),), ("h",),
            ("label_logprobs",), (0,), (0,),
        ),
        "iam_joint": GraphDef(
            "iam_joint", IamJointGraph(model.joint), (frames,), ("frames",),
            ("blank_logit", "label_logprobs", *dur), (0,), (0,) * (2 + len(dur)),
        ),
    }
