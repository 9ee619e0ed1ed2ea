"""NVIDIA NeMo speech synthesis: FastPitch + HiFi-GAN, the production GPU TTS.

The pair NVIDIA Riva serves for English: a FastPitch spectrogram generator
(``nvidia/tts_en_fastpitch``) and a HiFi-GAN vocoder (``nvidia/tts_hifigan``), both loaded
through ``nemo_toolkit`` by name or from local ``.nemo`` files. A phrase is synthesised one
sentence at a time (parse -> ``generate_spectrogram`` -> ``convert_spectrogram_to_audio``) on
a worker thread; each sentence's audio is streamed in ``chunk_ms`` pieces as soon as it is
done, and closing the stream (barge-in) stops the worker before the next sentence, as the
Piper backend does.

NeMo and torch are imported only in the constructor, so validating a config never needs them.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployments.backends.nemo_asr import DEVICE_PATTERN, load_nemo_model, resolve_device
from deployments.backends.sentence_tts import SentenceTTS

DEFAULT_MODEL = "nvidia/tts_en_fastpitch"
DEFAULT_VOCODER = "nvidia/tts_hifigan"

# A sentence ends at . ! or ? followed by white space; the punctuation stays with it.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class NemoTTSOptions(BaseModel):
    """Options of :class:`NemoTTS`.

    Attributes:
        vocoder: The vocoder, as a model spec like ``model`` (a NeMo name such as
            ``nvidia/tts_hifigan``, or a local ``.nemo`` file).
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:<n>``.
        chunk_ms: Length of the streamed audio chunks.
        speaker: Speaker index, for multi-speaker FastPitch models only.
        pace: Speaking rate (> 1 speaks faster, < 1 slower); FastPitch divides its predicted
            durations by it.
        normalize_text: Run the model's own text normaliser (numbers, abbreviations) before
            tokenising, when it has one (``nemo_text_processing`` with ``pynini`` installed).
    """

    model_config = ConfigDict(extra="forbid")

    vocoder: str = DEFAULT_VOCODER
    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    chunk_ms: int = Field(default=200, ge=10, le=10_000)
    speaker: int | None = Field(default=None, ge=0)
    pace: float = Field(default=1.0, ge=0.25, le=4.0)
    normalize_text: bool = True


class NemoTTS(SentenceTTS):
    """Synthesise speech with NeMo FastPitch + HiFi-GAN, streamed as PCM16 at the vocoder's rate.

    One model is one voice: ``synthesize`` accepts any ``voice`` (e.g. an OpenAI voice name
    sent by a client) and always speaks with this model (and ``speaker``).

    Args:
        model: The spectrogram generator: a NeMo name (default ``nvidia/tts_en_fastpitch``)
            or a local ``.nemo`` file (``bundled:<name>``, a path, or a directory holding one).
        options: See :class:`NemoTTSOptions` (``vocoder`` names the vocoder).
    """

    Options = NemoTTSOptions

    def __init__(self, model: str | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(model or DEFAULT_MODEL, options)
        from nemo.collections.tts.models.base import SpectrogramGenerator, Vocoder

        opts: NemoTTSOptions = self.options
        self.device = resolve_device(opts.device)
        self._generator = load_nemo_model(SpectrogramGenerator, self.model_spec, self.device).eval()
        self._vocoder = load_nemo_model(Vocoder, opts.vocoder, self.device).eval()
        self.sample_rate = vocoder_sample_rate(self._vocoder)
        generator_rate = self._generator.cfg.get("sample_rate")
        if generator_rate and int(generator_rate) != self.sample_rate:
            # A mel spectrogram made for one rate sounds wrong (pitch, speed) at another.
            raise ValueError(
                f"spectrogram model {self.model_spec!r} is made for {generator_rate} Hz but "
                f"vocoder {opts.vocoder!r} for {self.sample_rate} Hz"
            )
        self._init_streaming(opts.chunk_ms, thread_name="nemo-tts")

    def _sentence_audio(self, text: str) -> Generator[bytes, None, None]:
        """Sentences split at end punctuation, each synthesised when asked for."""
        for sentence in split_sentences(text):
            yield self._sentence_pcm16(sentence)

    def _sentence_pcm16(self, sentence: str) -> bytes:
        """One sentence through FastPitch and HiFi-GAN: mono PCM16 at :attr:`sample_rate`."""
        import numpy as np
        import torch

        opts: NemoTTSOptions = self.options
        with torch.inference_mode():
            tokens = self._generator.parse(sentence, normalize=opts.normalize_text)
            if tokens.numel() == 0:
                return b""
            # NeMo's typed methods take keyword arguments only.
            spectrogram = self._generator.generate_spectrogram(
                tokens=tokens, speaker=opts.speaker, pace=opts.pace
            )
            audio = self._vocoder.convert_spectrogram_to_audio(spec=spectrogram)
        samples = audio[0].float().cpu().numpy()
        return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def split_sentences(text: str) -> list[str]:
    """``text`` cut after each ``.``, ``!`` or ``?`` that white space follows; blanks dropped."""
    return [s for s in (part.strip() for part in _SENTENCE_END.split(text)) if s]


def vocoder_sample_rate(vocoder: Any) -> int:
    """The rate of the audio a NeMo vocoder makes (22050 Hz for ``nvidia/tts_hifigan``)."""
    rate = getattr(vocoder, "sample_rate", None) or vocoder.cfg.get("preprocessor", {}).get("sample_rate")
    if not rate:
        raise ValueError("the NeMo vocoder's config states no sample_rate")
    return int(rate)
