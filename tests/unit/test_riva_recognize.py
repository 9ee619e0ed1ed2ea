"""Riva ``Recognize`` (a whole recording, one result per utterance), the model listing, and how
words are shown: real Silero VAD on Piper speech, fake ASR and speaker models."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from serve_app.engine.audio.pcm import resample_pcm16
from serve_app.engine.audio.vad import SileroVAD
from serve_app.engine.events import TimedWord
from serve_app.protocols.grpc_api.proto import riva_asr_pb2 as asr
from serve_app.protocols.grpc_api.proto import riva_common_pb2
from serve_app.protocols.grpc_api.status import GrpcAbort
from serve_app.protocols.riva.recognition import recognition_config, recognize
from serve_app.protocols.riva.results import shown_words
from tests.rt_driver import rt_config
from tests.unit.test_riva_recognition import RATE, models, recognition


@pytest.fixture(scope="module")
def vad(silero_model_path: Any) -> SileroVAD:
    return SileroVAD(silero_model_path)


@pytest.fixture(scope="module")
def two_utterances(make_utterance: Any) -> bytes:
    """Two sentences at 16 kHz, each followed by a second of silence."""
    first = make_utterance("Please book a table for two.", rate=RATE, lead_silence_s=0.3, trail_silence_s=1.0)
    return first + make_utterance("Tonight at eight, if possible.", rate=RATE, lead_silence_s=0.0)


async def test_recognize_gives_one_result_per_utterance(vad: SileroVAD, two_utterances: bytes) -> None:
    request = asr.RecognizeRequest(
        config=recognition(
            sample_rate_hertz=8000,
            enable_automatic_punctuation=True,
            diarization_config={"enable_speaker_diarization": True},
        ),
        audio=resample_pcm16(two_utterances, RATE, 8000),
        id=riva_common_pb2.RequestId(value="offline-1"),
    )
    response = await recognize(rt_config(), models(["Words of an utterance."]), vad.stream(), request)
    assert response.id.value == "offline-1"
    assert [r.alternatives[0].transcript for r in response.results] == ["Words of an utterance. "] * 2
    words = [w for r in response.results for w in r.alternatives[0].words]
    assert [w.word for w in words][:4] == ["Words", "of", "an", "utterance."]
    assert all(w.speaker_tag >= 1 for w in words) and words[0].start_time < words[-1].end_time
    ends = [r.audio_processed for r in response.results]
    assert ends == sorted(ends) and ends[-1] <= len(two_utterances) / 2 / RATE


async def test_recognize_refuses_overlong_audio(vad: SileroVAD) -> None:
    config = rt_config()
    config.limits.max_input_buffer_s = 2.0
    request = asr.RecognizeRequest(config=recognition(), audio=bytes(RATE * 2 * 3))
    with pytest.raises(GrpcAbort) as refused:
        await recognize(config, models(["x"]), vad.stream(), request)
    assert (
        refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        and "longer than 2 s" in refused.value.details
    )


def test_the_model_listing_as_riva_clients_read_it() -> None:
    listing = recognition_config(rt_config())
    kinds = {c.parameters["type"]: c for c in listing.model_config}
    assert set(kinds) == {"online", "offline"}
    online = kinds["online"]
    assert online.model_name == "fake-en-US-asr-streaming"
    assert online.parameters["language_code"] == "en-US" and online.parameters["streaming"] == "true"
    assert kinds["offline"].parameters["streaming"] == "false"
    only = recognition_config(rt_config(), online.model_name)
    assert [c.model_name for c in only.model_config] == [online.model_name]
    assert not recognition_config(rt_config(), "no-such-model").model_config


@pytest.mark.parametrize(
    ("punctuation", "want"),
    [(False, ["It's", "six", "o'clock"]), (True, ["It's", "six", "o'clock."])],
)
def test_a_contraction_split_by_word_times_is_one_word(punctuation: bool, want: list[str]) -> None:
    # What faster-whisper's word list says for "It's six o'clock.".
    words = [
        TimedWord(text, i * 100.0, i * 100.0 + 90)
        for i, text in enumerate(["It", "'s", "six", "o", "'clock", "."])
    ]
    shown = shown_words(words, punctuation)
    assert [w.text for w in shown] == want
    assert (shown[0].start_ms, shown[0].end_ms, shown[-1].end_ms) == (
        0.0,
        190.0,
        590.0 if punctuation else 490.0,
    )
