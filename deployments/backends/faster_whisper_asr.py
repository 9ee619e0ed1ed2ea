"""faster-whisper (CTranslate2) speech recognition, the embedded CPU ASR.

One utterance in, one transcript out. Decoding is tuned for latency rather than long-form
accuracy: greedy search, no timestamps and no conditioning on previous text, since the
Ingress already cuts the audio into single utterances with VAD.

Where the time goes (``python -m bench.asr_speed``): Whisper's encoder always sees a 30 s
window, so a 3 s utterance is padded with 27 s of nothing, and on 2 CPU cores encoding that
window costs about 0.65 s with Whisper base, most of a ~0.8 s transcription. The log-Mel
features (numpy STFT) cost under 1 ms; greedy decoding of a short sentence about 0.1 s.
faster-whisper's ``chunk_length`` does not help: its sequential ``transcribe`` pads every
window to 3000 frames whatever the chunk length; it only cuts longer utterances at chunk
boundaries, which loses words (and the setting sticks to the model's feature extractor).

CTranslate2 itself accepts fewer frames, so the *short window* path here encodes a window
of ``short_window_s`` (10 s; longer utterances get ``short_window_pad_s`` after them), padded
with zero-valued features as faster-whisper pads its 30 s window: about 6x less encoder work
for a 3 s utterance. Whisper was trained on 30 s windows, and in a window much shorter than
that it can loop on a short utterance (``"Yes. Yes. Yes."``; Whisper base does below about
8 s, tiny.en below about 15 s). Every short-window result is therefore checked (tokens
repeated back to back, the token cap hit, faster-whisper's compression-ratio and
log-probability thresholds), and a suspect one is thrown away and the utterance transcribed
again by faster-whisper's full 30 s path, exactly as without the short window: a fallback
costs latency, not accuracy. A different window can still change a word now and then in a
long utterance (either way: the 30 s window is not always the right one either).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployments.backends.base import Backend
from deployments.models import is_local_spec, resolve_model
from deployments.types import DecodeOptions, Transcript, Word

DEFAULT_MODEL = "bundled:whisper-base"
WHISPER_RATE = 16_000

_FRAMES_PER_S = 100  # Whisper's log-Mel hop is 10 ms
_FULL_WINDOW_FRAMES = 3000  # the 30 s window Whisper was trained on
# faster-whisper's defaults for its temperature fallback and no-speech test.
_COMPRESSION_RATIO_MAX = 2.4
_LOG_PROB_MIN = -1.0
_NO_SPEECH_MIN = 0.6
# Token cap of a short-window decode, far above any speech rate (~4-6 tokens/s), so that
# a decoding loop ends early; a decode that hits it falls back to the full window.
_MAX_TOKENS_BASE = 16
_MAX_TOKENS_PER_S = 10.0


class FasterWhisperOptions(BaseModel):
    """Options of :class:`FasterWhisperASR`.

    Attributes:
        device: CTranslate2 device (``cpu``, ``cuda`` or ``auto``).
        compute_type: CTranslate2 compute type; ``int8`` is the fast choice on CPU
            (``int8_float32`` is the same thing there, ``float32`` about 1.5x slower).
        cpu_threads: Threads used by CTranslate2 on CPU.
        beam_size: Beam width; 1 is greedy decoding, the lowest latency.
        vad_filter: Run faster-whisper's own VAD first (the Ingress already does VAD). It
            implies faster-whisper's full 30 s path: the short window is not used.
        short_window_s: Encode a window of this many seconds (at least the audio plus
            ``short_window_pad_s``) instead of Whisper's 30 s window: the main latency win on
            CPU. Suspect results are redone with the full window, so a shorter window is
            faster per decode but falls back more often: Whisper base needs about 8 s to
            stop looping on one-word utterances, tiny.en about 15 s. ``None`` always takes
            faster-whisper's full 30 s path (``transcribe`` with its temperature fallback),
            the old behaviour.
        short_window_pad_s: The least padding after the audio in the short window.
        short_window_max_audio_s: Longer audio takes the full 30 s path. The short window
            keeps short utterances exact; in a long one (10 s and more) a window other than
            30 s changes a word now and then, so set this to about 8 for the old transcripts
            of long utterances at the old latency.
    """

    model_config = ConfigDict(extra="forbid")

    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = Field(default=2, ge=1)
    beam_size: int = Field(default=1, ge=1)
    vad_filter: bool = False
    short_window_s: float | None = Field(default=10.0, gt=0, le=30)
    short_window_pad_s: float = Field(default=2.0, ge=0, le=30)
    short_window_max_audio_s: float = Field(default=30.0, gt=0, le=30)


class FasterWhisperASR(Backend):
    """Transcribe one utterance with faster-whisper.

    Args:
        model: ``bundled:<name>`` (default ``bundled:whisper-base``; ``bundled:whisper-tiny-en``
            is about twice as fast, English only), a local CTranslate2 model directory, or
            anything faster-whisper accepts itself (a size name such as ``"small"`` or a
            Hugging Face repo id, downloaded by faster-whisper).
        options: See :class:`FasterWhisperOptions`.
    """

    Options = FasterWhisperOptions

    def __init__(self, model: str | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(model or DEFAULT_MODEL, options)
        from faster_whisper import WhisperModel

        opts: FasterWhisperOptions = self.options
        spec = self.model_spec
        self.model_path = str(resolve_model(spec)) if is_local_spec(spec) else spec
        self._model = WhisperModel(
            self.model_path,
            device=opts.device,
            compute_type=opts.compute_type,
            cpu_threads=opts.cpu_threads,
            num_workers=1,
        )
        # One worker: CTranslate2 already uses cpu_threads per call, and queueing calls
        # keeps one replica from oversubscribing its CPUs.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")
        self._tokenizers: dict[str, Any] = {}
        # Counters are only written by the single worker thread.
        self._active = 0
        self._done = 0
        self._short_window = 0
        self._fallbacks = 0

    async def transcribe(
        self, pcm16: bytes, sample_rate: int, language: str | None, options: DecodeOptions | None = None
    ) -> Transcript:
        """Transcribe mono PCM16 little-endian audio at any sample rate.

        Args:
            pcm16: The utterance.
            sample_rate: Its sample rate; resampled to 16 kHz when different.
            language: ISO code such as ``"en"``; ``None`` lets Whisper detect it.
            options: Word times (aligned with Whisper's cross-attention, as faster-whisper's
                ``word_timestamps``), and draft decoding: a suspect short-window result is
                dropped (an empty transcript) instead of redone with the full window.
        """
        loop = asyncio.get_running_loop()
        decode = options or DecodeOptions()
        return await loop.run_in_executor(
            self._executor, self._transcribe, pcm16, sample_rate, language, decode
        )

    def _transcribe(
        self, pcm16: bytes, sample_rate: int, language: str | None, decode: DecodeOptions
    ) -> Transcript:
        import numpy as np

        started = time.perf_counter()
        duration = len(pcm16) / 2 / sample_rate
        # An odd trailing byte cannot be a sample; drop it rather than fail the turn.
        audio = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
        if audio.size == 0:
            return Transcript(text="", language=language, audio_duration_s=0.0, processing_s=0.0)
        if sample_rate != WHISPER_RATE:
            import soxr

            audio = soxr.resample(audio, sample_rate, WHISPER_RATE).astype(np.float32, copy=False)
        self._active += 1
        try:
            result = self._short_window_transcribe(audio, language, decode.word_timestamps)
            if result is None and decode.draft:
                result = "", language or "", []
            elif result is None:
                result = self._full_transcribe(audio, language, decode.word_timestamps)
        finally:
            self._active -= 1
            self._done += 1
        text, detected, words = result
        return Transcript(
            text=text,
            language=detected,
            audio_duration_s=duration,
            processing_s=time.perf_counter() - started,
            words=words,
        )

    def _full_transcribe(self, audio: Any, language: str | None, word_timestamps: bool) -> _Decoded:
        """faster-whisper's own path: 30 s windows, temperature fallback, any length."""
        opts: FasterWhisperOptions = self.options
        segments, info = self._model.transcribe(
            audio,
            language=language,
            beam_size=opts.beam_size,
            vad_filter=opts.vad_filter,
            without_timestamps=not word_timestamps,
            word_timestamps=word_timestamps,
            condition_on_previous_text=False,
        )
        # segments is lazy: decoding happens while it is consumed.
        segments = list(segments)
        words = [
            _word(word.word, word.start, word.end, word.probability)
            for segment in segments
            for word in segment.words or ()
        ]
        return "".join(segment.text for segment in segments).strip(), info.language, words

    def _short_window_transcribe(
        self, audio: Any, language: str | None, word_timestamps: bool
    ) -> _Decoded | None:
        """Encode only the utterance plus padding; ``None`` when the full path must decide."""
        import numpy as np

        opts: FasterWhisperOptions = self.options
        if opts.short_window_s is None or opts.vad_filter:
            return None
        # faster-whisper drops the last frame too: it covers the padding of the STFT.
        features = self._model.feature_extractor(audio)[:, :-1]
        frames = features.shape[-1]
        if frames > min(_FULL_WINDOW_FRAMES, round(opts.short_window_max_audio_s * _FRAMES_PER_S)):
            return None  # long audio (beyond one window: long-form decoding)
        self._short_window += 1
        window = min(
            _FULL_WINDOW_FRAMES,
            max(
                round(opts.short_window_s * _FRAMES_PER_S),
                frames + round(opts.short_window_pad_s * _FRAMES_PER_S),
            ),
        )
        window += window % 2  # the encoder's strided convolution halves the frame count
        padded = np.zeros((features.shape[0], window), dtype=np.float32)
        padded[:, :frames] = features
        encoded = self._model.encode(padded)

        whisper = self._model.model
        if not whisper.is_multilingual:
            language = "en"  # what faster-whisper does for English-only models
        elif language is None:
            detected, probability = whisper.detect_language(encoded)[0][0]
            if probability < 0.5:  # unsure on the short window: let the full path detect
                return self._fall_back()
            language = detected[2:-2]  # "<|en|>" -> "en"
        tokenizer = self._tokenizer(language)
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        cap = min(
            self._model.max_length - len(prompt),
            _MAX_TOKENS_BASE + math.ceil(len(audio) / WHISPER_RATE * _MAX_TOKENS_PER_S),
        )
        result = whisper.generate(
            encoded,
            [prompt],
            beam_size=opts.beam_size,
            max_length=len(prompt) + cap,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppressed(tokenizer),
        )[0]
        tokens = result.sequences_ids[0]
        # The score is the length-normalised log probability; faster-whisper's average.
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > _NO_SPEECH_MIN and avg_logprob < _LOG_PROB_MIN:
            return "", language, []  # silence: the full path would skip it as well
        text = tokenizer.decode(tokens).strip()
        if (
            len(tokens) >= cap
            or avg_logprob < _LOG_PROB_MIN
            or compression_ratio(text) > _COMPRESSION_RATIO_MAX
            or has_tandem_repeat(tokens)
        ):
            return self._fall_back()
        words: list[Word] = []
        if word_timestamps and tokens:
            # Whisper's cross-attention over the window just encoded: faster-whisper's own
            # word alignment, without a second encoder pass.
            aligned = self._model.find_alignment(tokenizer, [tokens], encoded, frames)[0]
            words = [
                _word(w["word"], w["start"], w["end"], w["probability"]) for w in aligned if w["word"].strip()
            ]
        return text, language, words

    def _fall_back(self) -> None:
        self._fallbacks += 1
        return None

    def _tokenizer(self, language: str) -> Any:
        tokenizer = self._tokenizers.get(language)
        if tokenizer is None:
            from faster_whisper.tokenizer import Tokenizer

            multilingual = self._model.model.is_multilingual
            tokenizer = Tokenizer(
                self._model.hf_tokenizer, multilingual, task="transcribe", language=language
            )
            self._tokenizers[language] = tokenizer
        return tokenizer

    @staticmethod
    def _suppressed(tokenizer: Any) -> list[int]:
        # transcribe()'s default suppress_tokens=[-1], expanded the same way.
        from faster_whisper.transcribe import get_suppressed_tokens

        return list(get_suppressed_tokens(tokenizer, [-1]))

    async def warmup(self) -> None:
        """Transcribe one second of silence."""
        await self.transcribe(bytes(2 * WHISPER_RATE), WHISPER_RATE, "en")

    def stats(self) -> dict[str, Any]:
        """Counters: ``active_transcriptions``, ``transcriptions`` (finished),
        ``short_window_transcriptions`` (tried with the short window) and
        ``short_window_fallbacks`` (of those, redone with the full 30 s window)."""
        return {
            "active_transcriptions": self._active,
            "transcriptions": self._done,
            "short_window_transcriptions": self._short_window,
            "short_window_fallbacks": self._fallbacks,
        }


