"""A Riva ``RecognitionConfig``, checked, as live transcription settings; and the model listing.

Riva's clients name models and languages the way Riva deploys them: one model per language
and mode, listed by ``GetRivaSpeechRecognitionConfig`` with ``parameters["type"]`` ``online``
(``transcribe_file.py --list-models``) or ``offline`` (``transcribe_file_offline.py``). voxray
serves one ASR model in both modes, so it lists it twice, named Riva's way
(``<model>-<language>-asr-streaming`` / ``-asr-offline``); a ``RecognitionConfig.model`` may
name either, the bare model, or nothing.

Fields voxray does not act on (``profanity_filter``, ``speech_contexts``,
``custom_configuration``, ``verbatim_transcripts``: Whisper writes numbers its own way) are
accepted and ignored, as Riva ignores what a model does not support.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

import grpc

from serve_app.config import AppConfig
from serve_app.engine.audio.vad import MAX_SILENCE_DURATION_MS
from serve_app.engine.live.models import ASR_RATE
from serve_app.engine.live.settings import LiveSettings
from serve_app.protocols.grpc_api.proto import riva_asr_pb2
from serve_app.protocols.grpc_api.status import GrpcAbort, invalid_argument
from serve_app.protocols.riva.audio_in import AudioSpec, audio_spec

_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")
_DETECT = ("multi", "auto")  # Riva's multilingual models take "multi"
_REGION = {"en": "en-US"}  # how Riva spells the server's default language in its listing
MIN_SILENCE_MS = 100


@dataclass(frozen=True)
class RivaOptions:
    """What one recognition asked for.

    Attributes:
        audio: The audio the config declares.
        language: The language for the ASR model (ISO 639-1, ``None``: detect it).
        punctuation: ``enable_automatic_punctuation``: keep Whisper's punctuation.
        word_offsets: Send ``words`` with times (diarization implies it: tags ride on words).
        diarization: Tag each word with its speaker.
        max_speakers: ``max_speaker_count`` (``None``: no limit).
        silence_ms: ``endpointing_config.stop_history``: the silence that ends an utterance.
    """

    audio: AudioSpec
    language: str | None
    punctuation: bool
    word_offsets: bool
    diarization: bool
    max_speakers: int | None
    silence_ms: int | None

    def live_settings(self, app: AppConfig, partials: bool) -> LiveSettings:
        """The live engine's settings (audio reaches it as PCM16 at ``ASR_RATE``)."""
        return LiveSettings(
            input_rate=ASR_RATE,
            language=self.language,
            partials=partials,
            max_delay_ms=app.transcription.max_delay_s * 1000,
            diarization=self.diarization,
            max_speakers=self.max_speakers,
            silence_ms=self.silence_ms,
        )


def model_slug(app: AppConfig) -> str:
    """The served ASR model's short name (``bundled:whisper-base`` → ``whisper-base``)."""
    spec = app.asr.model or app.asr.backend
    name = PurePath(spec.split(":", 1)[-1].rstrip("/")).name or app.asr.backend
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def listed_language(app: AppConfig) -> str:
    """The server's default language as a BCP-47 tag, as Riva lists it (``multi``: detected)."""
    language = app.asr.language
    return "multi" if not language else _REGION.get(language, language)


def model_names(app: AppConfig) -> dict[str, str]:
    """The names the served model is listed under, by ``type`` (``online``, ``offline``)."""
    base = f"{model_slug(app)}-{listed_language(app)}-asr"
    return {"online": f"{base}-streaming", "offline": f"{base}-offline"}


