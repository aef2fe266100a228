"""Export a HENT-SRT model: the ASR bundle plus the speech-translation head graphs.

The ASR half is exported by :func:`edgeasr.export.writer.export_bundle` unchanged (so every ASR
consumer, sherpa-onnx included, sees an ordinary bundle). The ST head adds four ONNX graphs and
a sidecar ``translation.json`` (schema in :mod:`edgeasr.translation`)::

    onnx/fp32/st_encoder.onnx      (frames[N, C, J], attn, conv, processed) -> (st_frames, ...)
    onnx/fp32/st_predictor.onnx    context[N, K] -> p[N, J_st]
    onnx/fp32/st_joint_blank.onnx  (e, p) -> (h, blank_logit)
    onnx/fp32/st_joint_labels.onnx h -> label_logprobs[N, V_st - 1]
    st_tokenizer.model  st_tokens.txt  translation.json

``st_encoder`` takes the ASR encoder's output frames, so the runtime drives both heads from one
ASR encoder pass. All new files are added to ``model.json``'s ``files`` (size + sha256), so
``Bundle.load`` verifies them like the ASR graphs. Parity (ORT vs torch) is checked for every ST
graph; the encoder over consecutive chunks with each side carrying its own caches.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from edgeasr.export.graphs import (
    CACHE_OUTPUT_PREFIX,
    GraphDef,
    JointBlankGraph,
    JointLabelsGraph,
    PredictorGraph,
)
from edgeasr.export.onnx import export_onnx
from edgeasr.export.parity import Runner, _max_diff, graph_parity, onnx_runner
from edgeasr.export.writer import ExportError, ExportOptions, ExportReport, export_bundle
from torch import Tensor, nn

from edgeasr.bundle import MODEL_JSON, GraphSpec, Manifest, file_entry
from edgeasr.features import FeatureConfig
from edgeasr.tokenizer import Tokenizer
from edgeasr.translation import (
    ST_CACHE_NAMES,
    ST_GRAPH_NAMES,
    TRANSLATION_JSON,
    TranslationSpec,
)

__all__ = ["build_st_graphs", "export_st_bundle", "st_encoder_parity"]


class StEncoderGraph(nn.Module):
    """``StEncoder.forward_chunk`` over flat tensors."""

    def __init__(self, st_encoder: nn.Module) -> None:
        super().__init__()
        self.st_encoder = st_encoder

    def forward(self, frames: Tensor, attn_cache: Tensor, conv_cache: Tensor,
                processed_frames: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.st_encoder.forward_chunk_tuple(frames, attn_cache, conv_cache,
                                                   processed_frames)


def build_st_graphs(model: nn.Module, batch: int = 2) -> dict[str, GraphDef]:
    """The four ST graphs of a ``HierarchicalTransducer`` (eval mode), example batch ``batch``."""
    if batch < 2:
        raise ValueError(f"example batch must be >= 2 (1 gets specialized away), got {batch}")
    model.eval()
    cfg = model.cfg
    gen = torch.Generator().manual_seed(0)
    caches = model.st_encoder.init_caches(batch)
    frames = torch.randn(batch, cfg.asr.chunk_size, cfg.asr.joint_dim, generator=gen)
    e = torch.randn(batch, cfg.st.joint_dim, generator=gen)
    context = torch.zeros(batch, cfg.st.context_size, dtype=torch.int64)
    head = model.st_head
    axes = (2, 2, 0)
    return {
        "st_encoder": GraphDef(
            "st_encoder", StEncoderGraph(model.st_encoder), (frames, *caches.to_tuple()),
            ("frames", *ST_CACHE_NAMES),
            ("st_frames", *(CACHE_OUTPUT_PREFIX + c for c in ST_CACHE_NAMES)),
            (0, *axes), (0, *axes),
        ),
        "st_predictor": GraphDef("st_predictor", PredictorGraph(head.predictor), (context,),
                                 ("context",), ("p",), (0,), (0,)),
        "st_joint_blank": GraphDef("st_joint_blank", JointBlankGraph(head.joint),
                                   (e, torch.tanh(e)), ("e", "p"), ("h", "blank_logit"),
                                   (0, 0), (0, 0)),
        "st_joint_labels": GraphDef("st_joint_labels", JointLabelsGraph(head.joint),
                                    (torch.tanh(e),), ("h",), ("label_logprobs",), (0,), (0,)),
    }


@torch.no_grad()
def st_encoder_parity(model: nn.Module, run: Runner, num_chunks: int = 3, batch: int = 2,
                      seed: int = 0) -> float:
    """Max |exported - torch| of the ST encoder over consecutive chunks of ASR frames, each
    side carrying its own caches (a wrong cache output shows in the next chunk's frames)."""
    cfg = model.cfg
    gen = torch.Generator().manual_seed(seed)
    c = cfg.asr.chunk_size
    frames = torch.randn(batch, c * num_chunks, cfg.asr.joint_dim, generator=gen)
    caches = model.st_encoder.init_caches(batch)
    theirs = [x.numpy() for x in caches.to_tuple()]
    worst = 0.0
    for k in range(num_chunks):
        chunk = frames[:, k * c : (k + 1) * c]
        out, caches = model.st_encoder.forward_chunk(chunk, caches)
        got = run([chunk.numpy(), *theirs])
        worst = max(worst, _max_diff(got, (out, *caches.to_tuple())))
        theirs = got[1:]
    return worst


def export_st_bundle(
    model: nn.Module,
    tokenizer_model: bytes,
    st_tokenizer_model: bytes,
    out: str | os.PathLike[str],
    options: ExportOptions | None = None,
    feature_config: FeatureConfig | None = None,
    train_config: dict[str, Any] | None = None,
    target_lang: str = "es",
    blank_penalty: float = 0.0,
) -> ExportReport:
    """Export ``model`` (a ``HierarchicalTransducer``): the ASR bundle, then the ST graphs.

    Only the ONNX fp32 flavor carries the ST head (the runtime's translator is ONNX Runtime).
    ``blank_penalty`` becomes the bundle's default ST blank penalty (HENT-SRT eq. 12).
    """
    options = options or ExportOptions()
    if "onnx" not in options.formats or "fp32" not in options.precisions:
        raise ExportError("the ST head is exported as ONNX fp32: include format 'onnx' and "
                          "precision 'fp32'")
    out = Path(out)
    report = export_bundle(model.asr, tokenizer_model, out, options,
                           feature_config=feature_config, train_config=train_config)
    cfg = model.cfg
    (out / "st_tokenizer.model").write_bytes(st_tokenizer_model)
    st_tok = Tokenizer(out / "st_tokenizer.model")
    if st_tok.vocab_size != cfg.st.vocab_size:
        raise ExportError(f"ST tokenizer has {st_tok.vocab_size} pieces, the ST head's "
                          f"vocab_size is {cfg.st.vocab_size}")
    st_tok.write_tokens(out / "st_tokens.txt")

    graphs = build_st_graphs(model)
    specs: dict[str, GraphSpec] = {}
    for name in ST_GRAPH_NAMES:
        g = graphs[name]
        path = out / "onnx" / "fp32" / f"{name}.onnx"
        export_onnx(g, path)
        run = onnx_runner(path)
        diff = st_encoder_parity(model, run, options.parity_chunks) if name == "st_encoder" \
            else graph_parity(g, run)
        report.parity[f"onnx/fp32/{name}"] = diff
        if diff > options.tolerance:
            raise ExportError(f"onnx/fp32/{name}: max |exported - torch| = {diff:.2e} > "
                              f"{options.tolerance}")
        specs[name] = GraphSpec(file=f"onnx/fp32/{name}.onnx", inputs=g.input_specs(),
                                outputs=g.output_specs())
    spec = TranslationSpec(
        target_lang=target_lang, vocab_size=cfg.st.vocab_size, joint_dim=cfg.st.joint_dim,
        context_size=cfg.st.context_size, downsample=cfg.st.downsample,
        chunk_frames=cfg.st_chunk_size(), caches=graphs["st_encoder"].input_specs()[1:],
        graphs={"onnx": {"fp32": specs}}, tokenizer="st_tokenizer.model",
        tokens="st_tokens.txt", blank_penalty=blank_penalty, model_config=cfg.to_dict(),
    )
    (out / TRANSLATION_JSON).write_text(json.dumps(spec.to_dict(), indent=2) + "\n",
                                        encoding="utf-8")
    _add_files(out, report.manifest,
               [*(s.file for s in specs.values()), "st_tokenizer.model", "st_tokens.txt",
                TRANSLATION_JSON])
    return report


def _add_files(out: Path, manifest: Manifest, rels: list[str]) -> None:
    """List ``rels`` in model.json's ``files`` so Bundle.load hashes them too."""
    for rel in rels:
        manifest.files[rel] = file_entry(out / rel)
    manifest.files = dict(sorted(manifest.files.items()))
    (out / MODEL_JSON).write_text(manifest.to_json(), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """``python -m edgeasr.export.st CHECKPOINT OUT``: export an ``edgeasr-train st``
    checkpoint (ASR graphs + ST graphs, ONNX fp32) into the bundle folder ``OUT``."""
    import argparse

    from edgeasr.train.st import load_st_model

    p = argparse.ArgumentParser(prog="python -m edgeasr.export.st", description=main.__doc__)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--blank-penalty", type=float, default=0.0,
                   help="the bundle's default ST blank penalty (HENT-SRT eq. 12)")
    p.add_argument("--target-lang", default="es")
    args = p.parse_args(argv)
    model, tok, st_tok, configs = load_st_model(args.checkpoint)
    report = export_st_bundle(
        model, tok, st_tok, args.out, feature_config=FeatureConfig.from_dict(
            dict(configs["feature_config"])), train_config=dict(configs["train_config"]),
        target_lang=args.target_lang, blank_penalty=args.blank_penalty)
    print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
