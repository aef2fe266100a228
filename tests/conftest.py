"""Shared test fixtures: synthetic signals (deterministic, generated on the fly) and real speech."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# CI runs each property test on a fixed set of examples (reproducible runs, no deadline flakes
# on a loaded machine); locally hypothesis keeps exploring new examples on every run.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

# The shared data folder sits beside the repository (../shared), as on CI.
SPEECH_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "speechocean762-train"

SignalFactory = Callable[..., np.ndarray]


def synth_signal(
    kind: str = "sine",
    duration: float = 1.0,
    sample_rate: int = 16000,
    freq: float = 1000.0,
    amplitude: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """A short float32 test signal.

    kind: ``sine`` (``freq`` Hz), ``chirp`` (linear sweep 100 Hz -> ``freq``), ``noise`` (white
    Gaussian, std ``amplitude``), ``silence`` (exact zeros), ``speechlike`` (harmonics of a
    gliding 120-220 Hz fundamental, amplitude-modulated at 4 Hz like syllables, plus low noise).
    """
    n = int(round(duration * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    rng = np.random.default_rng(seed)
    if kind == "sine":
        x = amplitude * np.sin(2 * np.pi * freq * t)
    elif kind == "chirp":
        f0 = 100.0
        rate = (freq - f0) / max(duration, 1e-9)
        x = amplitude * np.sin(2 * np.pi * (f0 * t + 0.5 * rate * t**2))
    elif kind == "noise":
        x = amplitude * rng.standard_normal(n)
    elif kind == "silence":
        x = np.zeros(n)
    elif kind == "speechlike":
        f0 = 170.0 + 50.0 * np.sin(2 * np.pi * 0.7 * t)
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        harmonics = sum(np.sin(k * phase) / k for k in range(1, 16))
        envelope = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t))
        x = amplitude * 0.4 * envelope * harmonics + 0.003 * rng.standard_normal(n)
    else:
        raise ValueError(f"unknown signal kind {kind!r}")
    return x.astype(np.float32)


@pytest.fixture
def make_signal() -> SignalFactory:
    """Factory fixture: ``make_signal("sine", duration=0.5, freq=440)`` -> float32 array."""
    return synth_signal


@pytest.fixture(scope="session")
def speech_files() -> list[Path]:
    """A few real speech recordings (16 kHz ogg) from speechocean762; skips if absent."""
    manifest = SPEECH_DIR / "manifest.jsonl"
    if not manifest.exists():
        pytest.skip(f"real speech not available at {SPEECH_DIR}")
    with manifest.open() as f:
        return [SPEECH_DIR / json.loads(line)["audio"] for line in islice(f, 4)]
