// voxray's page: talk to the server over the OpenAI Realtime API from the browser.
// Microphone → AudioWorklet (PCM16, 24 kHz) → input_audio_buffer.append; reply audio →
// jitter-buffered AudioWorklet player, cleared the moment the server hears you interrupt.
// window.voxrayStats exposes the counters the browser tests read.

import { $, clearErrorBox, closeMessage, credentialFor, openMicrophone, setBadge, showDefinitions, showErrorBox, socketProtocols, socketUrl } from "./common.js";

const RATE = 24000;
// The audio runs at the session's 24 kHz where the browser allows it; ?sample_rate=48000
// forces another rate, to exercise the resampling a browser without 24 kHz support needs.
const CONTEXT_RATE = Number(new URLSearchParams(window.location.search).get("sample_rate")) || RATE;

const stats = {
  state: "idle",
  chunksReceived: 0,
  samplesReceived: 0,
  samplesPlayed: 0,
  underruns: 0,
  bargeIns: 0,
  truncations: 0,
  samplesAfterClear: null,
  errors: [],
  turns: [],
};
window.voxrayStats = stats;

let session = null; // the live Session, or null

function setState(state, label) {
  stats.state = state;
  setBadge(state, label);
}

function showError(message) {
  stats.errors.push(message);
  showErrorBox(message);
}

function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

function pcm16ToFloat(base64, contextRate) {
  const raw = atob(base64);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  const pcm = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
  const ratio = contextRate / RATE;
  const out = new Float32Array(Math.round(pcm.length * ratio));
  for (let i = 0; i < out.length; i++) {
    const position = i / ratio; // linear interpolation when the context does not run at 24 kHz
    const index = Math.floor(position);
    const next = Math.min(index + 1, pcm.length - 1);
    const value = pcm[index] + (pcm[next] - pcm[index]) * (position - index);
    out[i] = value / 0x8000;
  }
  return out;
}

function sessionSettings() {
  const settings = { type: "realtime", instructions: $("instructions").value };
  const voice = $("voice").value;
  if (voice) settings.audio = { output: { voice } };
  return settings;
}

function bubble(role, id) {
  let element = id && document.querySelector(`[data-item="${CSS.escape(id)}"]`);
  if (!element) {
    element = document.createElement("div");
    element.className = `turn ${role}`;
    if (id) element.dataset.item = id;
    element.append(document.createElement("span"));
    $("conversation").append(element);
  }
  return element;
}

function setMeta(element, text) {
  let meta = element.querySelector(".meta");
  if (!meta) {
    meta = document.createElement("span");
    meta.className = "meta";
    element.append(meta);
  }
  meta.textContent = text;
}

function renderStats() {
  const rows = [
    ["audio received", `${(stats.samplesReceived / RATE).toFixed(1)} s`],
    ["audio played", `${(stats.samplesPlayed / (session ? session.context.sampleRate : RATE)).toFixed(1)} s`],
    ["buffer underruns", stats.underruns],
    ["interruptions", stats.bargeIns],
  ];
  const last = stats.turns[stats.turns.length - 1];
  if (last && last.serverFirstAudioMs != null) rows.push(["last reply after", `${last.serverFirstAudioMs} ms`]);
  showDefinitions($("stats"), rows);
}

class Session {
  constructor(context, microphone, socket) {
    this.context = context;
    this.microphone = microphone;
    this.socket = socket;
    this.closedByUser = false;
    this.sawError = false;
    this.response = null; // {id, itemId}
    this.items = new Map(); // assistant item id → {playStart, awaitingStart}
    this.pendingItem = null; // the item whose first audio waits for the player to start
    this.speechStoppedAt = null;
    this.clearedAt = null; // played count when playback was last cleared
    this.player = new AudioWorkletNode(context, "voxray-player", {
      outputChannelCount: [1],
      processorOptions: { prebufferMs: 80 },
    });
    this.player.port.onmessage = (event) => this.onPlayer(event.data);
    this.player.connect(context.destination);
    this.capture = new AudioWorkletNode(context, "voxray-capture");
    this.capture.port.onmessage = (event) => this.send({ type: "input_audio_buffer.append", audio: toBase64(event.data) });
    this.source = context.createMediaStreamSource(microphone);
    this.source.connect(this.capture);
    socket.onmessage = (event) => this.onEvent(JSON.parse(event.data));
    socket.onclose = (event) => this.onClose(event);
  }

