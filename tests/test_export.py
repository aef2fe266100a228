"""Export: bundle writing, ONNX / ExecuTorch parity against torch, sherpa-onnx decoding.

One tiny random-init model (2 layers, d=32, TDT durations) is saved as a real checkpoint and
exported once per session; the tests then check the bundle, the graphs and sherpa-onnx on it.
Exporting (torch.export + ONNX conversion) takes tens of seconds on 2 cores, so these tests are
marked slow.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeasr.export.cli import main as cli_main  # noqa: E402

from edgeasr.bundle import MODEL_JSON, Bundle, BundleError  # noqa: E402

# The shared data folder sits beside the repository (../shared), as on CI.
SPEECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "speechocean762-train"
MANIFEST = SPEECH / "manifest.jsonl"


def _tiny_model_and_tokenizer(tmp: Path, durations: tuple[int, ...] = (0, 1, 2)):
    from edgeasr.train.model import Transducer, tiny_config

    from edgeasr.tokenizer import Tokenizer

    torch.manual_seed(0)
    cfg = tiny_config(durations=durations)
    model = Transducer(cfg).eval()
    # Random init: bias blank down (and <unk>, which sherpa-onnx treats as blank) so that greedy
    # search emits tokens and the sherpa-onnx comparison compares real token sequences.
    with torch.no_grad():
        model.joint.blank_head.bias.fill_(-4.0)
        model.joint.label_head.bias[0] = -10.0  # label index 0 is token id 1, <unk>
    texts = ["ab ba abc cab", "bca acb bac", "aa bb cc abcabc"] * 10
    tok = Tokenizer.train(texts, tmp / "tok", vocab_size=cfg.vocab_size)
    return model, tok


def _save_checkpoint(tmp: Path, durations: tuple[int, ...] = (0, 1, 2)) -> Path:
    from edgeasr.train.checkpoint import save_checkpoint

    from edgeasr.features import FeatureConfig

    model, tok = _tiny_model_and_tokenizer(tmp, durations)
    return save_checkpoint(
        tmp / "tiny.pt",
        {
            "model_config": model.cfg.to_dict(),
            "model": model.state_dict(),
            "tokenizer": tok.model_bytes,
            "train_config": {"note": "random init for export tests"},
            "feature_config": FeatureConfig().to_dict(),
        },
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def onnx_bundle(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "tiny"
    rc = cli_main([str(checkpoint), "--out", str(out), "--format", "onnx,sherpa",
                   "--quantize", "none,int8", "--with-checkpoint", "-q"])
    assert rc == 0
    return out


def _model(checkpoint: Path):
    from edgeasr.train.checkpoint import load_for_inference

    return load_for_inference(checkpoint)[0]


@pytest.mark.slow
def test_bundle_contents_and_schema(onnx_bundle: Path) -> None:
    b = Bundle.load(onnx_bundle)
    assert sorted(b.variants()) == [
        ("onnx", "fp32"), ("onnx", "int8"), ("sherpa", "fp32"), ("sherpa", "int8"),
    ]
    assert b.chunk.input_frames == 4 * 4 + 7 and b.chunk.chunk_frames == 4
    assert b.model.tdt_durations == (0, 1, 2) and b.model.vocab_size == 16
    enc, _ = b.graph("onnx", "encoder")
    assert enc.input_names == ["features", "attn_cache", "conv_cache", "processed_frames"]
    assert enc.output_names == ["frames", "new_attn_cache", "new_conv_cache",
                                "new_processed_frames"]
    assert [c.shape for c in b.caches] == [(2, 6, "N", 32), (2, 4, "N", 32), ("N",)]
    jb, _ = b.graph("onnx", "joint_blank")
    assert jb.output_names == ["h", "blank_logit", "duration_logits"]
    iam, _ = b.graph("onnx", "iam_joint")
    assert [o.shape for o in iam.outputs] == [("N", 4), ("N", 4, 15), ("N", 4, 3)]
    assert b.manifest.model_config["d_model"] == 32
    assert b.manifest.train_config == {"note": "random init for export tests"}
    # int8 graphs carry int8 weights: smaller than fp32 even for this tiny model
    sizes = {v: sum(b.manifest.files[g.file].size for g in b.graphs(*v).values())
             for v in b.variants()}
    assert sizes[("onnx", "int8")] < sizes[("onnx", "fp32")]


@pytest.mark.slow
def test_hash_mismatch_is_detected(onnx_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(onnx_bundle, copy)
    p = copy / "onnx/fp32/joint_labels.onnx"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"joint_labels\.onnx: sha256 mismatch"):
        Bundle.load(copy)


def _frame_scale(model, chunk: np.ndarray) -> float:
    from edgeasr.train.model import EncoderCaches

    with torch.no_grad():
        frames, _ = model.encoder.forward_chunk(
            torch.from_numpy(chunk), EncoderCaches.init(chunk.shape[0], model.cfg)
        )
    return float(frames.abs().max())


def _ort(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.slow
def test_onnx_encoder_parity_over_chunks(onnx_bundle: Path, checkpoint: Path) -> None:
    """Real speech features, 3 consecutive chunks, each side carrying its own caches."""
    from edgeasr.export.parity import encoder_parity, onnx_runner

    from edgeasr.audio import load_audio
    from edgeasr.features import compute_features

    model = _model(checkpoint)
    b = Bundle.load(onnx_bundle)
    _, path = b.graph("onnx", "encoder")
    feats = compute_features(load_audio(SPEECH / "audio/000010011.ogg"))
    fp32 = encoder_parity(model, onnx_runner(path), num_chunks=3, features=feats[None, :60])
    assert fp32 <= 1e-4
    # batch of 3 random streams, fresh runner: batch is dynamic
    assert encoder_parity(model, onnx_runner(path), num_chunks=3, batch=3) <= 1e-4
    # int8: not exact, but well inside the output scale (a random 32-dim model without CMVN is
    # the worst case for per-tensor activation scales; measured 0.69 against a scale of 2.0).
    _, p8 = b.graph("onnx", "encoder", "int8")
    int8 = encoder_parity(model, onnx_runner(p8), num_chunks=3, features=feats[None, :60])
    scale = _frame_scale(model, feats[None, :23])
    assert 1e-6 < int8 < 0.5 * scale


@pytest.mark.slow
def test_onnx_joint_graphs_match_torch(onnx_bundle: Path, checkpoint: Path) -> None:
    from edgeasr.train.model import hat_log_probs

    model = _model(checkpoint)
    b = Bundle.load(onnx_bundle)
    gen = torch.Generator().manual_seed(3)
    e, p = torch.randn(5, 32, generator=gen), torch.randn(5, 32, generator=gen)
    h, blank, dur = _ort(b.graph("onnx", "joint_blank")[1]).run(
        None, {"e": e.numpy(), "p": p.numpy()}
    )
    (labels,) = _ort(b.graph("onnx", "joint_labels")[1]).run(None, {"h": h})
    with torch.no_grad():
        ref = model.joint(e, p)
        full = ref.token_log_probs().numpy()
    assert np.abs(blank - ref.blank_logit.numpy()).max() < 1e-5
    assert np.abs(dur - ref.duration_logits.numpy()).max() < 1e-5
    # the split joint recombines into the full HAT log-probs
    mine = hat_log_probs(torch.from_numpy(blank), torch.from_numpy(labels)).numpy()
    assert np.abs(mine - full).max() < 1e-5
    frames = torch.randn(2, 4, 32, generator=gen)
    iam_blank, iam_labels, _ = _ort(b.graph("onnx", "iam_joint")[1]).run(
        None, {"frames": frames.numpy()}
    )
    with torch.no_grad():
        null = model.joint(frames)  # p = None: the null predictor
    assert np.abs(iam_blank - null.blank_logit.numpy()).max() < 1e-5
    assert np.abs(
        iam_labels - torch.log_softmax(null.label_logits, -1).numpy()
    ).max() < 1e-5
    (pred,) = _ort(b.graph("onnx", "predictor")[1]).run(
        None, {"context": np.array([[0, 0], [3, 7]], dtype=np.int64)}
    )
    with torch.no_grad():
        ref_p = model.predictor.step(torch.tensor([[0, 0], [3, 7]]))
    assert np.abs(pred - ref_p.numpy()).max() < 1e-5


def _torch_sherpa_greedy(model, feats: np.ndarray, unk_id: int = 1) -> list[int]:
    """sherpa-onnx's streaming greedy search, in torch: chunks while ``k*S + T < frames``,
    argmax over the full HAT log-probs, at most one symbol per frame, <unk> treated as blank."""
    from edgeasr.train.model import EncoderCaches

    cfg = model.cfg
    t_in, shift = cfg.chunk_input_frames(), cfg.subsampling * cfg.chunk_size
    x = torch.from_numpy(feats)[None]
    caches = EncoderCaches.init(1, cfg)
    context = [0] * cfg.context_size
    hyp: list[int] = []
    with torch.no_grad():
        p = model.predictor.step(torch.tensor([context]))
        k = 0
        while k * shift + t_in < x.shape[1]:
            frames, caches = model.encoder.forward_chunk(x[:, k * shift : k * shift + t_in], caches)
            for t in range(frames.shape[1]):
                y = int(model.joint.log_probs(frames[:, t], p).argmax(-1))
                if y not in (0, unk_id):
                    hyp.append(y)
                    context = context[1:] + [y]
                    p = model.predictor.step(torch.tensor([context]))
            k += 1
    return hyp


def _sherpa_tokens(b: Bundle, audio: np.ndarray) -> list[str]:
    """sherpa-onnx's OnlineRecognizer (greedy) on the bundle's sherpa flavor: token pieces."""
    import sherpa_onnx

    files = {n: str(b.path(g.file)) for n, g in b.graphs("sherpa").items()}
    rec = sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=str(b.tokens_path), encoder=files["encoder"], decoder=files["decoder"],
        joiner=files["joiner"], num_threads=1, sample_rate=16000, feature_dim=80,
        decoding_method="greedy_search",
    )
    tail = np.zeros(int(b.chunk.tail_padding_seconds * 16000), dtype=np.float32)
    stream = rec.create_stream()
    stream.accept_waveform(16000, audio)
    stream.accept_waveform(16000, tail)
    stream.input_finished()
    while rec.is_ready(stream):
        rec.decode_stream(stream)
    return rec.get_result_all(stream).tokens


@pytest.mark.slow
def test_sherpa_onnx_decodes_like_torch(onnx_bundle: Path, checkpoint: Path) -> None:
    pytest.importorskip("sherpa_onnx")
    from edgeasr.audio import load_audio
    from edgeasr.features import compute_features
    from edgeasr.tokenizer import read_tokens

    b = Bundle.load(onnx_bundle)
    audio = load_audio(SPEECH / "audio/000010011.ogg")
    tail = np.zeros(int(b.chunk.tail_padding_seconds * 16000), dtype=np.float32)
    got = _sherpa_tokens(b, audio)

    model = _model(checkpoint)
    feats = compute_features(np.concatenate([audio, tail]))
    ref = _torch_sherpa_greedy(model, feats)
    pieces = read_tokens(b.tokens_path)
    assert len(ref) > 5, "the test model should emit tokens"
    # sherpa-onnx reports pieces with the sentencepiece word marker shown as a space
    assert got == [pieces[i].replace("\u2581", " ") for i in ref]


@pytest.mark.slow
def test_sherpa_onnx_equals_edgeasr_greedy_on_a_model_without_durations(tmp_path: Path) -> None:
    """Integrators' check: on a model without a duration head (sherpa-onnx's online search
    cannot jump), sherpa-onnx and edgeasr's own streaming greedy search (one symbol per
    frame, as sherpa-onnx) give the same tokens on the same speech."""
    pytest.importorskip("sherpa_onnx")
    from edgeasr.audio import load_audio
    from edgeasr.decoding import DecodingConfig
    from edgeasr.stream import Recognizer
    from edgeasr.tokenizer import read_tokens

    ckpt = _save_checkpoint(tmp_path, durations=())
    out = tmp_path / "plain"
    assert cli_main([str(ckpt), "--out", str(out), "--format", "onnx,sherpa", "--quantize",
                     "none", "-q"]) == 0
    b = Bundle.load(out)
    audio = load_audio(SPEECH / "audio/000010011.ogg")
    rec = Recognizer.from_bundle(out, decoding=DecodingConfig(method="greedy",
                                                              max_symbols_per_frame=1))
    ours = rec.transcribe(audio, sample_rate=16000).tokens
    pieces = read_tokens(b.tokens_path)
    assert len(ours) > 5, "the test model should emit tokens"
    assert _sherpa_tokens(b, audio) == [pieces[i].replace("\u2581", " ") for i in ours]


@pytest.mark.slow
def test_sherpa_encoder_metadata(onnx_bundle: Path) -> None:
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(onnx_bundle / "sherpa/fp32/encoder.onnx"))
            .metadata_props}
    assert meta["model_type"] == "conformer"
    assert (meta["T"], meta["decode_chunk_len"], meta["pad_length"]) == ("23", "16", "7")
    assert (meta["num_encoder_layers"], meta["left_context"], meta["encoder_dim"],
            meta["cnn_module_kernel"]) == ("2", "6", "32", "5")
    dec = {p.key: p.value for p in onnx.load(str(onnx_bundle / "sherpa/fp32/decoder.onnx"))
           .metadata_props}
    assert dec == {"context_size": "2", "vocab_size": "16"}


@pytest.mark.slow
def test_executorch_export_and_parity(checkpoint: Path, onnx_bundle: Path, tmp_path: Path
                                      ) -> None:
    """fp32 bundle through the writer (parity checked on all 5 graphs, the encoder over 3
    chunks of real speech); ExecuTorch, ONNX Runtime and torch stream the same speech to the
    same greedy transcript; int8 PT2E on the IAM joint only, calibrated on real speech (the int8
    encoder lowering takes minutes on 2 shared cores; the CLI path is the same code)."""
    pytest.importorskip("executorch")
    from edgeasr.export.calibration import calibration_inputs, load_calibration_features
    from edgeasr.export.executorch import export_pte, quantize_pt2e
    from edgeasr.export.graphs import build_graphs
    from edgeasr.export.parity import encoder_parity, pte_runner
    from edgeasr.export.writer import ExportOptions, export_checkpoint

    from edgeasr.audio import load_audio
    from edgeasr.features import FeatureConfig, compute_features

    out = tmp_path / "et"
    report = export_checkpoint(checkpoint, out, ExportOptions(formats=("executorch",)))
    assert len(report.parity) == 5 and all(d <= 1e-4 for d in report.parity.values())
    b = Bundle.load(out)
    assert list(b.variants()) == [("executorch", "fp32")] and not (out / "onnx").exists()
    model = _model(checkpoint)
    feats = compute_features(load_audio(SPEECH / "audio/000010011.ogg"))[None, :60]
    run = pte_runner(b.graph("executorch", "encoder")[1])
    assert encoder_parity(model, run, 3, features=feats) <= 1e-4

    from edgeasr.stream import Recognizer

    speech = load_audio(SPEECH / "audio/000010011.ogg")
    texts = [r.transcribe(speech, sample_rate=16000) for r in (
        Recognizer.from_bundle(out, backend="executorch"),
        Recognizer.from_bundle(onnx_bundle, backend="onnxruntime"),
        Recognizer.from_checkpoint(checkpoint))]
    assert len(texts[0].tokens) > 5
    assert all(t.tokens == texts[0].tokens and t.timestamps == texts[0].timestamps
               for t in texts[1:])

    graph = build_graphs(model)["iam_joint"]
    calib = calibration_inputs(model, load_calibration_features(MANIFEST, FeatureConfig(), 2))
    pte = export_pte(graph, tmp_path / "iam8.pte", program=quantize_pt2e(graph, calib["iam_joint"]))
    # held-out real frames (the last calibration chunk is a later utterance position)
    frames = calib["iam_joint"][-1][0]
    out = pte_runner(pte)([frames.numpy()])
    with torch.no_grad():
        ref = graph.module(frames)
    int8 = max(float(np.abs(o - r.numpy()).max()) for o, r in zip(out, ref, strict=True))
    scale = max(float(r.abs().max()) for r in ref)
    assert 1e-6 < int8 < 0.25 * scale, (int8, scale)


@pytest.mark.slow
def test_executorch_int8_encoder_with_8x_front_end(tmp_path: Path) -> None:
    """The default model's 80 ms front end (frame-pair merge Conv1d) lowers to XNNPACK in int8
    and the .pte tracks the torch encoder (it failed with "Weight and Input should both be
    quantized" before the merge and its input Linear were kept fp32)."""
    pytest.importorskip("executorch")
    from edgeasr.export.executorch import export_pte, quantize_pt2e
    from edgeasr.export.graphs import build_graphs
    from edgeasr.export.parity import pte_runner
    from edgeasr.train.model import Transducer, tiny_config

    torch.manual_seed(0)
    model = Transducer(tiny_config(subsampling=8)).eval()
    graph = build_graphs(model)["encoder"]
    feats = graph.example_inputs[0]
    calib = [(torch.randn_like(feats),) + tuple(graph.example_inputs[1:]) for _ in range(2)]
    program = quantize_pt2e(graph, calib)
    # every linear but the fp32 front end's has int8 weights, the attention's q / kv
    # projections (F.linear on slices of one qkv weight) included
    linears = [n for n in program.graph.nodes if n.target == torch.ops.aten.linear.default]
    fp32 = [n.name for n in linears if "dequantize" not in str(n.args[1].target)]
    assert len(linears) > 8 and len(fp32) == 1, fp32  # subsampling.out
    pte = export_pte(graph, tmp_path / "enc8.pte", program=program)
    inputs = (torch.randn_like(feats),) + tuple(graph.example_inputs[1:])
    run = pte_runner(pte)
    out = run([x.numpy() for x in inputs])
    with torch.no_grad():
        ref = graph.module(*inputs)
    err = float(np.abs(out[0] - ref[0].numpy()).max())
    scale = float(ref[0].abs().max())
    assert 0 < err < 0.25 * scale, (err, scale)
    # the new caches keep their dtypes (processed_frames came back float32 once, and the next
    # chunk was refused), so they feed the next call
    assert [np.asarray(o).dtype for o in out[1:]] == [r.numpy().dtype for r in ref[1:]]
    nxt = run([np.asarray(x) for x in (torch.randn_like(feats).numpy(), *out[1:])])
    assert np.asarray(nxt[-1]).tolist() == (2 * ref[-1]).tolist()


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--describe", str(tmp_path / "missing")]) == 1
    assert "no such bundle" in capsys.readouterr().err
    assert cli_main([str(tmp_path / "x.pt"), "--out", str(tmp_path / "b"), "-q"]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
    assert cli_main([str(tmp_path / "x.pt"), "--out", str(tmp_path / "b"),
                     "--quantize", "int4"]) == 2
    assert "unknown --quantize" in capsys.readouterr().err


@pytest.mark.slow
def test_with_checkpoint_feeds_torch_backend_and_init(onnx_bundle: Path, checkpoint: Path
                                                      ) -> None:
    """``--with-checkpoint`` stores the weights (no optimizer state), listed and hashed in
    model.json: the torch backend decodes like ONNX from it, and it loads as a ``--init``."""
    from edgeasr.train.checkpoint import load_checkpoint

    from edgeasr.stream import Recognizer

    b = Bundle.load(onnx_bundle)
    assert "checkpoint.pt" in b.manifest.files
    state = load_checkpoint(onnx_bundle / "checkpoint.pt")
    assert "optimizer" not in state
    src = load_checkpoint(checkpoint)
    assert all(torch.equal(state["model"][k], v) for k, v in src["model"].items())
    assert state["tokenizer"] == src["tokenizer"]
    x = (0.2 * np.random.default_rng(3).standard_normal(24000)).astype(np.float32)
    ref = Recognizer.from_bundle(onnx_bundle, precision="fp32").transcribe(x, sample_rate=16000)
    got = Recognizer.from_bundle(onnx_bundle, backend="torch").transcribe(x, sample_rate=16000)
    assert len(ref.tokens) > 0 and got.tokens == ref.tokens


@pytest.mark.slow
def test_cli_describe_and_tar(onnx_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--describe", str(onnx_bundle)]) == 0
    text = capsys.readouterr().out
    assert "sherpa/int8: encoder, decoder, joiner" in text
    raw = json.loads((onnx_bundle / MODEL_JSON).read_text())
    assert raw["schema_version"] == 1
