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

from edgeasr.audio import load_audio
from edgeasr.commands import add_model_arguments, recognizer_from_args


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
    rate = rec.feature_config.sample_rate
    samples = load_audio(args.file, target_rate=rate)
    tty = sys.stdout.isatty()
    piece = max(1, rate * args.chunk_ms // 1000)
    s = rec.create_stream()
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

    for a in range(0, len(samples), piece):
        if args.realtime:
            delay = a / rate - (time.perf_counter() - start)
            if delay > 0:
                time.sleep(delay)
        s.accept_waveform(rate, samples[a : a + piece])
        rec.decode_stream(s)
        text = s.result.text
        if rec.is_endpoint(s):
            if text:
                show(text, final=True)
            rec.reset(s)
        elif text != shown:
            show(text, final=False)
    s.input_finished()
    rec.decode_stream(s)
    if s.result.text:
        show(s.result.text, final=True)
    elif tty and shown:
        sys.stdout.write("\n")
    return 0
