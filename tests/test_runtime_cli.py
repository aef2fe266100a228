"""The runtime subcommands end to end on a tiny exported bundle: transcribe (good and bad
files, JSON, timestamps), stream (partials then finals), eval (WER, RTF, skip rates, JSONL)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgeasr.cli import main

pytest.importorskip("torch")


@pytest.fixture
def bundle(tiny_bundle) -> Path:
    return tiny_bundle().root


@pytest.fixture
def wavs(tmp_path) -> list[Path]:
    rng = np.random.default_rng(0)
    out = []
    for i, seconds in enumerate((0.8, 1.1)):
        p = tmp_path / f"utt{i}.wav"
        sf.write(p, (0.2 * rng.standard_normal(int(seconds * 16000))).astype(np.float32),
                 16000, subtype="FLOAT")
        out.append(p)
    return out


def test_transcribe_lists_bad_files_and_exits_nonzero(bundle, wavs, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    code = main(["transcribe", str(wavs[0]), str(bad), str(wavs[1]), "--bundle", str(bundle)])
    out, err = capsys.readouterr()
    assert code == 1
    lines = out.strip().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == [str(wavs[0]), str(wavs[1])]
    assert "1 of 3 file(s) failed" in err and "bad.wav" in err


def test_transcribe_json_with_timestamps(bundle, wavs, capsys) -> None:
    code = main(["transcribe", str(wavs[1]), "--bundle", str(bundle), "--json", "--timestamps",
                 "--decoding", "gated", "--iam-threshold", "0.6"])
    out, _ = capsys.readouterr()
    assert code == 0
    d = json.loads(out)
    assert d["file"] == str(wavs[1]) and d["is_final"]
    assert len(d["tokens"]) == len(d["timestamps"]) == len(d["pieces"]) > 0
    assert d["stats"]["frames"] > 0


def test_missing_default_bundle_is_a_clear_error(wavs, capsys, monkeypatch, tmp_path) -> None:
    import edgeasr.stream

    monkeypatch.setattr(edgeasr.stream, "DEFAULT_BUNDLE", tmp_path / "no-default-bundle")
    assert main(["transcribe", str(wavs[0])]) == 2
    assert "default bundle" in capsys.readouterr().err


def test_stream_shows_partials_then_the_final_text(bundle, wavs, capsys) -> None:
    assert main(["transcribe", str(wavs[1]), "--bundle", str(bundle)]) == 0
    text = capsys.readouterr().out.strip().split("\t", 1)[1]
    assert main(["stream", str(wavs[1]), "--bundle", str(bundle), "--chunk-ms", "50"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) >= 2 and lines[0].endswith(" ...")  # partials came first
    assert lines[-1].split("] ", 1)[1] == text


def test_eval_prints_wer_rtf_and_skip_rates(bundle, wavs, tmp_path, capsys) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(
        json.dumps({"id": p.stem, "audio": p.name, "text": "abc cab", "duration": 0.0}) + "\n"
        for p in wavs
    ))
    out_path = tmp_path / "hyp.jsonl"
    code = main(["eval", str(manifest), "--bundle", str(bundle), "--decoding", "gated",
                 "--iam-threshold", "0.6", "--hat-threshold", "0.6", "--out", str(out_path)])
    out, _ = capsys.readouterr()
    assert code == 0
    assert out.startswith("WER ") and "RTF decode" in out and "end-to-end" in out
    assert "skipped frames (IAM)" in out and "skipped softmaxes (HAT)" in out
    rows = [json.loads(x) for x in out_path.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["utt0", "utt1"]
    assert rows[1]["duration"] == pytest.approx(1.1)
    assert rows[0]["e2e_s"] >= rows[0]["decode_s"] > 0
