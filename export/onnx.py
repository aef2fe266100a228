"""ONNX export of the bundle graphs (torch.onnx dynamo exporter, opset 18) + ORT optimization.

Why the dynamo exporter: on the chunked Conformer it yields a graph with static shapes except
the batch (the chunk length, cache lengths and attention distances are constants), about 180
nodes for a 2-layer encoder against ~470 with the legacy TorchScript exporter, which leaves
``Shape``/``Gather`` chains and symbolic time dimensions behind.

After export, the graph is optimized offline by ONNX Runtime at the *basic* level (constant
folding, redundant node elimination): those rewrites are hardware independent, so the saved file
stays portable (extended/layout optimizations are left for the device's ORT session to apply).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
from edgeasr.export.graphs import GraphDef

from edgeasr.errors import EdgeAsrError

__all__ = ["OnnxExportError", "export_onnx", "add_metadata", "optimize_onnx", "OPSET"]

OPSET = 18


class OnnxExportError(EdgeAsrError, RuntimeError):
    """torch.onnx could not export a graph, or the result does not load in ONNX Runtime."""


def export_onnx(
    graph: GraphDef,
    path: str | os.PathLike[str],
    program: torch.export.ExportedProgram | None = None,
    optimize: bool = True,
) -> Path:
    """Export ``graph`` to ``path`` with a dynamic batch axis and named inputs/outputs.

    ``program``: the graph's ``torch.export`` program if already made (:meth:`GraphDef.export`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if program is None:
            program = graph.export()
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(
                program,
                graph.example_inputs,
                dynamo=True,
                opset_version=OPSET,
                input_names=list(graph.input_names),
                output_names=list(graph.output_names),
                optimize=True,
                verbose=False,
            )
    except Exception as e:  # torch.export / onnxscript raise many types; name the graph
        raise OnnxExportError(f"ONNX export of graph {graph.name!r} failed: {e}") from e
    onnx_program.save(str(path))
    model = onnx.load(str(path))
    got_in = [i.name for i in model.graph.input]
    got_out = [o.name for o in model.graph.output]
    if got_in != list(graph.input_names) or got_out != list(graph.output_names):
        raise OnnxExportError(
            f"{path}: exported names {got_in} -> {got_out} differ from the requested "
            f"{list(graph.input_names)} -> {list(graph.output_names)}"
        )
    if optimize:
        optimize_onnx(path)
    return path


def optimize_onnx(path: str | os.PathLike[str]) -> Path:
    """Rewrite ``path`` in place with ORT's basic (portable) graph optimizations applied."""
    path = Path(path)
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / path.name
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(out)
        opts.log_severity_level = 3
        try:
            ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise OnnxExportError(
                f"{path}: ONNX Runtime cannot load the exported graph: {e}"
            ) from e
        shutil.move(out, path)
    if metadata:
        add_metadata(path, metadata)
    return path


def add_metadata(path: str | os.PathLike[str], metadata: Mapping[str, object]) -> None:
    """Set ONNX ``metadata_props`` (string key/values; sherpa-onnx reads its config there)."""
    model = onnx.load(str(path))
    existing = {p.key: p for p in model.metadata_props}
    for key, value in metadata.items():
        if key in existing:
            existing[key].value = str(value)
        else:
            model.metadata_props.add(key=key, value=str(value))
    onnx.save(model, str(path))
