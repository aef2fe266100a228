"""Shared by the app tests (test_server, test_mic, test_web): a tiny random model and audio.

The apps are tested for *plumbing*, so any model will do as long as it is deterministic: a
randomly initialised tiny transducer transcribes speech into garbage, but always the same
garbage for the same samples. The tests therefore assert that what comes out of a socket, a
microphone or a browser equals ``Recognizer.transcribe`` of the same audio, which holds for
the real default model too. When ``models/default`` exists, it is used instead.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np

# The shared data folder sits beside the repository (../shared), as on CI.
SPEECH_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "speechocean762-train"

TOKENIZER_TEXT = [
    "we call it bear", "zero three five one", "three two two seven", "the cat sat on a mat",
    "she sells sea shells", "a quick brown fox jumps over the lazy dog", "hello world",
]


def write_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random tiny model + a 16-piece tokenizer as an edgeasr training checkpoint."""
    import torch
    from edgeasr.train.checkpoint import save_checkpoint
    from edgeasr.train.model import Transducer
    from edgeasr.train.model.config import tiny_config

    from edgeasr.features import FeatureConfig
    from edgeasr.tokenizer import Tokenizer

    Tokenizer.train(TOKENIZER_TEXT, path.parent / "tok", vocab_size=40, model_type="bpe")
    torch.manual_seed(seed)
    cfg = tiny_config(vocab_size=40)
    model = Transducer(cfg).eval()
    with torch.no_grad():  # a larger blank bias spread makes the garbage less uniform
        for p in model.parameters():
            p.mul_(2.0)
    state = {
        "model_config": cfg.to_dict(),
        "model": model.state_dict(),
        "tokenizer": (path.parent / "tok.model").read_bytes(),
        "train_config": {},
        "feature_config": FeatureConfig().to_dict(),
    }
    return save_checkpoint(path, state)


def model_args(tmp_dir: Path) -> list[str]:
    """Command-line model options for the apps: a tiny random model exported to an ONNX bundle
    (tests/test_backends.build_bundle), else (no exporter) a tiny random training checkpoint
    for the torch backend.

    Not the bundled default model: a random model emits many tokens deterministically, so
    "server output == offline transcript" compares real token streams whatever state the
    shipped model's training is in."""
    bundle = tmp_dir / "tiny-bundle"
    if (bundle / "model.json").exists():
        return ["--bundle", str(bundle)]
    try:
        from test_backends import build_bundle
    except ImportError:
        build_bundle = None
    if build_bundle is not None:
        build_bundle(bundle)
        return ["--bundle", str(bundle)]
    ckpt = tmp_dir / "tiny.pt"
    if not ckpt.exists():
        write_tiny_checkpoint(ckpt)
    return ["--checkpoint", str(ckpt)]


def load_test_recognizer(tmp_dir: Path):  # -> edgeasr.Recognizer
    from edgeasr.stream import Recognizer

    kind, path = model_args(tmp_dir)
    if kind == "--bundle":
        return Recognizer.from_bundle(path)
    return Recognizer.from_checkpoint(path)


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
