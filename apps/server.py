"""``edgeasr serve``: a WebSocket streaming recognition server (asyncio + websockets).

One process, one :class:`~edgeasr.Recognizer`, many connections: every connection gets a
stream, and a :class:`~edgeasr.apps.batcher.Batcher` decodes all ready streams together in a
worker thread. The same port answers plain HTTP: ``GET /health`` for probes and the browser
demo page (apps/web/) at ``/``. The wire protocol is docs/server-protocol.md
(:mod:`edgeasr.apps.protocol`).

Every limit protects the other clients from one bad client: a bounded number of connections,
of bytes per message, of audio seconds per stream, of idle seconds, and of unread results
queued for a client that does not read (a slow reader is disconnected, it never stalls the
batcher). SIGINT/SIGTERM stop accepting connections, end every stream's input, flush its final
result, send ``done`` and close with 1001 before the process exits.

With ``--vad`` each connection's audio goes through its own
:class:`~edgeasr.vad.VadSegmenter` (all sharing one Silero model) and only the padded speech
segments reach the recognizer, each as its own utterance with its own final: silence costs no
decoding, and a segment is recognized exactly as ``edgeasr transcribe --vad`` would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import hmac
import http
import json
import logging
import mimetypes
import os
import signal
import time
import wave
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from edgeasr.apps.batcher import Batcher, BatchEvent, Slot, StreamingRecognizer
from edgeasr.apps.common import (
    AppError,
    add_model_arguments,
    add_vad_argument,
    load_recognizer,
)
from edgeasr.apps.protocol import (
    ProtocolError,
    StreamConfig,
    decode_pcm,
    done_message,
    error_message,
    parse_config,
    parse_control,
    result_message,
)
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from edgeasr.audio import StreamResampler
from edgeasr.hotwords import HotwordError
from edgeasr.stream import RecognizerError
from edgeasr.vad import SAMPLE_RATE as VAD_SAMPLE_RATE
from edgeasr.vad import SileroVad, VadConfig, VadError, VadSegmenter

__all__ = ["WEB_ROOT", "AsrServer", "ServerConfig", "add_arguments", "run"]

log = logging.getLogger("edgeasr.apps.server")

WEB_ROOT = Path(__file__).parent / "web"

#: Close codes (RFC 6455): normal, going away (shutdown), policy violation, too big, overload.
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_TRY_AGAIN = (
    1000, 1001, 1008, 1009, 1013)


@dataclass(frozen=True)
class ServerConfig:
    """Network settings and limits of :class:`AsrServer`.

    ``port`` 0 picks a free port (tests). ``max_message_bytes`` bounds one WebSocket message
    (1 MiB is ~32 s of 16 kHz int16: clients send 20-200 ms frames). ``max_pending_messages``
    is how many unsent results may queue for one client before it counts as a slow reader
    (partials are coalesced first, so only a client that stopped reading reaches it).
    ``save_audio_dir`` writes each stream's 16 kHz input to a wav (debugging, tests).
    ``vad`` (None: off) segments every stream with Silero VAD; see the module docstring.
    """

    host: str = "127.0.0.1"
    port: int = 6006
    max_connections: int = 64
    max_message_bytes: int = 1 << 20
    max_stream_seconds: float = 600.0
    idle_timeout: float = 20.0
    auth_token: str | None = None
    max_batch: int = 32
    max_pending_messages: int = 64
    shutdown_timeout: float = 10.0
    web_root: Path | None = WEB_ROOT
    save_audio_dir: Path | None = None
    vad: VadConfig | None = None

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_message_bytes", "max_batch", "max_pending_messages"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_stream_seconds", "idle_timeout", "shutdown_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass(eq=False)
class _Session:
    """One connection: its config, its batcher slot and its outbox of unsent messages."""

    ws: ServerConnection
    config: StreamConfig
    resampler: StreamResampler
    slot: Slot | None = None
    client_samples: int = 0
    outbox: deque[tuple[str, str]] = field(default_factory=deque)  # (kind, json text)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    done: bool = False
    slow: bool = False
    audio: list[np.ndarray] | None = None
    reader: asyncio.Task[None] | None = None
    segmenter: VadSegmenter | None = None


class AsrServer:
    """The server: ``await start()``, then ``await serve_until_stopped()`` or ``await stop()``.

    Usable from tests on an ephemeral port (``ServerConfig(port=0)``; see :attr:`port`).
    """

    def __init__(self, recognizer: StreamingRecognizer, config: ServerConfig | None = None,
                 info: dict[str, Any] | None = None) -> None:
        self.recognizer = recognizer
        self.config = config or ServerConfig()
        self.info = info or {}
        self.batcher = Batcher(recognizer, max_batch=self.config.max_batch)
        self._vad: SileroVad | None = None
        if self.config.vad is not None:  # load (and fail) once, before serving anybody
            if self.batcher.sample_rate != VAD_SAMPLE_RATE:
                raise VadError(f"VAD segmentation needs a {VAD_SAMPLE_RATE} Hz model, "
                               f"this one runs at {self.batcher.sample_rate} Hz")
            self.config.vad.validate()
            self._vad = SileroVad(self.config.vad.model, self.config.vad.num_threads)
        self._server: Server | None = None
        self._sessions: set[_Session] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._connections = 0
        self._stopping = False
        self._stopped = asyncio.Event()
        self.started_at = time.monotonic()

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self.batcher.start()
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            max_size=self.config.max_message_bytes,
            close_timeout=2,
            write_limit=1 << 16,
            server_header=None,
        )

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        if self._server is None:
            raise RuntimeError("server not started")
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Graceful shutdown: finish every stream (final + done), close, stop the batcher."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        assert self._server is not None
        self._server.close(close_connections=False)  # stop accepting; open sessions go on
        for session in list(self._sessions):
            if session.reader is not None:
                session.reader.cancel()  # ends input: the handler flushes the final
        if self._handlers:
            _, pending = await asyncio.wait(set(self._handlers),
                                            timeout=self.config.shutdown_timeout)
            for task in pending:
                task.cancel()
        self._server.close(close_connections=True)
        await self._server.wait_closed()
        await self.batcher.stop()
        self._stopped.set()

    async def serve_until_stopped(self) -> None:
        """Run until SIGINT/SIGTERM, then shut down gracefully."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        log.info("shutting down: flushing %d stream(s)", len(self._sessions))
        await self.stop()

    # -------------------------------------------------------------------------- HTTP side

    def _authorized(self, request: Request) -> bool:
        token = self.config.auth_token
        if token is None:
            return True
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip(), token):
            return True
        query = parse_qs(urlsplit(request.path).query).get("token", [])
        return any(hmac.compare_digest(q, token) for q in query)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if not upgrade:
            return self._http(path)
        if not self._authorized(request):
            return _response(http.HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token\n",
                             extra={"WWW-Authenticate": 'Bearer realm="edgeasr"'})
        if self._stopping:
            return _response(http.HTTPStatus.SERVICE_UNAVAILABLE, "server is shutting down\n")
        if self._connections >= self.config.max_connections:
            return _response(http.HTTPStatus.SERVICE_UNAVAILABLE,
                             f"too many connections (max {self.config.max_connections})\n")
        self._connections += 1  # counted from the accepted handshake, released in _handle
        return None

    def _http(self, path: str) -> Response:
        if path == "/health":
            body = {
                "status": "stopping" if self._stopping else "ok",
                "connections": self._connections,
                "streams": self.batcher.active,
                "max_connections": self.config.max_connections,
                "uptime_seconds": round(time.monotonic() - self.started_at, 1),
                "vad": self._vad is not None,
                **self.info,
            }
            return _response(http.HTTPStatus.OK, json.dumps(body) + "\n",
                             content_type="application/json")
        root = self.config.web_root
        if root is not None:
            name = "index.html" if path in ("/", "") else path.lstrip("/")
            file = (root / name).resolve()
            if file.is_file() and file.is_relative_to(root.resolve()):
                kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                if kind in ("text/javascript", "application/javascript"):
                    kind = "text/javascript; charset=utf-8"
                elif kind.startswith("text/"):
                    kind += "; charset=utf-8"
                return _response(http.HTTPStatus.OK, file.read_bytes(), content_type=kind)
        return _response(http.HTTPStatus.NOT_FOUND, f"{path}: not found\n")

    # ---------------------------------------------------------------------- WebSocket side

    async def _handle(self, ws: ServerConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._session(ws)
        finally:
            self._connections -= 1
            self._handlers.discard(task)

    async def _session(self, ws: ServerConnection) -> None:
        try:
            first = await asyncio.wait_for(ws.recv(), self.config.idle_timeout)
            if isinstance(first, bytes):
                raise ProtocolError("bad_config", "the first message must be the JSON config")
            config = parse_config(first)
            resampler = StreamResampler(config.sample_rate, self.batcher.sample_rate)
        except TimeoutError:
            await _close_with(ws, "idle_timeout", "no config message received", CLOSE_POLICY)
            return
        except ProtocolError as e:
            await _close_with(ws, e.code, e.message, CLOSE_POLICY)
            return
        except ConnectionClosed:
            return
        session = _Session(ws, config, resampler)
        if self.config.save_audio_dir is not None:
            session.audio = []
        try:
            session.slot = self.batcher.open(
                lambda ev: self._deliver(session, ev), endpoint=config.endpoint,
                partials=config.partials, hotwords=config.hotwords, vad=self._vad is not None)
        except (HotwordError, RecognizerError) as e:  # phrases this model cannot bias towards
            await _close_with(ws, "bad_config", f"'hotwords': {e}", CLOSE_POLICY)
            return
        if self._vad is not None:
            # Each stream needs its own recurrent state, not its own copy of the network:
            # a shallow copy shares the onnxruntime session, and the segmenter's reset()
            # gives the copy fresh state arrays.
            session.segmenter = VadSegmenter(self.config.vad, copy.copy(self._vad))
        self._sessions.add(session)
        writer = asyncio.create_task(self._write(session))
        session.reader = asyncio.create_task(self._read(session))
        close_code = CLOSE_GOING_AWAY if self._stopping else CLOSE_NORMAL
        try:
            await asyncio.wait({session.reader})
            error = None if session.reader.cancelled() else session.reader.exception()
            if isinstance(error, ConnectionClosed):  # the client vanished: nothing to flush
                self.batcher.cancel(session.slot)
                return
            if isinstance(error, ProtocolError):
                session.outbox.append(("error", error_message(error.code, error.message)))
                close_code = CLOSE_TOO_BIG if error.code == "duration_limit" else CLOSE_POLICY
            elif error is not None:
                raise error
            if self._stopping:
                close_code = CLOSE_GOING_AWAY
            tail = session.resampler.flush()
            self._keep_audio(session, tail)
            self._feed(session, tail, last=True)
            self.batcher.finish(session.slot)
            await writer  # returns after 'done' is sent, or when the client stops reading
            if not session.slow:
                await ws.close(close_code)
        finally:
            self._sessions.discard(session)
            self.batcher.cancel(session.slot)
            writer.cancel()
            session.reader.cancel()
            self._save_audio(session)

    async def _read(self, session: _Session) -> None:
        """Read frames until ``end``; raises ProtocolError for bad input or a broken limit."""
        ws, config = session.ws, session.config
        max_samples = int(self.config.max_stream_seconds * config.sample_rate)
        while True:
            if self._stopping:  # shutdown began: the handler flushes what arrived so far
                return
            try:
                async with asyncio.timeout(self.config.idle_timeout):
                    message = await ws.recv()
            except TimeoutError:
                raise ProtocolError(
                    "idle_timeout", f"no message for {self.config.idle_timeout:g} s"
                ) from None
            if isinstance(message, str):
                parse_control(message)  # only 'end' is valid
                return
            if not message:
                return
            samples = decode_pcm(message, config)
            if session.client_samples + samples.size > max_samples:
                raise ProtocolError(
                    "duration_limit",
                    f"stream longer than {self.config.max_stream_seconds:g} s; "
                    "the audio before the limit is transcribed",
                )
            session.client_samples += samples.size
            audio = session.resampler.process(samples)
            self._keep_audio(session, audio)
            self._feed(session, audio)

    def _feed(self, session: _Session, audio: np.ndarray, last: bool = False) -> None:
        """Hand 16 kHz audio to the batcher: as it is, or (VAD) as finished speech segments.

        The segmenter runs here on the event-loop thread: a 32 ms window costs well under a
        millisecond, and the reader is only cancelled at an await, so the end-of-input flush
        never races a window in progress.
        """
        assert session.slot is not None
        if session.segmenter is None:
            self.batcher.feed(session.slot, audio, session.client_samples)
            return
        segments = session.segmenter.accept_waveform(audio) if audio.size else []
        if last:
            segments += session.segmenter.flush()
        for seg in segments:
            self.batcher.feed_segment(session.slot, seg.samples, seg.start_s,
                                      session.client_samples)

    def _deliver(self, session: _Session, event: BatchEvent) -> None:
        """Batcher sink: turn an event into a queued message (never blocks)."""
        config = session.config
        if event.kind in ("partial", "final"):
            result = event.result
            text = result_message(
                event.kind,
                text=result.text,
                tokens=list(result.tokens),
                timestamps=[t + event.offset for t in result.timestamps],
                segment=event.segment,
                start_time=float(getattr(result, "start_time", 0.0)) + event.offset,
                audio_seconds=event.client_samples / config.sample_rate,
                samples=event.client_samples,
                config=config,
                translation=getattr(result, "translation", None),
            )
            if event.kind == "partial" and session.outbox and session.outbox[-1][0] == "partial":
                session.outbox[-1] = ("partial", text)  # coalesce: only the newest matters
            else:
                session.outbox.append((event.kind, text))
        elif event.kind == "error":
            session.outbox.append(("error", error_message("internal", event.message)))
            session.outbox.append(("done", done_message(0, 0.0)))
        else:
            assert session.slot is not None
            session.outbox.append(("done", done_message(
                session.slot.finals_sent, session.client_samples / config.sample_rate)))
        if len(session.outbox) > self.config.max_pending_messages and not session.slow:
            # The client stopped reading: its socket buffer is full, so a close frame would
            # never get through either. Drop the connection; the reader sees it closed.
            session.slow = True
            log.warning("dropping a client that does not read its results")
            session.ws.transport.abort()
        session.wake.set()

    async def _write(self, session: _Session) -> None:
        """Send queued messages in order; ends after ``done`` or when the client is too slow."""
        while True:
            await session.wake.wait()
            session.wake.clear()
            while session.outbox:
                if session.slow:
                    return
                kind, text = session.outbox.popleft()
                try:
                    await session.ws.send(text)
                except ConnectionClosed:
                    return
                if kind == "done":
                    return

    def _keep_audio(self, session: _Session, audio: np.ndarray) -> None:
        if session.audio is not None and audio.size:
            session.audio.append(audio)

    def _save_audio(self, session: _Session) -> None:
        if session.audio is None or self.config.save_audio_dir is None:
            return
        audio = np.concatenate(session.audio) if session.audio else np.zeros(0, np.float32)
        pcm = (np.clip(audio, -1.0, 32767 / 32768) * 32768.0).round().astype("<i2")
        directory = self.config.save_audio_dir
        directory.mkdir(parents=True, exist_ok=True)
        name = session.config.id or f"stream-{time.time_ns()}"
        with wave.open(str(directory / f"{name}.wav"), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(self.batcher.sample_rate)
            f.writeframes(pcm.tobytes())


def _response(status: http.HTTPStatus, body: str | bytes, *, content_type: str =
              "text/plain; charset=utf-8", extra: dict[str, str] | None = None) -> Response:
    data = body.encode() if isinstance(body, str) else body
    headers = Headers({"Content-Type": content_type, "Content-Length": str(len(data)),
                       "Cache-Control": "no-store", "Connection": "close", **(extra or {})})
    return Response(status.value, status.phrase, headers, data)


async def _close_with(ws: ServerConnection, code: str, message: str, close_code: int) -> None:
    """Send an error message and close."""
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        await asyncio.wait_for(ws.send(error_message(code, message)), 2)
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        await ws.close(close_code, code)


# ================================================================================ command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = ServerConfig()
    p.add_argument("--host", default=d.host,
                   help=f"address to listen on (default {d.host}; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=d.port, help=f"port (default {d.port})")
    p.add_argument("--max-connections", type=int, default=d.max_connections, metavar="N")
    p.add_argument("--max-message-bytes", type=int, default=d.max_message_bytes, metavar="N")
    p.add_argument("--max-stream-seconds", type=float, default=d.max_stream_seconds,
                   metavar="S", help="audio per connection (default %(default)s)")
    p.add_argument("--idle-timeout", type=float, default=d.idle_timeout, metavar="S",
                   help="close a connection silent for this long (default %(default)s)")
    p.add_argument("--max-batch", type=int, default=d.max_batch, metavar="N",
                   help="streams decoded together in one call (default %(default)s)")
    p.add_argument("--token", default=None,
                   help="require this bearer token (Authorization header or ?token=); "
                        "default: the EDGEASR_TOKEN environment variable, else no auth")
    p.add_argument("--no-web", action="store_true", help="do not serve the browser page at /")
    p.add_argument("--save-audio", type=Path, default=None, metavar="DIR",
                   help="write each stream's 16 kHz input to DIR/<id>.wav (debugging)")
    add_vad_argument(p)
    add_model_arguments(p)


def run(args: argparse.Namespace) -> int:
    try:
        config = ServerConfig(
            host=args.host, port=args.port, max_connections=args.max_connections,
            max_message_bytes=args.max_message_bytes, max_stream_seconds=args.max_stream_seconds,
            idle_timeout=args.idle_timeout, max_batch=args.max_batch,
            auth_token=args.token or os.environ.get("EDGEASR_TOKEN") or None,
            web_root=None if args.no_web else WEB_ROOT, save_audio_dir=args.save_audio,
            vad=VadConfig() if args.vad else None,
        )
    except ValueError as e:
        raise AppError(str(e)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    recognizer = load_recognizer(args)
    info = {"model": str(args.checkpoint or args.bundle or "models/default")}

    try:
        server = AsrServer(recognizer, config, info=info)
    except VadError as e:
        raise AppError(str(e)) from None

    async def main() -> None:
        try:
            await server.start()
        except OSError as e:
            raise AppError(f"cannot listen on {config.host}:{config.port}: {e.strerror}") from None
        where = f"{config.host}:{server.port}"
        print(f"edgeasr serve: listening on ws://{where}/ws"
              + ("" if args.no_web else f", page at http://{where}/"), flush=True)
        await server.serve_until_stopped()
        print("edgeasr serve: stopped", flush=True)

    asyncio.run(main())
    return 0
