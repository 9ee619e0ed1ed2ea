"""Makes the client calls of seed 002's voice gateway, with its arguments, for one WAV file.

Seed 002 is a voice gateway (github SDcodehub/voice-voice-workflow, branch ``v2``, commit
43843ff, ``services/voice-gateway``) that streams a caller's audio to Riva ASR, sends each final
transcript to an OpenAI-compatible LLM (an NVIDIA NIM), and speaks the answer with Riva TTS. This
script is not its code: it makes the same calls of ``nvidia-riva-client`` and of the ``openai``
SDK, with the same arguments and the same handling of their results, so that a server which
serves the seed's gateway serves this script, and the other way round. It runs in
``.venv-riva`` (nvidia-riva-client 2.28.0, whose ``SynthesizeOnline`` is a bidirectional
stream) or ``.venv-riva-old`` (2.24.0 and openai 2.14.0: server-streaming, as the 2.16.0 and
openai 2.14.0 in the seed's ``uv.lock`` call it), both made by ``scripts/setup-riva-clients.sh``;
tests start it through ``tests/riva_clients.py``.

What each step mirrors (paths below ``services/voice-gateway/``):

- Configuration, ``src/main.py`` 38-39 and ``src/clients/llm.py`` 21-28: ``RIVA_URI`` (default
  ``localhost:50051``), ``LLM_SERVICE_URL`` (``http://localhost:8000/v1``), ``LLM_MODEL``
  (``meta/llama-3.1-8b-instruct``), ``LLM_TEMPERATURE`` (0.5), ``LLM_MAX_TOKENS`` (1024),
  ``LLM_SYSTEM_PROMPT`` (none: no system message). ``LLM_API_KEY`` is read there too, but
  ``src/main.py`` 49 builds ``LLMClient(base_url=...)`` whose ``api_key`` defaults to
  ``"dummy"``, and ``api_key or os.getenv(...)`` keeps it: the key sent is always ``dummy``.
  ``ASR_SAMPLE_RATE``, ``TTS_VOICE`` and ``TTS_SAMPLE_RATE`` (its Helm ConfigMap) are read by
  no code.
- Audio in, ``tests/test_wav_client.py`` 11 and 33-46 (the seed's file client) and
  ``src/main.py`` 102-103: the session's language ``en-US`` and sample rate the WAV's own; the
  WAV's frames without the header, 4096 frames a chunk, 10 ms apart.
- Riva connection, ``src/main.py`` 46: ``riva.client.Auth(uri=RIVA_URI)`` (insecure channel).
- ASR, ``src/clients/asr.py`` 16-31 and 89-116: ``ASRService(auth)``; ``StreamingRecognitionConfig(
  config=RecognitionConfig(encoding=LINEAR_PCM, language_code, max_alternatives=1,
  enable_automatic_punctuation=False, verbatim_transcripts=True, sample_rate_hertz),
  interim_results=True)``; ``streaming_response_generator(audio_chunks=..., streaming_config=...)``
  consumed in a worker thread; of each result only ``alternatives[0].transcript``, when not empty,
  with ``is_final``.
- LLM, ``src/clients/llm.py`` 32-35 and 53-91, called from ``src/main.py`` 157 for each final
  transcript: ``AsyncOpenAI(base_url=LLM_SERVICE_URL, api_key="dummy")``;
  ``await chat.completions.create(model, messages=[system?, {"role": "user", "content":
  transcript}], stream=True, temperature, max_tokens)``; the text is
  ``chunk.choices[0].delta.content`` of every chunk (a chunk with no ``choices`` raises
  IndexError there, as in the seed).
- Sentences, ``src/main.py`` 160-198: the answer is spoken as soon as an LLM chunk contains one of
  ``. ? ! । \\n`` (all text buffered so far, stripped), and what is left at the end.
- TTS, ``src/clients/tts.py`` 16 and 50-71: ``SpeechSynthesisService(auth)``;
  ``synthesize_online(text=sentence, language_code, encoding=LINEAR_PCM,
  sample_rate_hz=<the session's sample rate>, voice_name="")`` in a worker thread, keeping each
  response's non-empty ``audio``. The seed runs one call per sentence to its end before it
  forwards any of its audio; its "E2E latency" runs from the final transcript to then
  (``e2e_s`` here; ``first_audio_s`` is when the first audio arrived).

Where the seed logs an error and carries on, this script stops: exit 1 with the failing step and
the error on stderr, and in the summary. Exit 0 needs at least one final transcript, an answer
and some audio for each. Exit 2: the input is not a 16-bit PCM WAV.

Usage (``.venv-riva/bin/python``)::

    RIVA_URI=127.0.0.1:50051 LLM_SERVICE_URL=http://127.0.0.1:8000/v1 \\
      python seed_gateway_calls.py question.wav --out-wav answer.wav --summary summary.json

The summary (JSON, also printed as the last line of stdout as ``{"seed_gateway_calls": ...}``):
``transcript`` (the final transcripts joined), ``answer`` (the answers joined), ``audio_bytes``
(PCM bytes of speech), ``turns`` (per final transcript: ``transcript``, ``answer``, ``sentences``,
``audio_bytes``, ``timings``), ``asr`` (``interim_count``, ``finals``), ``timings`` (seconds from
the first audio chunk sent), ``error`` and ``error_step`` (None on success), and the settings used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
import time
import wave
from pathlib import Path
from typing import Any

import grpc
import riva.client
from openai import AsyncOpenAI

log = logging.getLogger("seed_gateway_calls")

SENTENCE_ENDS = (".", "?", "!", "।", "\n")  # src/main.py 167
SEED_API_KEY = "dummy"  # src/clients/llm.py 11, kept by src/main.py 49
SUMMARY_KEY = "seed_gateway_calls"


class StepError(Exception):
    """A call failed; ``step`` is ``asr``, ``llm`` or ``tts``."""

    def __init__(self, step: str, error: BaseException | str) -> None:
        self.step = step
        if isinstance(error, grpc.RpcError) and callable(getattr(error, "code", None)):
            message = f"{error.code().name}: {error.details()}"
        elif isinstance(error, BaseException):
            message = f"{type(error).__name__}: {error}"
        else:
            message = error
        super().__init__(f"{step}: {message}")


def settings_from_env() -> dict[str, Any]:
    """The seed's settings, read from the same variables with the same defaults."""
    return {
        "riva_uri": os.getenv("RIVA_URI", "localhost:50051"),
        "llm_service_url": os.getenv("LLM_SERVICE_URL", "http://localhost:8000/v1"),
        "llm_model": os.getenv("LLM_MODEL", "meta/llama-3.1-8b-instruct"),
        "llm_temperature": float(os.getenv("LLM_TEMPERATURE", "0.5")),
        "llm_max_tokens": int(os.getenv("LLM_MAX_TOKENS", "1024")),
        "llm_system_prompt": os.getenv("LLM_SYSTEM_PROMPT", None),
    }


