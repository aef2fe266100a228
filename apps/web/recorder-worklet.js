// AudioWorklet processor: mono capture -> 16-bit PCM frames posted to the main thread.
//
// It runs on the audio rendering thread, so it only converts and batches; the WebSocket lives
// on the main thread. Frames of `frameMs` (100 ms by default) keep the message rate low without
// adding much latency. The page sends the context's own rate in the stream config, and the
// server resamples (soxr) when it is not 16 kHz.
class RecorderProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const ms = (options.processorOptions && options.processorOptions.frameMs) || 100;
    this.frame = new Int16Array(Math.round(sampleRate * ms / 1000));
    this.filled = 0;
    this.peak = 0;
    this.port.onmessage = (e) => { if (e.data === "flush") this.post(true); };
  }

  post(flush) {
    if (this.filled > 0) {
      this.port.postMessage({ pcm: this.frame.slice(0, this.filled).buffer, level: this.peak });
    }
    this.filled = 0;
    this.peak = 0;
    if (flush) this.port.postMessage({ flushed: true });
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      const x = Math.max(-1, Math.min(32767 / 32768, channel[i]));
      this.peak = Math.max(this.peak, Math.abs(x));
      this.frame[this.filled++] = Math.round(x * 32768);
      if (this.filled === this.frame.length) this.post(false);
    }
    return true;
  }
}

registerProcessor("recorder-processor", RecorderProcessor);
