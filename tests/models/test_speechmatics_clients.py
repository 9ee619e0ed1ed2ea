"""The real Speechmatics RT clients, unmodified, transcribing two-speaker dialogues on the embedded models.

The real Serve app of ``configs/local.yaml`` (Whisper base on CPU, Silero VAD, the Resemblyzer
speaker model) at ``/v2``; synthetic two-speaker dialogues with known words, times and speakers
(``bench.dialogues``); each client (``tests/speechmatics_clients.py``) sends the WAV file with
diarization and partials on. Scored with ``bench.transcription_score`` (the benchmark's own
WER and speaker matching). int8 inference differs between CPUs, so no single word is asserted:
WER over several dialogues has a bound, and the speaker checks are about structure (more than
one label, labels that follow the reference speakers better than chance).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from bench.dialogues import Dialogue, build_dialogue, default_data_dir
from bench.transcription_score import DialogueScore, LoggedMessage, score_dialogue
from tests.conftest import deployed_app
from tests.speechmatics_clients import SmClientResult, require_sm_clients, run_sm_cli, run_sm_sdk

pytestmark = pytest.mark.models

APP = "smlocal"
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "local.yaml"
DIALOGUES = (0, 1)
"""Two-speaker dialogues of the benchmark set: ~30 s and ~36 s, four synthetic voices."""
STREAMED_LIVE = (False, True)
"""Per dialogue: the first goes as a WAV file at once, the second as raw audio at its own pace."""
MAX_WER = 0.25
"""Over both dialogues, per client. Measured 24/201 = 11.9 % with both clients (11/91 as a file,
13/110 live): Whisper base int8 on the synthetic voices; the bound leaves room for other CPUs."""
MIN_SPEAKER_ACCURACY = 0.8
"""Matched words whose label maps to the right speaker, over both dialogues. Measured 0.975 and
0.98 (DER 0.035 and 0.003); chance is about 0.5."""
TIMEOUT_S = 540.0

RunClient = Callable[..., SmClientResult]
CLIENTS: dict[str, tuple[RunClient, str]] = {
    # The CLI appends /en to the path itself; the SDK connects to the URL as given.
    "cli": (run_sm_cli, ""),
    "sdk": (run_sm_sdk, "/en"),
}


@pytest.fixture(scope="module")
def rt_url(serve_instance: str) -> Iterator[str]:
    require_sm_clients()
    args = yaml.safe_load(CONFIG.read_text())["applications"][0]["args"]
    with deployed_app(APP, args) as prefix:
        yield f"{serve_instance}{prefix}/v2"


@pytest.fixture(scope="module")
def dialogues() -> list[Dialogue]:
    """The dialogues, built once into the benchmark's cache (reused when already there)."""
    return [build_dialogue(index, 2, default_data_dir()) for index in DIALOGUES]


def score(dialogue: Dialogue, result: SmClientResult) -> DialogueScore:
    """The benchmark's figures of one run; arrival times are unknown here (latencies unused)."""
    return score_dialogue(dialogue, [LoggedMessage(t_s=0.0, message=m) for m in result.messages])


@pytest.mark.parametrize("client", list(CLIENTS))
def test_a_client_transcribes_two_speaker_dialogues(
    rt_url: str, dialogues: list[Dialogue], client: str
) -> None:
    run, path_suffix = CLIENTS[client]
    scores = []
    for dialogue, realtime in zip(dialogues, STREAMED_LIVE, strict=True):
        result = run(rt_url + path_suffix, dialogue.wav_path, realtime=realtime, timeout_s=TIMEOUT_S)
        result.assert_ok()
        assert result.words, result.describe()
        result.assert_word_times(dialogue.duration_s)
        labels = result.speakers - {"UU"}
        assert len(labels) > 1, result.describe()
        # Partials come while an utterance is still being heard: a file sent at once may be
        # decoded whole before any is due, a live stream always has them.
        assert result.partial_count > 0 or not realtime, result.describe()
        scores.append(score(dialogue, result))
        figures = scores[-1]
        mode = "live" if realtime else "file"
        print(
            f"{client} {dialogue.name} {mode}: WER {figures.word_errors}/{figures.ref_words}, speakers "
            f"{sorted(labels)}, speaker accuracy {figures.speaker_accuracy}, DER {figures.der}, "
            f"{result.partial_count} partials, {result.elapsed_s:.1f} s"
        )
    wer = sum(s.word_errors for s in scores) / sum(s.ref_words for s in scores)
    assert wer <= MAX_WER, [s.model_dump(exclude={"partial_latency_ms", "final_latency_ms"}) for s in scores]
    accuracy = sum(s.speaker_correct for s in scores) / max(1, sum(s.speaker_matched for s in scores))
    assert accuracy >= MIN_SPEAKER_ACCURACY, [(s.name, s.speaker_accuracy) for s in scores]
