"""Benchmark harness: end to end on a tiny random model exported into tmp (ONNX fp32/int8 and the
sherpa-onnx flavor, plus a checkpoint for torch eager) over a few seconds of synthetic audio;
the results.json / report.md / PNG it writes are well formed; compare.py flags an injected
regression and passes identical inputs. No test asserts a timing."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import compare, metrics, presets
from benchmarks.streaming import looped_audio, speech_onset

torch = pytest.importorskip("torch")


def write_manifest(root: Path, n: int = 2, seconds: float = 1.5) -> Path:
    """``n`` synthetic 'utterances': silence, then a chirp with harmonics, then silence."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        t = np.arange(int(seconds * 16000)) / 16000
        x = 0.3 * np.sin(2 * np.pi * (200 + 300 * t + 50 * i) * t) * (t > 0.3)
        x = (x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
        path = root / f"u{i}.wav"
        sf.write(path, x, 16000)
        lines.append(json.dumps({"id": f"u{i}", "audio": path.name, "text": "abc bed",
                                 "duration": seconds}))
    m = root / "test.jsonl"
    m.write_text("\n".join(lines) + "\n")
    return m


@pytest.fixture(scope="module")
def smoke_run(tiny_bundle, tmp_path_factory) -> tuple[Path, dict]:
    from benchmarks.run import main

    root = tmp_path_factory.mktemp("bench")
    bundle = tiny_bundle((0, 1, 2), int8=True, sherpa=True, checkpoint=True).root
    manifest = write_manifest(root)
    out = root / "out"
    rc = main(["--preset", "smoke", "--bundle", str(bundle),
               "--checkpoint", str(bundle / "checkpoint.pt"),
               "--manifest", str(manifest), "--out", str(out), "--long", "3"])
    assert rc == 0
    return out, json.loads((out / "results.json").read_text())


def test_results_record_machine_versions_threads_load(smoke_run) -> None:
    _, res = smoke_run
    assert res["machine"]["cores_logical"] >= 1 and res["machine"]["cpu"]
    for k in ("python", "numpy", "onnxruntime", "torch", "executorch", "sherpa-onnx"):
        assert k in res["versions"]
    assert res["versions"]["onnxruntime"]
    assert res["threads"]["counts"][0] == 1
    assert len(res["load_avg_start"]) == 3 and len(res["load_avg_end"]) == 3
    assert res["command"].startswith("python -m benchmarks --preset smoke")
    assert all(len(r["load_avg"]) == 3 for r in res["rows"])


def test_every_section_has_rows_and_ok_rows_have_metrics(smoke_run) -> None:
    _, res = smoke_run
    sections = {r["section"] for r in res["rows"]}
    assert {"sizes", "backends", "decoders", "chunks", "multistream", "growth", "gpu", "peers",
            "long"} <= sections
    failed = [(r["name"], r["status"]) for r in res["rows"] if r["status"].startswith("failed")]
    assert not failed
    names = {r["name"]: r for r in res["rows"]}
    for name in ("onnxruntime fp32 1t", "onnxruntime int8 1t", "torch fp32 1t"):
        m = names[name]["metrics"]
        assert names[name]["status"] == "ok"
        assert m["rtf"] > 0 and m["wer"] >= 0
        for key in ("encoder_ms", "decoder_ms", "chunk_total_ms"):
            assert m[key]["n"] > 0 and m[key]["p50"] <= m[key]["p95"] <= m[key]["p99"]
        assert m["final_ms"]["n"] == 2 and m["load_s"] > 0 and m["rss_peak_mb"] > 0
    # the bundle has no ExecuTorch graphs: the row says so instead of disappearing
    et = names["executorch fp32 1t"]
    assert et["status"].startswith("not run") and "executorch" in et["status"]


def test_axes_decoders_streams_growth_sizes(smoke_run) -> None:
    _, res = smoke_run
    dec = {r["name"]: r for r in res["rows"] if r["section"] == "decoders"}
    assert {"greedy", "gated θ_IAM=0.95", "tdt", "nar", "sar", "beam 4"} <= set(dec)
    assert all(r["status"] == "ok" for r in dec.values())
    assert dec["gated θ_IAM=0.95"]["config"]["decoding"]["iam_threshold"] == 0.95
    ms = [r for r in res["rows"] if r["section"] == "multistream"]
    assert [r["config"]["streams"] for r in ms] == [1, 2]
    assert all(r["metrics"]["failed_streams"] == 0 and r["metrics"]["x_realtime"] > 0
               for r in ms)
    gr = [r["metrics"]["seconds"] for r in res["rows"] if r["section"] == "growth"]
    assert gr == [1.0, 2.0]
    # rows are named "<bundle folder> <format>/<precision>"
    sizes = {r["name"].rsplit(" ", 1)[1]: r["metrics"] for r in res["rows"]
             if r["section"] == "sizes"}
    assert {"onnx/fp32", "onnx/int8", "sherpa/fp32"} <= set(sizes)
    fp32 = sizes["onnx/fp32"]
    assert fp32["total_bytes"] == sum(fp32["graphs"].values()) > 0
    assert set(fp32["graphs"]) == {"encoder", "predictor", "joint_blank", "joint_labels",
                                   "iam_joint"}


def test_gpu_rows_say_why_when_no_cuda(smoke_run) -> None:
    _, res = smoke_run
    gpu = [r for r in res["rows"] if r["section"] == "gpu"]
    assert len(gpu) == 4  # torch + ORT for each of the 2 stream counts
    if not res["machine"]["cuda"]["torch_cuda"]:
        assert all(r["status"] == "not run: no CUDA on this machine" for r in gpu)


def test_peers_and_headline(smoke_run) -> None:
    _, res = smoke_run
    peers = {r["name"]: r for r in res["rows"] if r["section"] == "peers"}
    ps = peers["pocketsphinx"]
    assert ps["status"] == "ok" or ps["status"].startswith("not run")
    sh = peers["sherpa-onnx fp32 1t"]
    assert sh["status"] == "ok", sh["status"]
    assert sh["metrics"]["rtf"] > 0 and len(sh["metrics"]["hyps"]) == 1
    # the int8 sherpa flavor is absent from this bundle: said, not hidden
    assert peers["sherpa-onnx int8 1t"]["status"].startswith("not run")
    head = res["headline"]
    assert head["rtf_ratio_vs_sherpa_fp32"] == pytest.approx(
        head["edgeasr_rtf_fp32"] / head["sherpa_rtf_fp32"], rel=1e-2)


def test_long_mode_trace_and_plots(smoke_run) -> None:
    out, res = smoke_run
    long = [r for r in res["rows"] if r["section"] == "long"][0]
    assert long["status"] == "ok"
    tr = long["metrics"]["trace"]
    assert len(tr) >= 2 and all({"audio_s", "round_ms", "rss_mb"} <= set(p) for p in tr)
    assert tr[-1]["audio_s"] <= 3.0
    for png in ("latency.png", "rtf.png", "growth_length.png", "growth_streams.png",
                "decoders.png", "long_stream.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", png


def test_report_markdown(smoke_run) -> None:
    out, res = smoke_run
    md = (out / "report.md").read_text()
    assert md.startswith("# edgeasr benchmark: preset `smoke`")
    assert res["command"] in md
    assert "not run: no CUDA on this machine" in md or res["machine"]["cuda"]["torch_cuda"]
    for section in ("## Bundle sizes", "## Backends", "## Decoders", "## Batched streams",
                    "## Growth", "## Peers", "## Long stream", "![latency.png](latency.png)"):
        assert section in md
    assert "load average" in md


def test_compare_flags_injected_regression(smoke_run, tmp_path, capsys) -> None:
    out, res = smoke_run
    old = out / "results.json"
    assert compare.main([str(old), str(old)]) == 0
    assert not [c for c in compare.compare(res, res) if c["regression"]]
    worse = copy.deepcopy(res)
    row = next(r for r in worse["rows"] if r["name"] == "onnxruntime fp32 1t")
    row["metrics"]["rtf"] = row["metrics"]["rtf"] * 2 + 0.01
    row["metrics"]["wer"] = row["metrics"]["wer"] + 0.2
    new = tmp_path / "new.json"
    new.write_text(json.dumps(worse))
    assert compare.main([str(old), str(new), "--margin", "0.1"]) == 1
    text = capsys.readouterr().out
    assert "REGRESSION" in text and "backends/onnxruntime fp32 1t" in text and "rtf" in text
    # within the margin: not flagged
    slight = copy.deepcopy(res)
    r2 = next(r for r in slight["rows"] if r["name"] == "onnxruntime fp32 1t")
    r2["metrics"]["rtf"] *= 1.05
    assert not [c for c in compare.compare(res, slight, 0.1) if c["regression"]]


def test_compare_direction_and_floor() -> None:
    def run(rows):
        return {"rows": [{"section": "s", "name": n, "status": "ok", "metrics": m}
                         for n, m in rows.items()]}

    old = run({"a": {"x_realtime": 10.0, "encoder_ms": {"p50": 0.01}},
               "b": {"rtf": 0.1}})
    new = run({"a": {"x_realtime": 5.0, "encoder_ms": {"p50": 0.05}},  # 5x, under the floor
               "b": {"rtf": 0.05}})  # faster: fine
    flagged = {(c["row"], c["metric"]) for c in compare.compare(old, new) if c["regression"]}
    assert flagged == {("s/a", "x_realtime")}
    with pytest.raises(ValueError, match="margin"):
        compare.compare(old, new, -1)


def test_percentiles_and_helpers() -> None:
    p = metrics.percentiles([0.001 * i for i in range(1, 101)])
    assert p["n"] == 100 and p["p50"] == pytest.approx(50.5) and p["p99"] == pytest.approx(99.01)
    assert p["max"] == pytest.approx(100.0)
    assert metrics.percentiles([]) == {"n": 0}
    x = np.zeros(16000, dtype=np.float32)
    x[8000:] = 0.5
    assert speech_onset(x) == pytest.approx(0.5)
    assert speech_onset(np.zeros(100, dtype=np.float32)) == 0.0
    with metrics.RssSampler(interval=0.01) as s:
        _ = np.ones(10_000_000)
    assert s.peak_mb >= s.start_mb > 0
    assert presets.get_preset("quick").growth_seconds[-1] == 60.0
    assert presets.get_preset("full").growth_seconds[-1] == 600.0
    with pytest.raises(ValueError, match="unknown preset"):
        presets.get_preset("nope")


def test_looped_audio_length_and_content() -> None:
    from benchmarks.streaming import Utterance

    a = Utterance("a", np.arange(10, dtype=np.float32), "", 0.0)
    b = Utterance("b", -np.arange(5, dtype=np.float32), "", 0.0)
    y = looped_audio([a, b], 32 / 16000)
    assert y.shape == (32,)
    assert np.array_equal(y[:15], np.concatenate([a.audio, b.audio]))
    assert np.array_equal(y[15:25], a.audio)


def test_cli_rejects_missing_inputs(tmp_path, capsys) -> None:
    from benchmarks.run import main

    assert main(["--manifest", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "--bundle" in capsys.readouterr().err
    assert main(["--bundle", str(tmp_path), "--manifest", "x", "--out", str(tmp_path)]) == 2
    assert "model.json" in capsys.readouterr().err


def test_wer_table_decoder_specs_carry_threshold_and_blank_penalty() -> None:
    from benchmarks.wer_table import decoding_config

    assert decoding_config("greedy").blank_penalty == 0.0
    g = decoding_config("gated@0.8:bp=-0.5")
    assert (g.method, g.iam_threshold, g.blank_penalty) == ("gated", 0.8, -0.5)
    assert decoding_config("beam:bp=1").blank_penalty == 1.0
    for bad, match in [("greedy@0.9", "only gated"), ("greedy:bp=x", "not a number"),
                       ("greedy:lm=1", "unknown option"), ("greedy:bp=nan", "NaN")]:
        with pytest.raises(SystemExit, match=match):
            decoding_config(bad)
