// voxray's live captions page: the Speechmatics real-time protocol at /v2 from the browser.
// Microphone → capture AudioWorklet (PCM16, 16 kHz) or a decoded file → binary AddAudio
// frames after StartRecognition; partial captions in grey, final ones per speaker colour;
// EndOfStream at Stop or the file's end, then the server's EndOfTranscript.
// window.voxrayCaptions exposes the counters the browser tests read.

import { $, clearErrorBox, closeMessage, credentialFor, decodeAudioFile, openMicrophone, saveFile, setBadge, showDefinitions, showErrorBox, socketProtocols, socketUrl } from "./common.js";
import { Transcript, contentOf, formatTime, joinResults, speakerOf } from "./transcript.js";

const RATE = 16000; // the audio_format the page declares: raw pcm_s16le at 16 kHz
const FRAME_MS = 100; // audio per AddAudio frame
const FRAME_SAMPLES = (RATE * FRAME_MS) / 1000;
// Frames sent but not yet acknowledged by AudioAdded before a file waits for the server
// (flow control, as Speechmatics' own clients do); 5 s of audio.
const MAX_UNACKNOWLEDGED = 50;
const UTTERANCE_SILENCE_S = 0.8;
const SPEAKER_COLOURS = 8; // .speaker-1 … .speaker-8 in style.css, reused past S8

const ERROR_WORDS = {
  not_authorised: "The server did not accept the API key or client secret.",
  not_allowed: "This key is not allowed to do that.",
  invalid_language: "The server cannot transcribe this language.",
  invalid_model: "The server has no model for this language.",
  invalid_config: "The server did not accept these settings.",
  invalid_audio_type: "The server cannot take this audio format.",
  invalid_message: "The server did not understand a message from this page.",
  protocol_error: "The page and the server disagreed about the protocol.",
  quota_exceeded: "The server is full right now. Try again in a minute.",
  timelimit_exceeded: "The usage limit was reached.",
  idle_timeout: "The session ended after too long without audio.",
  session_timeout: "The session reached its longest allowed duration.",
  job_error: "The server could not transcribe this audio.",
};

const stats = {
  state: "idle",
  source: null, // "microphone" or "file"
  framesSent: 0,
  framesAcknowledged: 0,
  partials: 0, // AddPartialTranscript messages shown with words in them
  finals: 0, // AddTranscript messages with words in them
  utterances: 0, // EndOfUtterance messages
  ended: false, // EndOfTranscript arrived
  errors: [],
  warnings: [],
};
window.voxrayCaptions = stats;

let session = null; // the live CaptionSession, or null
let transcript = null; // the latest session's Transcript (kept for downloading after it ends)

function setState(state, label) {
  stats.state = state;
  setBadge(state, label);
}

function showError(message) {
  stats.errors.push(message);
  showErrorBox(message);
}

function showWarning(message) {
  stats.warnings.push(message);
  $("warning").textContent = message;
  $("warning").hidden = false;
}

function speakerClass(speaker) {
  const number = /^S(\d+)$/.exec(speaker);
  return number ? `speaker-${((Number(number[1]) - 1) % SPEAKER_COLOURS) + 1}` : "speaker-unknown";
}

// -- rendering --------------------------------------------------------------------------

function lineElement(index) {
  const captions = $("captions");
  let element = captions.querySelector(`.line[data-line="${index}"]`);
  if (!element) {
    element = document.createElement("p");
    element.className = "line";
    element.dataset.line = String(index);
    captions.insertBefore(element, $("partial"));
  }
  return element;
}

function runElement(run) {
  const element = document.createElement("span");
  element.className = `run ${speakerClass(run.speaker)}`;
  element.dataset.speaker = run.speaker;
  const label = document.createElement("span");
  label.className = "label";
  label.textContent = `${run.speaker} ${formatTime(run.start)}`;
  const words = document.createElement("span");
  words.className = "words";
  words.textContent = joinResults(run.results, transcript.delimiter);
  words.title = `${formatTime(run.start)} – ${formatTime(run.end)}`;
  element.append(label, words);
  return element;
}

/** Run `change`, then keep the newest captions in view unless the reader scrolled up. */
function followingCaptions(change) {
  const captions = $("captions");
  const atEnd = captions.scrollHeight - captions.scrollTop - captions.clientHeight < 40;
  change();
  if (atEnd) captions.scrollTop = captions.scrollHeight;
}

function renderLastLine() {
  const index = transcript.lines.length - 1;
  const runs = transcript.currentLine;
  if (runs.length) followingCaptions(() => lineElement(index).replaceChildren(...runs.map(runElement)));
}

function renderPartial(results) {
  const text = joinResults(results, transcript.delimiter);
  const partial = $("partial");
  followingCaptions(() => {
    partial.textContent = text;
  });
  partial.dataset.speaker = results.length ? speakerOf(results[0]) : "";
}

