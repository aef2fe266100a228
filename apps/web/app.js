// edgeasr browser demo: microphone or file -> 16 kHz int16 PCM -> WebSocket -> live transcript.
// Protocol: docs/server-protocol.md. The page state is mirrored in `window.edgeasr` so that
// tests (and curious users in the console) can read what is shown.
"use strict";

const FRAME_MS = 100;
const $ = (id) => document.getElementById(id);
const state = (window.edgeasr = { finals: [], partial: "", done: false, error: null, status: "idle" });

function setStatus(text) {
  state.status = text;
  $("status").textContent = text;
}

function socketUrl() {
  const token = new URLSearchParams(location.search).get("token");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/ws` + (token ? `?token=${encodeURIComponent(token)}` : "");
}

function render() {
  const finals = $("finals");
  finals.replaceChildren(...state.finals.map((f) => {
    const p = document.createElement("p");
    const t = document.createElement("span");
    t.className = "time";
    t.textContent = `${f.start_time.toFixed(1)}s`;
    p.append(t, document.createTextNode(f.text));
    if (f.translation) {  // a speech-translation model: the target text under the transcript
      const tr = document.createElement("span");
      tr.className = "translation";
      tr.textContent = f.translation;
      p.append(tr);
    }
    return p;
  }));
  $("partial").textContent = state.partial + (state.partialTranslation ? `  => ${state.partialTranslation}` : "");
}

// One recognition session: open, send the config, then PCM; resolves when the server is done.
function openSession(sampleRate) {
  const ws = new WebSocket(socketUrl());
  ws.binaryType = "arraybuffer";
  state.finals = [];
  state.partial = "";
  state.done = false;
  state.error = null;
  render();
  const finished = new Promise((resolve) => {
    ws.onmessage = (event) => {
      const m = JSON.parse(event.data);
      if (m.type === "partial") {
        state.partial = m.text;
        state.partialTranslation = m.translation || "";
      } else if (m.type === "final") {
        if (m.text) state.finals.push(m);
        state.partial = "";
        state.partialTranslation = "";
      } else if (m.type === "error") {
        state.error = m;
        setStatus(`server error: ${m.message}`);
      } else if (m.type === "done") {
        state.done = true;
      }
      render();
    };
    ws.onclose = (event) => {
      if (!state.done && !state.error) setStatus(`connection closed (${event.code} ${event.reason})`);
      resolve();
    };
  });
  const opened = new Promise((resolve, reject) => {
    ws.onopen = () => {
      ws.send(JSON.stringify({ sample_rate: sampleRate, format: "int16" }));
      resolve();
    };
    ws.onerror = () => reject(new Error(`cannot connect to ${socketUrl()}`));
  });
  return { ws, opened, finished, end: () => ws.readyState === 1 && ws.send(JSON.stringify({ type: "end" })) };
}

let stopCurrent = null;

function busy(on) {
  $("mic").disabled = on;
  $("file").disabled = on;
  $("stop").disabled = !on;
}

async function startMic() {
  busy(true);
  try {
    const media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    let ctx;
    try {
      ctx = new AudioContext({ sampleRate: 16000 }); // the browser resamples the microphone
    } catch (e) {
      ctx = new AudioContext(); // some browsers refuse: send the native rate, the server resamples
    }
    await ctx.audioWorklet.addModule("recorder-worklet.js");
    const session = openSession(ctx.sampleRate);
    await session.opened;
    const source = ctx.createMediaStreamSource(media);
    const node = new AudioWorkletNode(ctx, "recorder-processor", {
      numberOfOutputs: 0, processorOptions: { frameMs: FRAME_MS },
    });
    let flushed;
    const flushedPromise = new Promise((r) => (flushed = r));
    node.port.onmessage = (e) => {
      if (e.data.pcm && session.ws.readyState === 1) session.ws.send(e.data.pcm);
      if (e.data.level !== undefined) $("level").style.width = `${Math.min(100, e.data.level * 200)}%`;
      if (e.data.flushed) flushed();
    };
    source.connect(node);
    setStatus(`listening (${ctx.sampleRate} Hz)`);
    stopCurrent = async () => {
      node.port.postMessage("flush");
      await flushedPromise;
      source.disconnect();
      media.getTracks().forEach((t) => t.stop());
      session.end();
      setStatus("finishing…");
      await session.finished;
      await ctx.close();
    };
    session.finished.then(() => { if (stopCurrent) stop(); });
  } catch (e) {
    setStatus(`microphone failed: ${e.message}`);
    busy(false);
  }
}

// Decode a file with WebAudio at 16 kHz (the browser resamples) and stream it at real-time pace,
// as if it were spoken now, so partial results appear as they would live.
async function startFile(file) {
  busy(true);
  try {
    const decoded = await new OfflineAudioContext(1, 1, 16000).decodeAudioData(await file.arrayBuffer());
    const mono = new Float32Array(decoded.length);
    for (let c = 0; c < decoded.numberOfChannels; c++) {
      const data = decoded.getChannelData(c);
      for (let i = 0; i < mono.length; i++) mono[i] += data[i] / decoded.numberOfChannels;
    }
    const pcm = new Int16Array(mono.length);
    for (let i = 0; i < mono.length; i++) pcm[i] = Math.round(Math.max(-1, Math.min(32767 / 32768, mono[i])) * 32768);
    const session = openSession(16000);
    await session.opened;
    setStatus(`streaming ${file.name} (${(pcm.length / 16000).toFixed(1)} s)`);
    let cancelled = false;
    stopCurrent = async () => { cancelled = true; await session.finished; };
    const step = 16000 * FRAME_MS / 1000;
    const t0 = performance.now();
    for (let k = 0, a = 0; a < pcm.length && !cancelled; k++, a += step) {
      const wait = t0 + k * FRAME_MS - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      if (session.ws.readyState !== 1) break;
      session.ws.send(pcm.slice(a, a + step).buffer);
    }
    session.end();
    setStatus("finishing…");
    await session.finished;
    stop();
  } catch (e) {
    setStatus(`file failed: ${e.message}`);
    busy(false);
  }
}

async function stop() {
  const current = stopCurrent;
  stopCurrent = null;
  if (current) await current();
  busy(false);
  $("level").style.width = "0";
  if (!state.error) setStatus(state.done ? "done" : "stopped");
}

$("mic").onclick = startMic;
$("stop").onclick = stop;
$("file").onchange = (e) => { if (e.target.files[0]) startFile(e.target.files[0]); };
