"""Backend registry: config names → ``"module:Class"``, imported lazily.

Importing a backend module must stay cheap (heavy engines are imported inside the
backend's constructor), so validating a config never pulls in an engine, and a CPU image
never imports NeMo or vLLM.
"""

from __future__ import annotations

import importlib
from typing import Any

BACKENDS: dict[str, dict[str, str]] = {
    "asr": {
        "faster_whisper": "deployments.backends.faster_whisper_asr:FasterWhisperASR",
        "nemo": "deployments.backends.nemo_asr:NemoASR",
        "fake": "deployments.backends.fake:FakeASR",
        "fake_batch": "deployments.backends.fake:FakeBatchASR",
    },
    "llm": {
        "llamacpp": "deployments.backends.llamacpp_llm:LlamaCppLLM",
        "router": "deployments.backends.llm_router:LLMRouter",
        "openai": "deployments.backends.openai_llm:OpenAILLM",
        "serve_llm": "deployments.backends.serve_llm:ServeLLM",
        "fake": "deployments.backends.fake:FakeLLM",
    },
    "tts": {
        "piper": "deployments.backends.piper_tts:PiperTTS",
        "nemo": "deployments.backends.nemo_tts:NemoTTS",
        "fake": "deployments.backends.fake:FakeTTS",
    },
    "speaker": {
        "resemblyzer": "deployments.backends.resemblyzer_speaker:ResemblyzerSpeaker",
        "nemo": "deployments.backends.nemo_speaker:NemoSpeaker",
        "fake": "deployments.backends.fake:FakeSpeaker",
    },
}


def known_backends(modality: str) -> set[str]:
    """Names accepted for ``modality`` (``asr``, ``llm`` or ``tts``)."""
    return set(BACKENDS[modality])


def backend_class(modality: str, name: str) -> Any:
    """Import and return the backend class registered as ``name`` for ``modality``.

    A backend may also be given as ``"package.module:Class"`` for out-of-tree engines.
    """
    target = BACKENDS[modality].get(name, name)
    if ":" not in target:
        raise KeyError(f"unknown {modality} backend {name!r}; known: {sorted(BACKENDS[modality])}")
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
