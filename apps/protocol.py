"""The WebSocket streaming protocol of ``edgeasr serve``: parse what clients send, build what
the server answers (docs/server-protocol.md is the human version of this module).

Kept apart from the server so that the page, the load tool and the tests all build and read
messages through the same few functions: a field renamed here is renamed everywhere.

A session is: one JSON text message (the :class:`StreamConfig`), then binary PCM frames, then
``{"type": "end"}`` (or an empty binary frame). The server answers with JSON text messages of
type ``partial``, ``final``, ``error`` and, last, ``done``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from edgeasr.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioError, pcm_to_float
from edgeasr.errors import EdgeAsrError

__all__ = [
    "MAX_HOTWORDS",
    "MAX_HOTWORDS_CHARS",
    "PROTOCOL_VERSION",
    "ProtocolError",
    "StreamConfig",
    "decode_pcm",
    "done_message",
    "error_message",
    "parse_config",
    "parse_control",
    "result_message",
]

PROTOCOL_VERSION = 1

PcmFormat = Literal["int16", "float32"]
_BYTES_PER_SAMPLE = {"int16": 2, "float32": 4}


class ProtocolError(EdgeAsrError, ValueError):
    """A client broke the protocol; ``code`` is the machine-readable reason sent back to it."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True)
class StreamConfig:
    """What a client declares before sending audio.

    ``sample_rate`` and ``format`` describe the PCM frames (mono, little-endian). ``partials``
    False suppresses partial results (batch clients that only want finals). ``endpoint`` False
    disables endpoint detection, so the whole stream is one segment with one final (what a
    file transcription wants). ``id`` is echoed back in every message, for clients that
    multiplex logs. ``hotwords`` biases this stream towards phrases (the format of
    :func:`edgeasr.hotwords.parse_hotwords`: ``"kubernetes, Ada Lovelace :2.5"`` or a list of
    phrases); ``None`` keeps the server's default phrases, ``""`` or ``[]`` turns them off.
    The server compiles them with its tokenizer when the stream opens, so a phrase the model
    cannot spell is a ``bad_config`` error for this client alone.
    """

    sample_rate: int = 16000
    format: PcmFormat = "int16"
    partials: bool = True
    endpoint: bool = True
    id: str | None = None
    hotwords: str | list[str] | None = None

    @property
    def bytes_per_sample(self) -> int:
        return _BYTES_PER_SAMPLE[self.format]


_CONFIG_FIELDS = {"sample_rate", "format", "partials", "endpoint", "id", "hotwords", "type"}

#: Bounds on a client's hotwords: compiling them runs on the server's event loop, so one
#: client must not be able to stall the others with a megabyte of phrases.
MAX_HOTWORDS = 256
MAX_HOTWORDS_CHARS = 16384


