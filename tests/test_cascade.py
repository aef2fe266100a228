"""The cascade baseline of #12: the batched apertium wrapper keeps sentences 1:1, and
``python -m benchmarks.cascade`` scores oracle and ASR cascades end to end on a tiny bundle.

apertium comes from ``scripts/setup.sh --dev`` (CI installs it); without it the tests that
call it are skipped with that reason, the others still run.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from benchmarks.apertium import ApertiumError, translate
from benchmarks.cascade import main

needs_apertium = pytest.mark.skipif(
    shutil.which("apertium") is None,
    reason="apertium not installed (apt-get install -y apertium apertium-eng-spa, "
           "or scripts/setup.sh --dev)")

# Punctuation that apertium's formats treat specially: sentence ends, its stream-format
# characters ([ ] ^ $ @ / \ * # { } < >), HTML-significant ones (& < > and a literal block tag,
# which must not be taken for a separator), quotes, dashes, abbreviations, and lines without
# final punctuation whose words the transfer rules would otherwise pull into the next line.
TRICKY = [
    "in the beginning god created the heavens and the earth",
    "/slash",
    "end with period.",
    "Hello, world. It's Mr. Smith's book!",
    '"Quoted" text [with brackets] and {braces}',
    'a literal <p id="s0">block tag</p> in the text',
    "fish & chips &amp; &lt;entities&gt;",
    "e.g. the u.s.a. is big... isn't it?",
    "50% of $3.50 ^caret$ @at #hash *star \\backslash",
    "what?!",
    "...",
    ".",
    "-",
    "¿qué pasa?",
    "x ] y [ z",
    "^dog<n>$",
    'i said: "no"; then - left',
    "the",
    "and",
    "line one\nline two",
    "  spaced\tout  ",
    "the dog eats; the cat sleeps: the bird sings",
    "a b c d e f g",
    "he said — and she said – nothing",
    "(parenthesis) and 'single quotes'",
]


def test_missing_apertium_is_one_clear_error() -> None:
    with pytest.raises(ApertiumError, match="not found on PATH; install it with: apt-get"):
        translate(["hello"], executable="no-such-apertium-binary")


def test_lost_sentence_is_an_error_not_a_misalignment(tmp_path: Path) -> None:
    """An apertium that drops a block (here: a fake one that deletes the first line) must not
    shift the remaining translations onto the wrong inputs."""
    fake = tmp_path / "apertium"
    fake.write_text("#!/bin/sh\nsed '1d'\n")
    fake.chmod(0o755)
    with pytest.raises(ApertiumError, match="2 sentence blocks for 3 inputs"):
        translate(["one", "two", "three"], executable=str(fake))
    assert translate(["", "  "], executable=str(fake)) == ["", ""]  # nothing to send


@needs_apertium
def test_unknown_pair_lists_installed_modes() -> None:
    with pytest.raises(ApertiumError, match=r"no 'xx-yy' mode \(installed: .*eng-spa"):
        translate(["hello"], pair="xx-yy")


@needs_apertium
def test_batch_maps_back_one_to_one() -> None:
    texts = TRICKY + ["", "dog"]
    out = translate(texts)
    assert len(out) == len(texts)
    assert out[-2] == ""
    assert out[-1].lower() == "perro"
    assert all(o.strip() for o in out[:-2])
    assert all("\n" not in o for o in out)
    # A literal tag and literal entities come back as text: not taken for a separator (which
    # would cut "in the text" off), not decoded.
    tag = out[TRICKY.index('a literal <p id="s0">block tag</p> in the text')]
    assert '<p id="s0">' in tag and "</p>" in tag and tag.endswith("texto")
    ents = out[TRICKY.index("fish & chips &amp; &lt;entities&gt;")]
    assert "& " in ents and "&amp;" in ents and "&lt;" in ents
    # Each sentence is translated on its own: neighbours do not change it. Reversing the batch
    # gives every sentence new neighbours; a few are also translated alone.
    assert translate(texts[::-1])[::-1] == out
    for i in (1, 2, 5, 15):
        assert translate([texts[i]]) == [out[i]]


@needs_apertium
def test_many_sentences_in_one_call() -> None:
    """300 short sentences, with and without final punctuation: each comes back with its own
    number (numbers pass through apertium unchanged), so a shift by one would show."""
    numbers = [n for n in range(100) for _ in range(3)]
    texts = [f"the dog number {n} eats{p}" for n, p in zip(numbers, ["", ".", "?"] * 100,
                                                            strict=True)]
    out = translate(texts)
    assert len(out) == 300
    assert all("perro" in o.lower() for o in out)
    assert [re.findall(r"\d+", o) for o in out] == [[str(n)] for n in numbers]


def _parallel_manifest(root: Path, speech_files: list[Path], translations: list[str]) -> Path:
    meta = {json.loads(line)["audio"]: json.loads(line) for line in
            (speech_files[0].parent.parent / "manifest.jsonl").read_text().splitlines()[:50]}
    rows = []
    for f, tr in zip(speech_files, translations, strict=True):
        m = meta[f"audio/{f.name}"]
        rows.append({"id": m["id"], "audio": str(f), "text": m["text"],
                     "duration": m["duration"], "translation": tr})
    path = root / "parallel.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_manifest_without_translation_is_refused(tmp_path: Path, speech_files, capsys) -> None:
    manifest = _parallel_manifest(tmp_path, speech_files[:2], ["hola", ""])
    assert main(["--bundle", str(tmp_path / "unused"), "--set", f"t={manifest}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("cascade: ") and "1 of 2 utterances have no 'translation'" in err
    assert "\n" not in err


@needs_apertium
@pytest.mark.slow
def test_cascade_end_to_end(tiny_bundle, speech_files, tmp_path: Path, capsys) -> None:
    from edgeasr.train.corpus.parallel import normalize_spanish

    texts = [json.loads(line)["text"] for line in
             (speech_files[0].parent.parent / "manifest.jsonl").read_text().splitlines()[:4]]
    # references = apertium's own translation of the transcript: the oracle cascade is exact
    refs = [normalize_spanish(t) for t in translate(texts)]
    manifest = _parallel_manifest(tmp_path, speech_files, refs)
    bundle = tiny_bundle().root
    out = tmp_path / "cascade.json"
    assert main(["--bundle", str(bundle), "--set", f"clean={manifest}",
                 "--set", f"again={manifest}", "--limit", "3", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.count("reference transcript -> apertium") == 2
    assert table.count(f"ASR greedy ({bundle}) -> apertium") == 2
    res = json.loads(out.read_text())
    assert res["pair"] == "eng-spa" and res["decoding"] == "greedy"
    for name in ("clean", "again"):
        r = res["sets"][name]
        assert r["utts"] == 3
        assert r["oracle"]["bleu"] == pytest.approx(100.0)
        assert r["oracle"]["chrf"] == pytest.approx(100.0)
        assert r["oracle"]["length_ratio"] == pytest.approx(1.0)
        # a random-init tiny model: its transcript (letters a-f) is not the reference
        assert r["asr"]["wer"] > 50
        assert r["asr"]["bleu"] < 50
        utts = res["utterances"][name]
        assert [u["translation_ref"] for u in utts] == refs[:3]
        hyps = [u["hyp"] for u in utts]
        assert any(hyps)  # the tiny bundle emits letters, so the ASR row translates something
        assert [u["asr_mt"] for u in utts] == [normalize_spanish(t) for t in translate(hyps)]
    assert res["utterances"]["clean"] == res["utterances"]["again"]


@needs_apertium
def test_missing_pair_fails_before_decoding(tmp_path: Path, speech_files, capsys) -> None:
    """The bundle path does not exist: the pair check must stop the run before it is loaded."""
    manifest = _parallel_manifest(tmp_path, speech_files[:1], ["hola"])
    assert main(["--bundle", str(tmp_path / "unused"), "--set", f"t={manifest}",
                 "--pair", "xx-yy"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("cascade: apertium has no 'xx-yy' mode") and "\n" not in err
