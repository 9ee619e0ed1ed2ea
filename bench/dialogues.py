"""Synthetic dialogues with known words, word times and speakers: the live-transcription test set.

Each dialogue is planned from its index and speaker count alone (a seeded RNG picks the voices,
the sentences, the pauses and the overlaps), so the same index always gives the same dialogue.
Every turn is spoken by one of several distinct synthetic voices (espeak-ng variants, flite
voices and the project's own Piper voice), trimmed, brought to the same loudness and
force-aligned to its known text with Whisper's cross-attention alignment (faster-whisper's
``find_alignment``), so every reference word has a start and end time in the mixed audio.

``python -m bench.dialogues --out DIR`` builds the whole set; files already in DIR are reused.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from bench.wer import normalize_words
from serve_app.engine.audio.pcm import read_wav, resample_pcm16, trim_silence, write_wav

RATE = 16_000
LEAD_S = 0.5  # silence before the first turn
TAIL_S = 1.5  # silence after the last one, so a server can end the last utterance
PAUSE_S = (0.2, 1.2)
OVERLAP_S = (0.1, 0.4)
OVERLAP_PROBABILITY = 0.3
TURNS = (6, 10)
TARGET_RMS_DBFS = -22.0  # every clip's loudness, over its voiced frames
PEAK_LIMIT = 0.9

SENTENCES = (
    "Did you manage to get some sleep last night?",
    "I think the train leaves a little after lunch.",
    "We should probably book the restaurant before Friday.",
    "My sister is coming over for dinner tomorrow.",
    "The weather has been really strange this week.",
    "Could you send me the notes from the meeting?",
    "I left my umbrella at the office again.",
    "Let's take the long way home through the park.",
    "Have you tried the new bakery on the corner?",
    "I need to call the plumber about the kitchen sink.",
    "That movie was much better than I expected.",
    "We could go hiking if the rain stops.",
    "Remember to water the plants while I am away.",
    "The children loved the museum on Saturday.",
    "I'm not sure the printer is working properly.",
    "She said the package would arrive this afternoon.",
    "Do you want coffee or tea with your breakfast?",
    "The traffic on the bridge was terrible this morning.",
    "I finally finished reading that long novel.",
    "Our neighbors are painting their house blue.",
    "It's been ages since we visited your parents.",
    "The doctor told me to drink more water.",
    "I will pick up some bread on the way back.",
    "Can we move the call to later in the day?",
    "The garden looks lovely now that the roses are out.",
    "He has been learning to play the guitar.",
    "I think we need a bigger table for the party.",
    "The shop closes early on Sundays.",
    "Let me know when you are ready to leave.",
    "We ran out of milk again this morning.",
    "That sounds like a great idea to me.",
    "I could not find my keys anywhere yesterday.",
    "The new manager seems friendly and very organized.",
    "Maybe we should ask someone for directions.",
    "The soup needs a little more salt.",
    "I am going to the gym after work today.",
    "Our flight was delayed for most of the afternoon.",
    "Would you like to join us for lunch on Thursday?",
    "The library has a lovely reading room upstairs.",
    "I have to finish this report before the weekend.",
    "The cat keeps sleeping on my laptop.",
    "We watched the sunset from the top of the hill.",
    "Please close the window, it is getting cold.",
    "The kids want to go to the beach again.",
    "I heard the concert was sold out in a few minutes.",
    "Tell me more about your trip to the mountains.",
    "The bus was packed with students this morning.",
    "I would rather stay in and cook something simple.",
    "Thanks for helping me move the sofa last week.",
    "The meeting ran over by half an hour.",
)


class VoiceSpec(BaseModel):
    """One synthetic voice.

    Attributes:
        name: A short unique label.
        engine: Which synthesiser speaks it.
        voice: The engine's voice name (espeak-ng ``lang+variant``, a flite voice, or a Piper spec).
        family: Engine and perceived gender; a dialogue never uses two voices of one family,
            so its speakers are clearly different.
        speed: espeak-ng words per minute (ignored by the other engines).
        pitch: espeak-ng pitch 0-99 (ignored by the other engines).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    engine: Literal["espeak", "flite", "piper"]
    voice: str
    family: str
    speed: int = 165
    pitch: int = 50


