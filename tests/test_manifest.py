"""Manifests: round trip, validation messages, LibriSpeech and wav+txt folder readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgeasr.manifest import (
    Cut,
    ManifestError,
    read_audio_text_folder,
    read_librispeech,
    read_manifest,
    write_manifest,
)


def _write_audio(path: Path, seconds: float, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_round_trip_with_relative_audio_and_extras(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    lines = [
        json.dumps({"id": "a", "audio": "audio/a.wav", "text": "hello", "duration": 1.5,
                    "speaker": "s1", "age": 6, "gender": "m"}),
        "",
        json.dumps({"id": "b", "audio": "/abs/b.flac", "text": "hi there", "duration": 2,
                    "offset": 0.5, "lang": "en", "translation": "salut", "speaker": None}),
    ]
    corpus.mkdir()
    cuts = read_manifest(_write_lines(corpus / "m.jsonl", lines))
    assert [c.id for c in cuts] == ["a", "b"]
    a, b = cuts
    assert a.audio == corpus / "audio" / "a.wav"
    assert a.duration == 1.5 and a.offset == 0.0 and a.speaker == "s1"
    assert a.extra == {"age": 6, "gender": "m"}
    assert b.audio == Path("/abs/b.flac")
    assert (b.offset, b.end, b.lang, b.translation, b.speaker) == (0.5, 2.5, "en", "salut", None)

    out = tmp_path / "copy" / "m.jsonl"
    assert write_manifest(out, cuts) == 2
    written = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert written[0] == {"id": "a", "audio": str(corpus / "audio" / "a.wav"), "text": "hello",
                          "duration": 1.5, "speaker": "s1", "age": 6, "gender": "m"}
    assert written[1]["offset"] == 0.5 and "speaker" not in written[1]
    # Written back in its own folder, the path becomes relative again.
    write_manifest(corpus / "again.jsonl", cuts)
    first = json.loads((corpus / "again.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["audio"] == "audio/a.wav"
    assert read_manifest(corpus / "again.jsonl")[0] == a


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "x", "audio": "a.wav", "text": "t"', "bad JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"id": "x", "audio": "a.wav", "text": "t"}', "missing field 'duration'"),
        ('{"id": "x", "audio": "a.wav", "duration": 1}', "missing field 'text'"),
        ('{"id": 5, "audio": "a.wav", "text": "t", "duration": 1}',
         "field 'id' must be str, got int 5"),
        ('{"id": "x", "audio": "a.wav", "text": "t", "duration": "1"}',
         "field 'duration' must be int or float, got str"),
        ('{"id": "x", "audio": "a.wav", "text": "t", "duration": true}',
         "field 'duration' must be int or float, got bool"),
        ('{"id": "x", "audio": "a.wav", "text": "t", "duration": -1}', "duration must be >= 0"),
        ('{"id": "x", "audio": "a.wav", "text": "t", "duration": 1, "offset": -0.1}',
         "offset must be >= 0"),
        ('{"id": "", "audio": "a.wav", "text": "t", "duration": 1}', "field 'id' is empty"),
        ('{"id": "x", "audio": "a.wav", "text": "t", "duration": 1, "speaker": 3}',
         "field 'speaker' must be str"),
    ],
)
def test_validation_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    good = '{"id": "ok", "audio": "a.wav", "text": "t", "duration": 1}'
    path = _write_lines(tmp_path / "bad.jsonl", [good, line])
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    assert str(info.value).startswith(f"{path}:2: ")
    assert message in str(info.value)


def test_duplicate_id_and_missing_audio(tmp_path: Path) -> None:
    rec = '{"id": "x", "audio": "a.wav", "text": "t", "duration": 1}'
    path = _write_lines(tmp_path / "dup.jsonl", [rec, "", rec])
    with pytest.raises(ManifestError, match=r"dup.jsonl:3: duplicate id 'x' \(first on line 1\)"):
        read_manifest(path)
    single = _write_lines(tmp_path / "one.jsonl", [rec])
    assert len(read_manifest(single)) == 1
    with pytest.raises(ManifestError, match=r"one.jsonl:1: audio file not found"):
        read_manifest(single, check_audio=True)
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")


def test_write_refuses_duplicates(tmp_path: Path) -> None:
    cut = Cut(id="x", audio=tmp_path / "a.wav", text="t", duration=1.0)
    with pytest.raises(ManifestError, match="duplicate id 'x'"):
        write_manifest(tmp_path / "m.jsonl", [cut, cut])
    assert not (tmp_path / "m.jsonl").exists()
    with pytest.raises(ManifestError, match="duration must be >= 0"):
        Cut(id="y", audio=tmp_path / "a.wav", text="t", duration=-2.0)


def test_read_librispeech(tmp_path: Path) -> None:
    root = tmp_path / "dev-clean"
    chapter = root / "1272" / "128104"
    _write_audio(chapter / "1272-128104-0000.flac", 0.5)
    _write_audio(chapter / "1272-128104-0001.flac", 0.25)
    _write_lines(chapter / "1272-128104.trans.txt", [
        "1272-128104-0000 MISTER QUILTER IS THE APOSTLE",
        "1272-128104-0001 NOR IS MISTER QUILTER'S MANNER",
    ])
    cuts = read_librispeech(root)
    assert [c.id for c in cuts] == ["1272-128104-0000", "1272-128104-0001"]
    assert cuts[0].text == "mister quilter is the apostle"
    assert cuts[1].text == "nor is mister quilter's manner"
    assert cuts[0].duration == pytest.approx(0.5)
    assert cuts[1].duration == pytest.approx(0.25)
    assert cuts[0].speaker == "1272" and cuts[0].lang == "en"
    assert read_librispeech(root, normalize=False)[0].text == "MISTER QUILTER IS THE APOSTLE"

    _write_lines(chapter / "1272-128104.trans.txt", ["1272-128104-0002 MISSING AUDIO"])
    with pytest.raises(ManifestError, match=r"trans.txt:1: audio file not found"):
        read_librispeech(root)
    with pytest.raises(ManifestError, match="no <speaker>/<chapter>"):
        read_librispeech(tmp_path / "dev-clean" / "1272")


def test_read_audio_text_folder(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    _write_audio(root / "one.wav", 0.3)
    _write_lines(root / "one.txt", ["Hello   World,", "again!"])
    _write_audio(root / "sub" / "two.wav", 0.2, rate=8000)
    _write_lines(root / "sub" / "two.txt", ["It costs $5"])
    cuts = read_audio_text_folder(root)
    assert [(c.id, c.text) for c in cuts] == [
        ("one", "hello world again"), ("sub/two", "it costs five dollars"),
    ]
    assert cuts[1].duration == pytest.approx(0.2)
    assert read_audio_text_folder(root, normalize=False)[0].text == "Hello World, again!"

    _write_audio(root / "three.wav", 0.1)
    with pytest.raises(ManifestError, match=r"three.wav: no transcript three.txt"):
        read_audio_text_folder(root)
    assert len(read_audio_text_folder(root, skip_missing_text=True)) == 2

    # Round trip through a manifest written in the folder.
    write_manifest(root / "m.jsonl", read_audio_text_folder(root, skip_missing_text=True))
    back = read_manifest(root / "m.jsonl", check_audio=True)
    assert [c.audio for c in back] == [root / "one.wav", root / "sub" / "two.wav"]


def test_unreadable_audio_in_folder(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    root.mkdir()
    (root / "bad.wav").write_bytes(b"not audio")
    _write_lines(root / "bad.txt", ["hi"])
    with pytest.raises(ManifestError, match="bad.wav"):
        read_audio_text_folder(root)
