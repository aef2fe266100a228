"""Decode many live streams through one Recognizer, in batches, without blocking the event loop.

Why a batcher: one ``decode_streams`` call over N streams costs far less than N calls over one
stream (one encoder run with batch N), and one Recognizer shared by every connection keeps the
model in memory once. Why a worker thread: a decode step takes milliseconds of CPU, and doing
it on the event loop would stall every socket (pings, reads, writes) for that long.

Ownership rule that makes it race-free: only the batcher touches a Recognizer stream, and only
between decode calls. Connections hand audio over with :meth:`Batcher.feed` (a list append on
the event-loop thread); the batcher moves it into the stream (``accept_waveform``) right before
it picks the next batch, while no decode is running.

Results go back through each slot's ``sink`` callback, called on the event-loop thread and
expected not to block (the server puts them in a per-connection outbox).

VAD slots (``open(..., vad=True)``) take whole speech segments (:meth:`Batcher.feed_segment`)
instead of a continuous stream: each segment is decoded on a fresh stream, its input finished
at once, and ends with one final, so that a segment is recognized exactly as
``Recognizer.transcribe`` would recognize it alone (no state carries over the silence).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

__all__ = ["Batcher", "BatchEvent", "Slot", "StreamingRecognizer"]

log = logging.getLogger("edgeasr.apps.batcher")


class StreamingRecognizer(Protocol):
    """The part of :class:`edgeasr.Recognizer` the batcher uses."""

    feature_config: Any  # .sample_rate: the rate streams are fed at

    def create_stream(self, hotwords: Any = None) -> Any: ...
    def decode_streams(self, streams: Sequence[Any]) -> list[Any]: ...
    def is_ready(self, stream: Any) -> bool: ...
    def is_endpoint(self, stream: Any) -> bool: ...
    def reset(self, stream: Any) -> None: ...


@dataclass(frozen=True)
class BatchEvent:
    """What a slot's sink receives.

    ``kind`` ``partial``/``final`` carry the stream's ``result`` (its own object, read on the
    loop thread right after the decode) and ``client_samples``, the client's input samples that
    had been fed before that decode (for latency measurement). ``done`` is the last event;
    ``error`` means decoding failed and the slot was dropped. ``offset`` is where the
    result's stream began on the connection's time line, in seconds (a VAD segment's start;
    0 otherwise): its timestamps and ``start_time`` are relative to that point.
    """

    kind: Literal["partial", "final", "done", "error"]
    segment: int = 0
    result: Any = None
    client_samples: int = 0
    message: str = ""
    offset: float = 0.0


@dataclass(eq=False)
class Slot:
    """One connection's stream inside the batcher (created by :meth:`Batcher.open`)."""

    stream: Any
    sink: Callable[[BatchEvent], None]
    endpoint: bool = True
    partials: bool = True
    hotwords: Any = None
    vad: bool = False
    segments: deque[tuple[np.ndarray, float, int]] = field(default_factory=deque)
    offset: float = 0.0
    pending: list[np.ndarray] = field(default_factory=list)
    pending_client_samples: int = 0
    client_samples: int = 0
    segment: int = 0
    finals_sent: int = 0
    finishing: bool = False
    input_finished: bool = False
    closed: bool = False