function renderLegend() {
  const items = transcript.speakers.map((speaker) => {
    const item = document.createElement("li");
    item.className = speakerClass(speaker);
    const words = transcript.results.filter((r) => r.type !== "punctuation" && speakerOf(r) === speaker).length;
    item.textContent = `${speaker === "UU" ? "unknown speaker" : speaker} · ${words} word${words === 1 ? "" : "s"}`;
    return item;
  });
  $("legend").replaceChildren(...items);
}

function renderStats() {
  const rows = [
    ["audio sent", `${((stats.framesSent * FRAME_MS) / 1000).toFixed(1)} s`],
    ["audio acknowledged", `${((stats.framesAcknowledged * FRAME_MS) / 1000).toFixed(1)} s`],
    ["final words", transcript ? transcript.wordCount : 0],
  ];
  showDefinitions($("stats"), rows);
}

function resetCaptions() {
  const partial = document.createElement("p");
  partial.id = "partial";
  partial.className = "line partial";
  $("captions").replaceChildren(partial);
  $("legend").replaceChildren();
  $("warning").hidden = true;
  Object.assign(stats, { framesSent: 0, framesAcknowledged: 0, partials: 0, finals: 0, utterances: 0, ended: false });
}

// -- the session ----------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class CaptionSession {
  constructor(socket, source) {
    this.socket = socket;
    this.source = source; // {kind: "microphone", microphone, context} or {kind: "file", pcm, speed}
    this.recognizing = false; // RecognitionStarted arrived: audio may be sent
    this.waiting = []; // microphone frames captured before that, sent once it arrives
    this.audioEnded = false; // EndOfStream sent
    this.closedByUser = false;
    this.sawError = false;
    this.ackWaiters = [];
    socket.binaryType = "arraybuffer";
    socket.onopen = () => this.start();
    socket.onmessage = (event) => typeof event.data === "string" && this.onMessage(JSON.parse(event.data));
    socket.onclose = (event) => this.onClose(event);
    // The microphone is captured from now on, so words said while the server starts are kept.
    if (source.kind === "microphone") this.captureMicrophone();
  }

  send(message) {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  start() {
    const config = {
      language: transcript.language,
      enable_partials: true,
      diarization: "speaker",
      // EndOfUtterance after this much silence (seconds): the captions start a new line.
      conversation_config: { end_of_utterance_silence_trigger: UTTERANCE_SILENCE_S },
    };
    const maxSpeakers = Number($("max-speakers").value);
    if (Number.isInteger(maxSpeakers) && maxSpeakers >= 2) config.speaker_diarization_config = { max_speakers: maxSpeakers };
    this.send({
      message: "StartRecognition",
      audio_format: { type: "raw", encoding: "pcm_s16le", sample_rate: RATE },
      transcription_config: config,
    });
    setState("connecting", "starting…");
  }

  sendFrame(pcm16) {
    if (this.audioEnded) return;
    if (!this.recognizing) this.waiting.push(pcm16);
    else if (this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(pcm16);
      stats.framesSent++;
    }
  }

  captureMicrophone() {
    const { context, microphone } = this.source;
    this.capture = new AudioWorkletNode(context, "voxray-capture", {
      processorOptions: { targetRate: RATE, frameMs: FRAME_MS },
    });
    this.capture.port.onmessage = (event) => this.sendFrame(event.data);
    this.input = context.createMediaStreamSource(microphone);
    this.input.connect(this.capture);
    context.resume();
  }

  /** RecognitionStarted: the audio may flow. */
  beginAudio() {
    if (this.audioEnded) return; // stopped while the server was starting
    setState("listening", this.source.kind === "file" ? "transcribing the file" : "listening");
    this.recognizing = true;
    for (const frame of this.waiting.splice(0)) this.sendFrame(frame);
    if (this.source.kind === "file") this.streamFile();
  }

  /** Send the file's frames at `speed` × real time (0: as fast as acknowledgements allow). */
  async streamFile() {
    const { pcm, speed } = this.source;
    const startedAt = performance.now();
    for (let offset = 0; offset < pcm.length && !this.audioEnded; offset += FRAME_SAMPLES) {
      if (speed > 0) {
        const due = startedAt + (offset / RATE / speed) * 1000;
        if (due > performance.now()) await sleep(due - performance.now());
      }
      while (stats.framesSent - stats.framesAcknowledged >= MAX_UNACKNOWLEDGED && !this.audioEnded) {
        await new Promise((resolve) => this.ackWaiters.push(resolve));
      }
      this.sendFrame(pcm.subarray(offset, Math.min(offset + FRAME_SAMPLES, pcm.length)));
    }
    this.endAudio();
  }

  wakeWaiters() {
    const waiters = this.ackWaiters.splice(0);
    for (const resolve of waiters) resolve();
  }

  /** Stop sending audio and tell the server (EndOfStream); EndOfTranscript follows. */
  endAudio() {
    if (this.audioEnded) return;
    this.stopMicrophone();
    this.send({ message: "EndOfStream", last_seq_no: stats.framesSent });
    this.audioEnded = true;
    this.wakeWaiters();
    setState("thinking", "finishing…");
  }

  stopMicrophone() {
    if (!this.source.microphone) return;
    this.source.microphone.getTracks().forEach((track) => track.stop());
    if (this.input) this.input.disconnect();
    this.source.context.close();
    this.source.microphone = null;
  }

  onMessage(message) {
    switch (message.message) {
      case "RecognitionStarted":
        transcript.delimiter = (message.language_pack_info && message.language_pack_info.word_delimiter) ?? " ";
        this.beginAudio();
        break;
      case "AudioAdded":
        stats.framesAcknowledged = Math.max(stats.framesAcknowledged, message.seq_no);
        this.wakeWaiters();
        break;
      case "AddPartialTranscript":
        if (message.results.some(contentOf)) stats.partials++;
        renderPartial(message.results);
        break;
      case "AddTranscript":
        if (message.results.some(contentOf)) stats.finals++;
        transcript.addFinal(message.results);
        renderPartial([]);
        renderLastLine();
        renderLegend();
        $("download-text").disabled = $("download-json").disabled = transcript.results.length === 0;
        break;
      case "EndOfUtterance":
        stats.utterances++;
        transcript.endUtterance();
        break;
      case "EndOfTranscript":
        stats.ended = true;
        renderPartial([]);
        this.close();
        break;
      case "Warning":
        showWarning(`The server warns: ${message.reason || message.type}`);
        break;
      case "Error":
        this.sawError = true;
        showError(`${ERROR_WORDS[message.type] || "The server reported an error."}${message.reason ? ` (${message.reason})` : ""}`);
        break;
      default:
        break; // Info and anything newer: nothing to show
    }
    renderStats();
  }

  onClose(event) {
    // A close before EndOfTranscript that nobody asked for loses the rest of the captions.
    if (!this.closedByUser && !stats.ended && (!this.sawError || event.code === 1006)) showError(closeMessage(event));
    this.shutDown();
  }

  /** Close at once (the second Stop, or after EndOfTranscript). */
  close() {
    this.closedByUser = true;
    this.socket.close(1000);
    this.shutDown();
  }

  shutDown() {
    this.audioEnded = true;
    this.wakeWaiters();
    this.stopMicrophone();
    if (session === this) session = null;
    setState("idle", stats.ended ? "done" : "not connected");
    $("start").hidden = false;
    $("stop").hidden = true;
    $("file").disabled = false;
  }
}

