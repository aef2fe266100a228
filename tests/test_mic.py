"""``edgeasr mic`` on a real capture path without hardware.

The test starts its own PulseAudio daemon (private runtime dir, no system instance) with a
null sink, plays a speech wav into the sink with ``paplay``, and runs ``edgeasr mic`` as a
subprocess recording the sink's monitor through PortAudio -> ALSA -> the ``pulse`` plugin
(Debian: pulseaudio, pulseaudio-utils, libasound2-plugins, libportaudio2). Nothing in
sounddevice is mocked.

Where capture starts relative to playback is up to the sound server (it may add leading
silence, or clip the first ~100 ms while the stream starts), and a model's output depends on
that alignment, so the transcript of the captured audio may differ from that of the wav in its
first word. So ``--save-wav`` keeps the
16 kHz audio the recognizer actually got: the printed transcript must equal the offline
transcript of exactly that audio, and that audio must contain the played wav
(cross-correlation), which checks the capture path and resampling end to end.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from apps_helpers import speech_clip, write_wav
from edgeasr.apps.mic import MicConfig, MicTranscriber, TranscriptPrinter

from edgeasr.audio import load_audio
from edgeasr.stream import Recognizer

SINK = "edgeasr_test"


# --------------------------------------------------------------------------------- printer


def test_printer_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    p = TranscriptPrinter(out)  # StringIO is not a TTY
    p.partial("hello", 12.0)
    p.final("hello world")
    p.final("")
    p.partial("again", 5.0)
    p.final("again")
    assert out.getvalue() == "hello world\nagain\n"


def test_printer_rewrites_the_line_on_a_terminal() -> None:
    out = io.StringIO()
    p = TranscriptPrinter(out, tty=True)
    p.partial("hel", 42.0)
    p.partial("hello", 40.0)
    p.final("hello world")
    text = out.getvalue()
    assert text.startswith("\r\x1b[Khel\x1b[2m  [  42 ms]\x1b[0m\r\x1b[Khello")
    assert text.endswith("\r\x1b[Khello world\n")


# --------------------------------------------------------------------------------- --vad


def test_vad_prints_one_final_per_speech_segment(tiny_bundle) -> None:
    """mic --vad without a device: 100 ms blocks, as PortAudio delivers them, through
    feed_vad(); the printed finals are transcribe_segments() of the same audio."""
    from edgeasr.vad import VadConfig, transcribe_segments

    rec: Any = Recognizer.from_bundle(tiny_bundle().root)
    audio = np.concatenate([speech_clip(3.0, index=0), np.zeros(48000, np.float32),
                            speech_clip(3.0, index=1)])
    _, parts = transcribe_segments(rec, audio)
    assert len(parts) == 2
    out = io.StringIO()
    mic = MicTranscriber(rec, MicConfig(vad=VadConfig()), TranscriptPrinter(out),
                         status=io.StringIO())
    kept: list[np.ndarray] = []
    for a in range(0, len(audio), 1600):
        mic.feed_vad(audio[a:a + 1600], time.monotonic(), kept)
    mic.feed_vad(np.zeros(0, np.float32), time.monotonic(), kept, last=True)
    texts = [r.text for _, r in parts if r.text]
    assert out.getvalue().splitlines() == texts and mic.finals == texts
    assert len(mic.latencies_ms) == 2 and kept == []  # no --save-wav: nothing kept


# ------------------------------------------------------------------------ the capture path


def test_no_input_device_says_what_to_install(tmp_path: Path) -> None:
    """No sound server and no sound card: a one-line error naming what to install."""
    env = _pulse_env(tmp_path / "nowhere")
    listing = subprocess.run([sys.executable, "-m", "edgeasr", "mic", "--list-devices"],
                             env=env, capture_output=True, text=True, timeout=60)
    if listing.returncode == 0:
        pytest.skip(f"this machine has input devices of its own: {listing.stdout}")
    out = subprocess.run([sys.executable, "-m", "edgeasr", "mic", "--bundle", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("edgeasr: error: no audio input device found")
    assert "apt-get install pulseaudio libasound2-plugins" in out.stderr


def _pulse_env(runtime: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(XDG_RUNTIME_DIR=str(runtime), PULSE_SERVER=f"unix:{runtime}/pulse/native",
               HOME=str(runtime))
    return env


@pytest.fixture
def pulse(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private PulseAudio daemon with a 16 kHz mono null sink whose monitor is the default
    source; yields the environment that points clients (ALSA's pulse plugin) at it."""
    if not (shutil.which("pulseaudio") and shutil.which("paplay")):
        pytest.skip("needs pulseaudio and pulseaudio-utils (apt-get install pulseaudio)")
    runtime = tmp_path / "pulse-runtime"
    runtime.mkdir(mode=0o700)
    env = _pulse_env(runtime)
    proc = subprocess.Popen(
        ["pulseaudio", "-n", "--daemonize=no", "--system=false", "--exit-idle-time=-1",
         "--disallow-exit", "--use-pid-file=no", "--log-target=stderr",
         "--load=module-native-protocol-unix",
         f"--load=module-null-sink sink_name={SINK} rate=16000 channels=1",
         "--load=module-always-sink"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            if subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode == 0:
                break
            if proc.poll() is not None:
                pytest.fail(f"pulseaudio exited: {proc.stderr.read()[-2000:]}")
            time.sleep(0.1)
        else:
            pytest.fail("pulseaudio did not come up in 10 s")
        subprocess.run(["pactl", "set-default-source", f"{SINK}.monitor"], env=env, check=True)
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _best_correlation(captured: np.ndarray, source: np.ndarray) -> float:
    """Max normalized cross-correlation of ``source`` and ``captured`` over every offset with
    at least half the source overlapping (the sound server may clip the very start)."""
    n = len(captured) + len(source)
    spectrum = np.fft.irfft(np.fft.rfft(captured, n) * np.conj(np.fft.rfft(source, n)), n)
    best = -1.0
    for lag in np.argsort(spectrum)[-5:]:  # a few candidate peaks; negative lags wrap around
        lag = int(lag) if lag < len(captured) else int(lag) - n
        a, b = max(lag, 0), max(-lag, 0)  # captured[a:] lines up with source[b:]
        m = min(len(captured) - a, len(source) - b)
        if m < len(source) // 2:
            continue
        x, y = captured[a : a + m], source[b : b + m]
        best = max(best, float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-9)))
    return best