VOICES: tuple[VoiceSpec, ...] = (
    VoiceSpec(name="piper-joe", engine="piper", voice="bundled:piper-joe-medium", family="piper-m"),
    VoiceSpec(name="flite-slt", engine="flite", voice="slt", family="flite-f"),
    VoiceSpec(name="flite-awb", engine="flite", voice="awb", family="flite-m"),
    VoiceSpec(name="flite-rms", engine="flite", voice="rms", family="flite-m"),
    VoiceSpec(name="flite-kal16", engine="flite", voice="kal16", family="flite-m"),
    VoiceSpec(name="espeak-us-f3", engine="espeak", voice="en-us+f3", family="espeak-f", speed=160, pitch=60),
    VoiceSpec(name="espeak-en-f4", engine="espeak", voice="en+f4", family="espeak-f", speed=170, pitch=70),
    VoiceSpec(name="espeak-gb-m1", engine="espeak", voice="en-gb+m1", family="espeak-m", speed=160, pitch=40),
    VoiceSpec(name="espeak-us-m3", engine="espeak", voice="en-us+m3", family="espeak-m", speed=175, pitch=30),
)


class PlannedTurn(BaseModel):
    """One turn of a dialogue plan, before any audio exists.

    Attributes:
        speaker: 0-based speaker index.
        voice: The speaker's voice.
        text: What is said (one or two sentences).
        gap_s: Time from the end of the previous turn to the start of this one; negative for
            an overlap, 0 for the first turn.
    """

    speaker: int
    voice: VoiceSpec
    text: str
    gap_s: float


class DialoguePlan(BaseModel):
    """The deterministic plan of one dialogue."""

    name: str
    speakers: int
    turns: list[PlannedTurn]

    def digest(self) -> str:
        """A short hash of the plan: a cached dialogue built from another plan is rebuilt."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


class RefWord(BaseModel):
    """A reference word: punctuation-free lowercase spelling, time span in the audio, speaker."""

    text: str
    start_s: float
    end_s: float
    speaker: int
    turn: int = 0


class Dialogue(BaseModel):
    """A built dialogue: its WAV file and its reference words in time order."""

    name: str
    sample_rate: int = RATE
    wav_path: Path
    words: list[RefWord]
    speakers: int
    duration_s: float = 0.0
    voices: list[str] = []
    plan_digest: str = ""


class AlignedWord(BaseModel):
    """A word of one clip, times relative to the clip's start."""

    text: str
    start_s: float
    end_s: float


class Clip(BaseModel):
    """One synthesised, trimmed, loudness-equalised turn and its aligned words."""

    pcm16: bytes
    words: list[AlignedWord]


def plan_dialogue(index: int, speakers: int) -> DialoguePlan:
    """Plan dialogue ``index`` with ``speakers`` speakers; the same arguments give the same plan.

    Args:
        index: Dialogue number (any non-negative integer).
        speakers: 2 or 3.

    Returns:
        Voices, turns, sentences, pauses and overlaps.
    """
    if speakers not in (2, 3):
        raise ValueError(f"speakers must be 2 or 3, got {speakers}")
    rng = random.Random(f"voxray-dialogue-{speakers}-{index}")
    voices = _pick_voices(rng, speakers)
    n_turns = rng.randint(*TURNS)
    # Everyone speaks early on; after that any speaker but the one who just spoke.
    order = rng.sample(range(speakers), speakers)
    while len(order) < n_turns:
        order.append(rng.choice([s for s in range(speakers) if s != order[-1]]))
    turns = []
    for i, speaker in enumerate(order):
        text = " ".join(rng.sample(SENTENCES, rng.choice((1, 1, 2))))
        if i == 0:
            gap = 0.0
        elif rng.random() < OVERLAP_PROBABILITY:
            gap = -round(rng.uniform(*OVERLAP_S), 3)
        else:
            gap = round(rng.uniform(*PAUSE_S), 3)
        turns.append(PlannedTurn(speaker=speaker, voice=voices[speaker], text=text, gap_s=gap))
    return DialoguePlan(name=f"dialogue-{speakers}spk-{index:03d}", speakers=speakers, turns=turns)


def _pick_voices(rng: random.Random, speakers: int) -> list[VoiceSpec]:
    families = rng.sample(sorted({v.family for v in VOICES}), speakers)
    return [rng.choice([v for v in VOICES if v.family == family]) for family in families]