/** Start captioning the microphone (no `file`) or a file. */
async function start(file) {
  if (session) return;
  clearErrorBox();
  $("start").hidden = true;
  $("file").disabled = true;
  setState("connecting", file ? "reading the file…" : "connecting…");
  let source;
  try {
    source = file
      ? { kind: "file", pcm: await decodeAudioFile(file, RATE), speed: Number($("speed").value) }
      : { kind: "microphone", ...(await openMicrophone(RATE)) };
    stats.source = source.kind;
    const secret = await credentialFor();
    // Subprotocols only with a secret: it rides on one, and the server then names the other.
    const socket = new WebSocket(socketUrl("v2"), secret ? socketProtocols("speechmatics-rt", secret) : []);
    resetCaptions();
    transcript = new Transcript($("language").value);
    session = new CaptionSession(socket, source);
    $("stop").hidden = false;
  } catch (error) {
    if (source && source.microphone) {
      source.microphone.getTracks().forEach((track) => track.stop());
      source.context.close();
    }
    showError(error.message);
    setState("idle", "not connected");
    $("start").hidden = false;
    $("file").disabled = false;
  }
}

function stop() {
  if (!session) return;
  // A second Stop, or one before the socket opened: do not wait for the server.
  if (session.audioEnded || session.socket.readyState !== WebSocket.OPEN) session.close();
  else session.endAudio();
}

function download(kind) {
  if (!transcript) return;
  const stamp = new Date().toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-");
  const [body, type] =
    kind === "json" ? [JSON.stringify(transcript.toJSON(), null, 2), "application/json"] : [transcript.toText(), "text/plain"];
  saveFile(`transcript-${stamp}.${kind === "json" ? "json" : "txt"}`, `${type};charset=utf-8`, body);
}

$("start").addEventListener("click", () => start(null));
$("stop").addEventListener("click", stop);
$("file").addEventListener("change", () => {
  const [file] = $("file").files;
  $("file").value = ""; // picking the same file again starts again
  if (file) start(file);
});
$("captions").addEventListener("dragover", (event) => {
  event.preventDefault();
  $("captions").classList.add("dropping");
});
$("captions").addEventListener("dragleave", () => $("captions").classList.remove("dropping"));
$("captions").addEventListener("drop", (event) => {
  event.preventDefault();
  $("captions").classList.remove("dropping");
  const [file] = event.dataTransfer.files;
  if (file) start(file);
});
$("download-text").addEventListener("click", () => download("text"));
$("download-json").addEventListener("click", () => download("json"));
renderStats();
