"""Write a bundle: export every requested format/precision, check parity, write ``model.json``.

Layout of a bundle folder::

    model.json  tokenizer.model  tokens.txt
    onnx/{fp32,int8}/{encoder,predictor,joint_blank,joint_labels,iam_joint}.onnx
    executorch/{fp32,int8}/<same names>.pte
    sherpa/{fp32,int8}/{encoder,decoder,joiner}.onnx     (+ the top-level tokens.txt)

Each graph is traced with ``torch.export`` once and that program feeds both the ONNX and the
ExecuTorch fp32 exporters. Parity against torch is measured for every fp32 graph (the encoder
over consecutive chunks with carried caches) and export fails if it exceeds ``tolerance``: a
bundle that decodes differently from its checkpoint must not be written silently.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from edgeasr.export.graphs import GraphDef, build_graphs
from torch import nn

import edgeasr
from edgeasr.bundle import (
    FORMATS,
    MODEL_JSON,
    PRECISIONS,
    ChunkProfile,
    DecodingDefaults,
    GraphSpec,
    Manifest,
    ModelSpec,
    TensorSpec,
    TokenizerSpec,
    file_entry,
)
from edgeasr.errors import EdgeAsrError
from edgeasr.features import FeatureConfig
from edgeasr.tokenizer import Tokenizer

__all__ = ["ExportOptions", "ExportReport", "ExportError", "export_bundle", "export_checkpoint"]

Progress = Callable[[str], None]


class ExportError(EdgeAsrError, RuntimeError):
    """The export could not produce a valid bundle (message says which step and why)."""


@dataclass
class ExportOptions:
    formats: tuple[str, ...] = ("onnx",)
    precisions: tuple[str, ...] = ("fp32",)
    calibration: Path | None = None  # JSONL manifest of speech, for ExecuTorch int8
    calibration_utterances: int = 8
    tolerance: float = 1e-4  # max |exported - torch| for fp32 graphs
    parity_chunks: int = 3
    pte_max_batch: int = 8
    decoding: DecodingDefaults = field(default_factory=DecodingDefaults)
    name: str = ""
    # Also store the weights as ``checkpoint.pt`` (model, configs, tokenizer; no optimizer): the
    # torch backend runs from it, and ``edgeasr-train fit --init`` continues training from it.
    with_checkpoint: bool = False

    def __post_init__(self) -> None:
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ExportError(f"unknown format(s) {bad or '(none)'}; choose from {FORMATS}")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise ExportError(f"unknown precision(s) {bad or '(none)'}; choose from {PRECISIONS}")


@dataclass
class ExportReport:
    out: Path
    manifest: Manifest
    parity: dict[str, float] = field(default_factory=dict)  # "format/precision/graph" -> diff
    sizes: dict[str, int] = field(default_factory=dict)  # "format/precision" -> bytes

    def summary(self) -> str:
        lines = [f"bundle written to {self.out}"]
        for variant, size in self.sizes.items():
            lines.append(f"  {variant:<18} {size / 1024:10.1f} KiB")
        for key, diff in self.parity.items():
            lines.append(f"  parity {key:<32} max |diff| {diff:.2e}")
        return "\n".join(lines)


def _spec_graph(g: GraphDef, rel: str) -> GraphSpec:
    return GraphSpec(file=rel, inputs=g.input_specs(), outputs=g.output_specs())


def export_bundle(
    model: nn.Module,
    tokenizer_model: bytes,
    out: str | os.PathLike[str],
    options: ExportOptions,
    feature_config: FeatureConfig | None = None,
    train_config: dict[str, Any] | None = None,
    progress: Progress = lambda _msg: None,
) -> ExportReport:
    """Export ``model`` (an ``edgeasr.train.model.Transducer``) into the bundle folder ``out``."""
    from edgeasr.export import onnx as onnx_export
    from edgeasr.export.parity import encoder_parity, graph_parity, onnx_runner

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out}: output folder exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    cfg = model.cfg
    features = feature_config or FeatureConfig()
    if features.num_mel_bins != cfg.feature_dim:
        raise ExportError(
            f"feature config has {features.num_mel_bins} mel bins, the model expects "
            f"{cfg.feature_dim}"
        )
    tok_path = out / "tokenizer.model"
    tok_path.write_bytes(tokenizer_model)
    tokenizer = Tokenizer(tok_path)
    if tokenizer.vocab_size != cfg.vocab_size:
        raise ExportError(
            f"tokenizer has {tokenizer.vocab_size} pieces, the model vocab_size is {cfg.vocab_size}"
        )
    tokenizer.write_tokens(out / "tokens.txt")

    graphs = build_graphs(model)
    report = ExportReport(out=out, manifest=None)  # type: ignore[arg-type]
    specs: dict[str, dict[str, dict[str, GraphSpec]]] = {}

    def check(key: str, diff: float) -> None:
        report.parity[key] = diff
        if diff > options.tolerance:
            raise ExportError(f"{key}: max |exported - torch| = {diff:.2e} > {options.tolerance}")

    programs: dict[str, torch.export.ExportedProgram] = {}
    need_onnx = "onnx" in options.formats or "sherpa" in options.formats
    if need_onnx or "executorch" in options.formats:
        for name, g in graphs.items():
            progress(f"torch.export {name}")
            programs[name] = g.export(
                max_batch=options.pte_max_batch if not need_onnx else 1024
            )

    onnx_dir = out / "onnx" / "fp32"
    if need_onnx:
        for name, g in graphs.items():
            progress(f"onnx fp32 {name}")
            onnx_export.export_onnx(g, onnx_dir / f"{name}.onnx", program=programs[name])
            run = onnx_runner(onnx_dir / f"{name}.onnx")
            diff = (
                encoder_parity(model, run, options.parity_chunks)
                if name == "encoder" else graph_parity(g, run)
            )
            check(f"onnx/fp32/{name}", diff)
        if "onnx" in options.formats:
            specs.setdefault("onnx", {})["fp32"] = {
                n: _spec_graph(g, f"onnx/fp32/{n}.onnx") for n, g in graphs.items()
            }
        if "int8" in options.precisions:
            from edgeasr.export.quantize import quantize_onnx_int8

            int8 = {}
            for name, g in graphs.items():
                progress(f"onnx int8 {name}")
                quantize_onnx_int8(onnx_dir / f"{name}.onnx", out / "onnx/int8" / f"{name}.onnx")
                int8[name] = _spec_graph(g, f"onnx/int8/{name}.onnx")
            if "onnx" in options.formats:
                specs.setdefault("onnx", {})["int8"] = int8

    if "sherpa" in options.formats:
        specs["sherpa"] = _export_sherpa(model, out, options, progress, check)

    if "executorch" in options.formats:
        specs["executorch"] = _export_executorch(
            model, graphs, programs, out, options, features, progress, check, need_onnx
        )

    if "onnx" not in options.formats:  # the ONNX graphs were only the sherpa flavor's source
        shutil.rmtree(out / "onnx", ignore_errors=True)

    if options.with_checkpoint:
        from edgeasr.train.checkpoint import save_checkpoint

        from edgeasr.backends.torch import CHECKPOINT_NAME

        progress(CHECKPOINT_NAME)
        save_checkpoint(out / CHECKPOINT_NAME, {
            "model": model.state_dict(),
            "model_config": cfg.to_dict(),
            "feature_config": features.to_dict(),
            "train_config": dict(train_config or {}),
            "tokenizer": tokenizer_model,
        })

    progress("model.json")
    manifest = Manifest(
        features=features,
        model=ModelSpec(
            kind="hat",
            vocab_size=cfg.vocab_size,
            joint_dim=cfg.joint_dim,
            context_size=cfg.context_size,
            tdt_durations=tuple(cfg.durations),
            has_iam=cfg.iam_ctc_weight > 0,
            normalization="none" if model.encoder.cmvn.is_identity else "global_cmvn",
        ),
        chunk=ChunkProfile(
            chunk_frames=cfg.chunk_size,
            subsampling_factor=cfg.subsampling,
            pad_length=cfg.pad_length,
            left_context=cfg.left_context,
            frame_shift_s=features.frame_shift_seconds,
        ),
        caches=graphs["encoder"].input_specs()[1:],
        graphs=specs,
        tokenizer=TokenizerSpec("tokenizer.model", "tokens.txt"),
        decoding=options.decoding,
        train_config=dict(train_config or {}),
        model_config=cfg.to_dict(),
        name=options.name or out.name,
        created=_dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        edgeasr_version=edgeasr.__version__,
    )
    manifest.files = {
        p: file_entry(out / p)
        for p in sorted(
            q.relative_to(out).as_posix() for q in out.rglob("*") if q.is_file()
        )
        if p != MODEL_JSON
    }
    (out / MODEL_JSON).write_text(manifest.to_json(), encoding="utf-8")
    report.manifest = manifest
    for fmt, by_prec in specs.items():
        for prec, by_name in by_prec.items():
            size = sum(manifest.files[g.file].size for g in by_name.values())
            report.sizes[f"{fmt}/{prec}"] = size
    return report


def _export_sherpa(
    model: nn.Module, out: Path, options: ExportOptions, progress: Progress,
    check: Callable[[str, float], None],
) -> dict[str, dict[str, GraphSpec]]:
    from edgeasr.export.parity import graph_parity, onnx_runner
    from edgeasr.export.sherpa import (
        export_sherpa_joiner,
        make_sherpa_decoder,
        make_sherpa_encoder,
        sherpa_joiner_graph,
    )

    cfg = model.cfg
    src = out / "onnx" / "fp32"
    dst = out / "sherpa" / "fp32"
    progress("sherpa encoder/decoder/joiner")
    make_sherpa_encoder(
        src / "encoder.onnx", dst / "encoder.onnx", num_layers=cfg.num_layers,
        d_model=cfg.d_model, conv_kernel=cfg.conv_kernel, left_context=cfg.left_context,
        chunk_frames=cfg.chunk_size, subsampling=cfg.subsampling, pad_length=cfg.pad_length,
    )
    make_sherpa_decoder(
        src / "predictor.onnx", dst / "decoder.onnx", vocab_size=cfg.vocab_size,
        context_size=cfg.context_size,
    )
    export_sherpa_joiner(model, dst / "joiner.onnx")
    joiner = sherpa_joiner_graph(model)
    check("sherpa/fp32/joiner", graph_parity(joiner, onnx_runner(dst / "joiner.onnx")))
    result = {"fp32": _sherpa_specs(model, "fp32")}
    if "int8" in options.precisions:
        from edgeasr.export.quantize import quantize_onnx_int8

        for name in ("encoder", "decoder", "joiner"):
            progress(f"sherpa int8 {name}")
            quantize_onnx_int8(dst / f"{name}.onnx", out / "sherpa/int8" / f"{name}.onnx")
        result["int8"] = _sherpa_specs(model, "int8")
    return result


def _sherpa_specs(model: nn.Module, prec: str) -> dict[str, GraphSpec]:
    cfg = model.cfg
    left, k1, lay, d, j = (cfg.left_context, cfg.conv_kernel - 1, cfg.num_layers, cfg.d_model,
                           cfg.joint_dim)
    t_in = cfg.chunk_input_frames()
    base = f"sherpa/{prec}"
    return {
        "encoder": GraphSpec(
            f"{base}/encoder.onnx",
            (
                TensorSpec("x", ("N", t_in, cfg.feature_dim)),
                TensorSpec("cached_attn", (lay, left, "N", d)),
                TensorSpec("cached_conv", (lay, k1, "N", d)),
                TensorSpec("processed_lens", ("N",), "int64"),
            ),
            (
                TensorSpec("encoder_out", ("N", cfg.chunk_size, j)),
                TensorSpec("new_cached_attn", (lay, left, "N", d)),
                TensorSpec("new_cached_conv", (lay, k1, "N", d)),
            ),
        ),
        "decoder": GraphSpec(
            f"{base}/decoder.onnx",
            (TensorSpec("y", ("N", cfg.context_size), "int64"),),
            (TensorSpec("decoder_out", ("N", j)),),
        ),
        "joiner": GraphSpec(
            f"{base}/joiner.onnx",
            (TensorSpec("encoder_out", ("N", j)), TensorSpec("decoder_out", ("N", j))),
            (TensorSpec("logit", ("N", cfg.vocab_size)),),
        ),
    }


def _export_executorch(
    model: nn.Module, graphs: dict[str, GraphDef], programs: dict[str, Any], out: Path,
    options: ExportOptions, features: FeatureConfig, progress: Progress,
    check: Callable[[str, float], None], reexport: bool,
) -> dict[str, dict[str, GraphSpec]]:
    from edgeasr.export.executorch import export_pte, quantize_pt2e
    from edgeasr.export.parity import encoder_parity, graph_parity, pte_runner

    result: dict[str, dict[str, GraphSpec]] = {}
    if "fp32" in options.precisions:
        fp32 = {}
        for name, g in graphs.items():
            progress(f"executorch fp32 {name}")
            path = out / "executorch/fp32" / f"{name}.pte"
            # The ONNX programs allow a batch of 1024, too large for ExecuTorch's static memory
            # plan; re-trace with the small bound then.
            program = g.export(max_batch=options.pte_max_batch) if reexport else programs[name]
            export_pte(g, path, program=program)
            run = pte_runner(path)
            diff = (
                encoder_parity(model, run, options.parity_chunks)
                if name == "encoder" else graph_parity(g, run)
            )
            check(f"executorch/fp32/{name}", diff)
            fp32[name] = _spec_graph(g, f"executorch/fp32/{name}.pte")
        result["fp32"] = fp32
    if "int8" in options.precisions:
        if options.calibration is None:
            raise ExportError(
                "ExecuTorch int8 needs calibration speech: pass --calibration MANIFEST.jsonl"
            )
        from edgeasr.export.calibration import calibration_inputs, load_calibration_features

        progress("calibration features")
        feats = load_calibration_features(
            options.calibration, features, options.calibration_utterances
        )
        calib = calibration_inputs(model, feats)
        int8 = {}
        for name, g in graphs.items():
            progress(f"executorch int8 {name}")
            program = quantize_pt2e(g, calib[name], max_batch=options.pte_max_batch)
            export_pte(g, out / "executorch/int8" / f"{name}.pte", program=program)
            int8[name] = _spec_graph(g, f"executorch/int8/{name}.pte")
        result["int8"] = int8
    return result


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: ExportOptions,
    progress: Progress = lambda _msg: None,
) -> ExportReport:
    """Load an ``edgeasr.train`` checkpoint (``weights_only``) and export it."""
    from edgeasr.train.checkpoint import load_for_inference

    progress(f"loading {checkpoint}")
    model, tokenizer_bytes, configs = load_for_inference(checkpoint)
    features = FeatureConfig.from_dict(dict(configs["feature_config"]))
    return export_bundle(
        model, tokenizer_bytes, out, options, feature_config=features,
        train_config=dict(configs["train_config"]), progress=progress,
    )