def recognition_config(
    app: AppConfig, model_name: str = ""
) -> riva_asr_pb2.RivaSpeechRecognitionConfigResponse:
    """``GetRivaSpeechRecognitionConfig``: the served ASR model, once per mode.

    Args:
        app: The application config.
        model_name: Only this model (Riva's request field); empty lists all.
    """
    speaker = app.speaker is not None
    configs = []
    for kind, name in model_names(app).items():
        if model_name and model_name not in (name, model_slug(app)):
            continue
        parameters = {
            "type": kind,
            "language_code": listed_language(app),
            "streaming": "true" if kind == "online" else "false",
            "offline": "true" if kind == "offline" else "false",
            "sample_rate": str(ASR_RATE),
            "model_family": app.asr.backend,
            "model": app.asr.model or "",
            "automatic_punctuation": "true",
            "word_time_offsets": "true",
            "speaker_diarization": "true" if speaker else "false",
        }
        configs.append(
            riva_asr_pb2.RivaSpeechRecognitionConfigResponse.Config(model_name=name, parameters=parameters)
        )
    return riva_asr_pb2.RivaSpeechRecognitionConfigResponse(model_config=configs)


def engine_language(language_code: str, app: AppConfig) -> str | None:
    """The ASR model's language for a BCP-47 ``language_code`` (``en-US`` → ``en``).

    Empty means the server's default (``asr.language``); ``multi`` or ``auto`` detects it.

    Raises:
        GrpcAbort: ``INVALID_ARGUMENT`` for a code that is not a language tag.
    """
    code = language_code.strip()
    if not code:
        return app.asr.language
    if code.lower() in _DETECT:
        return None
    if not _LANGUAGE_TAG.match(code):
        raise invalid_argument(
            f"language_code {code[:40]!r} is not a BCP-47 language tag; send e.g. 'en-US', 'multi', "
            f"or nothing for the server's default ({listed_language(app)})."
        )
    return re.split(r"[-_]", code, maxsplit=1)[0].lower()


def recognition_options(
    config: riva_asr_pb2.RecognitionConfig, app: AppConfig, has_speaker_model: bool
) -> RivaOptions:
    """Check a ``RecognitionConfig`` and say what it asks for.

    Args:
        config: The client's config.
        app: The application config (default language, served model).
        has_speaker_model: Whether this server can tell speakers apart.

    Raises:
        GrpcAbort: ``INVALID_ARGUMENT`` for a field voxray cannot honour (what to send
            instead is in the message); ``FAILED_PRECONDITION`` for speaker diarization on a
            server without a speaker model.
    """
    spec = audio_spec(config.encoding, config.sample_rate_hertz, config.audio_channel_count)
    if config.enable_separate_recognition_per_channel and spec.channels > 1:
        raise invalid_argument(
            "enable_separate_recognition_per_channel is not supported: voxray mixes the channels down "
            "and recognizes one; turn it off, or send each channel in a stream of its own."
        )
    if config.max_alternatives < 0:
        raise invalid_argument(f"max_alternatives {config.max_alternatives} is negative; send 1 (or 0).")
    names = model_names(app)
    if config.model and config.model not in (*names.values(), model_slug(app)):
        raise invalid_argument(
            f"model {config.model[:80]!r} is not served here; send one of {sorted(names.values())} "
            "or nothing (GetRivaSpeechRecognitionConfig lists them)."
        )
    diarization = config.diarization_config.enable_speaker_diarization
    max_count = config.diarization_config.max_speaker_count
    if max_count < 0:
        raise invalid_argument(
            f"diarization_config.max_speaker_count {max_count} is negative; send 1 or more."
        )
    if diarization and not has_speaker_model:
        raise GrpcAbort(
            grpc.StatusCode.FAILED_PRECONDITION,
            "Speaker diarization needs a speaker model, and this server has none (config 'speaker'); "
            "turn off diarization_config.enable_speaker_diarization.",
        )
    silence_ms = None
    if config.HasField("endpointing_config") and config.endpointing_config.stop_history > 0:
        silence_ms = min(max(config.endpointing_config.stop_history, MIN_SILENCE_MS), MAX_SILENCE_DURATION_MS)
    return RivaOptions(
        audio=spec,
        language=engine_language(config.language_code, app),
        punctuation=config.enable_automatic_punctuation,
        word_offsets=config.enable_word_time_offsets or diarization,
        diarization=diarization,
        max_speakers=max_count or None,
        silence_ms=silence_ms,
    )
