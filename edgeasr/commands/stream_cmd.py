"""``edgeasr stream FILE``: play a file through a live stream and show partial results.

Audio is fed in small pieces (``--chunk-ms``); after each piece the partial text is redrawn on
one line (a terminal) or printed when it changes (a pipe), and every endpoint finishes a line,
exactly as a live microphone session would show it. ``--realtime`` paces the feeding at the
audio's own speed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from edgeasr.audio import load_audio
from edgeasr.commands import add_model_arguments, recognizer_from_args
from edgeasr.stream import Recognizer
from edgeasr.translation import display_text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, metavar="FILE", help="audio file")
    p.add_argument("--realtime", action="store_true", help="feed audio at real-time speed")
    p.add_argument("--chunk-ms", type=int, default=100, metavar="MS",
                   help="audio per accept_waveform call (default 100 ms)")
    add_model_arguments(p)


def run(args: argparse.Namespace) -> int:
    if args.chunk_ms < 1:
        raise ValueError("--chunk-ms must be >= 1")
    rec = recognizer_from_args(args)
    samples = load_audio(args.file, target_rate=rec.feature_config.sample_rate)
    stream_samples(rec, samples, realtime=args.realtime, chunk_ms=args.chunk_ms)
    return 0


def stream_samples(rec: Recognizer, samples: np.ndarray, realtime: bool = False,
                   chunk_ms: int = 100) -> list[str]:
    """Feed ``samples`` (at the model rate) through a new stream, showing results as they come.

    Returns the final texts, one per endpointed segment (with a speech-translation bundle,
    ``"transcript  => translation"``).
    """
    rate = rec.feature_config.sample_rate
    tty = sys.stdout.isatty()
    piece = max(1, rate * chunk_ms // 1000)
    s = rec.create_stream()
    finals: list[str] = []
    shown = ""
    start = time.perf_counter()

    def show(text: str, final: bool) -> None:
        nonlocal shown
        stamp = f"[{s.result.start_time:7.2f}] "
        if tty:
            end = "\n" if final else ""
            sys.stdout.write(f"\r\033[K{stamp}{text}{end}")
            sys.stdout.flush()
        elif text != shown or final:
            print(f"{stamp}{text}" + ("" if final else " ..."), flush=True)
        shown = "" if final else text
        if final:
            finals.append(text)

    for a in range(0, len(samples), piece):
        if realtime:
            delay = a / rate - (time.perf_counter() - start)
            if delay > 0:
                time.sleep(delay)
        s.accept_waveform(rate, samples[a : a + piece])
        rec.decode_stream(s)
        text = display_text(s.result)
        if rec.is_endpoint(s):
            if text:
                show(text, final=True)
            rec.reset(s)
        elif text != shown:
            show(text, final=False)
    s.input_finished()
    rec.decode_stream(s)
    if text := display_text(s.result):
        show(text, final=True)
    elif tty and shown:
        sys.stdout.write("\n")
    return finals