  send(event) {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(event));
  }

  onPlayer(message) {
    stats.samplesPlayed = message.played;
    if (message.type === "stats") {
      stats.underruns = message.underruns;
      renderStats();
    } else if (message.type === "started") {
      if (this.pendingItem) {
        const item = this.items.get(this.pendingItem);
        item.playStart = message.played;
        if (this.speechStoppedAt != null) item.heardAfterMs = Math.round(performance.now() - this.speechStoppedAt);
        this.pendingItem = null;
      }
      setState("speaking");
    } else if (message.type === "stopped") {
      if (this.clearedAt != null) {
        stats.samplesAfterClear = message.played - this.clearedAt; // the fade-out, nothing more
        this.clearedAt = null;
      }
      if (!message.underrun) {
        // Everything queued was played: those replies were heard in full, nothing to truncate.
        for (const item of this.items.values()) if (item.playStart != null) item.truncated = true;
        if (!this.response) setState("listening");
      }
    } else if (message.type === "cleared") {
      this.clearedAt = message.played;
      stats.samplesAfterClear = 0;
      this.truncate(message.played);
    }
  }

  truncate(played) {
    // Tell the server how much of the interrupted reply was heard, so its history matches.
    const started = [...this.items].filter(([, item]) => item.playStart != null && !item.truncated);
    if (!started.length) return;
    const [id, item] = started[started.length - 1]; // the reply that was playing
    const heardMs = Math.max(0, Math.round(((played - item.playStart) / this.context.sampleRate) * 1000));
    for (const [, each] of started) each.truncated = true; // earlier replies were heard in full
    stats.truncations++;
    this.send({ type: "conversation.item.truncate", item_id: id, content_index: 0, audio_end_ms: heardMs });
  }

  bargeIn() {
    stats.bargeIns++;
    this.player.port.postMessage({ type: "clear" });
  }

  onEvent(event) {
    switch (event.type) {
      case "input_audio_buffer.speech_started":
        if (stats.state === "speaking" || this.response) this.bargeIn();
        bubble("user", event.item_id).querySelector("span").textContent = "…";
        setState("listening");
        break;
      case "input_audio_buffer.speech_stopped":
        this.speechStoppedAt = performance.now();
        setState("thinking");
        break;
      case "conversation.item.input_audio_transcription.completed":
        bubble("user", event.item_id).querySelector("span").textContent = event.transcript || "(nothing heard)";
        break;
      case "conversation.item.input_audio_transcription.failed":
        bubble("user", event.item_id).querySelector("span").textContent = "(not understood)";
        break;
      case "response.created":
        this.response = { id: event.response.id, itemId: null };
        if (stats.state !== "speaking") setState("thinking");
        break;
      case "response.output_item.added":
        if (this.response) this.response.itemId = event.item.id;
        this.items.set(event.item.id, { playStart: null });
        bubble("assistant", event.item.id);
        break;
      case "response.output_audio_transcript.delta":
      case "response.output_text.delta":
        bubble("assistant", event.item_id).querySelector("span").textContent += event.delta;
        break;
      case "response.output_audio.delta": {
        const samples = pcm16ToFloat(event.delta, this.context.sampleRate);
        stats.chunksReceived++;
        stats.samplesReceived += Math.round((samples.length * RATE) / this.context.sampleRate);
        const item = this.items.get(event.item_id);
        if (item && item.playStart == null && !item.pushed) {
          item.pushed = true;
          this.pendingItem = event.item_id;
        }
        this.player.port.postMessage({ type: "push", samples }, [samples.buffer]);
        break;
      }
      case "response.output_audio.done":
        this.player.port.postMessage({ type: "end" });
        break;
      case "response.done":
        this.onResponseDone(event.response);
        break;
      case "error":
        this.sawError = true;
        showError(event.error.message);
        break;
      default:
        break;
    }
  }

  onResponseDone(response) {
    const itemId = this.response && this.response.itemId;
    this.response = null;
    const metadata = response.metadata || {};
    const firstAudio = metadata["voxray.first_audio_ms"];
    const item = (itemId && this.items.get(itemId)) || {};
    const turn = {
      status: response.status,
      serverFirstAudioMs: firstAudio != null ? Math.round(Number(firstAudio)) : null,
      heardAfterMs: item.heardAfterMs ?? null,
    };
    stats.turns.push(turn);
    if (itemId) {
      const element = bubble("assistant", itemId);
      if (response.status === "cancelled") element.classList.add("cancelled");
      const parts = [];
      if (turn.serverFirstAudioMs != null) parts.push(`reply sent ${turn.serverFirstAudioMs} ms after you stopped talking`);
      if (turn.heardAfterMs != null) parts.push(`playing ${turn.heardAfterMs} ms after the turn ended`);
      if (response.status === "failed") parts.push("the reply failed");
      setMeta(element, parts.join(" · "));
    }
    if (stats.state === "thinking") setState("listening");
    renderStats();
  }

  onClose(event) {
    if (!this.closedByUser && (!this.sawError || event.code === 1006)) showError(closeMessage(event));
    this.shutDown();
  }

  close() {
    this.closedByUser = true;
    this.socket.close(1000);
    this.shutDown();
  }

  shutDown() {
    this.microphone.getTracks().forEach((track) => track.stop());
    this.source.disconnect();
    this.context.close();
    if (session === this) session = null;
    setState("idle", "not connected");
    $("start").hidden = false;
    $("stop").hidden = true;
  }
}

async function start() {
  clearErrorBox();
  $("start").hidden = true;
  setState("connecting", "connecting…");
  let context;
  let microphone;
  try {
    ({ context, microphone } = await openMicrophone(CONTEXT_RATE));
  } catch (error) {
    showError(error.message);
    setState("idle", "not connected");
    $("start").hidden = false;
    return;
  }
  const settings = sessionSettings();
  let secret;
  try {
    secret = await credentialFor(settings);
  } catch (error) {
    microphone.getTracks().forEach((track) => track.stop());
    context.close();
    showError(error.message);
    setState("idle", "not connected");
    $("start").hidden = false;
    return;
  }
  const socket = new WebSocket(socketUrl("v1/realtime"), socketProtocols("realtime", secret));
  session = new Session(context, microphone, socket);
  socket.onopen = () => {
    session.send({ type: "session.update", session: settings });
    context.resume();
    setState("listening");
    $("stop").hidden = false;
  };
}

function updateSettings() {
  if (session) session.send({ type: "session.update", session: sessionSettings() });
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", () => session && session.close());
$("instructions").addEventListener("change", updateSettings);
$("voice").addEventListener("change", updateSettings);
renderStats();
