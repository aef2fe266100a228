"""Load test for ``edgeasr serve``: partial-result latency under N real-time streams.

    python -m edgeasr.apps.loadtest --checkpoint exp/tiny.pt        # starts its own server
    python -m edgeasr.apps.loadtest --url ws://127.0.0.1:6006/ws    # an already running one

Each client streams the same audio at real-time pace in ``--frame-ms`` frames (as a microphone
would) and records when it sent each frame. Every result carries ``samples``, the number of the
client's samples the server had received when it computed that result; the latency of a result
is its arrival time minus the send time of the frame that completed those samples. So it
measures queueing + batching + compute + network, not the model's chunk look-ahead (which is a
property of the model, the same at any load).

Reports p50/p95 partial latency at 1, 8 and 32 streams, then searches the largest number of
real-time streams whose p95 stays under ``--target-ms`` (doubling, then bisecting).

:func:`stream_audio` is also the client the server tests use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

__all__ = ["SessionRecord", "latency_percentiles", "main", "run_streams", "stream_audio"]


@dataclass
class SessionRecord:
    """Everything one client saw: messages with arrival times, frames with send times."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    sent_samples: list[int] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    close_code: int | None = None

    @property
    def finals(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "final"]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "error"]

    @property
    def done(self) -> bool:
        return any(m["type"] == "done" for m in self.messages)

    @property
    def text(self) -> str:
        """The finals' texts joined with spaces."""
        return " ".join(m["text"] for m in self.finals if m["text"])

    @property
    def tokens(self) -> list[int]:
        """The finals' token ids, concatenated."""
        return [t for m in self.finals for t in m["tokens"]]

    def partial_latencies(self) -> list[float]:
        """Seconds from sending the frame that completed a partial's input to receiving it."""
        out = []
        sent = np.asarray(self.sent_samples)
        for m, t in zip(self.messages, self.received_at, strict=True):
            if m["type"] != "partial" or not len(sent):
                continue
            k = int(np.searchsorted(sent, m["samples"]))
            if k < len(sent):
                out.append(t - self.sent_at[k])
        return out


def to_pcm(audio: np.ndarray, fmt: str = "int16") -> bytes:
    if fmt == "float32":
        return np.asarray(audio, dtype="<f4").tobytes()
    return (np.clip(audio, -1.0, 32767 / 32768) * 32768.0).round().astype("<i2").tobytes()