def mix_dialogue(plan: DialoguePlan, clips: list[Clip]) -> tuple[bytes, list[RefWord]]:
    """Place each turn's clip on one timeline and offset its words.

    Args:
        plan: The dialogue's plan.
        clips: One clip per planned turn, in order, at :data:`RATE`.

    Returns:
        The mixed PCM16 audio (lead and tail silence included) and its words sorted by start.
    """
    if len(clips) != len(plan.turns):
        raise ValueError(f"{len(plan.turns)} turns but {len(clips)} clips")
    starts, cursor = [], LEAD_S
    for turn, clip in zip(plan.turns, clips, strict=True):
        start = max(LEAD_S, cursor + turn.gap_s)
        starts.append(start)
        cursor = start + len(clip.pcm16) / 2 / RATE
    total = np.zeros(round((cursor + TAIL_S) * RATE), dtype=np.float32)
    words: list[RefWord] = []
    for i, (turn, clip, start) in enumerate(zip(plan.turns, clips, starts, strict=True)):
        samples = np.frombuffer(clip.pcm16, dtype="<i2").astype(np.float32) / 32768.0
        offset = round(start * RATE)
        total[offset : offset + len(samples)] += samples
        words += [
            RefWord(
                text=w.text,
                start_s=round(start + w.start_s, 3),
                end_s=round(start + w.end_s, 3),
                speaker=turn.speaker,
                turn=i,
            )
            for w in clip.words
        ]
    pcm = (np.clip(total, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
    return pcm, sorted(words, key=lambda w: (w.start_s, w.end_s))


def equalise_loudness(pcm16: bytes, rate: int = RATE) -> bytes:
    """Scale a clip so its voiced 20 ms frames average :data:`TARGET_RMS_DBFS`, peaks limited."""
    a = np.frombuffer(pcm16, dtype="<i2").astype(np.float64) / 32768.0
    frame = rate // 50
    n = len(a) // frame
    if n == 0 or not a.any():
        return pcm16
    rms = np.sqrt((a[: n * frame].reshape(n, frame) ** 2).mean(axis=1))
    voiced = rms[rms > rms.max() * 0.1]  # frames within 20 dB of the loudest
    gain = 10 ** (TARGET_RMS_DBFS / 20) / np.sqrt((voiced**2).mean())
    gain = min(gain, PEAK_LIMIT / np.abs(a).max())
    return (a * gain * 32767.0).round().astype("<i2").tobytes()


class Synthesizer:
    """Speaks text with any :class:`VoiceSpec` and returns PCM16 at :data:`RATE`."""

    def __init__(self) -> None:
        self._piper: dict[str, Any] = {}

    def speak(self, voice: VoiceSpec, text: str) -> bytes:
        """Synthesise ``text``, trimmed of leading and trailing silence, at :data:`RATE`."""
        if voice.engine == "piper":
            pcm, rate = self._speak_piper(voice.voice, text)
        else:
            with tempfile.TemporaryDirectory(prefix="voxray-tts-") as tmp:
                wav = Path(tmp) / "clip.wav"
                if voice.engine == "espeak":
                    cmd = ["espeak-ng", "-v", voice.voice, "-s", str(voice.speed), "-p", str(voice.pitch)]
                    cmd += ["-w", str(wav), text]
                else:
                    cmd = ["flite", "-voice", voice.voice, "-t", text, "-o", str(wav)]
                subprocess.run(cmd, check=True, capture_output=True, timeout=120)
                pcm, rate = read_wav(wav)
        return trim_silence(resample_pcm16(pcm, rate, RATE), RATE)

    def _speak_piper(self, spec: str, text: str) -> tuple[bytes, int]:
        from deployments.backends.piper_tts import PiperTTS

        tts = self._piper.get(spec)
        if tts is None:  # no noise: the same text always gives the same audio
            tts = self._piper[spec] = PiperTTS(spec, {"noise_scale": 0.0, "noise_w_scale": 0.0})

        async def collect() -> bytes:
            return b"".join([chunk.pcm16 async for chunk in tts.synthesize(text, None)])

        return asyncio.run(collect()), tts.sample_rate


class WordAligner:
    """Forced alignment of a known text to its clip with Whisper's cross-attention heads.

    Args:
        model: A faster-whisper model spec (default the bundled Whisper base).
    """

    def __init__(self, model: str = "bundled:whisper-base") -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        from deployments.models import resolve_model

        self._model = WhisperModel(
            str(resolve_model(model)), device="cpu", compute_type="int8", cpu_threads=2
        )
        multilingual = self._model.model.is_multilingual
        self._tokenizer = Tokenizer(self._model.hf_tokenizer, multilingual, task="transcribe", language="en")

    def align(self, pcm16: bytes, text: str) -> list[AlignedWord]:
        """Word times of ``text`` in ``pcm16`` (16 kHz, at most 30 s), punctuation-free words.

        Raises:
            ValueError: The aligned words are not exactly the words of ``text``.
        """
        audio = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
        # faster-whisper drops the STFT's padding frame too; the encoder sees the 30 s window.
        features = self._model.feature_extractor(audio)[:, :-1]
        frames = features.shape[-1]
        padded = np.zeros((features.shape[0], 3000), dtype=np.float32)
        padded[:, : min(frames, 3000)] = features[:, :3000]
        encoded = self._model.encode(padded)
        tokens = self._tokenizer.encode(" " + text.strip())
        aligned = self._model.find_alignment(self._tokenizer, [tokens], encoded, frames)[0]
        words: list[AlignedWord] = []
        for item in aligned:
            parts = normalize_words(item["word"])
            # A token group such as "o'clock," is one word; a rare split shares its span.
            step = (item["end"] - item["start"]) / max(len(parts), 1)
            for k, part in enumerate(parts):
                start = item["start"] + k * step
                words.append(AlignedWord(text=part, start_s=float(start), end_s=float(start + step)))
        if [w.text for w in words] != normalize_words(text):
            raise ValueError(f"alignment lost words of {text!r}: {[w.text for w in words]}")
        return words


def build_dialogue(
    index: int,
    speakers: int,
    out_dir: Path,
    synthesizer: Synthesizer | None = None,
    aligner: WordAligner | None = None,
) -> Dialogue:
    """Build (or reuse) dialogue ``index`` with ``speakers`` speakers in ``out_dir``.

    Args:
        index: Dialogue number.
        speakers: 2 or 3.
        out_dir: Where the WAV and its JSON live; an existing pair from the same plan is reused.
        synthesizer: Shared between dialogues to load Piper once; made when needed.
        aligner: Shared between dialogues to load Whisper once; made when needed.

    Returns:
        The dialogue.
    """
    plan = plan_dialogue(index, speakers)
    out_dir.mkdir(parents=True, exist_ok=True)
    wav_path, json_path = out_dir / f"{plan.name}.wav", out_dir / f"{plan.name}.json"
    if wav_path.exists() and json_path.exists():
        cached = Dialogue.model_validate_json(json_path.read_text("utf-8"))
        if cached.plan_digest == plan.digest():
            return cached.model_copy(update={"wav_path": wav_path})
    synthesizer = synthesizer or Synthesizer()
    aligner = aligner or WordAligner()
    clips = []
    for turn in plan.turns:
        pcm = equalise_loudness(synthesizer.speak(turn.voice, turn.text))
        clips.append(Clip(pcm16=pcm, words=aligner.align(pcm, turn.text)))
    pcm, words = mix_dialogue(plan, clips)
    write_wav(wav_path, pcm, RATE)
    dialogue = Dialogue(
        name=plan.name,
        wav_path=wav_path,
        words=words,
        speakers=speakers,
        duration_s=round(len(pcm) / 2 / RATE, 3),
        voices=[plan.turns[[t.speaker for t in plan.turns].index(s)].voice.name for s in range(speakers)],
        plan_digest=plan.digest(),
    )
    json_path.write_text(dialogue.model_dump_json(indent=1), "utf-8")
    return dialogue


def build_test_set(out_dir: Path, two: int = 20, three: int = 10) -> list[Dialogue]:
    """Build (or reuse) ``two`` two-speaker and ``three`` three-speaker dialogues in ``out_dir``."""
    synthesizer, aligner = Synthesizer(), None
    dialogues = []
    for speakers, count in ((2, two), (3, three)):
        for index in range(count):
            plan = plan_dialogue(index, speakers)
            if aligner is None and not _is_cached(out_dir, plan):
                aligner = WordAligner()  # loaded only when something must be built
            dialogues.append(build_dialogue(index, speakers, out_dir, synthesizer, aligner))
    return dialogues


def _is_cached(out_dir: Path, plan: DialoguePlan) -> bool:
    json_path = out_dir / f"{plan.name}.json"
    if not (json_path.exists() and (out_dir / f"{plan.name}.wav").exists()):
        return False
    return Dialogue.model_validate_json(json_path.read_text("utf-8")).plan_digest == plan.digest()


def default_data_dir() -> Path:
    """Where the benchmark caches the test set: ``~/.cache/voxray/bench/dialogues``."""
    return Path.home() / ".cache" / "voxray" / "bench" / "dialogues"


def main(argv: list[str] | None = None) -> int:
    """CLI: build the test set and print one line per dialogue."""
    parser = argparse.ArgumentParser(prog="python -m bench.dialogues", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_data_dir(), help="output directory")
    parser.add_argument("--two", type=int, default=20, help="two-speaker dialogues")
    parser.add_argument("--three", type=int, default=10, help="three-speaker dialogues")
    args = parser.parse_args(argv)
    for d in build_test_set(args.out, args.two, args.three):
        print(f"{d.name}: {d.duration_s:.1f} s, {len(d.words)} words, voices {', '.join(d.voices)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
