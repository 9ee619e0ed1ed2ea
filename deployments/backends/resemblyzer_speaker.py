"""Resemblyzer's GE2E speaker encoder in numpy: speaker embeddings without torch, the CPU default.

Resemblyzer 0.1.4 ships ``pretrained.pt``, a GE2E voice encoder: a 40-channel mel power
spectrogram (not log) of 16 kHz audio → LSTM(40, 256, 3 layers) → Linear(256, 256) → ReLU →
L2 norm, trained on 1.6 s windows (160 frames of 10 ms). Resemblyzer itself needs torch (and
librosa), about 700 MB for a 17 MB model, so this module rebuilds all of it in numpy:

* :func:`~deployments.backends.torch_checkpoint.load_state_dict` reads the checkpoint
  without torch (``pretrained.pt`` is in torch's legacy format), and runs no code from it.
* :func:`mel_spectrogram` is ``librosa.feature.melspectrogram`` with Resemblyzer's settings
  (n_fft 400, hop 160, 40 Slaney mel filters, power 2, centred frames, zero padding).
* :class:`GE2EEncoder` runs the LSTM for all windows at once: one matmul per time step
  and layer, whatever the number of windows.

The embeddings match Resemblyzer's ``VoiceEncoder.embed_utterance(..., return_partials=True)``
to a cosine of at least 0.999 (``tests/models/test_speaker_embedding.py`` checks reference
vectors computed with Resemblyzer and torch).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deployments.backends.speaker_windows import FRAMES_PER_S, WindowedSpeakerBackend, window_layout
from deployments.backends.torch_checkpoint import load_state_dict
from deployments.models import model_file, resolve_model
from deployments.types import SpeakerEmbeddings

DEFAULT_MODEL = "bundled:resemblyzer-ge2e"
SAMPLE_RATE = 16_000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms: one mel frame per window frame (FRAMES_PER_S)
N_MELS = 40
_TARGET_DBFS = -30.0  # Resemblyzer's audio_norm_target_dBFS


def slaney_mel_filters(
    sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS
) -> np.ndarray:
    """librosa's ``filters.mel`` with its defaults: Slaney mel scale and area normalisation.

    Returns:
        ``(n_mels, 1 + n_fft // 2)`` float32 triangular filters from 0 Hz to Nyquist.
    """

    def hz_to_mel(hz: np.ndarray) -> np.ndarray:
        # Linear below 1 kHz, logarithmic above (Slaney's Auditory Toolbox).
        mel = hz / (200.0 / 3)
        log_part = hz >= 1000.0
        mel[log_part] = 15.0 + np.log(hz[log_part] / 1000.0) / (np.log(6.4) / 27.0)
        return mel

    def mel_to_hz(mel: np.ndarray) -> np.ndarray:
        hz = mel * (200.0 / 3)
        log_part = mel >= 15.0
        hz[log_part] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log_part] - 15.0))
        return hz

    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = np.array([0.0, sample_rate / 2.0])
    mel_freqs = mel_to_hz(np.linspace(*hz_to_mel(edges), n_mels + 2))
    widths = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_freqs[2:] - mel_freqs[:-2]))[:, None]
    return weights.astype(np.float32)


_MEL_FILTERS = slaney_mel_filters()
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic Hann


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """Resemblyzer's ``wav_to_mel_spectrogram``: mel power spectrogram of 16 kHz audio.

    Args:
        wav: Float samples at 16 kHz.

    Returns:
        ``(1 + len(wav) // 160, 40)`` float32 frames; frame ``i`` is centred on sample ``160 i``.
    """
    padded = np.pad(np.asarray(wav, dtype=np.float32), N_FFT // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP] * _WINDOW
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    return (power @ _MEL_FILTERS.T).astype(np.float32)


def normalize_volume(wav: np.ndarray) -> np.ndarray:
    """Raise quiet audio to -30 dBFS RMS, never lower it (Resemblyzer's ``increase_only``)."""
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if wav.size else 0.0
    if rms == 0.0:
        return wav  # digital silence has no level to raise
    change_db = _TARGET_DBFS - 20.0 * math.log10(rms)
    return wav if change_db < 0 else (wav * 10 ** (change_db / 20.0)).astype(np.float32)


def _gates_ifog(rows: np.ndarray) -> np.ndarray:
    """Reorder torch's gate blocks (input, forget, cell, output) to (input, forget, output, cell).

    The three sigmoid gates then sit side by side and take one in-place sigmoid per step.
    """
    i, f, g, o = np.split(rows, 4, axis=0)
    return np.concatenate([i, f, o, g], axis=0)


class GE2EEncoder:
    """The GE2E network in numpy, from a Resemblyzer state dict.

    Args:
        state: ``model_state`` of the checkpoint (``lstm.weight_ih_l0``, ..., ``linear.bias``).
    """

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self.layers: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        layer = 0
        while f"lstm.weight_ih_l{layer}" in state:
            w_ih = _gates_ifog(state[f"lstm.weight_ih_l{layer}"].astype(np.float32))
            w_hh = _gates_ifog(state[f"lstm.weight_hh_l{layer}"].astype(np.float32))
            bias = _gates_ifog(state[f"lstm.bias_ih_l{layer}"] + state[f"lstm.bias_hh_l{layer}"])
            # Transposed once here so that each time step is a plain (windows, in) @ (in, 4H).
            self.layers.append(
                (np.ascontiguousarray(w_ih.T), np.ascontiguousarray(w_hh.T), bias.astype(np.float32))
            )
            layer += 1
        if not self.layers:
            raise ValueError("not a GE2E state dict: no lstm.weight_ih_l0")
        self.linear_w = np.ascontiguousarray(state["linear.weight"].astype(np.float32).T)
        self.linear_b = state["linear.bias"].astype(np.float32)
        self.hidden = self.layers[0][1].shape[0]

    def __call__(self, mels: np.ndarray) -> np.ndarray:
        """Embed a batch of windows.

        Args:
            mels: ``(windows, frames, 40)`` mel spectrograms.

        Returns:
            ``(windows, 256)`` unit-length, non-negative embeddings.
        """
        seq = np.asarray(mels, dtype=np.float32)
        batch, steps, _ = seq.shape
        hid = self.hidden
        h = np.empty((batch, hid), dtype=np.float32)  # each layer starts from zero state, below
        gates = np.empty((batch, 4 * hid), dtype=np.float32)
        cell_in = np.empty((batch, hid), dtype=np.float32)
        for w_ih, w_hh, bias in self.layers:
            # The input projection of every step at once; only the recurrence is sequential.
            projected = seq @ w_ih + bias
            c = np.zeros((batch, hid), dtype=np.float32)
            outputs = np.empty((batch, steps, hid), dtype=np.float32)
            h = outputs[:, 0]  # zero state: its first product below is with zeros anyway
            h[:] = 0.0
            # In place on preallocated buffers: no allocation in the 160-step loop.
            sig, g = gates[:, : 3 * hid], gates[:, 3 * hid :]
            i, f, o = sig[:, :hid], sig[:, hid : 2 * hid], sig[:, 2 * hid :]
            for t in range(steps):
                np.matmul(h, w_hh, out=gates)
                gates += projected[:, t]
                sig *= 0.5  # sigmoid(x) = (1 + tanh(x / 2)) / 2, without exp overflow
                np.tanh(sig, out=sig)
                sig += 1.0
                sig *= 0.5
                np.tanh(g, out=g)
                c *= f
                np.multiply(i, g, out=cell_in)
                c += cell_in
                h = outputs[:, t]
                np.tanh(c, out=h)
                h *= o
            seq = outputs
        raw = np.maximum(h @ self.linear_w + self.linear_b, 0.0)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        return raw / np.maximum(norms, 1e-12)


class ResemblyzerOptions(BaseModel):
    """Options of :class:`ResemblyzerSpeaker`.

    Attributes:
        window_s: Length of each embedded window. 1.6 s is what the encoder was trained on
            (Resemblyzer's ``partials_n_frames``); shorter windows are noisier.
        hop_s: Distance between window starts: 0.4 s gives each moment of speech about four
            windows, so a speaker change is placed within about half a second.
        min_audio_s: Audio shorter than one window gets a single window, zero-padded to
            ``window_s`` as Resemblyzer pads it, when it is at least this long; shorter audio
            gets none (too little voice for a usable embedding).
        blas_threads: numpy's BLAS threads while embedding (needs ``threadpoolctl``; ``None``
            leaves them alone). The matmuls are small (a few windows by 256 by 1024), and on
            2 busy cores OpenBLAS's default of one thread per core was 6x slower than one.
    """

    model_config = ConfigDict(extra="forbid")

    window_s: float = Field(default=1.6, ge=0.5, le=5.0)
    hop_s: float = Field(default=0.4, ge=0.05, le=5.0)
    min_audio_s: float = Field(default=0.5, ge=0.1, le=5.0)
    blas_threads: int | None = Field(default=1, ge=1)


class ResemblyzerSpeaker(WindowedSpeakerBackend):
    """Speaker embeddings of overlapping windows with Resemblyzer's GE2E encoder, in numpy.

    Args:
        model: ``bundled:resemblyzer-ge2e`` (default), or a local Resemblyzer-style checkpoint
            (``pretrained.pt``, or a directory holding one ``*.pt``).
        options: See :class:`ResemblyzerOptions`.
    """

    Options = ResemblyzerOptions
    thread_name = "resemblyzer"
    sample_rate = SAMPLE_RATE

    def __init__(self, model: str | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(model or DEFAULT_MODEL, options)
        opts: ResemblyzerOptions = self.options
        self.model_path = model_file(resolve_model(self.model_spec), "*.pt")
        self._encoder = GE2EEncoder(load_state_dict(self.model_path))
        self.window_frames = round(opts.window_s * FRAMES_PER_S)
        self.hop_frames = max(1, round(opts.hop_s * FRAMES_PER_S))
        try:
            from threadpoolctl import ThreadpoolController

            self._blas: Any = ThreadpoolController()
        except ImportError:  # optional: without it numpy's BLAS keeps its own thread count
            self._blas = None

    def embed_audio(self, audio: np.ndarray) -> SpeakerEmbeddings:
        """Embed float samples at 16 kHz in the calling thread (see :meth:`embed`)."""
        opts: ResemblyzerOptions = self.options
        duration = len(audio) / SAMPLE_RATE
        if self._too_short(duration):
            return SpeakerEmbeddings()
        wav = normalize_volume(np.asarray(audio, dtype=np.float32))
        starts, window = window_layout(len(wav) // HOP, self.window_frames, self.hop_frames, pad_short=True)
        if len(wav) < window * HOP:
            wav = np.pad(wav, (0, window * HOP - len(wav)))  # as Resemblyzer pads a short utterance
        mel = mel_spectrogram(wav)
        vectors = self._encoder(np.stack([mel[s : s + window] for s in starts]))
        return self._embeddings(starts, opts.window_s, duration, vectors)

    def _embedding_context(self) -> AbstractContextManager[Any]:
        threads = self.options.blas_threads
        if self._blas and threads:
            return self._blas.limit(limits=threads, user_api="blas")
        return nullcontext()
