// What voxray's pages share: the state badge and error box, the API key → client secret
// trade, WebSocket URLs and subprotocols, plain-words close reasons, and opening the
// microphone into the capture worklet's AudioContext.

export const $ = (id) => document.getElementById(id);

export const CLOSE_MESSAGES = {
  1006: "The connection to the server was lost. Press Start to reconnect.",
  1008: "The server refused this connection.",
  1011: "The server hit an internal error and closed the session.",
  1012: "The server is restarting. Press Start to reconnect.",
  1013: "The server is full right now. Try again in a minute.",
};

/** The plain-words reason for a WebSocket close the user did not ask for. */
export function closeMessage(event) {
  const known = CLOSE_MESSAGES[event.code];
  const reason = event.reason ? ` (${event.reason})` : "";
  return (known || `The connection closed (code ${event.code}).`) + reason;
}

/** Show the state badge (#state) as `state`, labelled `label` (default: the state). */
export function setBadge(state, label) {
  const badge = $("state");
  badge.className = `state ${state}`;
  badge.textContent = label || state;
}

export function showErrorBox(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

export function clearErrorBox() {
  $("error").hidden = true;
  $("error").textContent = "";
}

/**
 * The secret a WebSocket should carry for the #credential field, or null when it is empty.
 * An API key is traded for a one-session client secret first, so the socket never carries
 * the key; `session` (optional) is the Realtime session the secret fixes.
 */
export async function credentialFor(session) {
  const value = $("credential").value.trim();
  if (!value || value.startsWith("ek_")) return value || null;
  const response = await fetch("v1/realtime/client_secrets", {
    method: "POST",
    headers: { Authorization: `Bearer ${value}`, "Content-Type": "application/json" },
    body: JSON.stringify(session ? { session } : {}),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error((body.error && body.error.message) || `The server refused the API key (HTTP ${response.status}).`);
  }
  return body.value;
}

/** The ws(s):// URL of `path`, relative to this page (so a Serve route prefix is kept). */
export function socketUrl(path) {
  const url = new URL(path, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url;
}

/**
 * The subprotocols to offer: `name`, plus the credential one when there is a secret. A
 * browser cannot set headers on a WebSocket; the server answers with `name`.
 */
export function socketProtocols(name, secret) {
  return [name, ...(secret ? [`openai-insecure-api-key.${secret}`] : [])];
}

function micErrorMessage(error) {
  if (!window.isSecureContext) return "The microphone needs a secure page: open it over HTTPS or on localhost.";
  if (error.name === "NotAllowedError") return "Microphone permission was denied. Allow the microphone for this page, then press Start.";
  if (error.name === "NotFoundError") return "No microphone was found. Plug one in, then press Start.";
  if (error.name === "NotReadableError") return "The microphone is in use by another program.";
  return `The microphone could not be opened: ${error.message}`;
}

/**
 * An AudioContext at `contextRate` (or the browser's own rate, where it refuses that one)
 * with voxray's worklets loaded, and the microphone's stream.
 *
 * @throws {Error} with a plain-words message (micErrorMessage) when either cannot be opened.
 */
export async function openMicrophone(contextRate) {
  let context;
  try {
    try {
      context = new AudioContext({ sampleRate: contextRate, latencyHint: "interactive" });
    } catch {
      context = new AudioContext({ latencyHint: "interactive" }); // this browser picks its own rate
    }
    await context.audioWorklet.addModule("web/worklets.js");
    if (!navigator.mediaDevices) throw Object.assign(new Error("no media devices"), { name: "NotSupportedError" });
    const microphone = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    return { context, microphone };
  } catch (error) {
    if (context) context.close();
    throw new Error(micErrorMessage(error));
  }
}

/** Fill a <dl> with [name, value] rows (the pages' counters). */
export function showDefinitions(list, rows) {
  list.replaceChildren(
    ...rows.flatMap(([name, value]) => {
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = name;
      dd.textContent = value;
      return [dt, dd];
    }),
  );
}

/**
 * A file's audio as PCM16 mono at `rate`: the browser decodes it, and resamples it to its
 * context's rate (decodeAudioData does, into a context at `rate`); channels are averaged.
 *
 * @throws {Error} in plain words when the file is not audio the browser can decode.
 */
export async function decodeAudioFile(file, rate) {
  const data = await file.arrayBuffer();
  let buffer;
  try {
    buffer = await new OfflineAudioContext(1, 1, rate).decodeAudioData(data);
  } catch {
    throw new Error(`"${file.name}" could not be read as audio. Try a WAV, MP3, Ogg or FLAC file.`);
  }
  const channels = Array.from({ length: buffer.numberOfChannels }, (_, i) => buffer.getChannelData(i));
  const pcm = new Int16Array(buffer.length);
  for (let i = 0; i < buffer.length; i++) {
    let sum = 0;
    for (const channel of channels) sum += channel[i];
    const value = Math.max(-1, Math.min(1, sum / channels.length));
    pcm[i] = value < 0 ? value * 0x8000 : value * 0x7fff;
  }
  return pcm;
}

/** Let the user save `body` as a file called `name` (a download of a blob: URL). */
export function saveFile(name, type, body) {
  const url = URL.createObjectURL(new Blob([body], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
