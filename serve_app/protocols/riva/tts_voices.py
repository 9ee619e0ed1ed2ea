"""The voices voxray's Riva synthesis service offers, named and listed the way Riva does.

A TTS deployment runs one model, and one model is one voice (Piper's ``en_US-joe-medium`` is
``joe``), spoken whatever voice name the deployment is handed. So the service offers exactly
one voice: the config's default voice (``session.voice``), in the language of the TTS model.

Riva names a voice ``<model voice_name>.<subvoice>`` (``English-US.Female-1``): its config
lists each model with ``voice_name`` and ``subvoices`` (``Female-1:0,Male-1:1``), and
``talk.py --list-voices`` joins the two. voxray's voice is listed as ``English-US.joe``, and a
request may name it that way, as ``joe``, or as ``English-US``; an empty ``voice_name`` means
the default voice, as a Riva server picks the first voice of the requested language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

from deployments.model_catalog import BUNDLED_MODELS
from deployments.models import BUNDLED_PREFIX
from serve_app.config import AppConfig
from serve_app.protocols.grpc_api.proto import riva_tts_pb2
from serve_app.protocols.grpc_api.status import invalid_argument

DEFAULT_LANGUAGE = "en-US"
"""The language of a TTS model whose files do not say (NeMo's English FastPitch, the fakes)."""

# Riva's model-level voice names put the language's English name before the region.
_LANGUAGE_NAMES = {
    "ar": "Arabic",
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "hi": "Hindi",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "nl": "Dutch",
    "pl": "Polish",
    "pt": "Portuguese",
    "ru": "Russian",
    "zh": "Mandarin",
}
ECHO_CHARS = 60
"""Most of a client's value quoted back in an error: status details travel in trailers (8 KiB)."""
_PIPER_LANGUAGE = re.compile(r"(?:^|[/\\])([a-z]{2,3})_([A-Z]{2})-[^/\\]*$")  # en_US-joe-medium.onnx


@dataclass(frozen=True)
class RivaVoice:
    """One voice of the synthesis service.

    Attributes:
        name: voxray's name for it, handed to the TTS deployment (``joe``).
        language_code: What it speaks, as BCP-47 (``en-US``).
        family: Riva's model-level ``voice_name`` (``English-US``).
        model_name: The TTS model it comes from, as Riva lists models.
    """

    name: str
    language_code: str
    family: str
    model_name: str

    @property
    def full_name(self) -> str:
        """The name ``talk.py --list-voices`` prints and ``--voice`` takes: ``English-US.joe``."""
        return f"{self.family}.{self.name}"

    def speaks(self, language_code: str) -> bool:
        """Whether a request's ``language_code`` (``en-US``, ``en_us`` or plain ``en``) fits this voice."""
        wanted, own = _normal_language(language_code), _normal_language(self.language_code)
        return wanted == own or wanted == own.partition("-")[0]

    def config(self) -> riva_tts_pb2.RivaSynthesisConfigResponse.Config:
        """The ``GetRivaSynthesisConfig`` entry for this voice, with the parameters Riva's CLIs read."""
        parameters = {
            "type": "online",
            "language_code": self.language_code,
            "voice_name": self.family,
            "subvoices": f"{self.name}:0",
        }
        return riva_tts_pb2.RivaSynthesisConfigResponse.Config(
            model_name=self.model_name, parameters=parameters
        )


def _normal_language(code: str) -> str:
    return code.strip().replace("_", "-").lower()


def _model_language(spec: str | None) -> str:
    """The language of a TTS model, from Piper's ``<lang>_<REGION>-<name>-<quality>`` file naming."""
    if not spec:
        return DEFAULT_LANGUAGE
    if spec.startswith(BUNDLED_PREFIX):
        bundled = BUNDLED_MODELS.get(spec.removeprefix(BUNDLED_PREFIX))
        spec = bundled.entry if bundled is not None and bundled.entry else spec
    found = _PIPER_LANGUAGE.search(spec)
    return f"{found.group(1)}-{found.group(2)}" if found else DEFAULT_LANGUAGE


def _model_name(config: AppConfig) -> str:
    spec = config.tts.model
    if not spec:
        return f"voxray-{config.tts.backend}"
    name = spec.removeprefix(BUNDLED_PREFIX)
    return f"voxray-{config.tts.backend}-{PurePath(name).name.removesuffix('.onnx')}"


def voices(config: AppConfig) -> list[RivaVoice]:
    """The service's voices, the default first (today: only the default)."""
    language = _model_language(config.tts.model)
    primary, _, region = language.partition("-")
    family = f"{_LANGUAGE_NAMES.get(primary, primary)}-{region}" if region else language
    return [RivaVoice(config.session.voice, language, family, _model_name(config))]


def _listing(options: list[RivaVoice]) -> str:
    return ", ".join(f"{voice.full_name} ({voice.language_code})" for voice in options)


def pick_voice(config: AppConfig, voice_name: str, language_code: str) -> RivaVoice:
    """The voice a request names, checked against its language.

    Args:
        config: The app config.
        voice_name: The request's ``voice_name``: empty for the first voice of the language,
            else a full name (``English-US.joe``), a voice (``joe``) or a family (``English-US``),
            in any case.
        language_code: The request's ``language_code``; empty for the voice's own.

    Raises:
        GrpcAbort: ``INVALID_ARGUMENT`` for an unknown voice (the message lists the voices) or a
            language the voice does not speak.
    """
    options = voices(config)
    wanted = voice_name.strip().lower()
    if not wanted:
        fitting = [voice for voice in options if not language_code or voice.speaks(language_code)]
        if not fitting:
            raise invalid_argument(
                f"No voice for language_code {language_code[:ECHO_CHARS]!r}; this server's voices: "
                f"{_listing(options)}."
            )
        return fitting[0]
    named = [
        voice
        for voice in options
        if wanted in (voice.full_name.lower(), voice.name.lower(), voice.family.lower())
    ]
    if not named:
        raise invalid_argument(
            f"Unknown voice_name {voice_name[:ECHO_CHARS]!r}; this server's voices: {_listing(options)} "
            "(or leave voice_name empty for the default)."
        )
    voice = named[0]
    if language_code and not voice.speaks(language_code):
        raise invalid_argument(
            f"Voice {voice.full_name} speaks {voice.language_code}, not language_code "
            f"{language_code[:ECHO_CHARS]!r}; "
            f"send {voice.language_code!r} or leave language_code empty."
        )
    return voice


def synthesis_config(
    config: AppConfig, request: riva_tts_pb2.RivaSynthesisConfigRequest
) -> riva_tts_pb2.RivaSynthesisConfigResponse:
    """``GetRivaSynthesisConfig``: every voice, or only those of ``request.model_name`` when given."""
    entries = [voice.config() for voice in voices(config)]
    if request.model_name:
        entries = [entry for entry in entries if entry.model_name == request.model_name]
    return riva_tts_pb2.RivaSynthesisConfigResponse(model_config=entries)
