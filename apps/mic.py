"""``edgeasr mic``: live transcription from a microphone (sounddevice / PortAudio).

The device is opened at its own default rate (asking a device for 16 kHz makes some drivers
fail and others resample badly); :class:`~edgeasr.audio.StreamResampler` brings the audio to
the model's rate. PortAudio calls back on its own thread, which only copies the block into a
queue with its arrival time; the main thread feeds the recognizer and decodes, so a slow decode
never makes PortAudio drop input (it just queues).

Output: on a terminal, the partial result is rewritten in place on the current line, with the
latency of the newest result, and each final (an endpoint, or Ctrl-C) ends its line. When
stdout is not a terminal (a pipe, a file, a test), only finals are printed, one per line;
status goes to stderr. Ctrl-C stops capture, decodes the audio already captured, prints the
last final and exits 0.

Latency shown = time the result is printed minus the time the newest audio block it includes
arrived from PortAudio: the recognizer's queueing + compute delay, not the model's look-ahead.

``--vad``: the audio goes through Silero VAD (:class:`~edgeasr.vad.VadSegmenter`) and only
the padded speech segments are recognized, each as its own utterance whose final is printed
once the segment ends (no partials: a segment is known only once it is over). Silence costs
no decoding, and every segment is recognized exactly as ``edgeasr transcribe --vad`` would.
"""

from __future__ import annotations

import argparse
import queue
import shutil
import signal
import sys
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from edgeasr.apps.common import AppError, add_model_arguments, add_vad_argument, load_recognizer

from edgeasr.audio import StreamResampler
from edgeasr.translation import display_text
from edgeasr.vad import VadConfig, VadError, VadSegmenter

__all__ = ["MicConfig", "MicTranscriber", "TranscriptPrinter", "add_arguments", "run"]

PORTAUDIO_HINT = (
    "install the PortAudio library: apt-get install libportaudio2 (Debian/Ubuntu), "
    "dnf install portaudio (Fedora), brew install portaudio (macOS)"
)


def _import_sounddevice() -> Any:
    """sounddevice, or an AppError saying what to install."""
    try:
        import sounddevice
    except ImportError:
        raise AppError("sounddevice is not installed: pip install 'edgeasr[mic]'") from None
    except OSError as e:  # the Python module is there, the PortAudio library is not
        raise AppError(f"cannot load PortAudio ({e}); {PORTAUDIO_HINT}") from None
    return sounddevice


def input_devices(sd: Any) -> list[tuple[int, dict[str, Any]]]:
    """(index, info) of every device with input channels."""
    return [(i, d) for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]


def describe_devices(sd: Any) -> str:
    """A listing of input devices, default marked, for --list-devices and error messages."""
    try:
        default = sd.default.device[0]
    except Exception:
        default = -1
    lines = [
        f"{'*' if i == default else ' '} {i}: {d['name']} ({d['max_input_channels']} ch, "
        f"{d['default_samplerate']:.0f} Hz)"
        for i, d in input_devices(sd)
    ]
    return "\n".join(lines)


NO_DEVICE_HINT = (
    "no audio input device found. Plug in a microphone, or on a headless Linux machine run a "
    "sound server (apt-get install pulseaudio libasound2-plugins; pulseaudio --start) so that "
    "PortAudio's ALSA 'pulse' device exists"
)


def resolve_device(sd: Any, device: str | None) -> tuple[int, float]:
    """(device index, its default sample rate) for ``--device`` (index, name part, or None)."""
    inputs = input_devices(sd)
    if not inputs:
        raise AppError(NO_DEVICE_HINT)
    if device is None:
        index = sd.default.device[0]
        if index is None or index < 0:
            index = inputs[0][0]
    else:
        key: int | str = int(device) if device.strip().isdigit() else device
        try:
            info = sd.query_devices(key, "input")
        except (ValueError, sd.PortAudioError) as e:
            raise AppError(
                f"input device {device!r} not found ({e}); input devices:\n{describe_devices(sd)}"
            ) from None
        index = int(info["index"]) if "index" in info else key  # type: ignore[assignment]
    info = sd.query_devices(index, "input")
    return int(index), float(info["default_samplerate"])


