"""Piper (ONNX VITS) speech synthesis, the embedded CPU TTS.

Piper synthesises one sentence at a time. Each sentence's audio is cut into ``chunk_ms``
pieces and streamed as soon as that sentence is done, so the first audio of a long phrase
leaves before the rest is synthesised. When the consumer closes the stream (barge-in), the
worker stops before the next sentence.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployments.backends.sentence_tts import SentenceTTS
from deployments.models import model_file, resolve_model

DEFAULT_MODEL = "bundled:piper-joe-medium"


class PiperOptions(BaseModel):
    """Options of :class:`PiperTTS`; ``None`` keeps the value from the voice's config.

    Attributes:
        length_scale: Phoneme length (< 1 speaks faster, > 1 slower).
        noise_scale: Generator noise (voice variability).
        noise_w_scale: Phoneme width noise (rhythm variability).
        speaker_id: Speaker index, for multi-speaker voices only.
        chunk_ms: Length of the streamed audio chunks.
        num_threads: ONNX Runtime intra-op threads.
    """

    model_config = ConfigDict(extra="forbid")

    length_scale: float | None = Field(default=None, gt=0)
    noise_scale: float | None = Field(default=None, ge=0)
    noise_w_scale: float | None = Field(default=None, ge=0)
    speaker_id: int | None = Field(default=None, ge=0)
    chunk_ms: int = Field(default=200, ge=10, le=10_000)
    num_threads: int = Field(default=2, ge=1)


class PiperTTS(SentenceTTS):
    """Synthesise speech with a Piper voice, streamed in ``chunk_ms`` chunks at the voice's rate.

    One model is one voice (``en_US-joe-medium`` is ``"joe"``). ``synthesize`` accepts
    ``voice=None``, this voice's name, or any other name (e.g. an OpenAI voice such as
    ``"alloy"`` sent by a client) and always speaks with this model's voice.

    Args:
        model: ``bundled:<name>`` (default ``bundled:piper-joe-medium``), a local ``.onnx``
            voice (its ``.onnx.json`` config beside it) or a directory holding one, or a Hugging
            Face repo id whose snapshot holds exactly one voice.
        options: See :class:`PiperOptions`.
    """

    Options = PiperOptions

    def __init__(self, model: str | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(model or DEFAULT_MODEL, options)
        import onnxruntime
        from piper import PiperConfig, PiperVoice, SynthesisConfig

        opts: PiperOptions = self.options
        self.model_path = model_file(resolve_model(self.model_spec), "*.onnx")
        config = PiperConfig.from_dict(json.loads(Path(f"{self.model_path}.json").read_text("utf-8")))
        # Built here rather than with PiperVoice.load, which cannot bound ONNX Runtime's
        # threads: by default it takes every core of the node, not the replica's share.
        session_options = onnxruntime.SessionOptions()
        session_options.intra_op_num_threads = opts.num_threads
        session_options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(self.model_path), sess_options=session_options, providers=["CPUExecutionProvider"]
        )
        self._voice = PiperVoice(session=session, config=config)
        self._syn_config = SynthesisConfig(
            speaker_id=opts.speaker_id,
            length_scale=opts.length_scale,
            noise_scale=opts.noise_scale,
            noise_w_scale=opts.noise_w_scale,
        )
        self.sample_rate: int = config.sample_rate
        self.voice_name = _voice_name(self.model_path)
        self._init_streaming(opts.chunk_ms, thread_name="piper")

    def _sentence_audio(self, text: str) -> Generator[bytes, None, None]:
        """Piper's own sentence split; each sentence is synthesised when asked for."""
        sentences = self._voice.synthesize(text, self._syn_config)
        try:
            for sentence in sentences:
                yield sentence.audio_int16_bytes
        finally:
            sentences.close()  # type: ignore[attr-defined]


def _voice_name(model_path: Path) -> str:
    """``en_US-joe-medium.onnx`` -> ``joe`` (Piper's ``<lang>-<name>-<quality>`` naming)."""
    parts = model_path.name.removesuffix(".onnx").split("-")
    return parts[1] if len(parts) == 3 else model_path.stem