class Call:
    """One run: the clients, the audio, and what came back."""

    def __init__(self, wav_path: Path, language: str, chunk_frames: int, chunk_pause_s: float) -> None:
        self.settings = settings_from_env()
        with wave.open(str(wav_path), "rb") as wav:
            if wav.getsampwidth() != 2 or wav.getcomptype() != "NONE":
                raise ValueError(f"{wav_path}: not a 16-bit PCM WAV")
            self.sample_rate = wav.getframerate() or 16000
            self.channels = wav.getnchannels()
            self.chunks = []
            while data := wav.readframes(chunk_frames):
                self.chunks.append(data)
        self.audio_s = sum(map(len, self.chunks)) / (2 * self.channels * self.sample_rate)
        self.language = language
        self.chunk_pause_s = chunk_pause_s
        self.auth = riva.client.Auth(uri=self.settings["riva_uri"])
        self.llm = AsyncOpenAI(base_url=self.settings["llm_service_url"], api_key=SEED_API_KEY)
        self.tts_service = riva.client.SpeechSynthesisService(self.auth)
        self.started = 0.0
        self.audio = bytearray()
        self.turns: list[dict[str, Any]] = []
        self.interim_count = 0
        self.first_result_s: float | None = None
        self.audio_sent_s: float | None = None

    def now(self) -> float:
        return round(time.monotonic() - self.started, 4)

    def audio_chunks(self):
        """The WAV's frames as the seed's file client sends them (4096 frames, 10 ms apart)."""
        for index, chunk in enumerate(self.chunks):
            if index:
                time.sleep(self.chunk_pause_s)
            yield chunk
        self.audio_sent_s = self.now()

    def asr_thread(self, loop: asyncio.AbstractEventLoop, results: asyncio.Queue) -> None:
        """``src/clients/asr.py`` 89-122: the blocking response stream, read in a thread."""

        def put(item: Any) -> None:
            # RuntimeError: the run has ended (a later step failed) and nobody reads results.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(results.put_nowait, item)

        try:
            asr_service = riva.client.ASRService(self.auth)
            config = riva.client.StreamingRecognitionConfig(
                config=riva.client.RecognitionConfig(
                    encoding=riva.client.AudioEncoding.LINEAR_PCM,
                    language_code=self.language,
                    max_alternatives=1,
                    enable_automatic_punctuation=False,
                    verbatim_transcripts=True,
                    sample_rate_hertz=self.sample_rate,
                ),
                interim_results=True,
            )
            responses = asr_service.streaming_response_generator(
                audio_chunks=self.audio_chunks(), streaming_config=config
            )
            for response in responses:
                if not response.results:
                    continue
                for result in response.results:
                    if not result.alternatives:
                        continue
                    transcript = result.alternatives[0].transcript
                    if transcript:
                        put((transcript, result.is_final, self.now()))
        except Exception as error:
            put(StepError("asr", error))
        finally:
            put(None)

    async def answer(self, transcript: str) -> dict[str, Any]:
        """``src/clients/llm.py`` 53-91 with ``src/main.py`` 157-198: stream the answer, speak it."""
        settings = self.settings
        messages = []
        if settings["llm_system_prompt"]:
            messages.append({"role": "system", "content": settings["llm_system_prompt"]})
        messages.append({"role": "user", "content": transcript})
        turn: dict[str, Any] = {"transcript": transcript, "answer": "", "sentences": [], "audio_bytes": 0}
        timings: dict[str, Any] = {"final_s": self.now(), "llm_ttft_s": None, "first_audio_s": None}
        turn["timings"] = timings
        sentence_buffer = ""
        try:
            stream = await self.llm.chat.completions.create(
                model=settings["llm_model"],
                messages=messages,
                stream=True,
                temperature=settings["llm_temperature"],
                max_tokens=settings["llm_max_tokens"],
            )
            async for chunk in stream:
                content = chunk.choices[0].delta.content
                if not content:
                    continue
                if timings["llm_ttft_s"] is None:
                    timings["llm_ttft_s"] = self.now()
                turn["answer"] += content
                sentence_buffer += content
                if any(end in content for end in SENTENCE_ENDS):
                    if sentence_buffer.strip():
                        await self.speak(sentence_buffer.strip(), turn)
                    sentence_buffer = ""
        except StepError:
            raise
        except Exception as error:
            raise StepError("llm", error) from error
        timings["llm_done_s"] = self.now()
        if sentence_buffer.strip():
            await self.speak(sentence_buffer.strip(), turn)
        timings["done_s"] = self.now()
        return turn

    async def speak(self, text: str, turn: dict[str, Any]) -> None:
        """``src/clients/tts.py`` 44-91: one ``synthesize_online`` call, run to its end in a thread."""
        timings = turn["timings"]
        received = bytearray()

        def synthesize() -> None:
            responses = self.tts_service.synthesize_online(
                text=text,
                language_code=self.language,
                encoding=riva.client.AudioEncoding.LINEAR_PCM,
                sample_rate_hz=self.sample_rate,
                voice_name="",
            )
            for response in responses:
                if response.audio:
                    if timings["first_audio_s"] is None:
                        timings["first_audio_s"] = self.now()
                    received.extend(response.audio)

        try:
            await asyncio.get_running_loop().run_in_executor(None, synthesize)
        except Exception as error:
            raise StepError("tts", error) from error
        if received and "e2e_s" not in timings:
            timings["e2e_s"] = round(self.now() - timings["final_s"], 4)
        turn["sentences"].append({"text": text, "audio_bytes": len(received)})
        turn["audio_bytes"] += len(received)
        self.audio.extend(received)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        results: asyncio.Queue = asyncio.Queue()
        self.started = time.monotonic()
        worker = threading.Thread(target=self.asr_thread, args=(loop, results), daemon=True)
        worker.start()
        while (item := await results.get()) is not None:
            if isinstance(item, StepError):
                raise item
            transcript, is_final, at = item
            if self.first_result_s is None:
                self.first_result_s = at
            if not is_final:
                self.interim_count += 1
                continue
            log.info("final transcript at %.3f s: %s", at, transcript)
            self.turns.append(await self.answer(transcript))
        if not self.turns:
            raise StepError("asr", "the stream ended without a final transcript")
        for index, turn in enumerate(self.turns):
            if not turn["answer"].strip():
                raise StepError("llm", f"no answer text for final transcript {index}")
            if not turn["audio_bytes"]:
                raise StepError("tts", f"no audio for the answer to final transcript {index}")

    def summary(self, error: StepError | None, elapsed_s: float) -> dict[str, Any]:
        return {
            **self.settings,
            "llm_api_key": SEED_API_KEY,
            "language_code": self.language,
            "sample_rate_hz": self.sample_rate,
            "channels": self.channels,
            "audio_in_s": round(self.audio_s, 4),
            "chunks_sent": len(self.chunks),
            "transcript": " ".join(turn["transcript"] for turn in self.turns),
            "answer": " ".join(turn["answer"].strip() for turn in self.turns),
            "audio_bytes": len(self.audio),
            "audio_out_s": round(len(self.audio) / (2 * self.sample_rate), 4),
            "turns": self.turns,
            "asr": {
                "interim_count": self.interim_count,
                "finals": [turn["transcript"] for turn in self.turns],
            },
            "timings": {
                "first_asr_result_s": self.first_result_s,
                "audio_sent_s": self.audio_sent_s,
                "elapsed_s": round(elapsed_s, 4),
            },
            "error": str(error) if error else None,
            "error_step": error.step if error else None,
        }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("wav", type=Path, help="a 16-bit PCM WAV file (the seed's clients send mono)")
    parser.add_argument("--out-wav", type=Path, help="write the spoken answer here (mono, the input's rate)")
    parser.add_argument("--summary", type=Path, help="write the JSON summary here")
    parser.add_argument("--language", default="en-US", help="the session's language (seed's client: en-US)")
    parser.add_argument("--chunk-frames", type=int, default=4096, help="frames per audio chunk (seed: 4096)")
    parser.add_argument(
        "--chunk-pause", type=float, default=0.01, help="seconds between audio chunks (seed: 0.01)"
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    try:
        call = Call(args.wav, args.language, args.chunk_frames, args.chunk_pause)
    except (OSError, EOFError, ValueError, wave.Error) as error:
        print(f"seed_gateway_calls: cannot read {args.wav}: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    started = time.monotonic()
    error = None
    try:
        asyncio.run(call.run())
    except StepError as failure:
        error = failure
        where = call.settings["llm_service_url"] if failure.step == "llm" else call.settings["riva_uri"]
        print(f"seed_gateway_calls: {failure} (at {where})", file=sys.stderr)
    finally:
        call.auth.channel.close()  # cancels an ASR stream still open after a later step failed
    summary = call.summary(error, time.monotonic() - started)
    if args.out_wav is not None:
        with wave.open(str(args.out_wav), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(call.sample_rate)
            out.writeframes(bytes(call.audio))
    if args.summary is not None:
        args.summary.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({SUMMARY_KEY: summary}, ensure_ascii=False), flush=True)
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
