"""The real Speechmatics Flow CLI (``speechmatics-flow`` 0.1.2, unmodified) against voxray's ``/v1/flow``.

A real Serve app with scripted fake models and API keys; the CLI runs in its own venv with
real PyAudio and PortAudio on a silent ALSA device (``tests/flow_cli.py``), a spoken question
piped on its stdin, exactly as a user would run it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import deployed_app
from tests.flow_cli import DEFAULT_AUTH_TOKEN, require_flow_cli, run_flow_cli

APP = "flowapp"
ARGS: dict[str, Any] = {
    "asr": {"backend": "fake", "options": {"transcripts": ["What is the capital of France?"]}},
    "llm": {"backend": "fake", "options": {"reply": "The capital of France is Paris.", "tokens_per_s": 50}},
    "tts": {"backend": "fake", "options": {"realtime_factor": 0.2}},
    "auth": {"api_keys": [DEFAULT_AUTH_TOKEN], "api_keys_env": None},
}


@pytest.fixture(scope="module")
def flow_url(serve_instance: str) -> Iterator[str]:
    require_flow_cli()
    with deployed_app(APP, ARGS) as prefix:
        yield f"{serve_instance}{prefix}/v1/flow"


def test_the_flow_cli_converses_and_exits_cleanly(flow_url: str, question_wav: Path) -> None:
    result = run_flow_cli(flow_url, question_wav)
    result.assert_ok()
    assert [m["metadata"]["transcript"] for m in result.of("AddTranscript")] == [
        "What is the capital of France?"
    ]
    spoken = " ".join(m["content"] for m in result.of("ResponseStarted"))
    assert spoken == "The capital of France is Paris."
    assert len(result.played_audio) > 16_000  # the CLI played over half a second of the answer
    assert "Timeout waiting for ConversationEnded" not in result.stderr


def test_the_flow_cli_plain_output_and_an_assistant_template(flow_url: str, question_wav: Path) -> None:
    result = run_flow_cli(flow_url, question_wav, print_json=False, extra_args=["--assistant", "amelia"])
    result.assert_ok()
    lines = result.stdout.splitlines()
    # The template's greeting starts; the question (streamed faster than real time) interrupts it.
    assert lines[0] == "Hi, I'm Amelia."
    assert "What is the capital of France?" in lines
    assert "The capital of France is Paris." in lines


def test_a_wrong_key_is_refused_with_a_flow_error(flow_url: str, question_wav: Path) -> None:
    result = run_flow_cli(flow_url, question_wav, auth_token="not-the-key", timeout_s=30)
    assert not result.timed_out, result.describe()
    assert result.returncode != 0
    assert "invalid_api_key" in result.stdout + result.stderr