def _load_json(text: str | bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProtocolError("bad_json", f"{what} is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ProtocolError("bad_json", f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def parse_config(text: str | bytes) -> StreamConfig:
    """Parse the first message of a session; every mistake names the offending field."""
    raw = _load_json(text, "the config message")
    if raw.get("type", "config") != "config":
        raise ProtocolError("bad_config", f"expected the config message first, got {raw['type']!r}")
    unknown = sorted(set(raw) - _CONFIG_FIELDS)
    if unknown:
        raise ProtocolError("bad_config", f"unknown config field(s): {', '.join(unknown)}")
    if "sample_rate" not in raw:
        raise ProtocolError("bad_config", "config needs 'sample_rate' (Hz of the PCM you send)")
    rate = raw["sample_rate"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) \
            or int(rate) != rate:
        raise ProtocolError("bad_config", f"'sample_rate' must be a whole number, got {rate!r}")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ProtocolError(
            "bad_config",
            f"'sample_rate' {int(rate)} is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz",
        )
    fmt = raw.get("format", "int16")
    if fmt not in _BYTES_PER_SAMPLE:
        raise ProtocolError("bad_config", f"'format' must be 'int16' or 'float32', got {fmt!r}")
    for flag in ("partials", "endpoint"):
        if flag in raw and not isinstance(raw[flag], bool):
            raise ProtocolError("bad_config", f"'{flag}' must be true or false, got {raw[flag]!r}")
    ident = raw.get("id")
    if ident is not None and (not isinstance(ident, str) or len(ident) > 128):
        raise ProtocolError("bad_config", "'id' must be a string of at most 128 characters")
    return StreamConfig(
        sample_rate=int(rate),
        format=fmt,
        partials=raw.get("partials", True),
        endpoint=raw.get("endpoint", True),
        id=ident,
        hotwords=_parse_hotwords(raw.get("hotwords")),
    )


def _parse_hotwords(value: Any) -> str | list[str] | None:
    """Check the shape and size of ``hotwords``; the phrases themselves are checked when the
    server compiles them with its model's tokenizer (only it knows what the model can spell)."""
    if value is None:
        return None
    if isinstance(value, str):
        phrases = [value]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        phrases = value
        if len(phrases) > MAX_HOTWORDS:
            raise ProtocolError("bad_config",
                                f"'hotwords' has {len(phrases)} phrases (max {MAX_HOTWORDS})")
    else:
        raise ProtocolError("bad_config",
                            f"'hotwords' must be a string or a list of strings, got {value!r:.80}")
    chars = sum(len(p) for p in phrases)
    if chars > MAX_HOTWORDS_CHARS:
        raise ProtocolError("bad_config",
                            f"'hotwords' has {chars} characters (max {MAX_HOTWORDS_CHARS})")
    return value


def parse_control(text: str) -> str:
    """Parse a text message after the config; returns its type (only ``end`` exists)."""
    raw = _load_json(text, "a control message")
    kind = raw.get("type")
    if kind != "end":
        raise ProtocolError("bad_message", f"unknown control message type {kind!r} (only 'end')")
    return kind


def decode_pcm(frame: bytes, config: StreamConfig) -> np.ndarray:
    """One binary frame -> float32 samples in [-1, 1] at the client's rate."""
    if len(frame) % config.bytes_per_sample:
        raise ProtocolError(
            "bad_audio",
            f"a binary frame of {len(frame)} bytes is not a whole number of "
            f"{config.format} samples ({config.bytes_per_sample} bytes each)",
        )
    try:
        return pcm_to_float(frame, config.format)
    except AudioError as e:
        raise ProtocolError("bad_audio", e.problem) from None


def _dump(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def result_message(
    kind: Literal["partial", "final"],
    *,
    text: str,
    tokens: list[str] | list[int],
    timestamps: list[float],
    segment: int,
    start_time: float,
    audio_seconds: float,
    samples: int,
    config: StreamConfig,
    translation: str | None = None,
) -> str:
    """A partial or final result.

    ``timestamps`` are token start times in seconds from the start of the stream (not the
    segment). ``samples`` counts the client's samples (at its own rate) that had arrived when
    this result was computed: a client can pair it with its own send times to measure latency.
    ``translation``: the segment's translation so far, sent (as a ``translation`` key) only by a
    server running a speech-translation bundle.
    """
    message: dict[str, Any] = {
        "type": kind,
        "segment": segment,
        "text": text,
        "tokens": list(tokens),
        "timestamps": [round(float(t), 3) for t in timestamps],
        "start_time": round(start_time, 3),
        "audio_seconds": round(audio_seconds, 3),
        "samples": samples,
    }
    if translation is not None:
        message["translation"] = translation
    if config.id is not None:
        message["id"] = config.id
    return _dump(message)


def error_message(code: str, message: str) -> str:
    """An error; the server closes the connection after sending one."""
    return _dump({"type": "error", "code": code, "message": message})


def done_message(segments: int, audio_seconds: float) -> str:
    """The last message of a session: all finals have been sent."""
    return _dump({"type": "done", "segments": segments, "audio_seconds": round(audio_seconds, 3)})
