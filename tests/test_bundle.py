"""model.json schema, load and validation (edgeasr.bundle). No torch: the runtime path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from edgeasr.bundle import (
    MODEL_JSON,
    SCHEMA_VERSION,
    Bundle,
    BundleError,
    ChunkProfile,
    DecodingDefaults,
    GraphSpec,
    Manifest,
    ModelSpec,
    TensorSpec,
    TokenizerSpec,
    file_entry,
    pack_bundle,
)
from edgeasr.features import FeatureConfig

L, LEFT, K, D, J, V, C = 2, 8, 15, 32, 24, 50, 4


def _caches() -> tuple[TensorSpec, ...]:
    return (
        TensorSpec("attn_cache", (L, LEFT, "N", D)),
        TensorSpec("conv_cache", (L, K - 1, "N", D)),
        TensorSpec("processed_frames", ("N",), "int64"),
    )


def _graphs() -> dict[str, GraphSpec]:
    chunk = ChunkProfile(chunk_frames=C, subsampling_factor=4, pad_length=7, left_context=LEFT)
    enc = GraphSpec(
        "onnx/encoder.onnx",
        (TensorSpec("features", ("N", chunk.input_frames, 80)), *_caches()),
        (
            TensorSpec("frames", ("N", C, J)),
            *(TensorSpec("new_" + c.name, c.shape, c.dtype) for c in _caches()),
        ),
    )
    pred = GraphSpec(
        "onnx/predictor.onnx",
        (TensorSpec("context", ("N", 2), "int64"),),
        (TensorSpec("p", ("N", J)),),
    )
    return {"encoder": enc, "predictor": pred}


def make_bundle(root: Path) -> Path:
    """A schema-complete bundle whose graph files are small byte blobs (only hashed here)."""
    (root / "onnx").mkdir(parents=True)
    (root / "onnx/encoder.onnx").write_bytes(b"encoder-bytes" * 10)
    (root / "onnx/predictor.onnx").write_bytes(b"predictor-bytes")
    (root / "tokenizer.model").write_bytes(b"spm")
    (root / "tokens.txt").write_text("<blk> 0\n<unk> 1\n")
    files = ["onnx/encoder.onnx", "onnx/predictor.onnx", "tokenizer.model", "tokens.txt"]
    m = Manifest(
        features=FeatureConfig(),
        model=ModelSpec(kind="hat", vocab_size=V, joint_dim=J, tdt_durations=(0, 1, 2)),
        chunk=ChunkProfile(chunk_frames=C, subsampling_factor=4, pad_length=7, left_context=LEFT),
        caches=_caches(),
        graphs={"onnx": {"fp32": _graphs()}},
        tokenizer=TokenizerSpec("tokenizer.model", "tokens.txt"),
        decoding=DecodingDefaults(theta_iam=0.9, theta_hat=0.8, max_symbols_per_frame=3),
        train_config={"lr": 0.001, "steps": 10},
        files={f: file_entry(root / f) for f in files},
        name="tiny",
    )
    (root / MODEL_JSON).write_text(m.to_json())
    return root


def _edit_json(root: Path, fn) -> None:
    d = json.loads((root / MODEL_JSON).read_text())
    fn(d)
    (root / MODEL_JSON).write_text(json.dumps(d))


def test_roundtrip_and_accessors(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    b = Bundle.load(root)
    assert b.model.vocab_size == V and b.model.tdt_durations == (0, 1, 2) and b.model.is_tdt
    assert b.chunk.input_frames == 4 * C + 7 == 23
    assert b.chunk.feature_frames_per_chunk == 16
    assert b.chunk.tail_padding_frames == 23
    assert b.chunk.tail_padding_seconds == pytest.approx(0.24)
    assert [c.name for c in b.caches] == ["attn_cache", "conv_cache", "processed_frames"]
    assert b.caches[0].concrete_shape(3) == (L, LEFT, 3, D)
    assert b.features == FeatureConfig()
    assert b.decoding.theta_hat == 0.8
    spec, path = b.graph("onnx", "encoder")
    assert path == root / "onnx/encoder.onnx" and spec.input_names[0] == "features"
    assert b.manifest.train_config == {"lr": 0.001, "steps": 10}
    # JSON round trip is exact
    again = Manifest.from_dict(json.loads((root / MODEL_JSON).read_text()))
    assert again.to_dict() == b.manifest.to_dict()
    # model.json itself is accepted as the path too
    assert Bundle.load(root / MODEL_JSON).root == root


def test_describe_mentions_geometry_and_sizes(tmp_path: Path) -> None:
    text = Bundle.load(make_bundle(tmp_path / "b")).describe()
    assert "vocab 50" in text and "T=23" in text and "onnx/fp32: encoder, predictor" in text
    assert "TDT durations [0, 1, 2]" in text and "attn_cache[2, 8, 'N', 32]" in text


def test_hash_mismatch_names_the_file(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    p = root / "onnx/encoder.onnx"
    data = bytearray(p.read_bytes())
    data[0] ^= 1  # same size, different content
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"encoder\.onnx: sha256 mismatch"):
        Bundle.load(root)
    Bundle.load(root, verify_hashes=False)  # sizes still match: fast path accepts


def test_size_mismatch_and_missing_file(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    (root / "tokens.txt").write_text("<blk> 0\n")
    with pytest.raises(BundleError, match=r"tokens\.txt: size"):
        Bundle.load(root, verify_hashes=False)
    (root / "tokens.txt").unlink()
    with pytest.raises(BundleError, match=r"tokens\.txt: missing"):
        Bundle.load(root)


def test_unknown_schema_version(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    _edit_json(root, lambda d: d.update(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(BundleError, match=r"model\.json: schema_version 2 is not.*upgrade"):
        Bundle.load(root)


def test_malformed_json_and_missing_model_json(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    (root / MODEL_JSON).write_text('{"schema_version": 1,')
    with pytest.raises(BundleError, match=r"model\.json: malformed JSON"):
        Bundle.load(root)
    (root / MODEL_JSON).unlink()
    with pytest.raises(BundleError, match=r"model\.json: missing"):
        Bundle.load(root)
    with pytest.raises(BundleError, match="no such bundle"):
        Bundle.load(tmp_path / "nope")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["model"].update(blank_id=3), "blank_id must be 0"),
        (lambda d: d["model"].update(colour="red"), r"model: unknown key\(s\) \['colour'\]"),
        (lambda d: d["features"].update(num_mel_bins=1), "features: .*num_mel_bins"),
        (lambda d: d["chunk"].update(input_frames=99), "chunk.input_frames=99 disagrees"),
        (lambda d: d["chunk"].update(tail_padding_frames=3), "last word would be lost"),
        (lambda d: d["decoding"].update(theta_iam=1.5), "theta_iam must be a probability"),
        (lambda d: d["graphs"].update(tflite={}), "unknown format 'tflite'"),
        (lambda d: d["caches"].reverse(), "order matters"),
        (lambda d: d["files"].pop("tokens.txt"), r"\['tokens.txt'\] are used but not listed"),
        (lambda d: d["tokenizer"].update(model="../x.model"), "must be relative and stay inside"),
        (lambda d: d.pop("chunk"), r"top level: missing key\(s\) \['chunk'\]"),
    ],
)
def test_schema_violations_are_named(tmp_path: Path, edit, message: str) -> None:
    root = make_bundle(tmp_path / "b")
    _edit_json(root, edit)
    with pytest.raises(BundleError, match=message):
        Bundle.load(root)


def test_tar_archive(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    tar = pack_bundle(root, tmp_path / "b.tar")
    b = Bundle.load(tar)
    assert b.root != root and (b.root / "onnx/encoder.onnx").read_bytes() == (
        root / "onnx/encoder.onnx"
    ).read_bytes()
    assert b.graph("onnx", "predictor")[1].is_file()
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all")
    with pytest.raises(BundleError, match="not a bundle folder, model.json or .tar"):
        Bundle.load(tmp_path / "junk.tar")


def test_missing_variant_lists_what_exists(tmp_path: Path) -> None:
    b = Bundle.load(make_bundle(tmp_path / "b"))
    with pytest.raises(BundleError, match="no executorch/int8 graphs.*has: onnx/fp32"):
        b.graphs("executorch", "int8")
    with pytest.raises(BundleError, match="has no 'iam_joint' graph"):
        b.graph("onnx", "iam_joint")


def test_bundle_module_does_not_import_torch() -> None:
    assert "edgeasr.bundle" in sys.modules
    import subprocess

    code = "import sys, edgeasr.bundle; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
