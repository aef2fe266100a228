"""Speech translation bundle: export parity of the ST graphs (ORT vs torch), the runtime gives
``text`` and ``translation`` from one ASR encoder pass, the ST blank penalty moves blank
decisions the expected way, and the sidecar is hash-checked like the ASR graphs.

One tiny bundle is exported per module (the ONNX export dominates: ~40 s idle, minutes on a
loaded 2-core machine), hence ``slow``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeasr.bundle import Bundle, BundleError  # noqa: E402
from edgeasr.stream import Recognizer  # noqa: E402
from edgeasr.translation import TRANSLATION_JSON, SpeechTranslator  # noqa: E402

pytestmark = pytest.mark.slow

EN = ["the lord is my shepherd", "in the beginning god created the heavens and the earth",
      "and god said let there be light", "blessed are the meek"]
ES = ["el señor es mi pastor", "en el principio creó dios los cielos y la tierra",
      "y dijo dios sea la luz", "bienaventurados los mansos"]


@pytest.fixture(scope="module")
def st_bundle(tmp_path_factory) -> tuple[Path, object, object]:
    from edgeasr.export.st import export_st_bundle
    from edgeasr.train.model.hierarchical import HierarchicalTransducer, tiny_hierarchical_config

    from edgeasr.tokenizer import Tokenizer

    tmp = tmp_path_factory.mktemp("st")
    Tokenizer.train(EN * 3, tmp / "en", 40)
    Tokenizer.train(ES * 3, tmp / "es", 40)
    torch.manual_seed(0)
    model = HierarchicalTransducer(tiny_hierarchical_config({"vocab_size": 40}, vocab_size=40))
    model.eval()
    report = export_st_bundle(model, (tmp / "en.model").read_bytes(),
                              (tmp / "es.model").read_bytes(), tmp / "bundle",
                              blank_penalty=1.5)
    return tmp / "bundle", model, report


def _audio(seconds: float = 1.2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(
        np.float32)


def test_export_parity_of_st_graphs(st_bundle) -> None:
    from edgeasr.export.parity import graph_parity, onnx_runner
    from edgeasr.export.st import build_st_graphs, st_encoder_parity

    root, model, report = st_bundle
    for name in ("st_encoder", "st_predictor", "st_joint_blank", "st_joint_labels"):
        assert report.parity[f"onnx/fp32/{name}"] <= 1e-4
    # again, with another batch size, seed and more chunks than the ST left context
    run = onnx_runner(root / "onnx/fp32/st_encoder.onnx")
    assert st_encoder_parity(model, run, num_chunks=5, batch=3, seed=7) <= 1e-4
    graphs = build_st_graphs(model)
    assert graph_parity(graphs["st_joint_labels"],
                        onnx_runner(root / "onnx/fp32/st_joint_labels.onnx"), seed=5) <= 1e-4
    spec = json.loads((root / TRANSLATION_JSON).read_text())
    assert spec["chunk_frames"] == 2 and spec["downsample"] == 2 and spec["vocab_size"] == 40
    assert spec["blank_penalty"] == 1.5


def test_text_and_translation_from_one_encoder_pass(st_bundle) -> None:
    root = st_bundle[0]
    rec = SpeechTranslator.from_bundle(root, blank_penalty=1e4)
    calls = {"encoder": 0, "st_encoder": 0}
    enc, st_enc = rec.backend.encoder, rec.translator.head.st_encoder

    def count(name, fn):
        def wrapped(*a):
            calls[name] += 1
            return fn(*a)
        return wrapped

    rec.backend.encoder = count("encoder", enc)
    rec.translator.head.st_encoder = count("st_encoder", st_enc)
    res = rec.transcribe(_audio(), sample_rate=16000)
    frames = res.stats["frames"]
    assert frames > 0 and calls["encoder"] == calls["st_encoder"] == frames // 4
    # penalty 1e4: the ST head never says blank, so every ST frame (2 per 4 ASR frames) emits
    # max_symbols_per_frame = 2 tokens
    assert len(res.translation_tokens) == 2 * (frames // 2)
    assert res.translation == rec.translator.tokenizer.decode(res.translation_tokens)
    assert res.translation.strip()
    d = res.to_dict()
    assert set(d) >= {"text", "translation", "translation_tokens"}
    # the ASR result is exactly what a plain recognizer of the same bundle gives
    plain = Recognizer.from_bundle(root).transcribe(_audio(), sample_rate=16000)
    assert (res.text, res.tokens) == (plain.text, plain.tokens)


def test_blank_penalty_changes_st_blank_decisions_monotonically(st_bundle) -> None:
    root = st_bundle[0]
    counts = []
    for bp in (-1e4, 0.0, 1.5, 3.0, 1e4):
        rec = SpeechTranslator.from_bundle(root, blank_penalty=bp)
        counts.append(len(rec.transcribe(_audio(seed=1), sample_rate=16000).translation_tokens))
    assert counts[0] == 0  # a blank bonus of 1e4: blank always wins
    assert counts == sorted(counts)  # a larger penalty never emits fewer tokens (greedy, ST
    assert counts[-1] > counts[0]  # frames do not depend on the emitted tokens)
    default = SpeechTranslator.from_bundle(root)  # the bundle's default: 1.5
    assert default.translator.blank_penalty == 1.5


def test_batched_streams_and_reset(st_bundle) -> None:
    root = st_bundle[0]
    rec = SpeechTranslator.from_bundle(root, blank_penalty=2.0)
    a, b = rec.create_stream(), rec.create_stream()
    for s, seed in ((a, 2), (b, 3)):
        s.accept_waveform(16000, _audio(seed=seed))
        s.input_finished()
    rec.decode_streams([a, b])
    for s, seed in ((a, 2), (b, 3)):
        alone = rec.transcribe(_audio(seed=seed), sample_rate=16000)
        assert s.result.translation_tokens == alone.translation_tokens
    rec.reset(a)
    assert a.result.translation_tokens == [] and a.result.segment == 1


def test_sidecar_is_hash_checked(st_bundle, tmp_path) -> None:
    import shutil

    root = st_bundle[0]
    copy = tmp_path / "b"
    shutil.copytree(root, copy)
    spec = json.loads((copy / TRANSLATION_JSON).read_text())
    spec["blank_penalty"] = 9.0
    (copy / TRANSLATION_JSON).write_text(json.dumps(spec))
    with pytest.raises(BundleError, match="translation.json"):
        Bundle.load(copy)
    mj = json.loads((root / "model.json").read_text())
    assert TRANSLATION_JSON in mj["files"]


def test_cli_transcribe_stream_eval_and_server_carry_the_translation(st_bundle, tmp_path,
                                                                      capsys) -> None:
    """``edgeasr transcribe/stream/eval`` and the server's result messages carry the ST head's
    output for a translation bundle; ``--no-translation`` runs the ASR half alone."""
    import soundfile as sf
    from edgeasr.apps.protocol import StreamConfig, result_message

    from edgeasr.cli import main
    from edgeasr.commands.stream_cmd import stream_samples

    root = st_bundle[0]
    wav = tmp_path / "a.wav"
    sf.write(wav, _audio(1.5), 16000)
    always = ["--bundle", str(root), "--st-blank-penalty", "1e4"]  # the ST head never blanks

    assert main(["transcribe", str(wav), *always]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{wav}\t") and lines[1].startswith("  [es] ")
    assert len(lines[1]) > len("  [es] ")
    assert main(["transcribe", str(wav), *always, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["translation"] and row["translation_tokens"]
    assert main(["transcribe", str(wav), *always, "--no-translation", "--json"]) == 0
    assert "translation" not in json.loads(capsys.readouterr().out)

    rec = SpeechTranslator.from_bundle(root, blank_penalty=1e4)
    finals = stream_samples(rec, _audio(1.5))
    capsys.readouterr()
    r = rec.transcribe(_audio(1.5), sample_rate=16000)
    assert finals == [f"{r.text}  => {r.translation}"] and r.translation

    manifest = tmp_path / "par.jsonl"
    manifest.write_text("".join(json.dumps(
        {"id": f"u{i}", "audio": str(wav), "text": EN[i], "duration": 1.5,
         "translation": ES[i]}) + "\n" for i in range(2)))
    pytest.importorskip("sacrebleu")
    out = tmp_path / "hyp.jsonl"
    assert main(["eval", str(manifest), *always, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "translation (es): BLEU" in printed and "ST blank penalty 10000" in printed
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["translation_ref"] for r in rows] == ES[:2] and all(r["translation"] for r in rows)

    cfg = StreamConfig()
    kw = dict(text="hi", tokens=[1], timestamps=[0.1], segment=0, start_time=0.0,
              audio_seconds=1.0, samples=16000, config=cfg)
    assert json.loads(result_message("final", **kw, translation="hola"))["translation"] == "hola"
    assert "translation" not in json.loads(result_message("final", **kw))


def test_server_streams_text_and_translation(st_bundle) -> None:
    """``edgeasr serve`` with an ST bundle: every partial/final carries ``translation``, and the
    finals equal the offline ``transcribe`` of the same audio, translation included."""
    import asyncio

    from edgeasr.apps.loadtest import stream_audio
    from edgeasr.apps.server import AsrServer, ServerConfig

    rec = SpeechTranslator.from_bundle(st_bundle[0], blank_penalty=1e4)
    audio = (np.round(_audio(1.5) * 32768) / 32768).astype(np.float32)  # int16 on the wire
    offline = rec.transcribe(audio, sample_rate=16000)

    async def main():
        server = AsrServer(rec, ServerConfig(port=0))
        await server.start()
        try:
            return await asyncio.wait_for(
                stream_audio(f"ws://127.0.0.1:{server.port}/ws", audio,
                             config={"endpoint": False}), 60)
        finally:
            await server.stop()

    record = asyncio.run(main())
    assert record.done and not record.errors, record.messages
    results = [m for m in record.messages if m["type"] in ("partial", "final")]
    assert results and all("translation" in m for m in results)
    (final,) = [m for m in results if m["type"] == "final"]
    assert (final["text"], final["translation"]) == (offline.text, offline.translation)
    assert offline.translation


def test_hent_srt_table_benchmark_runs_both_modes(st_bundle, tmp_path, capsys) -> None:
    """``python -m benchmarks.hent_srt``: one system (the tiny bundle and its checkpoint), one
    parallel set, two blank penalties -> streaming and full-context rows with WER and BLEU; the
    streamed translations are the runtime's own."""
    import soundfile as sf

    pytest.importorskip("sacrebleu")
    from edgeasr.train.checkpoint import save_checkpoint

    from benchmarks.hent_srt import main

    root, model, _ = st_bundle
    ckpt = tmp_path / "st.pt"
    save_checkpoint(ckpt, {
        "model_config": model.cfg.to_dict(), "model": model.state_dict(),
        "tokenizer": Bundle.load(root).tokenizer_path.read_bytes(),
        "st_tokenizer": (root / "st_tokenizer.model").read_bytes(),
        "feature_config": {}, "train_config": {}})
    wav = tmp_path / "a.wav"
    sf.write(wav, _audio(1.5), 16000)
    manifest = tmp_path / "par.jsonl"
    manifest.write_text("".join(json.dumps(
        {"id": f"u{i}", "audio": str(wav), "text": EN[i], "duration": 1.5,
         "translation": ES[i]}) + "\n" for i in range(2)))
    out = tmp_path / "table.json"
    assert main(["--system", f"tiny={root}:{ckpt}", "--set", f"t={manifest}",
                 "--blank-penalties", "0,1e4", "--no-cascade", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.count("| tiny | streaming |") == 2 and table.count("| tiny | full |") == 2
    rows = json.loads(out.read_text())["rows"]
    assert [(r["mode"], r["blank_penalty"]) for r in rows] == [
        ("streaming", 0.0), ("streaming", 1e4), ("full", 0.0), ("full", 1e4)]
    assert rows[1]["t"]["length_ratio"] > rows[0]["t"]["length_ratio"]  # penalty -> longer
    streamed = json.loads(out.read_text())["utterances"]["tiny|streaming|10000.0|t"]
    rec = SpeechTranslator.from_bundle(root, blank_penalty=1e4)
    assert streamed[0]["translation"] == rec.transcribe(wav).translation
    with pytest.raises(SystemExit, match="NAME=BUNDLE:CHECKPOINT"):
        main(["--system", "nocolon", "--set", f"t={manifest}"])
