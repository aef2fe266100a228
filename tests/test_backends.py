"""Backends: ONNX Runtime on an exported tiny model against the torch backend on the same
weights (call by call, and whole greedy decodes), bundle loading, and the no-torch guarantee
of the ONNX Runtime path."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgeasr.backends.base import BackendError, BackendSpec, CacheSpec, split_caches, stack_caches

torch = pytest.importorskip("torch")


#: Durations of the bundle these tests decode: a TDT model, so every graph output is exercised.
TDT = (0, 1, 2)


def test_ort_calls_match_torch(tiny_bundle) -> None:
    from edgeasr.backends.onnxruntime import OrtBackend
    from edgeasr.backends.torch import TorchBackend
    from edgeasr.bundle import Bundle

    root, model = tiny_bundle(TDT)
    ort_be = OrtBackend(Bundle.load(root), num_threads=1, providers=["CPUExecutionProvider"])
    th = TorchBackend(model, num_threads=1)
    assert ort_be.spec.caches == th.spec.caches
    assert (ort_be.spec.feature_frames, ort_be.spec.chunk_frames) == (23, 4)
    rng = np.random.default_rng(0)
    n = 3
    feats = rng.normal(size=(n, 23, 80)).astype(np.float32)
    c_o, c_t = ort_be.init_caches(n), th.init_caches(n)
    for _ in range(3):  # several chunks: the caches carry state
        f_o, c_o = ort_be.encoder(feats, c_o)
        f_t, c_t = th.encoder(feats, c_t)
        np.testing.assert_allclose(f_o, f_t, atol=1e-4)
        for k in c_t:
            np.testing.assert_allclose(c_o[k], c_t[k], atol=1e-4)
    ctx = np.array([[0, 0], [0, 5], [3, 7]], dtype=np.int64)
    p = ort_be.predictor(ctx)
    np.testing.assert_allclose(p, th.predictor(ctx), atol=1e-5)
    for a, b in zip(ort_be.joint_blank(f_o[:, 0], p), th.joint_blank(f_t[:, 0], p), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    h = th.joint_blank(f_t[:, 0], p)[0]
    np.testing.assert_allclose(ort_be.joint_labels(h), th.joint_labels(h), atol=1e-5)
    for a, b in zip(ort_be.iam_joint(f_o), th.iam_joint(f_t), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
        assert a.shape[:2] == (n, 4)


@pytest.mark.parametrize("method", ["greedy", "gated", "tdt"])
def test_ort_and_torch_decode_identical_tokens(tiny_bundle, method: str) -> None:
    from edgeasr.backends.torch import TorchBackend
    from edgeasr.bundle import Bundle
    from edgeasr.decoding import DecodingConfig
    from edgeasr.stream import Recognizer, RecognizerConfig
    from edgeasr.tokenizer import Tokenizer

    root, model = tiny_bundle(TDT)
    dec = DecodingConfig(method=method, iam_threshold=0.6, hat_threshold=0.6)
    rec_ort = Recognizer.from_bundle(root, backend="onnxruntime", decoding=dec)
    bundle = Bundle.load(root)
    rec_th = Recognizer(
        TorchBackend(model, BackendSpec.from_bundle(bundle)),
        Tokenizer(bundle.tokenizer_path),
        bundle.features,
        RecognizerConfig(decoding=dec),
    )
    x = (0.2 * np.random.default_rng(1).standard_normal(16000)).astype(np.float32)
    r_o = rec_ort.transcribe(x, sample_rate=16000)
    r_t = rec_th.transcribe(x, sample_rate=16000)
    assert r_o.tokens == r_t.tokens and len(r_o.tokens) > 0
    assert r_o.text == r_t.text and r_o.timestamps == r_t.timestamps


@pytest.mark.parametrize("method", ["tdt", "greedy"])
def test_torch_backend_greedy_matches_training_reference(tiny_bundle, method) -> None:
    """The runtime's streaming greedy search == edgeasr.train's reference decoder on the same
    chunked encoder output (same C, same max symbols per frame). On a TDT model ``greedy``
    takes the duration jumps too: a frame-by-frame search of a TDT model repeats tokens on the
    frames the model learned to jump over (the shipped model's WER was 205% that way)."""
    from edgeasr.train.model.transducer import greedy_decode

    from edgeasr.backends.torch import TorchBackend
    from edgeasr.decoding import DecodingConfig, make_decoder

    model = tiny_bundle(TDT).model
    be = TorchBackend(model, num_threads=1)
    rng = np.random.default_rng(3)
    n_chunks = 3
    feats = rng.normal(size=(1, 16 * n_chunks + 7, 80)).astype(np.float32)
    dec = make_decoder(be, DecodingConfig(method=method, max_symbols_per_frame=4))
    st = dec.init_state()
    caches = be.init_caches(1)
    for k in range(n_chunks):
        frames, caches = be.encoder(feats[:, 16 * k : 16 * k + 23], caches)
        dec.decode_chunk(frames, [st])
    ref = greedy_decode(model, torch.from_numpy(feats), chunk_size=4, max_symbols_per_frame=4)
    assert st.tokens == ref[0] and len(ref[0]) > 2


def test_bundle_without_split_joint_is_named(tiny_bundle, tmp_path) -> None:
    import shutil

    from edgeasr.backends.onnxruntime import OrtBackend
    from edgeasr.bundle import Bundle

    root = tmp_path / "b"
    shutil.copytree(tiny_bundle(TDT).root, root)
    mj = json.loads((root / "model.json").read_text())
    del mj["graphs"]["onnx"]["fp32"]["joint_labels"]
    (root / "model.json").write_text(json.dumps(mj))
    with pytest.raises(BackendError, match="joint_labels"):
        OrtBackend(Bundle.load(root))
    with pytest.raises(BackendError, match="checkpoint"):
        from edgeasr.backends.torch import TorchBackend

        TorchBackend.from_bundle(Bundle.load(root))


def test_bundle_of_another_schema_is_refused(tiny_bundle, tmp_path) -> None:
    import shutil

    from edgeasr.bundle import BundleError
    from edgeasr.stream import Recognizer

    root = tmp_path / "b"
    shutil.copytree(tiny_bundle(TDT).root, root)
    mj = json.loads((root / "model.json").read_text())
    mj["schema_version"] = 99
    (root / "model.json").write_text(json.dumps(mj))
    with pytest.raises(BundleError, match="schema_version 99"):
        Recognizer.from_bundle(root)


def test_onnxruntime_path_never_imports_torch(tiny_bundle) -> None:
    root = tiny_bundle(TDT).root
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import edgeasr
        rec = edgeasr.Recognizer.from_bundle({str(root)!r}, backend="onnxruntime",
                                             decoding=edgeasr.DecodingConfig(method="gated"))
        r = rec.transcribe(np.zeros(8000, np.float32), sample_rate=16000)
        import edgeasr.commands.transcribe, edgeasr.commands.stream_cmd, edgeasr.commands.eval
        bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print("TORCH" if bad else "CLEAN", r.is_final)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["CLEAN", "True"]


def test_cache_stacking_round_trip() -> None:
    specs = (CacheSpec("a", (2, 3, 1, 4), "float32", 2), CacheSpec("n", (1,), "int64", 0))
    rng = np.random.default_rng(0)
    per = [{"a": rng.normal(size=(2, 3, 1, 4)).astype(np.float32), "n": np.array([i])}
           for i in range(3)]
    stacked = stack_caches(per, specs)
    assert stacked["a"].shape == (2, 3, 3, 4) and list(stacked["n"]) == [0, 1, 2]
    back = split_caches(stacked, specs, 3)
    for x, y in zip(per, back, strict=True):
        np.testing.assert_array_equal(x["a"], y["a"])
        np.testing.assert_array_equal(x["n"], y["n"])
    with pytest.raises(BackendError, match="shapes differ"):
        stack_caches([per[0], {"a": np.zeros((2, 2, 1, 4), np.float32), "n": np.zeros(1)}], specs)
    with pytest.raises(BackendError, match="batch axis"):
        CacheSpec("bad", (2, 3), "float32", 1)


@pytest.mark.slow
def test_executorch_graph_runs_batches_beyond_its_planned_maximum(tiny_bundle, tmp_path) -> None:
    """A ``.pte`` planned for 2 rows serves 5 streams (sliced, then concatenated), matching
    torch. (The full five-graph ExecuTorch backend was checked against torch the same way;
    lowering the encoder takes minutes, too slow for the suite.)"""
    pytest.importorskip("executorch.runtime")
    from edgeasr.export.executorch import export_pte
    from edgeasr.export.graphs import build_graphs

    from edgeasr.backends.executorch import _Method
    from edgeasr.backends.torch import TorchBackend
    from edgeasr.bundle import GraphSpec

    model = tiny_bundle(TDT).model
    th = TorchBackend(model, num_threads=1)
    g = build_graphs(model)["iam_joint"]
    export_pte(g, tmp_path / "iam.pte", max_batch=2)
    method = _Method("iam_joint", str(tmp_path / "iam.pte"),
                     GraphSpec("iam.pte", g.input_specs(), g.output_specs()), max_batch=2)
    frames = np.random.default_rng(0).normal(size=(5, 4, 32)).astype(np.float32)
    out = method(frames)
    for name, ref in zip(("blank_logit", "label_logprobs", "duration_logits"),
                         th.iam_joint(frames), strict=True):
        assert out[name].shape == ref.shape
        np.testing.assert_allclose(out[name], ref, atol=1e-5)


def test_checkpoint_recognizers_match_the_onnx_bundle(tiny_bundle) -> None:
    """``Recognizer.from_checkpoint`` and ``from_bundle(backend="torch")`` (a bundle that also
    carries its checkpoint) decode exactly like the exported ONNX graphs."""
    from edgeasr.stream import Recognizer

    root = tiny_bundle(TDT, checkpoint=True).root
    x = (0.2 * np.random.default_rng(2).standard_normal(16000)).astype(np.float32)
    ref = Recognizer.from_bundle(root).transcribe(x, sample_rate=16000)
    from_ckpt = Recognizer.from_checkpoint(root / "checkpoint.pt", num_threads=1).transcribe(
        x, sample_rate=16000)
    from_b = Recognizer.from_bundle(root, backend="torch").transcribe(x, sample_rate=16000)
    assert len(ref.tokens) > 0
    assert from_ckpt.tokens == ref.tokens and from_ckpt.text == ref.text
    assert from_b.tokens == ref.tokens