class Batcher:
    """Runs the batching loop: feed pending audio, pick ready streams, decode them together.

    ``max_batch`` bounds one ``decode_streams`` call (latency of one step grows with it); when
    more streams are ready than that, the ones that waited longest go first (round robin).
    """

    def __init__(self, recognizer: StreamingRecognizer, max_batch: int = 32) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.recognizer = recognizer
        self.max_batch = max_batch
        self.sample_rate: int = int(recognizer.feature_config.sample_rate)
        self._slots: OrderedDict[int, Slot] = OrderedDict()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgeasr-decode")
        self._task: asyncio.Task[None] | None = None
        self.decode_calls = 0
        self.decoded_streams = 0

    # ----------------------------------------------------------------------- connection side

    def open(self, sink: Callable[[BatchEvent], None], *, endpoint: bool = True,
             partials: bool = True, hotwords: Any = None, vad: bool = False) -> Slot:
        """A new stream for one connection; events go to ``sink`` (must not block).

        ``hotwords`` are passed to ``create_stream``: the stream is created here, on the
        caller's thread, so that bad hotwords raise (``HotwordError``/``StreamError``) to the
        connection that sent them before it is registered. ``vad`` makes it a segment slot
        (see the module docstring); the stream created here then decodes the first segment.
        """
        stream = self.recognizer.create_stream(hotwords=hotwords)
        slot = Slot(stream, sink, endpoint=endpoint and not vad, partials=partials,
                    hotwords=hotwords, vad=vad)
        self._slots[id(slot)] = slot
        return slot

    def feed(self, slot: Slot, samples: np.ndarray, client_samples: int) -> None:
        """Queue 16 kHz float32 ``samples``; ``client_samples`` is the client's running count."""
        if slot.vad:
            raise ValueError("a VAD slot takes whole segments: use feed_segment()")
        if slot.closed or slot.finishing:
            return
        if samples.size:
            slot.pending.append(samples)
        slot.pending_client_samples = client_samples
        self._wake.set()

    def feed_segment(self, slot: Slot, samples: np.ndarray, start_s: float,
                     client_samples: int) -> None:
        """Queue one whole speech segment of a VAD slot (16 kHz float32) that starts
        ``start_s`` seconds into the connection's audio; it gets its own final."""
        if not slot.vad:
            raise ValueError("feed_segment() needs a slot opened with vad=True")
        if slot.closed or slot.finishing:
            return
        if samples.size:
            slot.segments.append((samples, start_s, client_samples))
        slot.pending_client_samples = client_samples
        self._wake.set()

    def finish(self, slot: Slot) -> None:
        """End of input: decode what is left, send the last final, then ``done``."""
        if not slot.closed:
            slot.finishing = True
            self._wake.set()

    def cancel(self, slot: Slot) -> None:
        """Drop a stream without results (the client went away)."""
        slot.closed = True
        self._slots.pop(id(slot), None)

    @property
    def active(self) -> int:
        return len(self._slots)

    # ----------------------------------------------------------------------------- the loop

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        """Stop the loop (after the server has flushed its sessions) and the worker thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while batch := self._collect():
                streams = [s.stream for s in batch]
                try:
                    failed = await loop.run_in_executor(
                        self._executor, self.recognizer.decode_streams, streams
                    )
                except Exception as e:  # a bug or a backend failure: fail these, keep serving
                    log.exception("decode_streams failed for %d stream(s)", len(batch))
                    failed = streams
                    for stream in streams:
                        stream.error = stream.error or e
                self.decode_calls += 1
                self.decoded_streams += len(batch)
                bad = {id(s) for s in failed or ()}
                for slot in batch:
                    if id(slot.stream) in bad:
                        error = getattr(slot.stream, "error", None) or "unknown error"
                        self._emit(slot, BatchEvent("error", message=f"decoding failed: {error}"))
                        self.cancel(slot)
                self._after_decode([s for s in batch if id(s.stream) not in bad])

    def _collect(self) -> list[Slot]:
        """Move pending audio into streams, finish drained streams, return the next batch."""
        ready: list[Slot] = []
        for slot in list(self._slots.values()):
            wants_decode = self._advance_segments(slot) if slot.vad else self._advance(slot)
            if wants_decode and len(ready) < self.max_batch:
                ready.append(slot)
        for slot in ready:  # round robin: the streams served now queue up behind the others
            self._slots.move_to_end(id(slot))
        return ready

    def _advance(self, slot: Slot) -> bool:
        """Feed a continuous slot's pending audio; True if its stream needs a decode call."""
        if slot.pending:
            audio = slot.pending[0] if len(slot.pending) == 1 else np.concatenate(slot.pending)
            slot.pending.clear()
            slot.stream.accept_waveform(self.sample_rate, audio)
        slot.client_samples = slot.pending_client_samples
        if slot.finishing and not slot.input_finished:
            slot.stream.input_finished()
            slot.input_finished = True
        # A finished stream needs one more decode call even with no chunk left: that call
        # finalizes the decoder (beam search, SAR refinement) and marks the result final.
        if self.recognizer.is_ready(slot.stream) or (slot.input_finished
                                                     and not slot.stream.is_finished):
            return True
        if slot.input_finished:
            self._final(slot, last=True)
            self._close(slot)
        return False

    def _advance_segments(self, slot: Slot) -> bool:
        """A VAD slot: send the final of a fully decoded segment, start the next queued one
        on a fresh stream; True if the current segment's stream needs a decode call."""
        while True:
            if slot.input_finished:  # a segment is in the stream
                if self.recognizer.is_ready(slot.stream) or not slot.stream.is_finished:
                    return True
                result = slot.stream.result
                if result.text:  # as at an endpoint: a segment heard as nothing sends nothing
                    self._emit(slot, BatchEvent("final", slot.segment, result,
                                                slot.client_samples, offset=slot.offset))
                    slot.segment += 1
                    slot.finals_sent += 1
                slot.stream, slot.input_finished = None, False
            if slot.segments:
                samples, slot.offset, slot.client_samples = slot.segments.popleft()
                if slot.stream is None:
                    slot.stream = self.recognizer.create_stream(hotwords=slot.hotwords)
                piece = 10 * self.sample_rate  # accept_waveform bounds one call's length
                for a in range(0, samples.size, piece):
                    slot.stream.accept_waveform(self.sample_rate, samples[a:a + piece])
                slot.stream.input_finished()
                slot.input_finished = True
                continue
            if slot.finishing:
                slot.client_samples = slot.pending_client_samples
                if slot.finals_sent == 0:  # like a silent stream: one empty final, then done
                    self._emit(slot, BatchEvent("final", slot.segment, _empty_result(),
                                                slot.client_samples))
                    slot.segment += 1
                    slot.finals_sent += 1
                self._close(slot)
            return False

    def _close(self, slot: Slot) -> None:
        self._emit(slot, BatchEvent("done", segment=slot.segment))
        self._slots.pop(id(slot), None)
        slot.closed = True

    def _after_decode(self, batch: list[Slot]) -> None:
        rec = self.recognizer
        for slot in batch:
            if slot.closed or (slot.vad and slot.stream.is_finished):
                continue  # a whole VAD segment was decoded: its final follows, no partial
            if slot.endpoint and not slot.input_finished and rec.is_endpoint(slot.stream):
                self._final(slot, last=False)
                continue
            if slot.partials:
                self._emit(slot, BatchEvent("partial", slot.segment, slot.stream.result,
                                            slot.client_samples, offset=slot.offset))

    def _final(self, slot: Slot, *, last: bool) -> None:
        """Send the current segment's final and start a new segment.

        An endpoint on a segment with no text (silence) sends nothing; the end of input always
        sends a final unless it is empty and an earlier final was already sent.
        """
        result = slot.stream.result
        if result.text or (last and slot.finals_sent == 0):
            self._emit(slot, BatchEvent("final", slot.segment, result, slot.client_samples))
            slot.segment += 1
            slot.finals_sent += 1
        if not last:
            self.recognizer.reset(slot.stream)

    @staticmethod
    def _emit(slot: Slot, event: BatchEvent) -> None:
        try:
            slot.sink(event)
        except Exception:  # a sink must never take the loop down
            log.exception("result sink failed")


def _empty_result() -> Any:
    """The final of a stream in which nothing was recognized (VAD found no speech)."""
    from edgeasr.stream import Result

    return Result(text="", tokens=[], timestamps=[], is_final=True)
