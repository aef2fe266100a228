"""Shared by the app tests (test_server, test_mic, test_web): audio clips and WAV files.

The apps are tested for *plumbing*, so any model will do as long as it is deterministic: they
run on the tiny random bundle of the ``tiny_bundle`` fixture (tests/conftest.py), not the
shipped model. A randomly initialised tiny transducer transcribes speech into garbage, but
always the same garbage for the same samples, so the tests assert that what comes out of a
socket, a microphone or a browser equals ``Recognizer.transcribe`` of the same audio.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np

# The shared data folder sits beside the repository (../shared), as on CI.
SPEECH_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "speechocean762-train"

def speech_clip(seconds: float | None = 3.0, index: int = 0) -> np.ndarray:
    """A real speech recording (16 kHz float32), cut to ``seconds``; a synthetic speech-like
    signal when the shared corpus is absent."""
    from edgeasr.audio import load_audio

    manifest = SPEECH_DIR / "manifest.jsonl"
    if manifest.exists():
        lines = manifest.read_text().splitlines()
        audio = load_audio(SPEECH_DIR / json.loads(lines[index])["audio"])
    else:
        t = np.arange(int(16000 * 4)) / 16000
        f0 = 170 + 50 * np.sin(2 * np.pi * 0.7 * t)
        phase = 2 * np.pi * np.cumsum(f0) / 16000
        audio = (0.2 * (0.5 - 0.5 * np.cos(2 * np.pi * 4 * t))
                 * sum(np.sin(k * phase) / k for k in range(1, 12))).astype(np.float32)
    if seconds is not None:
        audio = audio[: int(seconds * 16000)]
    return quantize(audio)


def quantize(audio: np.ndarray) -> np.ndarray:
    """Round to int16 and back: what int16 PCM on the wire carries, exactly."""
    return to_int16(audio).astype(np.float32) / 32768.0


def to_int16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1.0, 32767 / 32768) * 32768.0).round().astype("<i2")


def write_wav(path: Path, audio: np.ndarray, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(to_int16(audio).tobytes())
    return path
