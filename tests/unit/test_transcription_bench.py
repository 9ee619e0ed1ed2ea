"""Scoring of the live-transcription benchmark on small hand-made message logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection

from bench.dialogues import Dialogue, RefWord
from bench.transcription_score import (
    DER_COLLAR_S,
    HypWord,
    LoggedMessage,
    best_mapping,
    diarization_error_rate,
    distribution,
    first_appearance_latencies,
    hyp_words,
    match_finals,
    score_dialogue,
    speaker_accuracy,
    turn_final_latencies,
)


def _message(kind: str, t_s: float, words: list[tuple[str, float, float, str]]) -> LoggedMessage:
    """A Speechmatics ``AddTranscript`` / ``AddPartialTranscript`` (format 2.9) arriving at ``t_s``."""
    results = [
        {
            "type": "word",
            "start_time": start,
            "end_time": end,
            "alternatives": [{"content": text, "confidence": 0.9, "speaker": speaker}],
        }
        for text, start, end, speaker in words
    ]
    if words:
        results.append(
            {
                "type": "punctuation",
                "start_time": words[-1][2],
                "end_time": words[-1][2],
                "is_eos": True,
                "alternatives": [{"content": ".", "confidence": 1.0, "speaker": words[-1][3]}],
            }
        )
    transcript = " ".join(w[0] for w in words)
    return LoggedMessage(
        t_s=t_s,
        message={
            "message": kind,
            "format": "2.9",
            "metadata": {
                "start_time": words[0][1] if words else 0.0,
                "end_time": words[-1][2] if words else 0.0,
                "transcript": transcript,
            },
            "results": results,
        },
    )


def _ref(text: str, start: float, end: float, speaker: int, turn: int) -> RefWord:
    return RefWord(text=text, start_s=start, end_s=end, speaker=speaker, turn=turn)


# Two turns: speaker 0 says "hello there" (0.5-1.2), speaker 1 "good morning" (1.6-2.4).
REFS = [
    _ref("hello", 0.5, 0.8, 0, 0),
    _ref("there", 0.8, 1.2, 0, 0),
    _ref("good", 1.6, 1.9, 1, 1),
    _ref("morning", 1.9, 2.4, 1, 1),
]
LOG = [
    LoggedMessage(t_s=0.0, message={"message": "RecognitionStarted", "id": "x"}),
    _message("AddPartialTranscript", 1.0, [("Hello", 0.52, 0.8, "S1")]),
    _message("AddPartialTranscript", 1.5, [("Hello", 0.52, 0.8, "S1"), ("there", 0.8, 1.15, "S1")]),
    _message("AddTranscript", 1.7, [("Hello,", 0.52, 0.8, "S2"), ("there", 0.8, 1.15, "S2")]),
    _message("AddPartialTranscript", 2.3, [("Good", 1.62, 1.9, "S1")]),
    _message("AddTranscript", 2.9, [("Good", 1.62, 1.9, "S1"), ("mourning", 1.9, 2.35, "S1")]),
    LoggedMessage(t_s=3.0, message={"message": "EndOfTranscript"}),
]


def test_transcript_words_are_read_from_partials_and_finals() -> None:
    words = hyp_words(LOG)
    assert [w.text for w in words] == [
        "hello",
        "hello",
        "there",
        "hello",
        "there",
        "good",
        "good",
        "mourning",
    ]
    assert [w.final for w in words] == [False, False, False, True, True, False, True, True]
    finals = hyp_words(LOG, final_only=True)
    assert [(w.text, w.speaker, w.arrival_s) for w in finals][:2] == [
        ("hello", "S2", 1.7),
        ("there", "S2", 1.7),
    ]


def test_partial_latency_is_the_first_appearance() -> None:
    latencies = first_appearance_latencies(REFS, hyp_words(LOG))
    assert latencies == pytest.approx([1.0 - 0.8, 1.5 - 1.2, 2.3 - 1.9, None])


def test_a_word_far_from_its_time_does_not_match() -> None:
    far = [_message("AddTranscript", 5.0, [("hello", 3.0, 3.3, "S1")])]
    assert first_appearance_latencies(REFS[:1], hyp_words(far)) == [None]


def test_final_latency_per_turn_with_a_misheard_last_word() -> None:
    finals = hyp_words(LOG, final_only=True)
    matched = match_finals(REFS, finals)
    assert matched == [0, 1, 2, None]
    latencies, stand_ins = turn_final_latencies(REFS, finals, matched)
    # Turn 0's last word "there" is final at 1.7; turn 1's "morning" was heard as "mourning",
    # so the final that reached its end (2.9) stands in.
    assert latencies == pytest.approx([1.7 - 1.2, 2.9 - 2.4])
    assert stand_ins == 1


def test_each_final_word_matches_one_reference_word() -> None:
    refs = [_ref("yes", 0.0, 0.2, 0, 0), _ref("yes", 0.3, 0.5, 0, 0)]
    finals = hyp_words([_message("AddTranscript", 1.0, [("yes", 0.31, 0.5, "S1")])], final_only=True)
    # The first "yes" could match too, but the second is nearer in time.
    assert match_finals(refs, finals) == [None, 0]


def test_best_mapping_is_one_to_one() -> None:
    counts = {(0, "S1"): 2.0, (0, "S2"): 5.0, (1, "S2"): 6.0, (1, "S3"): 1.0}
    # Greedy per speaker would give S2 to both; the best one-to-one total is S1->0, S2->1.
    assert best_mapping(counts) == {"S1": 0, "S2": 1}


def test_speaker_accuracy_under_the_best_mapping() -> None:
    finals = hyp_words(LOG, final_only=True)
    matched = match_finals(REFS, finals)
    # Labels are swapped (speaker 0 is S2, speaker 1 is S1): all three matched words right.
    assert speaker_accuracy(REFS, finals, matched) == (3, 3)
    same_label = [h.model_copy(update={"speaker": "S1"}) for h in finals]
    assert speaker_accuracy(REFS, same_label, matched) == (2, 3)


def _finals(spans: list[tuple[float, float, str]]) -> list[HypWord]:
    return [
        HypWord(text="w", start_s=s, end_s=e, speaker=label, final=True, arrival_s=0.0)
        for s, e, label in spans
    ]


def test_der_is_zero_for_a_perfect_hypothesis_and_counts_errors() -> None:
    refs = [_ref("a", 0.0, 2.0, 0, 0), _ref("b", 3.0, 5.0, 1, 1)]
    assert diarization_error_rate(refs, _finals([(0.0, 2.0, "S7"), (3.0, 5.0, "S3")])) == pytest.approx(0.0)
    # Everything missed.
    assert diarization_error_rate(refs, []) == pytest.approx(1.0)
    # One label for both: the second region is confusion. Scored speech per region is its
    # length less a collar at each end.
    scored = 2.0 - 2 * DER_COLLAR_S
    one_label = diarization_error_rate(refs, _finals([(0.0, 2.0, "S1"), (3.0, 5.0, "S1")]))
    assert one_label == pytest.approx(scored / (2 * scored), abs=0.02)
    # A false alarm in silence far from any boundary counts too.
    extra = diarization_error_rate(refs, _finals([(0.0, 2.0, "S1"), (3.0, 5.0, "S2"), (7.0, 8.0, "S1")]))
    assert extra == pytest.approx(1.0 / (2 * scored), abs=0.02)


def test_der_without_scored_speech_is_none() -> None:
    assert diarization_error_rate([], []) is None


def test_score_dialogue_puts_it_together() -> None:
    dialogue = Dialogue(name="d", wav_path=Path("d.wav"), words=REFS, speakers=2)
    score = score_dialogue(dialogue, LOG)
    assert score.partial_latency_ms == pytest.approx([200.0, 300.0, 400.0])
    assert score.words_never_seen == 1
    assert score.final_latency_ms == pytest.approx([500.0, 500.0])
    assert (score.word_errors, score.ref_words) == (1, 4)
    assert score.speaker_accuracy == pytest.approx(1.0)
    assert score.der is not None and score.der < 0.2


def test_distribution() -> None:
    d = distribution([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (d.n, d.p50, d.p90) == (5, 3.0, 4.6)
    assert distribution([]).p50 is None


class FakeSpeechmaticsServer:
    """A test fake of the ``/v2`` endpoint: acknowledges every frame and, at ``EndOfStream``,
    sends one final transcript of given words (with speaker labels) and ``EndOfTranscript``."""

    def __init__(self, words: list[tuple[str, float, float, str]]) -> None:
        self.words = words
        self.frames = 0
        self.start: dict[str, Any] = {}

    async def handle(self, ws: ServerConnection) -> None:
        import json

        async for raw in ws:
            if isinstance(raw, bytes):
                self.frames += 1
                await ws.send(json.dumps({"message": "AudioAdded", "seq_no": self.frames}))
                continue
            message = json.loads(raw)
            if message["message"] == "StartRecognition":
                self.start = message
                await ws.send(json.dumps({"message": "RecognitionStarted", "id": "fake"}))
            elif message["message"] == "EndOfStream":
                final = _message("AddTranscript", 0.0, self.words).message
                await ws.send(json.dumps(final))
                await ws.send(json.dumps({"message": "EndOfTranscript"}))


async def test_the_client_streams_a_dialogue_and_records_every_message(tmp_path: Path) -> None:
    import websockets

    from bench.transcription import stream_dialogue
    from serve_app.engine.audio.pcm import write_wav

    wav = tmp_path / "d.wav"
    write_wav(wav, bytes(2 * 16_000 * 3 // 4), 16_000)  # 0.75 s: 8 frames of 100 ms, the last short
    dialogue = Dialogue(name="d", wav_path=wav, words=REFS, speakers=2)
    fake = FakeSpeechmaticsServer(
        [("hello", 0.5, 0.8, "S1"), ("there", 0.8, 1.2, "S1"), ("good", 1.6, 1.9, "S2")]
    )
    async with websockets.serve(fake.handle, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        log = await stream_dialogue(f"ws://127.0.0.1:{port}/v2", dialogue, frame_ms=100, timeout_s=10)
    assert log.error is None
    assert fake.frames == 8
    config = fake.start["transcription_config"]
    assert config["diarization"] == "speaker" and config["enable_partials"] is True
    assert config["speaker_diarization_config"] == {"max_speakers": 2}
    kinds = [m.message["message"] for m in log.messages]
    assert kinds == ["AudioAdded"] * 8 + ["AddTranscript", "EndOfTranscript"]
    assert len(log.ack_lag_s) == 8
    # Frames are paced by the wall clock: the final arrives after the audio's 0.75 s.
    assert log.messages[-2].t_s >= 0.75
    score = score_dialogue(dialogue, log.messages)
    assert (score.word_errors, score.speaker_correct, score.speaker_matched) == (1, 3, 3)


async def test_the_client_reports_a_refusal(tmp_path: Path) -> None:
    import json

    import websockets

    from bench.transcription import stream_dialogue
    from serve_app.engine.audio.pcm import write_wav

    async def refuse(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(json.dumps({"message": "Error", "type": "not_authorised", "reason": "no"}))

    wav = tmp_path / "d.wav"
    write_wav(wav, bytes(3200), 16_000)
    dialogue = Dialogue(name="d", wav_path=wav, words=REFS, speakers=2)
    async with websockets.serve(refuse, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        log = await stream_dialogue(f"ws://127.0.0.1:{port}/v2", dialogue, timeout_s=5)
    assert log.error is not None and "not_authorised" in log.error
