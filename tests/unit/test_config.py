"""The application args are validated at start-up, with the bad field's name in the error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from serve_app.app import ConfigError, build_app, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid_serve_configs(path: Path) -> None:
    from ray.serve.schema import ServeDeploySchema

    document = yaml.safe_load(path.read_text())
    schema = ServeDeploySchema.model_validate(document)
    app = schema.applications[0]
    assert app.import_path == "serve_app.app:build_app"
    load_config(app.args)
    assert {d["name"] for d in document["applications"][0]["deployments"]} == {
        "Ingress",
        "ASR",
        "LLM",
        "TTS",
        "Speaker",
    }


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_serve_every_grpc_service_on_riva_port(path: Path) -> None:
    from serve_app.protocols.grpc_api import DEFAULT_GRPC_PORT, SERVICER_FUNCTIONS

    grpc_options = yaml.safe_load(path.read_text())["grpc_options"]
    assert grpc_options["port"] == DEFAULT_GRPC_PORT
    assert tuple(grpc_options["grpc_servicer_functions"]) == SERVICER_FUNCTIONS


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"asr": {"modle": "x"}}, "asr.modle"),
        ({"llm": {"backend": "nope"}}, "llm"),
        ({"llm": {"backend": "llamacpp", "options": {"n_thread": 2}}}, "n_thread"),
        ({"tts": {"backend": "fake", "options": {"first_chunk_ms": -1}}}, "first_chunk_ms"),
        ({"session": {"turn_detection": {"threshold": 2}}}, "session.turn_detection.threshold"),
        ({"limits": {"max_message_bytes": 1}}, "limits.max_message_bytes"),
        ({"unknown_section": {}}, "unknown_section"),
    ],
)
def test_a_wrong_field_fails_with_its_name(args: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_app(args)
    assert field in str(info.value)


def test_defaults_are_the_embedded_cpu_models() -> None:
    config = load_config({})
    assert (config.asr.backend, config.asr.model) == ("faster_whisper", "bundled:whisper-base")
    assert (config.llm.backend, config.llm.model) == (
        "llamacpp",
        "bundled:qwen2.5-coder-0.5b-instruct-q4_k_m",
    )
    assert (config.tts.backend, config.tts.model) == ("piper", "bundled:piper-joe-medium")
    assert config.vad.model == "bundled:silero-vad"


def test_model_specs_accept_local_paths_and_repo_ids() -> None:
    config = load_config(
        {
            "asr": {"model": "/models/whisper-small-ct2"},
            "llm": {
                "backend": "openai",
                "model": "meta-llama/Llama-3.2-3B-Instruct",
                "options": {"base_url": "http://127.0.0.1:8001/v1"},
            },
            "tts": {"model": "rhasspy/piper-voices"},
        }
    )
    assert config.asr.model == "/models/whisper-small-ct2"
    assert config.llm.options["base_url"] == "http://127.0.0.1:8001/v1"
