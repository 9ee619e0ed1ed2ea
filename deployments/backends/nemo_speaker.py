"""NVIDIA NeMo speaker embeddings (TitaNet), the GPU speaker backend for live diarization.

The production model is TitaNet (``nvidia/speakerverification_en_titanet_large``, 192-d
embeddings), loaded through ``EncDecSpeakerLabelModel``; any NeMo speaker-label model
(ECAPA-TDNN, SpeakerNet) loads the same way. The audio is cut into the same overlapping
windows as the CPU backend (:func:`~deployments.backends.speaker_windows.window_layout`),
and all windows of a call go through the model together, ``max_batch_size`` at a time: one
padded forward pass each.

NeMo and torch are imported only in the constructor, so importing this module on a CPU
image without NeMo stays cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deployments.backends.nemo_asr import DEVICE_PATTERN, load_nemo_model, resolve_device
from deployments.backends.speaker_windows import WindowedSpeakerBackend, window_layout
from deployments.types import SpeakerEmbeddings

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


class NemoSpeaker(WindowedSpeakerBackend):
    """Speaker embeddings of overlapping windows with a NeMo speaker model.

    Args:
        model: A NeMo model name (default ``nvidia/speakerverification_en_titanet_large``; a
            Hugging Face repo id or an NGC name such as ``titanet_large``, downloaded by NeMo),
            or a local ``.nemo`` file (``bundled:<name>``, a path, or a directory holding one).
        options: See :class:`NemoSpeakerOptions`.
    """

    Options = NemoSpeakerOptions
    thread_name = "nemo-speaker"
    warmup_s = 2.0  # on CUDA this also picks the convolution kernels

    def __init__(self, model: str | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(model or DEFAULT_MODEL, options)
        from nemo.collections.asr.models import EncDecSpeakerLabelModel

        opts: NemoSpeakerOptions = self.options
        self.device = resolve_device(opts.device)
        self._model = load_nemo_model(EncDecSpeakerLabelModel, self.model_spec, self.device)
        self._model.eval()
        self.sample_rate = int(self._model.cfg.preprocessor.get("sample_rate", 16_000))
        self._forward_passes = 0

    def embed_audio(self, audio: np.ndarray) -> SpeakerEmbeddings:
        """Embed float samples at the model's rate in the calling thread (see :meth:`embed`)."""
        opts: NemoSpeakerOptions = self.options
        duration = len(audio) / self.sample_rate
        if self._too_short(duration):
            return SpeakerEmbeddings()
        step = round(_FRAME_S * self.sample_rate)
        hop = max(1, round(opts.hop_s / _FRAME_S))
        starts, window_steps = window_layout(
            len(audio) // step, round(opts.window_s / _FRAME_S), hop, pad_short=False
        )
        width = window_steps * step
        windows = np.stack([audio[s * step : s * step + width] for s in starts])
        vectors = np.concatenate(
            [
                self._forward(windows[i : i + opts.max_batch_size])
                for i in range(0, len(windows), opts.max_batch_size)
            ]
        )
        return self._embeddings(starts, width / self.sample_rate, duration, vectors)

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

    def stats(self) -> dict[str, Any]:
        """Calls, windows, forward passes and seconds spent embedding."""
        return {
            "calls": self._calls,
            "windows": self._windows,
            "forward_passes": self._forward_passes,
            "busy_s": round(self._busy_s, 3),
        }
