// The voxlm page: microphone -> websocket -> speakers, the model's inner text, a latency meter.
// Protocol: docs/PROTOCOL.md. Plain JavaScript, no build step.
"use strict";

const KIND_READY = 0x00, KIND_AUDIO = 0x01, KIND_TEXT = 0x02;
const RATE = 16000;  // Hz, both directions
const JITTER_TARGET_MS = 120, JITTER_MAX_MS = 400;  // playback buffer: start at, drop beyond
const FRAME_MS = 80;  // the server's step

const $ = (id) => document.getElementById(id);
// What the page has received, for people and for tests.
window.voxlm = {ready: false, audioMessages: 0, audioSamples: 0, textMessages: 0, text: "", heard: [],
                sentSamples: 0, errors: [], ended: null, rttMs: null, bufferMs: null};

let ws = null, context = null, stream = null, capture = null, playback = null;
let pingTimer = null, lastPong = null;
const decoder = new TextDecoder("utf-8");

function setStatus(text) { $("status").textContent = text; }

function socketUrl() {
  const url = new URL("api/chat", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const token = new URLSearchParams(location.search).get("token");
  if (token) url.searchParams.set("token", token);
  return url;
}

async function start() {
  $("start").disabled = true;
  Object.assign(window.voxlm, {ready: false, ended: null, errors: []});
  $("transcript").textContent = "";
  $("heard").textContent = "";
  window.voxlm.text = "";
  window.voxlm.heard = [];
  try {
    setStatus("asking for the microphone");
    stream = await navigator.mediaDevices.getUserMedia({audio: {
      channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true}});
    context = new AudioContext({latencyHint: "interactive"});
    await context.audioWorklet.addModule("web/worklets.js");
    capture = new AudioWorkletNode(context, "voxlm-capture",
                                   {processorOptions: {targetRate: RATE}});
    const mute = context.createGain();
    mute.gain.value = 0;  // the capture node is pulled through a silent path
    context.createMediaStreamSource(stream).connect(capture).connect(mute).connect(context.destination);
    playback = new AudioWorkletNode(context, "voxlm-playback", {outputChannelCount: [1],
      processorOptions: {sourceRate: RATE, targetMs: JITTER_TARGET_MS, maxMs: JITTER_MAX_MS}});
    playback.connect(context.destination);
    playback.port.onmessage = (event) => showPlayback(event.data);
    capture.port.onmessage = (event) => sendAudio(event.data);
    await context.resume();
  } catch (error) {
    fail(`microphone or audio unavailable: ${error.message || error}`);
    return;
  }
  setStatus("connecting");
  ws = new WebSocket(socketUrl());
  ws.binaryType = "arraybuffer";
  ws.onmessage = receive;
  ws.onclose = (event) => finish(window.voxlm.ended || `connection closed (${event.code})`);
  ws.onerror = () => window.voxlm.errors.push("websocket error");
  $("stop").disabled = false;
}

function sendAudio({pcm, peak}) {
  $("levels").dataset.mic = peak.toFixed(2);
  showLevels();
  if (!ws || ws.readyState !== WebSocket.OPEN || !window.voxlm.ready) return;
  const message = new Uint8Array(1 + pcm.byteLength);
  message[0] = KIND_AUDIO;
  message.set(new Uint8Array(pcm), 1);
  ws.send(message);
  window.voxlm.sentSamples += pcm.byteLength / 2;
}

function receive(event) {
  if (typeof event.data === "string") return control(JSON.parse(event.data));
  const bytes = new Uint8Array(event.data);
  if (bytes.length === 0) return;
  if (bytes[0] === KIND_READY) {
    window.voxlm.ready = true;
    setStatus("listening: talk");
    pingTimer = setInterval(ping, 1000);
  } else if (bytes[0] === KIND_AUDIO) {
    const pcm = event.data.slice(1);  // Int16 samples (an ArrayBuffer of its own)
    window.voxlm.audioMessages += 1;
    window.voxlm.audioSamples += pcm.byteLength / 2;
    if (playback) playback.port.postMessage(pcm, [pcm]);
  } else if (bytes[0] === KIND_TEXT) {
    const text = decoder.decode(bytes.subarray(1));
    window.voxlm.textMessages += 1;
    window.voxlm.text += text;
    $("transcript").textContent += text;
  }
}

function control(message) {
  if (message.type === "pong") {
    window.voxlm.rttMs = performance.now() - message.t;
    lastPong = message;
    showLatency();
  } else if (message.type === "error") {
    window.voxlm.errors.push(message.message);
    setStatus(`error: ${message.message}`);
  } else if (message.type === "end") {
    window.voxlm.ended = message.reason;
  } else if (message.type === "heard") {  // a model with a listen head: what it heard you say
    window.voxlm.heard.push(message.word);
    $("heard-section").hidden = false;
    $("heard").textContent = window.voxlm.heard.join(" ");
  }
}

function ping() {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({type: "ping", t: performance.now()}));
}

function showPlayback(report) {
  window.voxlm.bufferMs = report.bufferMs;
  $("levels").dataset.model = report.peak.toFixed(2);
  showLevels();
  showLatency();
}

function showLatency() {
  const v = window.voxlm, rtt = v.rttMs, buffer = v.bufferMs;
  const queue = lastPong ? lastPong.input_buffer_ms : null, step = lastPong ? lastPong.step_ms : null;
  const ms = (x) => (x === null || x === undefined ? "–" : `${Math.round(x)} ms`);
  $("latency").textContent = `round trip ${ms(rtt)} · playback buffer ${ms(buffer)} · ` +
                             `server queue ${ms(queue)} · step ${ms(step)}`;
  if (rtt !== null && buffer !== null) {  // mouth to ear: send, a frame, the step, back, buffer
    const total = rtt + (queue || 0) + FRAME_MS + (step || 0) + buffer;
    $("meter-bar").style.width = `${Math.min(100, total / 10)}%`;
    $("meter-bar").className = total > 400 ? "slow" : "";
    $("meter-bar").title = `about ${Math.round(total)} ms from your voice to its answer`;
  }
}

function showLevels() {
  const d = $("levels").dataset;
  $("levels").textContent = `microphone ${d.mic || "–"} · model voice ${d.model || "–"}`;
}

function stop() {
  $("stop").disabled = true;
  if (ws && ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify({type: "stop"}));  // the server sends what it has, "end", and closes
    setTimeout(() => { if (ws && ws.readyState !== WebSocket.CLOSED) ws.close(); }, 2000);
  } else {
    finish("stopped");
  }
}

function finish(reason) {
  clearInterval(pingTimer);
  if (stream) stream.getTracks().forEach((track) => track.stop());
  if (context) context.close();
  ws = stream = context = capture = playback = null;
  window.voxlm.ended = window.voxlm.ended || reason;
  window.voxlm.ready = false;
  setStatus(`ended: ${reason}`);
  $("start").disabled = false;
  $("stop").disabled = true;
}

function fail(message) {
  window.voxlm.errors.push(message);
  setStatus(message);
  $("start").disabled = false;
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
