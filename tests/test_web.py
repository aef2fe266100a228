"""The browser page (apps/web/) in headless Chromium, driven over the DevTools protocol.

Chromium's fake media device plays a wav as the microphone (--use-file-for-fake-audio-capture),
so the whole page path runs for real: getUserMedia -> AudioWorklet -> int16 frames ->
WebSocket -> server -> partial/final results rendered on the page.

- File mode: the page decodes a 16 kHz wav with WebAudio and streams it; the final shown on the
  page must equal ``Recognizer.transcribe`` of that wav.
- Mic mode: where the fake device starts in its loop is not under our control, so the server
  saves the audio it received (``save_audio_dir``); the page's final must equal the offline
  transcript of exactly that audio, and that audio must be the wav (cross-correlation).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from apps_helpers import speech_clip, write_wav
from edgeasr.apps.server import AsrServer, ServerConfig
from websockets.asyncio.client import connect

from edgeasr.audio import load_audio

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)"),
]

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-port=0", "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--window-size=900,600",
]


class ServerThread:
    """An AsrServer on its own event loop in a thread (Chromium is the client)."""

    def __init__(self, rec: Any, config: ServerConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = AsrServer(rec, config)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        self.port = self.server.port

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class DevTools:
    """The few DevTools protocol calls the test needs, over one page's WebSocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:  # events arrive in between; skip them
            reply = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.2)
        state = await self.evaluate("JSON.stringify(window.edgeasr)")
        raise AssertionError(f"timed out waiting for {expression}; page state {state}")

    async def screenshot(self, path: Path) -> Path:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


def launch_chromium(profile: Path, capture_wav: Path, url: str) -> tuple[subprocess.Popen, str]:
    """Start Chromium on ``url``; returns the process and the page's DevTools socket URL."""
    proc = subprocess.Popen(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
         f"--use-file-for-fake-audio-capture={capture_wav}", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            port = port_file.read_text().split()[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [p for p in json.load(r) if p["type"] == "page"]
            if pages:
                return proc, pages[0]["webSocketDebuggerUrl"]
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("chromium did not open its DevTools port in 60 s")


@pytest.fixture(scope="module")
def rec(tiny_bundle) -> Any:
    from edgeasr.stream import Recognizer

    return Recognizer.from_bundle(tiny_bundle().root)


class Page:
    """Chromium on the server's page: ``run(coro)`` runs DevTools calls on the page's loop."""

    def __init__(self, tools: DevTools, loop: asyncio.AbstractEventLoop, server: ServerThread,
                 wav: Path) -> None:
        self.tools, self.loop, self.server, self.wav = tools, loop, server, wav

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def state(self) -> dict[str, Any]:
        return json.loads(self.run(self.tools.evaluate("JSON.stringify(window.edgeasr)")))


@pytest.fixture
def page(rec: Any, tmp_path: Path) -> Iterator[Page]:
    """A server (saving the audio it receives) and Chromium showing its page, whose fake
    microphone plays a 3 s speech wav."""
    wav = write_wav(tmp_path / "speech.wav", speech_clip(3.0, index=1))
    server = ServerThread(rec, ServerConfig(port=0, save_audio_dir=tmp_path / "received"))
    proc, devtools_url = launch_chromium(tmp_path / "profile", wav,
                                         f"http://127.0.0.1:{server.port}/")
    loop = asyncio.new_event_loop()
    try:
        ws = loop.run_until_complete(connect(devtools_url, max_size=None))
        tools = DevTools(ws)
        loop.run_until_complete(
            tools.wait_for("document.readyState === 'complete' && !!window.edgeasr"))
        yield Page(tools, loop, server, wav)
        loop.run_until_complete(ws.close())
    finally:
        loop.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        server.close()


def page_text(state: dict[str, Any]) -> str:
    return " ".join(f["text"] for f in state["finals"])


def test_file_mode_shows_the_offline_transcript(page: Page, rec: Any, tmp_path: Path) -> None:
    offline = rec.transcribe(page.wav)
    tools = page.tools

    async def choose_file() -> None:
        document = await tools.call("DOM.getDocument")
        node = await tools.call("DOM.querySelector", nodeId=document["root"]["nodeId"],
                                selector="#file")
        await tools.call("DOM.setFileInputFiles", files=[str(page.wav)], nodeId=node["nodeId"])
        await tools.wait_for("window.edgeasr.status === 'done'")

    page.run(choose_file())
    state = page.state()
    assert state["error"] is None and state["done"]
    assert page_text(state) == offline.text
    assert page.run(tools.evaluate("document.getElementById('finals').innerText")).replace(
        "\n", " ").endswith(offline.text.split(" ")[-1])
    page.run(tools.screenshot(tmp_path / "web-file.png"))


def test_mic_mode_transcribes_what_the_microphone_sent(page: Page, rec: Any,
                                                       tmp_path: Path) -> None:
    tools = page.tools
    page.run(tools.evaluate("document.getElementById('mic').click()"))
    page.run(tools.wait_for("window.edgeasr.status.startsWith('listening')"))
    page.run(asyncio.sleep(3.5))
    page.run(tools.wait_for("window.edgeasr.partial !== '' || window.edgeasr.finals.length"))
    page.run(tools.screenshot(tmp_path / "web-mic-live.png"))
    page.run(tools.evaluate("document.getElementById('stop').click()"))
    page.run(tools.wait_for("window.edgeasr.status === 'done'"))
    state = page.state()
    page.run(tools.screenshot(tmp_path / "web-mic.png"))

    received = sorted((tmp_path / "received").glob("*.wav"))
    for _ in range(50):  # the server writes the wav when its session ends
        if received:
            break
        time.sleep(0.1)
        received = sorted((tmp_path / "received").glob("*.wav"))
    assert len(received) == 1
    audio = load_audio(received[0])
    assert len(audio) > 2.5 * 16000  # ~3.5 s of microphone
    # endpoints may split it into several finals: their tokens, concatenated, are the offline
    # transcript's (a segment reset keeps the decoder context)
    offline = rec.transcribe(audio, sample_rate=16000)
    assert [t for f in state["finals"] for t in f["tokens"]] == list(offline.tokens)
    # the microphone delivered the wav (looped by the fake device): best normalized
    # cross-correlation with the source is high
    source = load_audio(page.wav)
    n = len(source)
    seg = audio[: n] if len(audio) >= n else np.pad(audio, (0, n - len(audio)))
    looped = np.concatenate([source, source])
    spectrum = np.fft.irfft(np.fft.rfft(looped, 4 * n) * np.conj(np.fft.rfft(seg, 4 * n)), 4 * n)
    lag = int(np.argmax(spectrum[: n]))
    aligned = looped[lag : lag + n]
    corr = float(np.dot(aligned, seg) / (np.linalg.norm(aligned) * np.linalg.norm(seg) + 1e-9))
    assert corr > 0.9, corr