_Decoded = tuple[str, str, list[Word]]  # text, language, word times


def _word(text: str, start: float, end: float, probability: float) -> Word:
    """One aligned word; times clamped to be ordered (alignment can put the end first)."""
    start = max(0.0, float(start))
    return Word(
        text=text.strip(),
        start_s=start,
        end_s=max(start, float(end)),
        confidence=min(1.0, max(0.0, float(probability))),
    )


def compression_ratio(text: str) -> float:
    """UTF-8 length over zlib-compressed length: high for repetitive text (as faster-whisper)."""
    import zlib

    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def has_tandem_repeat(tokens: Sequence[int]) -> bool:
    """True when a block of one or more tokens is immediately repeated (``A B A B``).

    That is how Whisper's decoding loops look (``"Okay Okay"``, ``"Yes. Yes."``, a whole
    sentence twice). Real speech does it too, now and then ("no no", "thank you, thank
    you"); such a false alarm only costs a second decode with the full window, which decides.
    """
    import numpy as np

    seq = np.asarray(tokens)
    for block in range(1, len(seq) // 2 + 1):
        # same[i]: token i equals token i + block; a run of ``block`` of them is a repeat.
        same = np.concatenate(([0], (seq[:-block] == seq[block:]).astype(np.int8), [0]))
        edges = np.flatnonzero(np.diff(same))
        if edges.size and (edges[1::2] - edges[::2]).max() >= block:
            return True
    return False
