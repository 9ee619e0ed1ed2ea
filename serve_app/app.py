"""``build_app``: the Serve config's ``import_path`` target (``serve_app.app:build_app``)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from ray.serve import Application

from deployments.asr import ASRDeployment
from deployments.llm import LLMDeployment
from deployments.llm_engines import build_engine_deployments
from deployments.speaker import SpeakerDeployment
from deployments.tts import TTSDeployment
from serve_app.config import AppConfig
from serve_app.server.access_registry import AccessRegistry
from serve_app.server.ingress import Ingress


class ConfigError(ValueError):
    """The application arguments are invalid; the message names each bad field."""


def load_config(args: dict[str, Any] | None) -> AppConfig:
    """Validate the Serve config's ``args`` block.

    Raises:
        ConfigError: with one line per bad field, e.g. ``asr.options.beam_sise: Extra inputs
            are not permitted``.
    """
    try:
        return AppConfig.model_validate(args or {})
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(part) for part in error['loc']) or '(top level)'}: {error['msg']}"
            for error in exc.errors()
        ]
        raise ConfigError("invalid voxray application args:\n" + "\n".join(lines)) from None


def bind_llm(config: AppConfig) -> Application:
    """The LLM deployment, with the app's vLLM engine deployments bound into it.

    Binding the engines here is what makes Serve deploy them in this app; the ``serve_llm``
    backend then reaches each by its deployment name.
    """
    engines = build_engine_deployments(config.llm_engines) if config.llm_engines else {}
    return LLMDeployment.bind(config.llm.model_dump(), engines)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Compose the deployments: Ingress → (ASR, LLM → vLLM engines, TTS, AccessRegistry, Speaker).

    Args:
        args: The ``args`` of the Serve config, validated by ``AppConfig``.

    Returns:
        The bound application for ``serve run`` / ``serve.run``.
    """
    config = load_config(args)
    asr = ASRDeployment.bind(config.asr.model_dump())
    llm = bind_llm(config)
    tts = TTSDeployment.bind(config.tts.model_dump())
    speaker = SpeakerDeployment.bind(config.speaker.model_dump()) if config.speaker is not None else None
    return Ingress.bind(config.model_dump(), asr, llm, tts, AccessRegistry.bind(), speaker)