async def stream_audio(
    url: str,
    audio: np.ndarray,
    *,
    sample_rate: int = 16000,
    fmt: str = "int16",
    frame_ms: int = 100,
    realtime: bool = False,
    config: dict[str, Any] | None = None,
    token: str | None = None,
    timeout: float = 60.0,
) -> SessionRecord:
    """Stream ``audio`` (float32) to the server and collect every reply until it closes.

    ``realtime`` paces frames at the audio's own speed (a live source); otherwise they are
    sent as fast as the socket takes them (a file).
    """
    record = SessionRecord()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    pcm = to_pcm(audio, fmt)
    width = 2 if fmt == "int16" else 4
    step = sample_rate * frame_ms // 1000 * width

    async with connect(url, additional_headers=headers, max_size=None,
                       open_timeout=timeout) as ws:
        async def receive() -> None:
            with contextlib.suppress(ConnectionClosed):  # an error close ends it too
                async for message in ws:
                    record.received_at.append(time.perf_counter())
                    record.messages.append(json.loads(message))

        receiver = asyncio.create_task(receive())
        try:
            await ws.send(json.dumps({"sample_rate": sample_rate, "format": fmt,
                                      **(config or {})}))
            start = time.perf_counter()
            for k, a in enumerate(range(0, len(pcm), step)):
                if realtime:
                    delay = start + k * frame_ms / 1000 - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await ws.send(pcm[a : a + step])
                record.sent_at.append(time.perf_counter())
                record.sent_samples.append(min(len(pcm), a + step) // width)
            await ws.send(json.dumps({"type": "end"}))
        except ConnectionClosed:  # the server ended the stream early (a limit, shutdown)
            pass
        await asyncio.wait_for(receiver, timeout)
        record.close_code = ws.close_code
    return record


async def run_streams(url: str, audio: np.ndarray, n: int, **kwargs: Any) -> list[SessionRecord]:
    """``n`` concurrent real-time clients, started 37 ms apart (not in lock step)."""
    async def one(i: int) -> SessionRecord:
        await asyncio.sleep(i * 0.037 % (kwargs.get("frame_ms", 100) / 1000))
        return await stream_audio(url, audio, realtime=True, **kwargs)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def latency_percentiles(records: list[SessionRecord]) -> tuple[float, float, int]:
    """(p50 ms, p95 ms, number of partials) over all clients."""
    lat = np.asarray([x for r in records for x in r.partial_latencies()])
    if not lat.size:
        return float("nan"), float("nan"), 0
    return float(np.percentile(lat, 50) * 1000), float(np.percentile(lat, 95) * 1000), lat.size


@contextlib.contextmanager
def _own_server(model_args: list[str], max_connections: int):
    """Start ``edgeasr serve`` on a free port in a child process; yield its ws:// URL."""
    cmd = [sys.executable, "-m", "edgeasr", "serve", "--port", "0", "--no-web",
           "--max-connections", str(max_connections), *model_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"ws://([\d.]+:\d+)/ws", line)
        if not match:
            raise SystemExit(f"server did not start: {line!r} (exit {proc.poll()})")
        yield f"ws://{match.group(1)}/ws"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeasr.apps.loadtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="server to test (default: start one with the model options)")
    p.add_argument("--bundle", type=Path)
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--audio", type=Path, help="wav/flac/ogg to stream (default: 4 s of noise "
                   "shaped like speech; use real speech for meaningful decoder work)")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds of audio per stream")
    p.add_argument("--frame-ms", type=int, default=100)
    p.add_argument("--levels", default="1,8,32", help="stream counts to report")
    p.add_argument("--target-ms", type=float, default=300.0)
    p.add_argument("--max-streams", type=int, default=256, help="search bound")
    p.add_argument("--no-search", action="store_true", help="skip the max-streams search")
    args = p.parse_args(argv)

    from edgeasr.audio import load_audio

    if args.audio is not None:
        audio = load_audio(args.audio)[: int(args.seconds * 16000)]
    else:
        rng = np.random.default_rng(0)
        t = np.arange(int(args.seconds * 16000)) / 16000
        audio = (0.1 * (0.5 - 0.5 * np.cos(2 * np.pi * 3 * t)) * rng.standard_normal(t.size))
        audio = audio.astype(np.float32)
    levels = [int(x) for x in args.levels.split(",")]

    model_args = []
    if args.bundle:
        model_args += ["--bundle", str(args.bundle)]
    if args.checkpoint:
        model_args += ["--checkpoint", str(args.checkpoint)]
    model_args += ["--num-threads", str(args.num_threads)]
    server = contextlib.nullcontext(args.url) if args.url else \
        _own_server(model_args, max(args.max_streams, max(levels)) + 8)

    def measure(url: str, n: int) -> tuple[float, float, int]:
        records = asyncio.run(run_streams(url, audio, n, frame_ms=args.frame_ms))
        p50, p95, count = latency_percentiles(records)
        print(f"{n:4d} streams: partial latency p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  "
              f"({count} partials)", flush=True)
        return p50, p95, count

    print(f"audio {len(audio) / 16000:.1f} s per stream, {args.frame_ms} ms frames, "
          f"{os.cpu_count()} CPUs", flush=True)
    with server as url:
        measure(url, 1)  # warm-up: first-call allocations are not latency
        for n in levels:
            measure(url, n)
        if args.no_search:
            return 0
        good, bad = 0, None
        n = 1
        while n <= args.max_streams:
            if measure(url, n)[1] < args.target_ms:
                good, n = n, n * 2
            else:
                bad = n
                break
        if bad is None:
            print(f"max real-time streams with p95 < {args.target_ms:g} ms: >= {good} "
                  f"(search bound {args.max_streams})")
            return 0
        while bad - good > max(1, good // 8):  # bisect to within ~12%
            mid = (good + bad) // 2
            if measure(url, mid)[1] < args.target_ms:
                good = mid
            else:
                bad = mid
        print(f"max real-time streams with p95 < {args.target_ms:g} ms: {good}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