def test_list_devices_shows_the_pulse_device(pulse: dict[str, str]) -> None:
    out = subprocess.run([sys.executable, "-m", "edgeasr", "mic", "--list-devices"],
                         env=pulse, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert any(line.split(":", 1)[1].strip().startswith("pulse")
               for line in out.stdout.splitlines() if ":" in line), out.stdout


def test_unknown_device_lists_the_inputs(pulse: dict[str, str], tiny_bundle) -> None:
    out = subprocess.run([sys.executable, "-m", "edgeasr", "mic", "--device", "no-such-mic",
                          "--bundle", str(tiny_bundle().root)],
                         env=pulse, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "input device 'no-such-mic' not found" in out.stderr and "pulse" in out.stderr


@pytest.mark.slow
def test_mic_transcribes_what_it_captures(pulse: dict[str, str], tiny_bundle,
                                          tmp_path: Path) -> None:
    speech = speech_clip(3.0, index=2)
    wav = write_wav(tmp_path / "speech.wav", speech)
    captured = tmp_path / "captured.wav"
    mic = subprocess.Popen(
        [sys.executable, "-m", "edgeasr", "mic", "--device", "pulse", "--no-endpoint",
         "--save-wav", str(captured), "--bundle", str(tiny_bundle().root)],
        env=pulse, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert mic.stderr is not None
        status = mic.stderr.readline()
        assert "listening on" in status, status + (mic.stderr.read() if mic.poll() else "")
        time.sleep(0.3)
        subprocess.run(["paplay", f"--device={SINK}", str(wav)], env=pulse, check=True,
                       timeout=30)
        time.sleep(0.5)
        mic.send_signal(signal.SIGINT)  # Ctrl-C: flush and print the last final
        stdout, stderr = mic.communicate(timeout=60)
    finally:
        if mic.poll() is None:
            mic.kill()
            mic.wait()
    assert mic.returncode == 0, stderr
    audio = load_audio(captured)
    assert len(audio) > len(speech)  # the whole clip was captured, with some silence around
    assert _best_correlation(audio, speech) > 0.9
    rec: Any = Recognizer.from_bundle(tiny_bundle().root)
    offline = rec.transcribe(audio, sample_rate=16000)
    assert stdout.splitlines() == ([offline.text] if offline.text else [])
    assert "latency p50" in stderr
