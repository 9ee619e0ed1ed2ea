"""Data and arithmetic of the load benchmark (``bench.load``): records, statistics, summary text.

Everything here is pure (no sockets, no clocks), so the figures the load client reports can be
checked on synthetic records:

* :class:`TurnRecord` is one measured turn; :class:`LoadReport` is a whole run, written as JSON.
* :func:`playback_starvation` replays a reply's audio arrivals against a simulated player.
* :class:`FakeProfile` (in :mod:`bench.load_profile`, re-exported here) reads the scripted model
  delays of a Serve config that uses the fake backends, so :func:`summarize` can subtract them
  and report the *orchestration overhead*.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from pydantic import BaseModel, Field

from bench.load_profile import FakeProfile

# Summary figure names (also the keys of ``Summary.figures``), in display order.
LATENCY = "voice response latency"
MINUS_SILENCE = "latency minus endpointing silence"
OVERHEAD = "orchestration overhead"
VAD_ENDPOINT = "VAD endpoint lag (audio time)"
WALL_OVERHEAD = "overhead beyond the VAD endpoint"
TRANSCRIPT = "transcript (client)"
DONE = "response done (client)"
STARVED = "audio starved per turn"
BARGE_IN = "barge-in latency"
BARGE_IN_DONE = "barge-in: cancelled response.done"
BARGE_IN_REPLY = "reply to the interruption"
SEND_LAG = "client frame send lag (per session max)"
CLIENT_FIGURES = (
    LATENCY, MINUS_SILENCE, OVERHEAD, VAD_ENDPOINT, WALL_OVERHEAD, TRANSCRIPT, DONE, STARVED,
    BARGE_IN, BARGE_IN_DONE, BARGE_IN_REPLY,
)  # fmt: skip
# Instants on the way to the first reply audio (the stacked breakdown plot); the segment before
# each is named after it. Without speculative turns they happen in this order.
STAGES = (
    "speech end (server VAD)",
    "end of turn (endpointing)",
    "ASR done",
    "LLM first token",
    "first phrase",
    "TTS first chunk",
    "first audio received (transport & rest)",
)


class Continuity(BaseModel):
    """How a player fed by the reply's audio deltas would have fared.

    The player starts ``jitter_buffer_ms`` after the first delta arrives and plays at real time;
    when the next audio has not arrived yet it waits (a gap) and resumes when it comes.
    """

    gaps: int = 0
    starved_ms: float = Field(default=0.0, description="Total time the player waited for audio.")
    max_gap_ms: float = 0.0
    audio_ms: float = Field(default=0.0, description="Reply audio received.")
    playback_end: float | None = Field(
        default=None, description="When playback would end (arrival clock, s)."
    )


def playback_starvation(deltas: Sequence[tuple[float, float]], jitter_buffer_s: float = 0.1) -> Continuity:
    """Replay audio arrivals against a real-time player with a jitter buffer.

    Args:
        deltas: ``(arrival time in s, audio duration in s)`` of each audio delta, in arrival order.
        jitter_buffer_s: How long the player buffers after the first delta before it starts.

    Returns:
        Gaps, total and longest starvation, and when playback would have ended.
    """
    if not deltas:
        return Continuity()
    clock = deltas[0][0] + jitter_buffer_s  # when the player needs the next sample
    gaps, starved, longest = 0, 0.0, 0.0
    for arrival, duration in deltas:
        if arrival > clock:
            gap = arrival - clock
            gaps, starved, longest = gaps + 1, starved + gap, max(longest, gap)
            clock = arrival
        clock += duration
    return Continuity(
        gaps=gaps,
        starved_ms=round(starved * 1000, 1),
        max_gap_ms=round(longest * 1000, 1),
        audio_ms=round(sum(d for _, d in deltas) * 1000, 1),
        playback_end=clock,
    )


class TurnRecord(BaseModel):
    """One turn of one session. Client times are ms after the last voiced frame was sent."""

    session: int
    turn: int
    question: str
    barge_in: bool = False
    ok: bool = False
    error: str | None = None
    response_status: str | None = Field(default=None, description="Status of the response that was timed.")
    silence_duration_ms: int | None = Field(default=None, description="Server VAD endpointing silence.")
    voice_latency_ms: float | None = Field(default=None, description="First reply audio delta received.")
    speech_stopped_ms: float | None = None
    endpoint_audio_ms: float | None = Field(
        default=None,
        description=(
            "speech_stopped's audio_end_ms minus the end of the last voiced frame, both in the session's "
            "audio time: the silence the VAD waited plus its own decision lag. Load cannot change it."
        ),
    )
    transcript_ms: float | None = Field(default=None, description="input_audio_transcription.completed.")
    response_done_ms: float | None = None
    server_ms: dict[str, float] = Field(default_factory=dict, description="response.metadata voxray.*_ms.")
    overhead_ms: float | None = Field(
        default=None, description="Latency minus endpointing silence minus the fakes' scripted model time."
    )
    continuity: Continuity = Field(default_factory=Continuity)
    barge_in_latency_ms: float | None = Field(
        default=None,
        description="Last audio delta of the interrupted reply minus the interruption's first voiced frame.",
    )
    barge_in_done_ms: float | None = Field(
        default=None, description="The interrupted reply's response.done minus the same first voiced frame."
    )
    barge_in_status: str | None = Field(default=None, description="Final status of the interrupted reply.")
    barge_in_reply_ms: float | None = Field(
        default=None, description="Reply to the interruption: first audio after its last voiced frame."
    )


class Stat(BaseModel):
    """Distribution of one figure over turns, in ms."""

    n: int
    p50: float | None = None
    p95: float | None = None
    max: float | None = None


def stat(values: Iterable[float | None]) -> Stat:
    """``n``, median, 95th percentile (linear interpolation) and maximum of the non-``None`` values."""
    v = np.array([x for x in values if x is not None], dtype=float)
    if not v.size:
        return Stat(n=0)
    return Stat(
        n=int(v.size),
        p50=round(float(np.percentile(v, 50)), 1),
        p95=round(float(np.percentile(v, 95)), 1),
        max=round(float(v.max()), 1),
    )


def minus_silence(record: TurnRecord) -> float | None:
    """Voice response latency less the endpointing silence the session reported."""
    if record.voice_latency_ms is None or record.silence_duration_ms is None:
        return None
    return record.voice_latency_ms - record.silence_duration_ms


def overhead(record: TurnRecord, profile: FakeProfile | None) -> float | None:
    """Orchestration overhead: latency - endpointing silence - the fakes' scripted model time."""
    rest = minus_silence(record)
    return None if rest is None or profile is None else round(rest - profile.model_ms, 1)


