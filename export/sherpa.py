"""The sherpa-onnx flavor: ``encoder.onnx`` / ``decoder.onnx`` / ``joiner.onnx`` + ``tokens.txt``
loadable by ``sherpa_onnx.OnlineRecognizer.from_transducer`` as a ``conformer`` transducer.

What sherpa-onnx expects (csrc/online-conformer-transducer-model.cc, online-recognizer-transducer-
impl.h, online-transducer-greedy-search-decoder.cc):

* encoder metadata ``model_type=conformer`` plus ``num_encoder_layers``, ``T`` (feature frames per
  call), ``decode_chunk_len`` (feature frames between calls), ``left_context``, ``encoder_dim``
  (the cache width), ``pad_length``, ``cnn_module_kernel``; four inputs taken by *position*:
  ``x[N, T, 80]``, ``cached_attn[L, left, N, D]``, ``cached_conv[L, k-1, N, D]``,
  ``processed_lens[N]`` int64, and three outputs: frames and the two new caches.
* ``processed_lens`` is sherpa's count of *feature* frames consumed so far (it advances by
  ``decode_chunk_len`` per call), while our encoder counts *encoder* frames: the exported encoder
  divides by the subsampling factor first. Our own processed-frames output is dropped: sherpa
  keeps only the two cache tensors as state.
* decoder metadata ``context_size``/``vocab_size``; input ``y[N, context_size]`` int64 (sherpa
  starts from ``[0, 0]``, blank), output ``decoder_out[N, J]``.
* joiner inputs ``encoder_out[N, J]``, ``decoder_out[N, J]``, output ``logit[N, V]`` which greedy
  search argmaxes and beam search log-softmaxes. Ours returns the HAT log-probs over V (blank
  first), already normalized, so the log-softmax leaves them unchanged.

Our encoder graph *is* the sherpa conformer layout, so the encoder and decoder here are the
edgeasr ONNX graphs relabeled (graph surgery, no re-export: identical numerics by construction).
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import torch
from edgeasr.export.graphs import GraphDef
from edgeasr.export.onnx import add_metadata, export_onnx
from onnx import helper
from torch import Tensor, nn

__all__ = ["SHERPA_ENCODER_NAMES", "make_sherpa_encoder", "make_sherpa_decoder",
           "sherpa_joiner_graph"]

#: edgeasr encoder tensor name -> sherpa/icefall name.
SHERPA_ENCODER_NAMES = {
    "features": "x",
    "attn_cache": "cached_attn",
    "conv_cache": "cached_conv",
    "frames": "encoder_out",
    "new_attn_cache": "new_cached_attn",
    "new_conv_cache": "new_cached_conv",
}


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
        node.output[:] = [new if x == old else x for x in node.output]
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if vi.name == old:
            vi.name = new


def _prune_dead_nodes(graph: onnx.GraphProto) -> None:
    """Drop nodes whose outputs nothing consumes (after removing a graph output)."""
    while True:
        used = {x for n in graph.node for x in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            return
        for n in dead:
            graph.node.remove(n)


def make_sherpa_encoder(
    encoder_onnx: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    num_layers: int,
    d_model: int,
    conv_kernel: int,
    left_context: int,
    chunk_frames: int,
    subsampling: int,
    pad_length: int,
) -> Path:
    """Relabel an edgeasr ``encoder.onnx`` as a sherpa-onnx ``conformer`` encoder at ``dst``."""
    model = onnx.load(str(encoder_onnx))
    g = model.graph
    names_in = [i.name for i in g.input]
    if names_in != ["features", "attn_cache", "conv_cache", "processed_frames"]:
        raise ValueError(f"{encoder_onnx}: not an edgeasr encoder graph (inputs {names_in})")
    # processed_lens (feature frames, sherpa) -> processed_frames (encoder frames, ours)
    for vi in g.input:
        if vi.name == "processed_frames":
            vi.name = "processed_lens"
    factor = helper.make_tensor(
        "sherpa_subsampling_factor", onnx.TensorProto.INT64, [], [subsampling]
    )
    g.initializer.append(factor)
    g.node.insert(
        0,
        helper.make_node(
            "Div", ["processed_lens", "sherpa_subsampling_factor"], ["processed_frames"],
            name="sherpa_feature_to_encoder_frames",
        ),
    )
    for out in list(g.output):
        if out.name == "new_processed_frames":
            g.output.remove(out)
    _prune_dead_nodes(g)
    for old, new in SHERPA_ENCODER_NAMES.items():
        _rename(g, old, new)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    del model.metadata_props[:]
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    feature_shift = subsampling * chunk_frames
    add_metadata(
        dst,
        {
            "model_type": "conformer",
            "version": "1",
            "model_author": "edgeasr",
            "comment": "edgeasr cache-aware conformer, HAT joint",
            "num_encoder_layers": num_layers,
            "T": feature_shift + pad_length,
            "decode_chunk_len": feature_shift,
            "left_context": left_context,
            "encoder_dim": d_model,
            "pad_length": pad_length,
            "cnn_module_kernel": conv_kernel,
            "chunk_size": chunk_frames,
            "right_context": 0,
        },
    )
    return dst


def make_sherpa_decoder(
    predictor_onnx: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    vocab_size: int,
    context_size: int,
) -> Path:
    """Relabel an edgeasr ``predictor.onnx`` (``context -> p``) as sherpa's ``y -> decoder_out``."""
    model = onnx.load(str(predictor_onnx))
    g = model.graph
    if [i.name for i in g.input] != ["context"] or [o.name for o in g.output] != ["p"]:
        raise ValueError(f"{predictor_onnx}: not an edgeasr predictor graph")
    _rename(g, "context", "y")
    _rename(g, "p", "decoder_out")
    del model.metadata_props[:]
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    add_metadata(dst, {"context_size": context_size, "vocab_size": vocab_size})
    return dst


class SherpaJoiner(nn.Module):
    """``(encoder_out, decoder_out) -> logit[N, V]``: the normalized HAT log-probs, blank first."""

    def __init__(self, joint: nn.Module) -> None:
        super().__init__()
        self.joint = joint

    def forward(self, encoder_out: Tensor, decoder_out: Tensor) -> Tensor:
        return self.joint.log_probs(encoder_out, decoder_out)


def sherpa_joiner_graph(model: nn.Module, batch: int = 2) -> GraphDef:
    j = model.cfg.joint_dim
    gen = torch.Generator().manual_seed(0)
    e = torch.randn(batch, j, generator=gen)
    p = torch.randn(batch, j, generator=gen)
    return GraphDef(
        "joiner", SherpaJoiner(model.joint).eval(), (e, p), ("encoder_out", "decoder_out"),
        ("logit",), (0, 0), (0,),
    )


def export_sherpa_joiner(model: nn.Module, dst: str | os.PathLike[str]) -> Path:
    path = export_onnx(sherpa_joiner_graph(model), dst)
    add_metadata(path, {"joiner_dim": model.cfg.joint_dim})
    return path
