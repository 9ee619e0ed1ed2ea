"""Resemblyzer's GE2E speaker encoder in numpy: speaker embeddings without torch, the CPU default.

Resemblyzer 0.1.4 ships ``pretrained.pt``, a GE2E voice encoder: a 40-channel mel power
spectrogram (not log) of 16 kHz audio → LSTM(40, 256, 3 layers) → Linear(256, 256) → ReLU →
L2 norm, trained on 1.6 s windows (160 frames of 10 ms). Resemblyzer itself needs torch (and
librosa), about 700 MB for a 17 MB model, so this module rebuilds all of it in numpy:

* :func:`load_torch_checkpoint` reads the checkpoint without torch. ``pretrained.pt`` is in
  torch's legacy format (pickles followed by raw storages); newer zip checkpoints are read
  too. The unpickler accepts only the few globals a state dict needs and refuses anything
  else, so a checkpoint cannot run code.
* :func:`mel_spectrogram` is ``librosa.feature.melspectrogram`` with Resemblyzer's settings
  (n_fft 400, hop 160, 40 Slaney mel filters, power 2, centred frames, zero padding).
* :class:`GE2EEncoder` runs the LSTM for all windows at once: one matmul per time step
  and layer, whatever the number of windows.

The embeddings match Resemblyzer's ``VoiceEncoder.embed_utterance(..., return_partials=True)``
to a cosine of at least 0.999 (``tests/models/test_speaker_embedding.py`` checks reference
vectors computed with Resemblyzer and torch).
"""

from __future__ import annotations

import asyncio
import collections
import math
import pickle
import struct
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import IO, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deployments.backends.base import Backend
from deployments.models import model_file, resolve_model
from deployments.types import SpeakerEmbeddings
from serve_app.engine.audio.pcm import pcm16_to_float32, resample_pcm16

DEFAULT_MODEL = "bundled:resemblyzer-ge2e"
SAMPLE_RATE = 16_000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms: 100 frames per second
N_MELS = 40
FRAMES_PER_S = SAMPLE_RATE // HOP
_TARGET_DBFS = -30.0  # Resemblyzer's audio_norm_target_dBFS

# torch's typed storage classes, as named in checkpoints, and their element types.
_STORAGE_DTYPES = {
    f"{kind}Storage": np.dtype(code)
    for kind, code in zip(
        ["Float", "Double", "Half", "Long", "Int", "Short", "Char", "Byte", "Bool"],
        ["f4", "f8", "f2", "i8", "i4", "i2", "i1", "u1", "b1"],
        strict=True,
    )
}


class _Storage:
    """A torch storage: its element type and, once read, its elements."""

    def __init__(self, dtype: type, numel: int) -> None:
        self.dtype = np.dtype(dtype)
        self.numel = numel
        self.array: np.ndarray | None = None


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> np.ndarray | None:
    """``torch._utils._rebuild_tensor_v2`` as a numpy view (``None`` while storages are unread)."""
    if storage.array is None:
        return None
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage.array[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    )
    return np.array(view)  # a copy: the checkpoint's big storages can be freed


class _StateDictUnpickler(pickle.Unpickler):
    """Rebuilds tensors as numpy arrays; any global but the few a state dict needs is refused."""

    def __init__(self, file: IO[bytes], storages: dict[str, _Storage], read_storage: Any = None) -> None:
        super().__init__(file)
        self._storages = storages
        self._read_storage = read_storage

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a checkpoint")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        dtype, key, numel = pid[1], str(pid[2]), int(pid[4])
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        if key not in self._storages:
            self._storages[key] = _Storage(dtype, numel)
            if self._read_storage is not None:
                self._storages[key].array = self._read_storage(key, self._storages[key])
        return self._storages[key]