def vad_endpoint_lag(record: TurnRecord) -> float | None:
    """How much later than ``silence_duration_ms`` after the last voiced frame the VAD ended the turn.

    Measured in audio time, so it is the VAD model's own behaviour (Silero's probability decays
    over a few windows after speech fades; decisions fall on 32 ms windows), not load.
    """
    if record.endpoint_audio_ms is None or record.silence_duration_ms is None:
        return None
    return round(record.endpoint_audio_ms - record.silence_duration_ms, 1)


def overhead_beyond_vad(record: TurnRecord, profile: FakeProfile | None) -> float | None:
    """Wall-clock latency the server added after the VAD's endpoint (in audio time) and the fakes' delays.

    ``voice latency - endpoint_audio_ms - model time``: what the orchestration (event handling,
    model calls, transport, and any backlog under load) costs beyond what the audio itself
    decides. With speculative turns it can be negative: model work started before the endpoint.
    """
    if record.voice_latency_ms is None or record.endpoint_audio_ms is None or profile is None:
        return None
    return round(record.voice_latency_ms - record.endpoint_audio_ms - profile.model_ms, 1)


def stage_timeline(record: TurnRecord) -> dict[str, float] | None:
    """When each stage of one turn's first reply audio was done, in ms after ``t0``, in time order.

    The instants are the :data:`STAGES`; consecutive differences are the stacked bar of the
    breakdown plot, and the last one is the voice response latency itself. The end of turn is
    the client's ``speech_stopped`` arrival; server timings are put on the client's clock through
    it, since both sides saw that event. Server timings count from a reference that depends on
    the server:

    * with ``endpointing_ms`` in the timings, the reference is the end of speech as the server's
      VAD placed it (``endpointing_ms`` before the end of turn; its distance from ``t0`` is the
      "speech end" segment). Model stages may then finish *before* the end of turn (speculative
      turns). ``asr_ms`` is a duration from an unreported start, so ASR is left out: its time is
      inside the "LLM first token" segment;
    * otherwise the reference is the end of turn itself, ASR starts there, and ``asr_ms`` marks
      the instant ASR was done.
    """
    s = record.server_ms
    needed = ("llm_first_token_ms", "tts_first_chunk_ms")
    if record.voice_latency_ms is None or any(k not in s for k in needed):
        return None
    end_of_turn = record.speech_stopped_ms
    if end_of_turn is None:  # not seen: take the server's speech end (else the silence) as t0
        end_of_turn = s.get("endpointing_ms", record.silence_duration_ms)
    if end_of_turn is None:
        return None
    instants = {STAGES[1]: end_of_turn}
    if "endpointing_ms" in s:
        offset = instants[STAGES[0]] = end_of_turn - s["endpointing_ms"]
    else:
        offset = end_of_turn
        if "asr_ms" in s:
            instants[STAGES[2]] = offset + s["asr_ms"]
    keys = ("llm_first_token_ms", "first_phrase_ms", "tts_first_chunk_ms")
    for name, key in zip(STAGES[3:6], keys, strict=True):
        if key in s:
            instants[name] = offset + s[key]
    instants[STAGES[6]] = record.voice_latency_ms
    return dict(sorted(((k, round(v, 1)) for k, v in instants.items()), key=lambda kv: kv[1]))


