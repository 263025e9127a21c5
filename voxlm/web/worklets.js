// AudioWorklet processors of the voxlm page: microphone capture resampled to 16 kHz, and
// playback of the model's 16 kHz voice through a jitter buffer. Loaded with
// audioContext.audioWorklet.addModule("web/worklets.js").
"use strict";

// Windowed-sinc resampler between any two rates. Output sample i sits at input time
// i * step; it is the sum of input samples weighted by a Blackman-windowed sinc whose cutoff is
// the lower Nyquist frequency (times 0.92), so downsampling does not alias.
class Resampler {
  constructor(inRate, outRate, zeroCrossings = 12) {
    this.step = inRate / outRate;  // input samples per output sample
    this.cutoff = Math.min(1, outRate / inRate) * 0.92;  // fraction of the input Nyquist
    this.half = Math.ceil(zeroCrossings / this.cutoff);  // taps on each side, at the input rate
    this.buffer = new Float32Array(this.half);  // input history: silence before the start
    this.time = this.half;  // input position of the next output sample
  }

  kernel(x) {  // weight of an input sample x input samples away from the output time
    if (Math.abs(x) >= this.half) return 0;
    const window = 0.42 + 0.5 * Math.cos(Math.PI * x / this.half) +
                   0.08 * Math.cos(2 * Math.PI * x / this.half);
    const t = Math.PI * this.cutoff * x;
    return this.cutoff * window * (t === 0 ? 1 : Math.sin(t) / t);
  }

  push(input) {  // Float32Array at inRate -> Float32Array at outRate (what is ready so far)
    if (this.step === 1) return input.slice();
    const buffer = new Float32Array(this.buffer.length + input.length);
    buffer.set(this.buffer);
    buffer.set(input, this.buffer.length);
    const out = [];
    while (this.time + this.half < buffer.length) {
      const first = Math.floor(this.time) - this.half + 1;
      let sum = 0;
      for (let k = Math.max(first, 0); k <= first + 2 * this.half - 1; k++) {
        sum += buffer[k] * this.kernel(this.time - k);
      }
      out.push(sum);
      this.time += this.step;
    }
    const drop = Math.max(0, Math.floor(this.time) - this.half);
    this.buffer = buffer.slice(drop);
    this.time -= drop;
    return Float32Array.from(out);
  }
}

// Microphone -> 16 kHz Int16 chunks of `chunk` samples, posted to the page.
class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const target = options.processorOptions.targetRate;
    this.resampler = new Resampler(sampleRate, target);
    this.chunk = Math.round(target * 0.02);  // 20 ms
    this.pending = new Int16Array(this.chunk);
    this.filled = 0;
    this.peak = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (const x of this.resampler.push(channel)) {
      const v = Math.max(-1, Math.min(1, x));
      this.peak = Math.max(this.peak, Math.abs(v));
      this.pending[this.filled++] = Math.round(v * 32767);
      if (this.filled === this.chunk) {
        this.port.postMessage({pcm: this.pending.buffer, peak: this.peak}, [this.pending.buffer]);
        this.pending = new Int16Array(this.chunk);
        this.filled = 0;
        this.peak = 0;
      }
    }
    return true;
  }
}

// 16 kHz Int16 chunks from the page -> the speakers. Jitter buffer: playback starts (and after
// an underrun, starts again) once `targetMs` are queued; beyond `maxMs` the oldest audio is
// dropped, so the delay stays bounded. Reports its depth every 200 ms.
class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions;
    this.resampler = new Resampler(o.sourceRate, sampleRate);
    this.target = Math.round(sampleRate * o.targetMs / 1000);
    this.max = Math.round(sampleRate * o.maxMs / 1000);
    this.queue = [];  // Float32Array chunks at the context's rate
    this.offset = 0;  // samples of queue[0] already played
    this.queued = 0;  // samples queued, in all
    this.playing = false;
    this.underruns = 0;
    this.dropped = 0;
    this.peak = 0;
    this.sinceReport = 0;
    this.port.onmessage = (event) => {
      const pcm = new Int16Array(event.data);
      const x = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) x[i] = pcm[i] / 32768;
      const y = this.resampler.push(x);
      if (y.length) { this.queue.push(y); this.queued += y.length; }
      while (this.queued > this.max && this.queue.length > 1) {  // too far behind: catch up
        const old = this.queue.shift();
        this.queued -= old.length - this.offset;
        this.dropped += old.length - this.offset;
        this.offset = 0;
      }
    };
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing && this.queued >= this.target) this.playing = true;
    let i = 0;
    while (this.playing && i < out.length && this.queue.length) {
      const head = this.queue[0];
      const n = Math.min(out.length - i, head.length - this.offset);
      out.set(head.subarray(this.offset, this.offset + n), i);
      for (let j = i; j < i + n; j++) this.peak = Math.max(this.peak, Math.abs(out[j]));
      i += n;
      this.offset += n;
      this.queued -= n;
      if (this.offset === head.length) { this.queue.shift(); this.offset = 0; }
    }
    if (this.playing && i < out.length) { this.playing = false; this.underruns++; }
    out.fill(0, i);
    this.sinceReport += out.length;
    if (this.sinceReport >= sampleRate / 5) {
      this.port.postMessage({bufferMs: 1000 * this.queued / sampleRate, playing: this.playing,
                             underruns: this.underruns, droppedMs: 1000 * this.dropped / sampleRate,
                             peak: this.peak});
      this.sinceReport = 0;
      this.peak = 0;
    }
    return true;
  }
}

registerProcessor("voxlm-capture", CaptureProcessor);
registerProcessor("voxlm-playback", PlaybackProcessor);
