"""The real Speechmatics RT clients, unmodified, against voxray's ``/v2`` with a fake ASR.

A real Serve app with scripted fake models, no speaker model, and API keys. Each client
(``speechmatics-python``'s CLI and ``speechmatics-rt``'s ``AsyncClient``, in their own venvs:
``tests/speechmatics_clients.py``) sends a spoken question as a WAV file and as raw PCM, and
must end cleanly with exit 0 after receiving the fake ASR's words.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.wer import normalize_words
from serve_app.engine.audio.pcm import duration_s, read_wav
from tests.conftest import deployed_app
from tests.speechmatics_clients import (
    DEFAULT_AUTH_TOKEN,
    SmClientResult,
    require_sm_clients,
    run_sm_cli,
    run_sm_sdk,
)

APP = "smrtapp"
SCRIPTED = "What is the capital of France?"
ARGS: dict[str, Any] = {
    "asr": {"backend": "fake", "options": {"transcripts": [SCRIPTED]}},
    # The fake says its whole sentence for any window of audio, so words made final early (at a
    # sentence end it says) would come again from the next window: finals at utterance ends only.
    "transcription": {"early_finals": False},
    "llm": {"backend": "fake"},
    "tts": {"backend": "fake"},
    "speaker": None,  # words are labelled UU, after a Warning
    "auth": {"api_keys": [DEFAULT_AUTH_TOKEN], "api_keys_env": None},
}
TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def rt_url(serve_instance: str) -> Iterator[str]:
    require_sm_clients()
    with deployed_app(APP, ARGS) as prefix:
        yield f"{serve_instance}{prefix}/v2"


def assert_transcribed(result: SmClientResult, wav: Path) -> None:
    """Exit 0, the scripted words in order, and word times within the audio."""
    result.assert_ok()
    assert normalize_words(result.text) == normalize_words(SCRIPTED), result.describe()
    result.assert_word_times(duration_s(*read_wav(wav)))
    assert result.speakers <= {"UU"}, result.describe()  # no speaker model in this app


@pytest.mark.parametrize("raw", [False, True], ids=["wav-file", "raw-pcm"])
def test_the_cli_transcribes_and_exits_cleanly(rt_url: str, question_wav: Path, raw: bool) -> None:
    # Partials are not asserted here: a 2 s clip sent faster than real time may be decoded
    # whole before a partial is due (tests/models/test_speechmatics_clients.py checks them).
    assert_transcribed(run_sm_cli(rt_url, question_wav, raw=raw, timeout_s=TIMEOUT_S), question_wav)


@pytest.mark.parametrize("raw", [False, True], ids=["wav-file", "raw-pcm"])
def test_the_sdk_transcribes_and_exits_cleanly(rt_url: str, question_wav: Path, raw: bool) -> None:
    result = run_sm_sdk(f"{rt_url}/en", question_wav, raw=raw, timeout_s=TIMEOUT_S)
    assert_transcribed(result, question_wav)
    assert result.summary["end_of_transcript"] and not result.summary["errors"], result.describe()
    assert result.summary["session_id"], result.describe()  # RecognitionStarted's id


def test_the_cli_without_partials_or_diarization_gets_only_finals(rt_url: str, question_wav: Path) -> None:
    result = run_sm_cli(rt_url, question_wav, diarization=False, partials=False, timeout_s=TIMEOUT_S)
    assert_transcribed(result, question_wav)
    assert result.partial_count == 0, result.describe()


def test_a_wrong_key_is_refused_with_an_error(rt_url: str, question_wav: Path) -> None:
    cli = run_sm_cli(rt_url, question_wav, auth_token="not-the-key", timeout_s=30)
    assert not cli.timed_out and cli.returncode != 0, cli.describe()
    assert not cli.words, cli.describe()
    sdk = run_sm_sdk(f"{rt_url}/en", question_wav, auth_token="not-the-key", timeout_s=30)
    assert not sdk.timed_out and sdk.returncode != 0, sdk.describe()
    assert not sdk.words, sdk.describe()


@pytest.mark.parametrize("client", ["cli", "sdk"])
def test_a_live_stream_gets_partials_before_its_finals(rt_url: str, question_wav: Path, client: str) -> None:
    if client == "cli":
        result = run_sm_cli(rt_url, question_wav, realtime=True, timeout_s=TIMEOUT_S)
    else:
        result = run_sm_sdk(f"{rt_url}/en", question_wav, realtime=True, timeout_s=TIMEOUT_S)
    assert_transcribed(result, question_wav)
    transcripts = ("AddPartialTranscript", "AddTranscript")
    kinds = [m["message"] for m in result.messages if m["message"] in transcripts]
    assert "AddPartialTranscript" in kinds, result.describe()
    assert kinds.index("AddPartialTranscript") < kinds.index("AddTranscript"), result.describe()
