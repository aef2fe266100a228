"""``edgeasr serve``: protocol, batching, limits, faults, shutdown — all on 127.0.0.1.

Every transcript check compares what came over the socket with ``Recognizer.transcribe`` of
the same (int16-quantized) audio, so the tests hold for any deterministic model; they run on
the tiny random bundle of the ``tiny_bundle`` fixture.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from apps_helpers import speech_clip
from edgeasr.apps.loadtest import SessionRecord, run_streams, stream_audio, to_pcm
from edgeasr.apps.protocol import ProtocolError, StreamConfig, decode_pcm, parse_config
from edgeasr.apps.server import AsrServer, ServerConfig
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def rec(tiny_bundle) -> Any:
    from edgeasr.stream import Recognizer

    return Recognizer.from_bundle(tiny_bundle().root)


@pytest.fixture(scope="module")
def clips(rec: Any) -> list[tuple[np.ndarray, Any]]:
    """Four 3 s speech clips and their offline results."""
    out = []
    for i in range(4):
        audio = speech_clip(3.0, index=i)
        out.append((audio, rec.transcribe(audio, sample_rate=16000)))
    return out


def with_server(rec: Any, scenario: Callable[[AsrServer, str], Awaitable[Any]],
                **config: Any) -> Any:
    """Run ``scenario(server, ws_url)`` against a fresh server on an ephemeral port."""
    async def main() -> Any:
        server = AsrServer(rec, ServerConfig(port=0, **config))
        await server.start()
        try:
            return await asyncio.wait_for(scenario(server, f"ws://127.0.0.1:{server.port}/ws"),
                                          120)
        finally:
            await server.stop()
    return asyncio.run(main())


def assert_matches_offline(record: SessionRecord, offline: Any) -> None:
    assert record.done, record.messages
    assert not record.errors, record.errors
    assert record.tokens == list(offline.tokens)
    if len(record.finals) == 1:
        assert record.finals[0]["text"] == offline.text
        assert record.finals[0]["timestamps"] == [round(t, 3) for t in offline.timestamps]


async def raw_session(url: str, messages: list[str | bytes], **kw: Any) -> SessionRecord:
    """Send raw messages (no end), then collect replies until the server closes."""
    record = SessionRecord()
    async with connect(url, **kw) as ws:
        try:
            for m in messages:
                await ws.send(m)
            async for reply in ws:
                record.messages.append(json.loads(reply))
        except ConnectionClosed:
            pass
        record.close_code = ws.close_code
    return record


# ---------------------------------------------------------------------------- protocol units


def test_parse_config_accepts_options() -> None:
    c = parse_config('{"sample_rate": 48000, "format": "float32", "endpoint": false, "id": "x"}')
    assert c == StreamConfig(48000, "float32", partials=True, endpoint=False, id="x")


@pytest.mark.parametrize("text, problem", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"format": "int16"}', "needs 'sample_rate'"),
    ('{"sample_rate": 16000.5}', "whole number"),
    ('{"sample_rate": 16}', "outside"),
    ('{"sample_rate": 16000, "format": "int8"}', "'int16' or 'float32'"),
    ('{"sample_rate": 16000, "partials": "yes"}', "true or false"),
    ('{"sample_rate": 16000, "rate": 1}', "unknown config field(s): rate"),
    ('{"sample_rate": 16000, "hotwords": 5}', "'hotwords' must be a string or a list"),
    ('{"sample_rate": 16000, "hotwords": ["a", 1]}', "'hotwords' must be a string or a list"),
    ('{"sample_rate": 16000, "hotwords": "' + "a" * 16385 + '"}', "16385 characters (max"),
])
def test_parse_config_names_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(problem)):
        parse_config(text)


def test_parse_config_hotwords_string_or_list() -> None:
    assert parse_config('{"sample_rate": 16000, "hotwords": "cafe, bead :3"}').hotwords \
        == "cafe, bead :3"
    assert parse_config('{"sample_rate": 16000, "hotwords": ["cafe", "bead :3"]}').hotwords \
        == ["cafe", "bead :3"]
    assert parse_config('{"sample_rate": 16000}').hotwords is None


def test_decode_pcm_int16_and_odd_bytes() -> None:
    c = StreamConfig(16000, "int16")
    assert decode_pcm(np.array([16384, -32768], "<i2").tobytes(), c).tolist() == [0.5, -1.0]
    with pytest.raises(ProtocolError, match="3 bytes is not a whole number of int16"):
        decode_pcm(b"\x00\x01\x02", c)
    with pytest.raises(ProtocolError, match="NaN"):
        decode_pcm(np.array([np.nan], "<f4").tobytes(), StreamConfig(16000, "float32"))


# ------------------------------------------------------------------------------ HTTP side


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def test_health_page_and_static_files(rec: Any) -> None:
    async def scenario(server: AsrServer, url: str) -> None:
        base = f"http://127.0.0.1:{server.port}"
        loop = asyncio.get_running_loop()
        status, kind, body = await loop.run_in_executor(None, _get, base + "/health")
        assert (status, kind) == (200, "application/json")
        health = json.loads(body)
        assert health["status"] == "ok" and health["connections"] == 0
        status, kind, body = await loop.run_in_executor(None, _get, base + "/")
        assert status == 200 and kind.startswith("text/html") and "<title>" in body
        status, kind, _ = await loop.run_in_executor(None, _get, base + "/app.js")
        assert status == 200 and kind.startswith("text/javascript")
        status, _, _ = await loop.run_in_executor(None, _get, base + "/../server.py")
        assert status == 404
        status, _, _ = await loop.run_in_executor(None, _get, base + "/nope.txt")
        assert status == 404
    with_server(rec, scenario)


# ------------------------------------------------------------------------------ streaming


def test_stream_final_equals_offline_transcript(rec: Any, clips: list) -> None:
    audio, offline = clips[0]

    async def scenario(server: AsrServer, url: str) -> SessionRecord:
        return await stream_audio(url, audio, frame_ms=50, config={"id": "c0"})

    record = with_server(rec, scenario)
    assert_matches_offline(record, offline)
    assert record.close_code == 1000
    partials = [m for m in record.messages if m["type"] == "partial"]
    assert partials and all(m["id"] == "c0" for m in record.messages if m["type"] != "done")
    # partial texts only grow within a segment, and each carries the samples it had seen
    samples = [m["samples"] for m in partials]
    assert samples == sorted(samples) and samples[-1] <= len(audio)
    assert record.messages[-1] == {"type": "done", "segments": len(record.finals),
                                   "audio_seconds": round(len(audio) / 16000, 3)}


def test_float32_at_44100_is_resampled(rec: Any, clips: list) -> None:
    """A client at another rate: the server resamples with the same StreamResampler a
    Stream uses, so the result equals feeding the recognizer the 44.1 kHz audio directly."""
    from edgeasr.audio import resample

    audio44 = resample(clips[1][0], 16000, 44100)
    stream = rec.create_stream()
    stream.accept_waveform(44100, audio44)
    stream.input_finished()
    rec.decode_streams([stream])
    expected = stream.result

    async def scenario(server: AsrServer, url: str) -> SessionRecord:
        return await stream_audio(url, audio44, sample_rate=44100, fmt="float32",
                                  config={"endpoint": False})

    record = with_server(rec, scenario)
    assert record.done and len(record.finals) == 1
    assert record.finals[0]["tokens"] == list(expected.tokens)


def test_partials_off_sends_only_finals(rec: Any, clips: list) -> None:
    audio, offline = clips[2]
    record = with_server(rec, lambda s, url: stream_audio(url, audio, config={"partials": False}))
    assert {m["type"] for m in record.messages} <= {"final", "done"}
    assert_matches_offline(record, offline)


@pytest.mark.slow
def test_32_concurrent_realtime_clients_match_offline(rec: Any, clips: list) -> None:
    """32 clients at real-time pace (3 s each) through one batched recognizer."""
    async def scenario(server: AsrServer, url: str) -> tuple[list[list[SessionRecord]], int]:
        groups = [run_streams(url, clips[i][0], 8) for i in range(4)]
        records = await asyncio.gather(*groups)
        return records, server.batcher.decode_calls

    groups, calls = with_server(rec, scenario, max_connections=40)
    for (_, offline), records in zip(clips, groups, strict=True):
        for r in records:
            assert_matches_offline(r, offline)
    # batching happened: far fewer decode calls than one per stream per chunk
    assert calls < 32 * 3 / 0.16


def _transcribe_with_hotwords(rec: Any, audio: np.ndarray, hotwords: Any) -> Any:
    """``Recognizer.transcribe`` on a stream created with ``hotwords`` (same 10 s pieces)."""
    stream = rec.create_stream(hotwords=hotwords)
    for a in range(0, len(audio), 160000):
        stream.accept_waveform(16000, audio[a:a + 160000])
        rec.decode_stream(stream)
    stream.input_finished()
    rec.decode_stream(stream)
    return stream.result


def test_hotwords_per_client(tiny_bundle, clips: list) -> None:
    """Each client's hotwords bias its own stream only, exactly as a local stream with the same
    hotwords; phrases the server cannot compile are bad_config for that client alone. (Beam
    search: the random model never says a word-start piece, and greedy search boosts only the
    continuations of a phrase the model started itself.)"""
    from edgeasr.decoding import DecodingConfig
    from edgeasr.stream import Recognizer

    rec = Recognizer.from_bundle(tiny_bundle().root, decoding=DecodingConfig(method="beam"))
    audio = clips[0][0]
    offline = _transcribe_with_hotwords(rec, audio, None)
    as_string = _transcribe_with_hotwords(rec, audio, "bead :3")
    as_list = _transcribe_with_hotwords(rec, audio, ["fade", "cafe :4"])
    assert as_string.tokens != offline.tokens and as_list.tokens != offline.tokens

    async def scenario(server: AsrServer, url: str) -> dict[str, Any]:
        cases = {
            "string": stream_audio(url, audio, config={"hotwords": "bead :3",
                                                       "endpoint": False}),
            "list": stream_audio(url, audio, config={"hotwords": ["fade", "cafe :4"],
                                                     "endpoint": False}),
            "bad_boost": raw_session(url, ['{"sample_rate": 16000, "hotwords": "cafe :0"}']),
            "empty_phrase": raw_session(url, ['{"sample_rate": 16000, "hotwords": ["!!"]}']),
            "plain": stream_audio(url, audio),
        }
        results = await asyncio.gather(*cases.values())
        return dict(zip(cases, results, strict=True))

    out = with_server(rec, scenario)
    assert_matches_offline(out["string"], as_string)
    assert_matches_offline(out["list"], as_list)
    assert_matches_offline(out["plain"], offline)
    for name, problem in [("bad_boost", "boost must be > 0"), ("empty_phrase", "'!!'")]:
        r = out[name]
        assert [m["code"] for m in r.errors] == ["bad_config"], name
        assert r.errors[0]["message"].startswith("'hotwords': ") and problem in \
            r.errors[0]["message"], r.errors
        assert r.close_code == 1008 and not r.done


def test_vad_finals_equal_per_segment_transcripts(rec: Any) -> None:
    """serve --vad: speech, 3 s of silence, speech. Each VAD segment is recognized alone, so
    the finals are exactly transcribe_segments() of the same audio, on the stream's time line;
    no partials (a segment is decoded once it is over)."""
    from edgeasr.vad import VadConfig, transcribe_segments

    audio = np.concatenate([speech_clip(3.0, index=0), np.zeros(48000, np.float32),
                            speech_clip(3.0, index=1)])
    expected, parts = transcribe_segments(rec, audio)
    assert len(parts) == 2 and parts[0][0].end < 3 * 16000 + 48000 < parts[1][0].start
    spoken = [(seg, r) for seg, r in parts if r.text]

    record = with_server(rec, lambda s, url: stream_audio(url, audio), vad=VadConfig())
    assert record.done and not record.errors, record.messages
    assert {m["type"] for m in record.messages} == {"final", "done"}
    assert record.tokens == list(expected.tokens)
    assert [m["segment"] for m in record.finals] == list(range(len(spoken)))
    for final, (seg, r) in zip(record.finals, spoken, strict=True):
        assert final["text"] == r.text
        assert final["start_time"] == round(seg.start_s, 3)
        assert final["timestamps"] == [round(t + seg.start_s, 3) for t in r.timestamps]
    assert record.messages[-1]["segments"] == len(spoken)


# ------------------------------------------------------------------------------ faults


def test_malformed_clients_fail_alone(rec: Any, clips: list) -> None:
    """Each kind of bad traffic gets an error or a close; a good client beside them is served
    exactly, and the server keeps serving afterwards."""
    audio, offline = clips[0]
    int16 = to_pcm(audio[:16000])

    async def scenario(server: AsrServer, url: str) -> dict[str, Any]:
        async def abrupt() -> str:
            async with connect(url) as ws:
                await ws.send(json.dumps({"sample_rate": 16000}))
                await ws.send(int16)
                ws.transport.abort()  # vanish mid-stream without a close frame
            return "aborted"

        async def slow_reader() -> SessionRecord:
            # stops reading for 2 s while it streams: its results wait in the socket and the
            # outbox (partials coalesced), nobody else waits, and it gets everything after
            record = SessionRecord()
            async with connect(url) as ws:
                ws.transport.pause_reading()
                await ws.send(json.dumps({"sample_rate": 16000}))
                pcm = to_pcm(audio)
                for a in range(0, len(pcm), 3200):
                    await ws.send(pcm[a:a + 3200])
                    await asyncio.sleep(0.05)
                await ws.send(json.dumps({"type": "end"}))
                await asyncio.sleep(0.5)
                ws.transport.resume_reading()
                async for reply in ws:
                    record.messages.append(json.loads(reply))
            return record

        cases = {
            "bad_json": raw_session(url, ["{nope"]),
            "binary_first": raw_session(url, [int16]),
            "bad_dtype": raw_session(url, ['{"sample_rate": 16000, "format": "int24"}']),
            "odd_bytes": raw_session(url, ['{"sample_rate": 16000}', int16, b"\x01\x02\x03"]),
            "bad_control": raw_session(url, ['{"sample_rate": 16000}', '{"type": "pause"}']),
            "oversized": raw_session(url, ['{"sample_rate": 16000}', b"\x00" * 70000]),
            "abrupt": abrupt(),
            "slow": slow_reader(),
            "good": stream_audio(url, audio, realtime=True),
        }
        results = await asyncio.gather(*cases.values(), return_exceptions=True)
        after = await stream_audio(url, audio)
        return {**dict(zip(cases, results, strict=True)), "after": after}

    out = with_server(rec, scenario, max_message_bytes=65536)
    for name, code in [("bad_json", "bad_json"), ("binary_first", "bad_config"),
                       ("bad_dtype", "bad_config")]:
        assert [m["code"] for m in out[name].errors] == [code], name
        assert out[name].close_code == 1008 and not out[name].done
    for name, code in [("odd_bytes", "bad_audio"), ("bad_control", "bad_message")]:
        r = out[name]
        assert [m["code"] for m in r.errors] == [code], name
        assert r.done and r.close_code == 1008  # the audio before the error is still final
    assert out["odd_bytes"].errors[0]["message"].startswith("a binary frame of 3 bytes")
    assert out["oversized"].close_code == 1009
    assert out["abrupt"] == "aborted"
    assert_matches_offline(out["slow"], offline)
    assert_matches_offline(out["good"], offline)
    assert_matches_offline(out["after"], offline)


def test_limits_connections_auth_duration_idle(rec: Any, clips: list) -> None:
    audio, _ = clips[3]

    async def scenario(server: AsrServer, url: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, kw, u in [("no_token", {}, url),
                            ("wrong", {"additional_headers": {"Authorization": "Bearer x"}}, url)]:
            with pytest.raises(InvalidStatus) as e:
                async with connect(u, **kw):
                    pass
            out[name] = e.value.response.status_code
        out["query"] = await stream_audio(url + "?token=s3cret", audio[:8000])
        out["header"] = await stream_audio(url, audio[:8000], token="s3cret")
        # two connections held open: a third is refused with 503
        async with connect(url, additional_headers={"Authorization": "Bearer s3cret"}), \
                connect(url, additional_headers={"Authorization": "Bearer s3cret"}):
            with pytest.raises(InvalidStatus) as e:
                async with connect(url + "?token=s3cret"):
                    pass
            out["third"] = e.value.response.status_code
        # 2 s limit: 3 s of audio -> error, then the final of what was accepted, then done
        out["long"] = await stream_audio(url, audio, token="s3cret")
        out["idle"] = await raw_session(url + "?token=s3cret", ['{"sample_rate": 16000}'])
        return out

    out = with_server(rec, scenario, auth_token="s3cret", max_connections=2,
                      max_stream_seconds=2.0, idle_timeout=1.0)
    assert out["no_token"] == 401 and out["wrong"] == 401 and out["third"] == 503
    assert out["query"].done and out["header"].done
    long = out["long"]
    assert [m["code"] for m in long.errors] == ["duration_limit"]
    assert long.done and long.finals and long.close_code == 1009
    assert long.messages[-1]["audio_seconds"] <= 2.0
    offline = rec.transcribe(audio[: int(long.messages[-1]["audio_seconds"] * 16000)],
                             sample_rate=16000)
    assert long.tokens == list(offline.tokens)
    idle = out["idle"]
    assert [m["code"] for m in idle.errors] == ["idle_timeout"] and idle.done


def test_shutdown_flushes_finals_to_connected_clients(rec: Any, clips: list) -> None:
    """stop() mid-stream: every client gets the final of the audio it sent, done, and 1001."""
    audio, _ = clips[1]

    async def scenario(server: AsrServer, url: str) -> list[Any]:
        tasks = [asyncio.create_task(stream_audio(url, audio, realtime=True)) for _ in range(3)]
        await asyncio.sleep(1.2)
        await server.stop()
        return await asyncio.gather(*tasks, return_exceptions=True)

    for r in with_server(rec, scenario):
        assert isinstance(r, SessionRecord), r
        assert r.done and r.close_code == 1001 and len(r.finals) >= 1
        sent = r.messages[-1]["audio_seconds"]
        assert 0.5 < sent < 3.0
        offline = rec.transcribe(audio[: round(sent * 16000)], sample_rate=16000)
        assert r.tokens == list(offline.tokens)


@pytest.mark.slow
def test_serve_command_sigterm(tiny_bundle, rec: Any, clips: list) -> None:
    """The real command: starts, serves, and on SIGTERM flushes a live client and exits 0."""
    audio, offline = clips[0]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeasr", "serve", "--port", "0",
         "--bundle", str(tiny_bundle().root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"ws://127\.0\.0\.1:(\d+)/ws", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = f"ws://127.0.0.1:{match.group(1)}/ws"

        async def scenario() -> SessionRecord:
            task = asyncio.create_task(stream_audio(url, audio, realtime=True))
            await asyncio.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            return await task

        record = asyncio.run(scenario())
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert record.done and record.close_code == 1001
    sent = record.messages[-1]["audio_seconds"]
    assert record.tokens == list(
        rec.transcribe(audio[: round(sent * 16000)], sample_rate=16000).tokens)
