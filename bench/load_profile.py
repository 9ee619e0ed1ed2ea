"""The scripted model time of the fake backends, which the load benchmark subtracts.

:class:`FakeProfile` reads the delays of a Serve config that uses the fake ASR, LLM and TTS
backends, so :func:`bench.load_report.summarize` can subtract them from the voice response
latency and report the *orchestration overhead*. It is apart from :mod:`bench.load_report`
because it is the one part that reads files and knows the fakes' options (``deployments``,
``serve_app.engine.text``); the report itself is arithmetic on records. ``bench.load_report``
re-exports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel


class FakeProfile(BaseModel):
    """Model time the fake backends of a Serve config spend before the first reply audio, in ms.

    ``llm_first_phrase_ms`` is the LLM's token time after its first token until the first phrase
    is complete (the server sends a phrase to TTS only once it has ended), so the four parts add up
    to the model time on the path to the first audio byte.
    """

    asr_delay_ms: float
    llm_first_token_ms: float
    llm_first_phrase_ms: float
    tts_first_chunk_ms: float

    @property
    def model_ms(self) -> float:
        """Total scripted model time before the first audio chunk exists."""
        return (
            self.asr_delay_ms + self.llm_first_token_ms + self.llm_first_phrase_ms + self.tts_first_chunk_ms
        )

    @classmethod
    def from_app_args(cls, args: dict[str, Any]) -> FakeProfile | None:
        """The profile of an application's ``args``; ``None`` unless ASR, LLM and TTS are all fakes."""
        from deployments.backends.fake import FakeASR, FakeLLM, FakeTTS

        sections = [args.get(name) or {} for name in ("asr", "llm", "tts")]
        if any(section.get("backend") != "fake" for section in sections):
            return None
        asr, llm, tts = (
            backend.Options.model_validate(section.get("options") or {})
            for backend, section in zip((FakeASR, FakeLLM, FakeTTS), sections, strict=True)
        )
        return cls(
            asr_delay_ms=asr.delay_ms,
            llm_first_token_ms=llm.first_token_ms,
            llm_first_phrase_ms=_first_phrase_ms(llm.reply, asr.transcripts, llm.tokens_per_s),
            tts_first_chunk_ms=tts.first_chunk_ms,
        )

    @classmethod
    def from_serve_config(cls, path: str | Path) -> FakeProfile | None:
        """The profile of the first application of a Serve config file (``configs/fake-gpu.yaml``)."""
        document = yaml.safe_load(Path(path).read_text())
        apps = document.get("applications") if isinstance(document, dict) else None
        if not isinstance(apps, list) or not apps:
            raise ValueError(f"{path}: no `applications:` list; is this a Serve config file?")
        return cls.from_app_args(apps[0].get("args") or {})


def _first_phrase_ms(reply: str, transcripts: Sequence[str], tokens_per_s: float) -> float:
    """Token time from the LLM's first token to the end of its first phrase (FakeLLM's pacing).

    FakeLLM streams one word per token, ``1 / tokens_per_s`` apart; the server's phrase splitter
    decides when the first phrase is complete. The smallest value over the scripted transcripts is
    taken, so the overhead figure is never understated.
    """
    from serve_app.engine.text import PhraseSplitter

    if not tokens_per_s:
        return 0.0
    counts = []
    for transcript in transcripts or [""]:
        words = reply.format(user=transcript).split(" ")
        splitter = PhraseSplitter()
        # A phrase that never ends is flushed after the last token.
        index = next(
            (i for i, w in enumerate(words) if splitter.push(w if i == 0 else " " + w)), len(words) - 1
        )
        counts.append(index)
    return min(counts) / tokens_per_s * 1000
