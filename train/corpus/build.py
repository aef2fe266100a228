"""Build a synthetic speech corpus: plan -> synthesize + augment in a pool -> manifests.

Design (lhotse/icefall-style recipe, made resumable and deterministic):

1. *Plan*: sentences per split (see :mod:`.sentences`) and, per utterance, a voice, prosody
   jitter and augmentation, all drawn from ``default_rng([seed, split, index])``.  The plan
   depends only on the seed, the preset and the installed engines/text, never on timing.
2. *Synthesize*: a process pool renders each job; every output FLAC is written to a temporary
   name and renamed, so a killed build leaves only complete files.  A rerun skips jobs whose
   files exist.
3. *Manifests*: written at the end from the plan and the files that exist (duration read from
   the file), so a resumed build produces exactly what an uninterrupted one would.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from .augment import SR, AugmentConfig, NoiseBank, apply_augment, draw_augment
from .presets import CorpusPreset, VoiceSplit
from .sentences import SentencePool, collect_sentences
from .voices import ENGINE_INSTALL, Voice, all_voices, engine_available, synthesize

__all__ = [
    "Output",
    "Job",
    "split_voices",
    "plan_jobs",
    "build_corpus",
    "write_text_splits",
    "default_out_dir",
    "MANIFEST_SPLITS",
]

log = logging.getLogger(__name__)

MANIFEST_SPLITS = ("train", "dev", "test_clean", "test_noisy", "test_ood")
_SPLIT_CODE = {"train": 1, "dev": 2, "test": 3, "test_ood": 4, "babble": 5}
PEAK = 0.5  # every synthesized utterance is peak-normalized here before gain augmentation


def default_out_dir(preset: str) -> Path:
    """~/.cache/edgeasr/corpus/<preset>: generated audio never goes inside the repository."""
    return Path.home() / ".cache" / "edgeasr" / "corpus" / preset


@dataclass(frozen=True)
class Output:
    """One audio file a job writes: its manifest split, id, relative path and augmentation."""

    split: str
    id: str
    audio: str
    augment: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Job:
    """Synthesize ``text`` once with ``voice``; write every output (clean and/or augmented)."""

    text: str
    source: str
    voice: Voice
    seed: tuple[int, ...]
    outputs: tuple[Output, ...]


def split_voices(voices: list[Voice], vs: VoiceSplit) -> dict[str, list[Voice]]:
    """Assign voices to train/dev/test (see :class:`VoiceSplit`); the three are disjoint."""
    out: dict[str, list[Voice]] = {"train": [], "dev": [], "test": []}
    held_acc = set(vs.dev_espeak_accents) | set(vs.test_espeak_accents)
    held_var = set(vs.dev_espeak_variants) | set(vs.test_espeak_variants)
    for v in voices:
        if v.key in vs.dev_voices:
            out["dev"].append(v)
        elif v.key in vs.test_voices:
            out["test"].append(v)
        elif v.engine == "espeak-ng":
            accent, _, variant = v.name.partition("+")
            if accent in vs.dev_espeak_accents and variant in vs.dev_espeak_variants:
                out["dev"].append(v)
            elif accent in vs.test_espeak_accents and variant in vs.test_espeak_variants:
                out["test"].append(v)
            elif accent not in held_acc and variant not in held_var:
                out["train"].append(v)
        else:
            out["train"].append(v)
    return out


def _pick_voice(voices: list[Voice], weights: dict[str, float],
                rng: np.random.Generator) -> Voice:
    by_engine: dict[str, list[Voice]] = defaultdict(list)
    for v in voices:
        by_engine[v.engine].append(v)
    engines = sorted(e for e in by_engine if weights.get(e, 0) > 0)
    if not engines:
        raise RuntimeError("no installed engine with a positive weight has voices for this split")
    w = np.array([weights[e] for e in engines], dtype=np.float64)
    engine = engines[int(rng.choice(len(engines), p=w / w.sum()))]
    pool = by_engine[engine]
    return pool[int(rng.integers(len(pool)))]


def _rel_audio(split: str, idx: int, uid: str) -> str:
    return f"audio/{split}/{idx // 1000:03d}/{uid}.flac"


def plan_jobs(preset: CorpusPreset, seed: int, pool: SentencePool,
              voices: dict[str, list[Voice]], bank: NoiseBank) -> dict[str, list[Job]]:
    """The deterministic job list per phase ("babble" first, then "main")."""
    weights = dict(preset.engine_weights)
    no_aug = AugmentConfig(speeds=(1.0,), speed_probs=(1.0,), p_rir=0.0, p_noise=0.0,
                           p_telephone=0.0, gain_db=(0.0, 0.0))
    jobs: dict[str, list[Job]] = {"babble": [], "main": []}
    spec = [
        ("babble", "train", "train", preset.babble_utts),
        ("train", "train", "train", preset.train_utts),
        ("dev", "dev", "dev", preset.dev_utts),
        ("test", "test", "test", preset.test_utts),
        ("test_ood", "test_ood", "test", preset.ood_utts),
    ]
    for name, text_split, voice_split, n in spec:
        sents = pool.splits[text_split]
        if name == "babble":  # babble speaks training text from the end of the shuffled list
            sents = sents[::-1]
        if not sents or n == 0:
            continue
        if not voices[voice_split]:
            raise RuntimeError(f"no installed voice for the {voice_split} split")
        # held-out splits never repeat a sentence; train cycles with new voices and augmentation
        count = n if name in ("train", "babble") else min(n, len(sents))
        for i in range(count):
            s = sents[i % len(sents)]
            rng = np.random.default_rng([seed, _SPLIT_CODE[name], i])
            voice = _pick_voice(voices[voice_split], weights, rng)
            synth_seed = (seed, _SPLIT_CODE[name], i, 1)
            if name == "babble":
                uid = f"babble-{i:05d}"
                outs = (Output("babble", uid, f"noise/babble/{uid}.flac"),)
            elif name == "train":
                uid = f"train-{i:07d}"
                aug = draw_augment(preset.train_augment, bank, rng)
                outs = (Output("train", uid, _rel_audio("train", i, uid), aug),)
            elif name == "test":
                clean = Output("test_clean", f"test_clean-{i:05d}",
                               _rel_audio("test_clean", i, f"test_clean-{i:05d}"))
                aug = draw_augment(preset.noisy_augment, bank, rng)
                noisy = Output("test_noisy", f"test_noisy-{i:05d}",
                               _rel_audio("test_noisy", i, f"test_noisy-{i:05d}"), aug)
                outs = (clean, noisy)
            else:
                draw_augment(no_aug, bank, rng)
                uid = f"{name}-{i:05d}"
                outs = (Output(name, uid, _rel_audio(name, i, uid)),)
            jobs["babble" if name == "babble" else "main"].append(
                Job(s.text, s.source, voice, synth_seed, outs))
    return jobs


# ---------------------------------------------------------------- workers

_BANK: NoiseBank | None = None
_OUT: Path | None = None


def _init_worker(out_dir: str, bank: NoiseBank) -> None:
    global _BANK, _OUT
    _BANK = bank
    _OUT = Path(out_dir)


def _mp_context() -> mp.context.BaseContext:
    # fork shares the parent's loaded noise bank and imports (a spawned worker needs ~8 s to
    # start); safe because the parent never loads onnxruntime (piper is imported in workers).
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def _write_atomic(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.flac")
    sf.write(str(tmp), audio, SR, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)


def _run_job(job: Job) -> tuple[str, float, str]:
    """Render one job; returns (first output id, seconds of audio written, error or '')."""
    assert _BANK is not None and _OUT is not None, "worker not initialized"
    try:
        audio, sr, _ = synthesize(job.voice, job.text, np.random.default_rng(job.seed))
        if sr != SR:
            audio = soxr.resample(audio, sr, SR, quality="HQ").astype(np.float32)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak < 1e-4 or audio.size < SR // 10:
            raise RuntimeError(f"engine produced silence ({audio.size} samples)")
        audio = audio * np.float32(PEAK / peak)
        seconds = 0.0
        for out in job.outputs:
            path = _OUT / out.audio
            if path.exists():
                continue
            y = apply_augment(audio, out.augment, _BANK) if out.augment else audio
            _write_atomic(path, np.clip(y, -1.0, 1.0))
            seconds += y.size / SR
        return job.outputs[0].id, seconds, ""
    except Exception as e:  # noqa: BLE001 - one bad utterance must not stop a 200 h build
        return job.outputs[0].id, 0.0, f"{job.voice.key}: {type(e).__name__}: {e}"


def _run_jobs(jobs: list[Job], out: Path, n_jobs: int, bank: NoiseBank,
              desc: str) -> tuple[float, list[str]]:
    todo = [j for j in jobs if not all((out / o.audio).exists() for o in j.outputs)]
    seconds, errors = 0.0, []
    if not todo:
        return 0.0, []
    bar = tqdm(total=len(todo), desc=desc, unit="utt", smoothing=0.05)
    if n_jobs <= 1:
        _init_worker(str(out), bank)
        results = map(_run_job, todo)
        pool = None
    else:
        pool = _mp_context().Pool(min(n_jobs, len(todo)), _init_worker, (str(out), bank))
        results = pool.imap_unordered(_run_job, todo, chunksize=4)
    try:
        for _, sec, err in results:
            seconds += sec
            if err:
                errors.append(err)
                log.warning("synthesis failed: %s", err)
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    return seconds, errors


def _make_babble(out: Path, jobs: list[Job], speakers: int, seed: int) -> list[np.ndarray]:
    """Babble tracks: each the sum of ``speakers`` different clean utterances, looped to 10 s."""
    clips = [sf.read(str(out / j.outputs[0].audio), dtype="float32")[0]
             for j in jobs if (out / j.outputs[0].audio).exists()]
    if len(clips) < speakers:
        return []
    rng = np.random.default_rng([seed, 99])
    tracks = []
    for _ in range(len(clips) // speakers):
        idx = rng.choice(len(clips), size=speakers, replace=False)
        track = np.zeros(10 * SR, np.float32)
        for k in idx:
            c = clips[int(k)]
            reps = int(np.ceil(track.size / c.size))
            track += np.roll(np.tile(c, reps)[: track.size], int(rng.integers(track.size)))
        tracks.append(track / speakers)
    return tracks


# ---------------------------------------------------------------- manifests and summary


def write_text_splits(pool: SentencePool, out: Path) -> dict[str, int]:
    """out/text/<split>.txt, one normalized sentence a line (tokenizer and LM training)."""
    (out / "text").mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, sents in pool.splits.items():
        tmp = out / "text" / f".{split}.txt.tmp"
        tmp.write_text("".join(s.text + "\n" for s in sents), encoding="utf-8")
        os.replace(tmp, out / "text" / f"{split}.txt")
        counts[split] = len(sents)
    return counts


def _write_manifests(out: Path, jobs: list[Job]) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {s: [] for s in MANIFEST_SPLITS}
    for job in jobs:
        for o in job.outputs:
            path = out / o.audio
            if not path.exists():
                continue
            info = sf.info(str(path))
            row = {
                "id": o.id, "audio": o.audio, "text": job.text,
                "duration": round(info.frames / info.samplerate, 4),
                "speaker": job.voice.key, "lang": "en", "voice": job.voice.key,
                "engine": job.voice.engine, "source": job.source,
            }
            if o.augment:
                row["augment"] = o.augment
            rows[o.split].append(row)
    for split, split_rows in rows.items():
        tmp = out / f".{split}.jsonl.tmp"
        with tmp.open("w", encoding="utf-8") as fh:
            for r in split_rows:
                fh.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
        os.replace(tmp, out / f"{split}.jsonl")
    return rows


def _hours(rows: list[dict], key: str) -> dict[str, float]:
    acc: Counter[str] = Counter()
    for r in rows:
        acc[r[key]] += r["duration"]
    return {k: round(v / 3600, 4) for k, v in sorted(acc.items())}


def build_corpus(preset: CorpusPreset, out: Path, seed: int = 0, n_jobs: int | None = None,
                 sentences: SentencePool | None = None) -> dict:
    """Build (or finish) the corpus of ``preset`` into ``out``; returns the summary dict.

    ``sentences`` replaces the text collection step (it must come from ``preset.sentences``
    and ``seed``); tests pass one to build twice without reading the sources twice.
    """
    t0 = time.time()
    n_jobs = n_jobs or os.cpu_count() or 1
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("**/.*.tmp.flac"):  # left by a killed earlier run
        stale.unlink(missing_ok=True)
    missing_engines = {}
    for engine, _ in preset.engine_weights:
        if not engine_available(engine):
            if engine in preset.required_engines:
                raise RuntimeError(f"preset {preset.name!r} requires TTS engine {engine!r}; "
                                   f"install it with: {ENGINE_INSTALL[engine]}")
            log.warning("TTS engine %r missing, continuing without it; install it with: %s",
                        engine, ENGINE_INSTALL[engine])
            missing_engines[engine] = ENGINE_INSTALL[engine]
    weighted = {e for e, w in preset.engine_weights if w > 0}
    voices = [v for v in all_voices() if v.engine in weighted and engine_available(v.engine)]
    by_split = split_voices(voices, preset.voices)

    pool = sentences if sentences is not None else collect_sentences(preset.sentences, seed)
    text_counts = write_text_splits(pool, out)
    bank = NoiseBank()
    # Plan with the babble track names; the tracks themselves exist after the babble phase.
    n_babble = (preset.babble_utts // preset.babble_speakers
                if preset.babble_utts >= preset.babble_speakers else 0)
    bank.babble = [(f"babble{i}", np.zeros(0, np.float32)) for i in range(n_babble)]
    jobs = plan_jobs(preset, seed, pool, by_split, bank)

    sec_b, err_b = _run_jobs(jobs["babble"], out, n_jobs, bank, "babble")
    babble = _make_babble(out, jobs["babble"], preset.babble_speakers, seed)
    if n_babble and not babble:
        raise RuntimeError("no babble track could be made (babble synthesis failed); "
                           "see the warnings above")
    # If a few babble utterances failed there are fewer tracks: reuse them round-robin so the
    # planned names still resolve.
    bank.babble = [(f"babble{i}", babble[i % len(babble)]) for i in range(n_babble)]
    sec_m, err_m = _run_jobs(jobs["main"], out, n_jobs, bank, "synth")
    rows = _write_manifests(out, jobs["main"])
    wall = time.time() - t0

    all_rows = [r for split_rows in rows.values() for r in split_rows]
    summary = {
        "preset": preset.name,
        "seed": seed,
        "sample_rate": SR,
        "counts": {s: len(r) for s, r in rows.items()},
        "hours_per_split": {s: round(sum(x["duration"] for x in r) / 3600, 4)
                            for s, r in rows.items()},
        "hours_total": round(sum(r["duration"] for r in all_rows) / 3600, 4),
        "hours_per_engine": _hours(all_rows, "engine"),
        "hours_per_voice": _hours(all_rows, "voice"),
        "voices": {s: sorted(v.key for v in vs) for s, vs in by_split.items()},
        "voices_used": {s: sorted({r["voice"] for r in r_}) for s, r_ in rows.items()},
        "missing_engines": missing_engines,
        "text": {
            "ood_source": preset.sentences.ood_source,
            "raw_per_source": pool.raw_counts,
            "kept_per_source": pool.kept_counts,
            "dropped": pool.dropped,
            "missing_sources": pool.missing,
            "sentences_per_split": text_counts,
        },
        "noise": {"music": [n for n, _ in bank.music], "rir": [n for n, _ in bank.rirs],
                  "babble_tracks": len(babble), "missing": bank.missing},
        "augment_counts": dict(sorted(Counter(
            k for r in all_rows for k in r.get("augment", {})
            if k not in ("snr_db", "noise_seed")).items())),
        "failures": len(err_b) + len(err_m),
        "failure_examples": (err_b + err_m)[:20],
        "build": {
            "jobs": n_jobs,
            "wall_s": round(wall, 1),
            "audio_hours_this_run": round((sec_b + sec_m) / 3600, 4),
            "hours_per_wall_hour": round((sec_b + sec_m) / wall, 2) if wall > 0 else 0.0,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
        "preset_config": asdict(preset),
    }
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out / "summary.json")
    return summary
