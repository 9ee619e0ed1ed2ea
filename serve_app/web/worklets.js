// Audio worklets of voxray's pages: microphone capture to PCM16 (24 kHz for the Realtime
// page, 16 kHz for the captions page), and reply playback from a small jitter buffer that
// can be cleared at once (barge-in).

class CaptureProcessor extends AudioWorkletProcessor {
  // processorOptions: targetRate (Hz, default 24000), frameMs (audio per posted frame, default 20).
  constructor(options) {
    super();
    const settings = (options && options.processorOptions) || {};
    this.targetRate = settings.targetRate || 24000;
    this.frameSamples = Math.round((this.targetRate * (settings.frameMs || 20)) / 1000);
    this.step = sampleRate / this.targetRate; // input samples per output sample
    this.position = 0; // read position in the current input block (fractional)
    this.previous = 0; // last input sample of the previous block, for interpolation
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true;
    // Linear interpolation from the context's rate to the target rate (exact when equal). A position
    // in [-1, 0) lies between the previous block's last sample and this block's first.
    const sample = (i) => (i < 0 ? this.previous : input[i]);
    while (this.position <= input.length - 1) {
      const index = Math.floor(this.position);
      const fraction = this.position - index;
      const value = fraction === 0 ? sample(index) : sample(index) + (sample(index + 1) - sample(index)) * fraction;
      const clamped = Math.max(-1, Math.min(1, value));
      this.frame[this.filled++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
      if (this.filled === this.frameSamples) {
        this.port.postMessage(this.frame.buffer, [this.frame.buffer]);
        this.frame = new Int16Array(this.frameSamples);
        this.filled = 0;
      }
      this.position += this.step;
    }
    this.position -= input.length;
    this.previous = input[input.length - 1];
    return true;
  }
}

class PlayerProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const prebufferMs = (options.processorOptions && options.processorOptions.prebufferMs) || 80;
    this.prebuffer = Math.round((sampleRate * prebufferMs) / 1000);
    this.queue = [];
    this.offset = 0; // read position in queue[0]
    this.buffered = 0;
    this.playing = false;
    this.ended = false; // the response's audio is complete: play the tail without prebuffering
    this.ramp = 0; // samples into a fade-in
    this.fadeOut = 0; // samples left of a fade-out (clear), then silence
    this.played = 0;
    this.underruns = 0;
    this.sinceReport = 0;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(message) {
    if (message.type === "push") {
      this.queue.push(message.samples);
      this.buffered += message.samples.length;
      this.ended = false;
    } else if (message.type === "end") {
      this.ended = true;
    } else if (message.type === "clear") {
      // Fade the current sound out over ~5 ms instead of cutting it (a cut clicks).
      this.fadeOut = this.playing ? Math.min(128, this.buffered) : 0;
      if (!this.fadeOut) this.drop();
      this.port.postMessage({ type: "cleared", played: this.played });
    }
  }

  drop() {
    this.queue = [];
    this.offset = 0;
    this.buffered = 0;
    this.fadeOut = 0;
    if (this.playing) this.port.postMessage({ type: "stopped", played: this.played });
    this.playing = false;
  }

  next() {
    const head = this.queue[0];
    const value = head[this.offset++];
    if (this.offset === head.length) {
      this.queue.shift();
      this.offset = 0;
    }
    this.buffered--;
    return value;
  }

  process(_, outputs) {
    const out = outputs[0][0];
    if (!this.playing && this.buffered > 0 && (this.buffered >= this.prebuffer || this.ended)) {
      this.playing = true;
      this.ramp = 0;
      this.port.postMessage({ type: "started", played: this.played });
    }
    for (let i = 0; i < out.length; i++) {
      if (!this.playing || this.buffered === 0) {
        out[i] = 0;
        continue;
      }
      let value = this.next();
      if (this.ramp < 64) value *= this.ramp++ / 64; // fade in after silence
      if (this.fadeOut > 0) {
        value *= this.fadeOut / 128;
        if (--this.fadeOut === 0) this.drop();
      }
      out[i] = value;
      this.played++;
    }
    if (this.playing && this.buffered === 0) {
      if (!this.ended) this.underruns++; // the network fell behind: silence until the prebuffer refills
      this.playing = false;
      this.port.postMessage({ type: "stopped", played: this.played, underrun: !this.ended });
    }
    this.sinceReport += out.length;
    if (this.sinceReport >= sampleRate / 20) {
      this.sinceReport = 0;
      this.port.postMessage({ type: "stats", played: this.played, buffered: this.buffered, underruns: this.underruns });
    }
    return true;
  }
}

registerProcessor("voxray-capture", CaptureProcessor);
registerProcessor("voxray-player", PlayerProcessor);
