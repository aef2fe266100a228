"""ExecuTorch ``.pte`` graphs: fp32 and int8, delegated to XNNPACK.

fp32: ``torch.export`` program -> ``to_edge_transform_and_lower`` with ``XnnpackPartitioner``.
int8: PT2E static quantization with ``XNNPACKQuantizer`` (symmetric, per-channel weights,
per-tensor activations) calibrated on real encoder inputs (:mod:`edgeasr.export.calibration`),
then the same lowering. Unlike the ONNX dynamic path, XNNPACK int8 needs fixed activation
scales, hence the calibration.

Tested pins (torch 2.13.0): ``executorch==1.4.1`` + ``torchao==0.18.0``. ExecuTorch plans memory
for the largest input shape, so graphs export with a small maximum batch (``max_batch``).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from edgeasr.export.graphs import GraphDef

from edgeasr.errors import EdgeAsrError

__all__ = ["ExecuTorchExportError", "export_pte", "quantize_pt2e", "DEFAULT_MAX_BATCH"]

DEFAULT_MAX_BATCH = 8

#: Module types whose ops PT2E int8 annotates (weights live here).
QUANTIZED_MODULES: tuple[type[torch.nn.Module], ...] = (
    torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d,
)


#: Modules kept fp32 in int8 programs: the 8x front end's frame-pair merge (a stride-2 Conv1d)
#: and the Linear feeding it. Quantized, the Linear's int8 output reaches the Conv1d through a
#: transpose and XNNPACK refuses a conv whose input is quantized and weight is not ("Weight and
#: Input should both be quantized"). Two small layers of the front end.
FP32_MODULES: tuple[str, ...] = ("subsampling.out", "subsampling.merge")

#: Modules (path suffixes) whose linears are quantized but nothing else: self-attention, whose
#: q / kv projections are ``F.linear`` calls on slices of one weight (not ``nn.Linear``
#: modules), while its scores, softmax and position bias stay fp32.
LINEAR_ONLY_MODULES: tuple[str, ...] = (".attn",)


def _in_module(node: torch.fx.Node, suffixes: tuple[str, ...]) -> bool:
    """Whether ``node`` was traced inside a module whose path ends with one of ``suffixes``."""
    stack = node.meta.get("nn_module_stack") or {}
    return any(str(path).endswith(suffixes) for path, _ in stack.values())


class ExecuTorchExportError(EdgeAsrError, RuntimeError):
    """ExecuTorch is missing, or could not lower / quantize a graph."""


def _require_executorch() -> None:
    try:
        import executorch  # noqa: F401
    except ImportError:
        raise ExecuTorchExportError(
            "ExecuTorch is not installed: pip install executorch==1.4.1 torchao==0.18.0 "
            "(the release built against torch 2.13)"
        ) from None


def export_pte(
    graph: GraphDef,
    path: str | os.PathLike[str],
    program: torch.export.ExportedProgram | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> Path:
    """Lower ``graph`` (or its already quantized ``program``) to an XNNPACK ``.pte`` at ``path``."""
    _require_executorch()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if program is None:
                program = graph.export(max_batch=max_batch)
            et = to_edge_transform_and_lower(
                program, partitioner=[XnnpackPartitioner()]
            ).to_executorch()
    except ExecuTorchExportError:
        raise
    except Exception as e:
        raise ExecuTorchExportError(f"ExecuTorch lowering of {graph.name!r} failed: {e}") from e
    path.write_bytes(et.buffer)
    return path


def _all_float(node: torch.fx.Node) -> bool:
    """Only annotate ops whose tensors are floating point: the encoder concatenates boolean
    attention-validity masks, and an observer on a bool tensor fails (``histc`` on Bool)."""
    nodes = [node, *(a for a in node.all_input_nodes)]
    for n in nodes:
        val = n.meta.get("val")
        if isinstance(val, torch.Tensor) and not val.dtype.is_floating_point:
            return False
        if isinstance(val, (list, tuple)) and any(
            isinstance(v, torch.Tensor) and not v.dtype.is_floating_point for v in val
        ):
            return False
    return True


def quantize_pt2e(
    graph: GraphDef,
    calibration: Sequence[tuple[torch.Tensor, ...]],
    max_batch: int = DEFAULT_MAX_BATCH,
) -> torch.export.ExportedProgram:
    """PT2E int8 (XNNPACK symmetric, per-channel) of ``graph``, calibrated on ``calibration``
    (tuples of inputs in the graph's order); returns the program ready for :func:`export_pte`."""
    _require_executorch()
    if not calibration:
        raise ExecuTorchExportError(f"int8 {graph.name!r}: no calibration inputs")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.constant_fold import constant_fold
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    class FloatOnlyQuantizer(XNNPACKQuantizer):
        """XNNPACKQuantizer whose ``cat`` annotator ignores the module/filter selection
        (executorch 1.4.1): it would observe the encoder's boolean mask concatenation, and
        quantize the conv-cache concatenation feeding an fp32 depthwise conv, which XNNPACK then
        refuses ("Weight and Input should both be quantized"). Non-float ops and ``cat`` are
        marked handled (annotated with no quantization) before the stock annotators run."""

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            for n in model.graph.nodes:
                if n.op == "call_function" and (
                    n.target == torch.ops.aten.cat.default or not _all_float(n)
                    or _in_module(n, FP32_MODULES)
                    or (_in_module(n, LINEAR_ONLY_MODULES)
                        and n.target != torch.ops.aten.linear.default)
                ):
                    n.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(_annotated=True)
            return super().annotate(model)

    # Annotate the modules that hold the weights (where int8 pays off), and only float tensors.
    config = get_symmetric_quantization_config(is_per_channel=True)
    quantizer = FloatOnlyQuantizer()
    for module_type in QUANTIZED_MODULES:
        quantizer.set_module_type(module_type, config)
    from edgeasr.train.model.encoder import BiasedSelfAttention

    quantizer.set_module_type(BiasedSelfAttention, config)  # its linears only (see annotate)
    quantizer.set_filter_function(_all_float)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            captured = graph.export(max_batch=max_batch).module()
            # the attention's q / kv projections use slices of one qkv weight: fold them into
            # constants so that their linears have static weights to quantize
            with torch.no_grad():
                constant_fold(captured)
            for name, value in list(vars(captured).items()):
                if name.startswith("_frozen_param") and isinstance(value, torch.Tensor):
                    setattr(captured, name, value.detach().clone())  # leaves, deep-copyable
            prepared = prepare_pt2e(captured, quantizer)
            with torch.no_grad():
                for inputs in calibration:
                    prepared(*inputs)
            converted = convert_pt2e(prepared)
            return graph.export(module=converted, max_batch=max_batch)
    except Exception as e:
        raise ExecuTorchExportError(f"int8 quantization of {graph.name!r} failed: {e}") from e


def run_pte(path: str | os.PathLike[str], inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Run a ``.pte``'s ``forward`` through the ExecuTorch python runtime (parity checks)."""
    _require_executorch()
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(Path(path)).load_method("forward")
    return list(method.execute(list(inputs)))