def load_torch_checkpoint(path: str | Path) -> Any:
    """Read a torch checkpoint of plain tensors without torch.

    Args:
        path: A ``torch.save`` file, legacy (torch < 1.6) or zip format.

    Returns:
        The saved object with every tensor as a numpy array.

    Raises:
        pickle.UnpicklingError: The checkpoint holds anything but tensors, dicts, lists and
            plain values (such a pickle could run arbitrary code).
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    return _load_legacy(path)


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
        prefix = pkl[: -len("data.pkl")]

        def read(key: str, storage: _Storage) -> np.ndarray:
            raw = archive.read(f"{prefix}data/{key}")
            return np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"), count=storage.numel)

        with archive.open(pkl) as f:
            return _StateDictUnpickler(f, {}, read).load()


def _load_legacy(path: Path) -> Any:
    """Legacy format: magic, version and system-info pickles, the object, its storage keys, the storages.

    The storages follow the object's pickle, so the object is unpickled twice: once to learn
    the storages, then again, once they are read, to build the arrays.
    """
    storages: dict[str, _Storage] = {}
    with path.open("rb") as f:
        for _ in range(3):
            _StateDictUnpickler(f, storages).load()
        object_start = f.tell()
        _StateDictUnpickler(f, storages).load()
        keys = _StateDictUnpickler(f, storages).load()
        for key in keys:
            storage = storages[str(key)]
            (numel,) = struct.unpack("<q", f.read(8))
            raw = f.read(numel * storage.dtype.itemsize)
            storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"), count=numel)
        f.seek(object_start)
        return _StateDictUnpickler(f, storages).load()


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


def window_starts(n_frames: int, window: int, hop: int) -> list[int]:
    """First frames of the windows over ``n_frames`` frames: every ``hop``, plus one flush with the end.

    The last window is moved back to end with the audio, so that the end of an utterance
    (often its last word) has a window of its own rather than none.
    """
    starts = list(range(0, n_frames - window + 1, hop))
    if starts and starts[-1] + window < n_frames:
        starts.append(n_frames - window)
    return starts


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


class ResemblyzerSpeaker(Backend):
    """Speaker embeddings of overlapping windows with Resemblyzer's GE2E encoder, in numpy.

    Args:
        model: ``bundled:resemblyzer-ge2e`` (default), or a local Resemblyzer-style checkpoint
            (``pretrained.pt``, or a directory holding one ``*.pt``).
        options: See :class:`ResemblyzerOptions`.
    """

    Options = ResemblyzerOptions

    def __init__(self, model: str | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(model or DEFAULT_MODEL, options)
        opts: ResemblyzerOptions = self.options
        self.model_path = model_file(resolve_model(self.model_spec), "*.pt")
        checkpoint = load_torch_checkpoint(self.model_path)
        self._encoder = GE2EEncoder(checkpoint.get("model_state", checkpoint))
        self.window_frames = round(opts.window_s * FRAMES_PER_S)
        self.hop_frames = max(1, round(opts.hop_s * FRAMES_PER_S))
        try:
            from threadpoolctl import ThreadpoolController

            self._blas: Any = ThreadpoolController()
        except ImportError:  # optional: without it numpy's BLAS keeps its own thread count
            self._blas = None
        # One worker: queued calls keep one replica from oversubscribing its cores.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resemblyzer")
        self._calls = 0
        self._windows = 0
        self._audio_s = 0.0
        self._busy_s = 0.0

    async def embed(self, pcm16: bytes, sample_rate: int) -> SpeakerEmbeddings:
        """Embed overlapping windows of mono PCM16 audio at any sample rate.

        Args:
            pcm16: The audio (resampled to 16 kHz when at another rate).
            sample_rate: Its sample rate.

        Returns:
            One unit-length 256-d vector per window, with the window's times in the audio.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._embed, pcm16, sample_rate)

    def embed_wav(self, wav: np.ndarray) -> SpeakerEmbeddings:
        """Embed float samples at 16 kHz in the calling thread (see :meth:`embed`)."""
        opts: ResemblyzerOptions = self.options
        duration = len(wav) / SAMPLE_RATE
        if duration < min(opts.min_audio_s, opts.window_s):
            return SpeakerEmbeddings()
        wav = normalize_volume(np.asarray(wav, dtype=np.float32))
        window_samples = self.window_frames * HOP
        if len(wav) < window_samples:
            wav = np.pad(wav, (0, window_samples - len(wav)))  # as Resemblyzer pads a short utterance
        mel = mel_spectrogram(wav)
        starts = window_starts(len(wav) // HOP, self.window_frames, self.hop_frames)
        vectors = self._encoder(np.stack([mel[s : s + self.window_frames] for s in starts]))
        starts_s = [s / FRAMES_PER_S for s in starts]
        return SpeakerEmbeddings(
            starts_s=starts_s,
            ends_s=[min(s + opts.window_s, duration) for s in starts_s],
            vectors=vectors.tolist(),
        )

    def _embed(self, pcm16: bytes, sample_rate: int) -> SpeakerEmbeddings:
        started = time.perf_counter()
        wav = pcm16_to_float32(resample_pcm16(pcm16[: len(pcm16) // 2 * 2], sample_rate, SAMPLE_RATE))
        threads = self.options.blas_threads
        with self._blas.limit(limits=threads, user_api="blas") if self._blas and threads else nullcontext():
            result = self.embed_wav(wav)
        self._calls += 1
        self._windows += len(result.vectors)
        self._audio_s += len(wav) / SAMPLE_RATE
        self._busy_s += time.perf_counter() - started
        return result

    async def warmup(self) -> None:
        """Embed one second of quiet noise, so that numpy's first-call setup is not on a request."""
        noise = np.random.default_rng(0).normal(0.0, 0.01, SAMPLE_RATE).astype(np.float32)
        await asyncio.get_running_loop().run_in_executor(self._executor, self.embed_wav, noise)

    def stats(self) -> dict[str, Any]:
        """Calls, windows, seconds of audio embedded and seconds spent embedding."""
        return {
            "calls": self._calls,
            "windows": self._windows,
            "audio_s": round(self._audio_s, 3),
            "busy_s": round(self._busy_s, 3),
        }
