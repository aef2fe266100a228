"""Shared test fixtures: synthetic signals (deterministic, generated on the fly), real speech,
and tiny random-init models exported as complete bundles (:func:`tiny_bundle`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import settings

# CI runs each property test on a fixed set of examples (reproducible runs, no deadline flakes
# on a loaded machine); locally hypothesis keeps exploring new examples on every run.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

# The shared data folder sits beside the repository (../shared), as on CI.
SPEECH_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "speechocean762-train"

SignalFactory = Callable[..., np.ndarray]


def synth_signal(
    kind: str = "sine",
    duration: float = 1.0,
    sample_rate: int = 16000,
    freq: float = 1000.0,
    amplitude: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """A short float32 test signal.

    kind: ``sine`` (``freq`` Hz), ``chirp`` (linear sweep 100 Hz -> ``freq``), ``noise`` (white
    Gaussian, std ``amplitude``), ``silence`` (exact zeros), ``speechlike`` (harmonics of a
    gliding 120-220 Hz fundamental, amplitude-modulated at 4 Hz like syllables, plus low noise).
    """
    n = int(round(duration * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    rng = np.random.default_rng(seed)
    if kind == "sine":
        x = amplitude * np.sin(2 * np.pi * freq * t)
    elif kind == "chirp":
        f0 = 100.0
        rate = (freq - f0) / max(duration, 1e-9)
        x = amplitude * np.sin(2 * np.pi * (f0 * t + 0.5 * rate * t**2))
    elif kind == "noise":
        x = amplitude * rng.standard_normal(n)
    elif kind == "silence":
        x = np.zeros(n)
    elif kind == "speechlike":
        f0 = 170.0 + 50.0 * np.sin(2 * np.pi * 0.7 * t)
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        harmonics = sum(np.sin(k * phase) / k for k in range(1, 16))
        envelope = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t))
        x = amplitude * 0.4 * envelope * harmonics + 0.003 * rng.standard_normal(n)
    else:
        raise ValueError(f"unknown signal kind {kind!r}")
    return x.astype(np.float32)


@pytest.fixture
def make_signal() -> SignalFactory:
    """Factory fixture: ``make_signal("sine", duration=0.5, freq=440)`` -> float32 array."""
    return synth_signal


@pytest.fixture(scope="session")
def speech_files() -> list[Path]:
    """A few real speech recordings (16 kHz ogg) from speechocean762; skips if absent."""
    manifest = SPEECH_DIR / "manifest.jsonl"
    if not manifest.exists():
        pytest.skip(f"real speech not available at {SPEECH_DIR}")
    with manifest.open() as f:
        return [SPEECH_DIR / json.loads(line)["audio"] for line in islice(f, 4)]


# ------------------------------------------------------------------------------- tiny bundles

#: Words of the tiny bundles' tokenizer: every bundle test decodes into these letters.
TINY_WORDS = ["abc", "bca", "cab", "dead", "bead", "face", "fade", "cafe", "bed", "add"]


class TinyBundle(NamedTuple):
    """A built tiny bundle: its folder and the torch ``Transducer`` its graphs came from."""

    root: Path
    model: Any


def export_graph_fast(g: Any, path: Path) -> None:
    """A graph of :func:`edgeasr.export.graphs.build_graphs` through the TorchScript ONNX
    exporter: same modules, names and dynamic batch axes as the real export, ~10x faster than
    the dynamo exporter (which tests/test_export covers)."""
    import warnings

    import torch

    axes = dict(zip(g.input_names + g.output_names, g.input_batch_axes + g.output_batch_axes,
                    strict=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            g.module, g.example_inputs, str(path), dynamo=False, opset_version=17,
            input_names=list(g.input_names), output_names=list(g.output_names),
            dynamic_axes={k: {a: "N"} for k, a in axes.items()},
        )


def build_tiny_bundle(
    root: Path,
    durations: tuple[int, ...] = (),
    *,
    int8: bool = False,
    sherpa: bool = False,
    checkpoint: bool = False,
) -> TinyBundle:
    """Export a random-init tiny model (seed 0) to ``root`` as a complete bundle: ONNX fp32
    graphs (``int8``: also ONNX int8), tokenizer, hashed model.json; ``sherpa`` adds the fp32
    sherpa-onnx flavor, ``checkpoint`` the training checkpoint ``checkpoint.pt`` (listed in
    model.json, so the bundle also serves ``backend="torch"``)."""
    import torch
    from edgeasr.export.graphs import build_graphs
    from edgeasr.train.checkpoint import save_checkpoint
    from edgeasr.train.model import Transducer
    from edgeasr.train.model.config import tiny_config

    from edgeasr.bundle import (
        MODEL_JSON,
        ChunkProfile,
        GraphSpec,
        Manifest,
        ModelSpec,
        TokenizerSpec,
        file_entry,
    )
    from edgeasr.features import FeatureConfig
    from edgeasr.tokenizer import Tokenizer

    torch.manual_seed(0)
    model = Transducer(tiny_config(durations=durations)).eval()
    with torch.no_grad():  # random init says "blank" ~always; make it emit some tokens
        model.joint.blank_head.bias.fill_(-2.8)
    cfg = model.cfg
    root.mkdir(parents=True, exist_ok=True)
    defs = build_graphs(model)
    precs = ("fp32", "int8") if int8 else ("fp32",)
    onnx: dict[str, dict[str, GraphSpec]] = {prec: {} for prec in precs}
    for name, g in defs.items():
        fp32 = root / "onnx/fp32" / f"{name}.onnx"
        export_graph_fast(g, fp32)
        if int8:
            from edgeasr.export.quantize import quantize_onnx_int8

            quantize_onnx_int8(fp32, root / "onnx/int8" / f"{name}.onnx")
        for prec in precs:
            onnx[prec][name] = GraphSpec(f"onnx/{prec}/{name}.onnx", g.input_specs(),
                                         g.output_specs())
    graphs: dict[str, dict[str, dict[str, GraphSpec]]] = {"onnx": onnx}
    if sherpa:
        from edgeasr.export.sherpa import (
            make_sherpa_decoder,
            make_sherpa_encoder,
            sherpa_joiner_graph,
        )
        from edgeasr.export.writer import _sherpa_specs

        make_sherpa_encoder(
            root / "onnx/fp32/encoder.onnx", root / "sherpa/fp32/encoder.onnx",
            num_layers=cfg.num_layers, d_model=cfg.d_model, conv_kernel=cfg.conv_kernel,
            left_context=cfg.left_context, chunk_frames=cfg.chunk_size,
            subsampling=cfg.subsampling, pad_length=cfg.pad_length)
        make_sherpa_decoder(root / "onnx/fp32/predictor.onnx", root / "sherpa/fp32/decoder.onnx",
                            vocab_size=cfg.vocab_size, context_size=cfg.context_size)
        export_graph_fast(sherpa_joiner_graph(model), root / "sherpa/fp32/joiner.onnx")
        graphs["sherpa"] = {"fp32": _sherpa_specs(model, "fp32")}
    tok = Tokenizer.train([" ".join(TINY_WORDS[i:] + TINY_WORDS[:i]) for i in range(10)],
                          root / "tok", vocab_size=cfg.vocab_size)
    tok.write_tokens(root / "tokens.txt")
    if checkpoint:
        save_checkpoint(root / "checkpoint.pt", {
            "model": model.state_dict(),
            "model_config": cfg.to_dict(),
            "feature_config": FeatureConfig().to_dict(),
            "train_config": {},
            "tokenizer": (root / "tok.model").read_bytes(),
        })
    manifest = Manifest(
        features=FeatureConfig(),
        model=ModelSpec(kind="hat", vocab_size=cfg.vocab_size, joint_dim=cfg.joint_dim,
                        context_size=cfg.context_size, tdt_durations=durations),
        chunk=ChunkProfile(chunk_frames=cfg.chunk_size, subsampling_factor=cfg.subsampling,
                           pad_length=cfg.pad_length, left_context=cfg.left_context),
        caches=defs["encoder"].input_specs()[1:],
        graphs=graphs,
        tokenizer=TokenizerSpec(model="tok.model", tokens="tokens.txt"),
        name="tiny-test",
    )
    manifest.files = {f.relative_to(root).as_posix(): file_entry(f)
                      for f in sorted(root.rglob("*")) if f.is_file()}
    (root / MODEL_JSON).write_text(manifest.to_json())
    return TinyBundle(root, model)


TinyBundleFactory = Callable[..., TinyBundle]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> TinyBundleFactory:
    """Factory of tiny exported bundles: ``tiny_bundle()`` (no durations),
    ``tiny_bundle((0, 1, 2), int8=True, sherpa=True, checkpoint=True)``, ... (the arguments of
    :func:`build_tiny_bundle`). Each variant is built once per session and shared, so tests
    must treat the folder as read-only (copy it to alter it) and must not train the model."""
    pytest.importorskip("torch")
    built: dict[tuple[Any, ...], TinyBundle] = {}

    def get(durations: tuple[int, ...] = (), *, int8: bool = False, sherpa: bool = False,
            checkpoint: bool = False) -> TinyBundle:
        key = (tuple(durations), int8, sherpa, checkpoint)
        if key not in built:
            built[key] = build_tiny_bundle(tmp_path_factory.mktemp("tiny-bundle"), key[0],
                                           int8=int8, sherpa=sherpa, checkpoint=checkpoint)
        return built[key]

    return get