@dataclass(frozen=True)
class MicConfig:
    """Capture settings. ``sample_rate`` None uses the device's default rate; ``block_ms`` is
    the PortAudio block (the granularity of feeding, not of decoding: the model decodes once a
    whole chunk has arrived). ``save_wav`` keeps the 16 kHz audio that went into the model
    (with ``vad``, all captured audio: the input of the VAD). ``vad`` (None: off) segments
    the audio with Silero VAD; ``endpoint`` then has no effect (segments end at pauses)."""

    device: str | None = None
    sample_rate: int | None = None
    block_ms: int = 100
    endpoint: bool = True
    save_wav: Path | None = None
    vad: VadConfig | None = None


class TranscriptPrinter:
    """Shows partials in place on a terminal and finals one per line; plain lines otherwise."""

    def __init__(self, out: TextIO, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self._shown = ""

    def partial(self, text: str, latency_ms: float) -> None:
        if not self.tty or text == self._shown and not text:
            return
        suffix = f"  [{latency_ms:4.0f} ms]"
        width = shutil.get_terminal_size((80, 24)).columns - len(suffix) - 1
        shown = text if len(text) <= width else "…" + text[-(width - 1):]
        self.out.write(f"\r\x1b[K{shown}\x1b[2m{suffix}\x1b[0m")
        self.out.flush()
        self._shown = text

    def final(self, text: str) -> None:
        if self.tty:
            self.out.write(f"\r\x1b[K{text}\n")
        elif text:
            self.out.write(text + "\n")
        self.out.flush()
        self._shown = ""


class MicTranscriber:
    """Capture -> resample -> recognizer, one stream, until Ctrl-C."""

    def __init__(self, recognizer: Any, config: MicConfig, printer: TranscriptPrinter,
                 status: TextIO = sys.stderr) -> None:
        self.rec = recognizer
        self.rate = int(recognizer.feature_config.sample_rate)
        self.config = config
        self.printer = printer
        self.status = status
        self.latencies_ms: list[float] = []
        self.finals: list[str] = []
        self.segmenter: VadSegmenter | None = None
        if config.vad is not None:  # load before opening the device: fail fast
            try:
                self.segmenter = VadSegmenter(config.vad)
            except VadError as e:
                raise AppError(str(e)) from None
            if self.rate != 16000:
                raise AppError(f"--vad needs a 16 kHz model, this one runs at {self.rate} Hz")

    def run(self) -> None:
        sd = _import_sounddevice()
        index, default_rate = resolve_device(sd, self.config.device)
        rate = self.config.sample_rate or int(round(default_rate))
        blocks: queue.Queue[tuple[float, np.ndarray]] = queue.Queue()

        def callback(indata: np.ndarray, frames: int, time_info: Any, flags: Any) -> None:
            if flags.input_overflow:
                print("edgeasr mic: input overflow (audio dropped)", file=self.status)
            blocks.put((time.monotonic(), indata[:, 0].copy()))

        resampler = StreamResampler(rate, self.rate)
        stream = self.rec.create_stream()
        kept: list[np.ndarray] = []
        try:
            capture = sd.InputStream(device=index, samplerate=rate, channels=1,
                                     dtype="float32", blocksize=rate * self.config.block_ms // 1000,
                                     callback=callback)
        except sd.PortAudioError as e:
            raise AppError(f"cannot open input device {index} at {rate} Hz: {e}; "
                           f"input devices:\n{describe_devices(sd)}") from None
        name = sd.query_devices(index)["name"]
        print(f"edgeasr mic: listening on {index}: {name} at {rate} Hz (Ctrl-C to stop)",
              file=self.status, flush=True)
        newest = time.monotonic()
        # Ctrl-C / SIGTERM only set a flag: an interrupt raised inside a decode call would
        # leave the stream half-updated, and the last final must come from a whole stream.
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            with capture:
                while not stop.is_set():
                    try:
                        arrived, block = blocks.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    newest = arrived
                    if self.segmenter is not None:
                        self.feed_vad(resampler.process(block), newest, kept)
                        continue
                    self._feed(stream, resampler.process(block), kept)
                    while not blocks.empty():  # catch up after a slow decode: feed all first
                        newest, block = blocks.get_nowait()
                        self._feed(stream, resampler.process(block), kept)
                    self._decode(stream, newest)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        # Stopped: whatever PortAudio already delivered is part of the utterance.
        while not blocks.empty():
            newest, block = blocks.get_nowait()
            if self.segmenter is not None:
                self.feed_vad(resampler.process(block), newest, kept)
            else:
                self._feed(stream, resampler.process(block), kept)
        if self.segmenter is not None:
            self.feed_vad(resampler.flush(), newest, kept, last=True)
        else:
            self._feed(stream, resampler.flush(), kept)
            stream.input_finished()
            self._decode(stream, newest, last=True)
        if self.config.save_wav is not None:
            _write_wav(self.config.save_wav, kept, self.rate)
        if self.latencies_ms:
            lat = np.asarray(self.latencies_ms)
            print(f"edgeasr mic: {len(self.finals)} final(s); latency p50 "
                  f"{np.percentile(lat, 50):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms",
                  file=self.status, flush=True)

    def feed_vad(self, audio: np.ndarray, newest: float, kept: list[np.ndarray],
                 last: bool = False) -> None:
        """VAD mode: segment 16 kHz ``audio``; recognize and print every segment it finishes
        (``last``: the end of input, which also closes the segment in progress).

        Each segment gets a fresh stream (``Recognizer.transcribe``): nothing carries over the
        silence between segments, so a segment's text does not depend on what came before.
        """
        assert self.segmenter is not None
        if self.config.save_wav is not None and audio.size:
            kept.append(audio)
        segments = self.segmenter.accept_waveform(audio) if audio.size else []
        if last:
            segments += self.segmenter.flush()
        for seg in segments:
            text = display_text(self.rec.transcribe(seg.samples, sample_rate=self.rate))
            self.latencies_ms.append((time.monotonic() - newest) * 1000)
            if text:
                self.printer.final(text)
                self.finals.append(text)

    def _feed(self, stream: Any, audio: np.ndarray, kept: list[np.ndarray]) -> None:
        if audio.size:
            stream.accept_waveform(self.rate, audio)
            if self.config.save_wav is not None:
                kept.append(audio)

    def _decode(self, stream: Any, newest: float, last: bool = False) -> None:
        rec = self.rec
        decoded = False
        while rec.is_ready(stream) or (last and not stream.is_finished):
            failed = rec.decode_streams([stream])
            if failed:
                raise AppError(f"decoding failed: {stream.error}")
            decoded = True
            if self.config.endpoint and not last and rec.is_endpoint(stream):
                text = display_text(stream.result)
                if text:
                    self.printer.final(text)
                    self.finals.append(text)
                rec.reset(stream)
        if decoded:
            latency = (time.monotonic() - newest) * 1000
            self.latencies_ms.append(latency)
            self.printer.partial(display_text(stream.result), latency)
        if last:
            text = display_text(stream.result)
            self.printer.final(text)
            if text:
                self.finals.append(text)


def _write_wav(path: Path, chunks: list[np.ndarray], rate: int) -> None:
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    pcm = (np.clip(audio, -1.0, 32767 / 32768) * 32768.0).round().astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--list-devices", action="store_true", help="list input devices and exit")
    p.add_argument("--device", default=None,
                   help="input device: index or part of its name (default: system default)")
    p.add_argument("--sample-rate", type=int, default=None, metavar="HZ",
                   help="capture rate (default: the device's own rate; resampled to 16 kHz)")
    p.add_argument("--no-endpoint", action="store_true",
                   help="never split into segments: one final when you press Ctrl-C")
    p.add_argument("--save-wav", type=Path, default=None, metavar="PATH",
                   help="also write the 16 kHz audio that was recognized to PATH")
    add_vad_argument(p)
    add_model_arguments(p)


def run(args: argparse.Namespace) -> int:
    if args.list_devices:
        sd = _import_sounddevice()
        listing = describe_devices(sd)
        print(listing if listing else NO_DEVICE_HINT)
        return 0 if listing else 1
    # fail on a missing PortAudio or device before spending seconds loading the model
    resolve_device(_import_sounddevice(), args.device)
    recognizer = load_recognizer(args)
    config = MicConfig(device=args.device, sample_rate=args.sample_rate,
                       endpoint=not args.no_endpoint, save_wav=args.save_wav,
                       vad=VadConfig() if args.vad else None)
    MicTranscriber(recognizer, config, TranscriptPrinter(sys.stdout)).run()
    return 0