def segments(timeline: dict[str, float]) -> dict[str, float]:
    """Consecutive differences of a timeline (each segment named after the instant that ends it)."""
    previous, out = 0.0, {}
    for name, instant in timeline.items():
        out[name] = round(max(0.0, instant - previous), 1)
        previous = max(previous, instant)
    return out


class LoadSettings(BaseModel):
    """What one run was asked to do (the ``config`` of the JSON report)."""

    url: str
    sessions: int
    turns: int
    questions: list[str]
    interruption: str
    pause_s: float
    ramp_s: float
    barge_in_every: int = Field(description="Every K-th turn of a session is interrupted; 0: never.")
    barge_in_after_s: float
    turn_timeout_s: float
    jitter_buffer_ms: float
    config: str | None = Field(default=None, description="Serve config the server runs, when given.")
    profile: FakeProfile | None = None
    seed: int = 0


class Summary(BaseModel):
    """The figures of one run."""

    sessions: int
    sessions_connected: int
    turns_total: int
    turns_ok: int
    turns_failed: int
    failures: dict[str, int] = Field(default_factory=dict, description="Failed turns by error.")
    wall_s: float
    client_cpu_s: float = Field(description="time.process_time() of the load client over the run.")
    client_cpu_pct: float = Field(description="Client CPU as a percentage of one core.")
    silence_duration_ms: int | None = None
    figures: dict[str, Stat]
    server: dict[str, Stat] = Field(default_factory=dict, description="Server stage timings, by key.")
    timeline_p50: dict[str, float] = Field(
        default_factory=dict,
        description="Median instant of each stage, ms after the last voiced frame, in time order.",
    )
    turns_with_gaps: int = 0
    barge_ins: int = 0
    barge_ins_cancelled: int = 0


class LoadReport(BaseModel):
    """Everything one run measured; written as JSON."""

    created_at: str
    host: str
    config: LoadSettings
    send_lag_ms: list[float] = Field(default_factory=list, description="Worst frame send lag per session.")
    turns: list[TurnRecord]
    summary: Summary


def summarize(
    records: Sequence[TurnRecord],
    settings: LoadSettings,
    *,
    sessions_connected: int,
    wall_s: float,
    client_cpu_s: float,
    send_lag_ms: Sequence[float] = (),
) -> Summary:
    """Statistics over the turns of one run (failed turns are counted, not measured)."""
    ok = [r for r in records if r.ok]
    failures: dict[str, int] = {}
    for r in records:
        if not r.ok:
            reason = (r.error or "unknown").split(":")[0]
            failures[reason] = failures.get(reason, 0) + 1
    barge = [r for r in ok if r.barge_in]
    cancelled = [r for r in barge if r.barge_in_status == "cancelled"]
    figures = {
        LATENCY: stat(r.voice_latency_ms for r in ok),
        MINUS_SILENCE: stat(minus_silence(r) for r in ok),
        OVERHEAD: stat(r.overhead_ms for r in ok),
        VAD_ENDPOINT: stat(vad_endpoint_lag(r) for r in ok),
        WALL_OVERHEAD: stat(overhead_beyond_vad(r, settings.profile) for r in ok),
        TRANSCRIPT: stat(r.transcript_ms for r in ok),
        DONE: stat(r.response_done_ms for r in ok),
        STARVED: stat(r.continuity.starved_ms for r in ok),
        BARGE_IN: stat(r.barge_in_latency_ms for r in cancelled),
        BARGE_IN_DONE: stat(r.barge_in_done_ms for r in cancelled),
        BARGE_IN_REPLY: stat(r.barge_in_reply_ms for r in barge),
        SEND_LAG: stat(send_lag_ms),
    }
    server_keys = sorted({k for r in ok for k in r.server_ms})
    server = {k: stat(r.server_ms.get(k) for r in ok) for k in server_keys}
    server = dict(sorted(server.items(), key=lambda kv: kv[1].p50 if kv[1].p50 is not None else 1e18))
    timelines = [t for r in ok if (t := stage_timeline(r)) is not None]
    per_stage = {k: [t[k] for t in timelines if k in t] for k in STAGES}
    medians = {k: round(float(np.median(v)), 1) for k, v in per_stage.items() if v}
    silences = [r.silence_duration_ms for r in records if r.silence_duration_ms is not None]
    return Summary(
        sessions=settings.sessions,
        sessions_connected=sessions_connected,
        turns_total=len(records),
        turns_ok=len(ok),
        turns_failed=len(records) - len(ok),
        failures=failures,
        wall_s=round(wall_s, 2),
        client_cpu_s=round(client_cpu_s, 2),
        client_cpu_pct=round(100 * client_cpu_s / wall_s, 1) if wall_s > 0 else 0.0,
        silence_duration_ms=silences[0] if silences else None,
        figures=figures,
        server=server,
        # Arrival of the first audio ends every turn's timeline, so it ends the median one too.
        timeline_p50=dict(sorted(medians.items(), key=lambda kv: (kv[0] == STAGES[-1], kv[1]))),
        turns_with_gaps=sum(r.continuity.gaps > 0 for r in ok),
        barge_ins=len(barge),
        barge_ins_cancelled=len(cancelled),
    )
