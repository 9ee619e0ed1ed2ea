"""NVIDIA NeMo speaker embeddings (TitaNet), the GPU speaker backend for live diarization.

The production model is TitaNet (``nvidia/speakerverification_en_titanet_large``, 192-d
embeddings), loaded through ``EncDecSpeakerLabelModel``; any NeMo speaker-label model
(ECAPA-TDNN, SpeakerNet) loads the same way. The audio is cut into the same overlapping
windows as the CPU backend (:func:`~deployments.backends.resemblyzer_speaker.window_starts`),
and all windows of a call go through the model together, ``max_batch_size`` at a time: one
padded forward pass each.

NeMo and torch are imported only in the constructor, so importing this module on a CPU
image without NeMo stays cheap.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deployments.backends.base import Backend
from deployments.backends.nemo_asr import DEVICE_PATTERN, load_nemo_model, resolve_device
from deployments.backends.resemblyzer_speaker import window_starts
from deployments.types import SpeakerEmbeddings
from serve_app.engine.audio.pcm import pcm16_to_float32, resample_pcm16

DEFAULT_MODEL = "nvidia/speakerverification_en_titanet_large"
_FRAME_S = 0.01  # window positions are counted in 10 ms steps, as on the CPU backend


class NemoSpeakerOptions(BaseModel):
    """Options of :class:`NemoSpeaker`.

    Attributes:
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:<n>``.
        window_s: Length of each embedded window. 1.5 s is the longest scale of NeMo's own
            diarization recipes (TitaNet embeds any length; longer is steadier but blurs
            speaker changes).
        hop_s: Distance between window starts (as on the CPU backend: about four windows
            over each moment of speech).
        min_audio_s: Audio shorter than one window gets a single window over all of it when
            it is at least this long; shorter audio gets none.
        max_batch_size: Most windows in one forward pass.
    """

    model_config = ConfigDict(extra="forbid")

    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    window_s: float = Field(default=1.5, ge=0.5, le=5.0)
    hop_s: float = Field(default=0.4, ge=0.05, le=5.0)
    min_audio_s: float = Field(default=0.5, ge=0.1, le=5.0)
    max_batch_size: int = Field(default=64, ge=1, le=1024)


class NemoSpeaker(Backend):
    """Speaker embeddings of overlapping windows with a NeMo speaker model.

    Args:
        model: A NeMo model name (default ``nvidia/speakerverification_en_titanet_large``; a
            Hugging Face repo id or an NGC name such as ``titanet_large``, downloaded by NeMo),
            or a local ``.nemo`` file (``bundled:<name>``, a path, or a directory holding one).
        options: See :class:`NemoSpeakerOptions`.
    """

    Options = NemoSpeakerOptions

    def __init__(self, model: str | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(model or DEFAULT_MODEL, options)
        from nemo.collections.asr.models import EncDecSpeakerLabelModel

        opts: NemoSpeakerOptions = self.options
        self.device = resolve_device(opts.device)
        self._model = load_nemo_model(EncDecSpeakerLabelModel, self.model_spec, self.device)
        self._model.eval()
        self.sample_rate: int = int(self._model.cfg.preprocessor.get("sample_rate", 16_000))
        # One worker: one forward pass at a time on the device; a call's windows are its batch.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nemo-speaker")
        self._calls = 0
        self._windows = 0
        self._forward_passes = 0
        self._busy_s = 0.0

    async def embed(self, pcm16: bytes, sample_rate: int) -> SpeakerEmbeddings:
        """Embed overlapping windows of mono PCM16 audio at any sample rate.

        Returns:
            One unit-length vector per window, with the window's times in the audio.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._embed, pcm16, sample_rate)

    def _embed(self, pcm16: bytes, sample_rate: int) -> SpeakerEmbeddings:
        started = time.perf_counter()
        pcm16 = pcm16[: len(pcm16) // 2 * 2]
        audio = pcm16_to_float32(resample_pcm16(pcm16, sample_rate, self.sample_rate))
        result = self.embed_audio(audio)
        self._calls += 1
        self._windows += len(result.vectors)
        self._busy_s += time.perf_counter() - started
        return result

    def embed_audio(self, audio: np.ndarray) -> SpeakerEmbeddings:
        """Embed float samples at the model's rate in the calling thread (see :meth:`embed`)."""
        opts: NemoSpeakerOptions = self.options
        duration = len(audio) / self.sample_rate
        if duration < min(opts.min_audio_s, opts.window_s):
            return SpeakerEmbeddings()
        step = round(_FRAME_S * self.sample_rate)
        window_steps = round(opts.window_s / _FRAME_S)
        starts = window_starts(len(audio) // step, window_steps, max(1, round(opts.hop_s / _FRAME_S)))
        if not starts:  # shorter than a window: one window over all of it, as long as it is
            starts, window_steps = [0], len(audio) // step
        width = window_steps * step
        windows = np.stack([audio[s * step : s * step + width] for s in starts])
        vectors = np.concatenate(
            [
                self._forward(windows[i : i + opts.max_batch_size])
                for i in range(0, len(windows), opts.max_batch_size)
            ]
        )
        starts_s = [s * _FRAME_S for s in starts]
        return SpeakerEmbeddings(
            starts_s=starts_s,
            ends_s=[min(s + width / self.sample_rate, duration) for s in starts_s],
            vectors=vectors.tolist(),
        )

    def _forward(self, windows: np.ndarray) -> np.ndarray:
        """One forward pass over equal-length windows; L2-normalised embeddings."""
        import torch

        with torch.inference_mode():
            signal = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(self.device)
            lengths = torch.full((len(windows),), windows.shape[1], dtype=torch.long, device=self.device)
            _, embeddings = self._model.forward(input_signal=signal, input_signal_length=lengths)
            embeddings = torch.nn.functional.normalize(embeddings.float(), dim=1)
        self._forward_passes += 1
        return embeddings.cpu().numpy()

    async def warmup(self) -> None:
        """Embed two seconds of quiet noise (on CUDA this also picks the convolution kernels)."""
        noise = np.random.default_rng(0).normal(0.0, 0.01, 2 * self.sample_rate).astype(np.float32)
        await asyncio.get_running_loop().run_in_executor(self._executor, self.embed_audio, noise)

    def stats(self) -> dict[str, Any]:
        """Calls, windows, forward passes and seconds spent embedding."""
        return {
            "calls": self._calls,
            "windows": self._windows,
            "forward_passes": self._forward_passes,
            "busy_s": round(self._busy_s, 3),
        }
